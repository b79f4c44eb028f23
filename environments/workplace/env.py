"""Workplace tool use: multi-turn episodes against a fresh SQLite database.

The model calls tools in XML (``verifiers.toolcall``); each call runs in its
own transaction on the episode's copy of the seeded database and its result
(or error) comes back as a tool response. A turn without tool calls is the
final answer. Reward 1 when the final database state equals the state that
the task's reference calls produce on a fresh copy (docs/recipe.md section 6).

Tasks come in three levels: one call (1), several calls in one turn (2),
and a lookup whose result the next turn's calls need (3).
"""

from __future__ import annotations

import json
import random
import sqlite3

from environments.base import Episode, GeneratedTasks, MultiTurnEnvironment, Score, Task
from environments.workplace import db
from environments.workplace.tools import TOOLS, execute
from verifiers.text import answer_part
from verifiers.toolcall import ToolCall, ToolCallError, parse_tool_calls, render_call

FORMAT = ("Call tools as <tool_call><function=NAME><parameter=ARG>value</parameter></function></tool_call>; "
          "results come back in <tool_response>. Reply without a tool call when done.")
MESSAGES = ["standup moved to 10", "please review the doc", "lunch at noon", "deploy is done",
            "budget approved", "call me back", "notes are shared", "see you friday"]
NEW_TITLES = ["Renew license", "Order monitors", "Fix alerts", "Update wiki", "Rotate keys", "Audit access"]
COMMENTS = ["working on it", "needs more info", "fixed in staging", "waiting on vendor"]


class WorkplaceEpisode(Episode):
    def __init__(self, env: "WorkplaceEnvironment", task: Task):
        self.env, self.task = env, task
        self.conn = db.copy(env.template)
        self.format_error: str | None = None
        self.counts = {"turns": 0, "tool_calls": 0, "tool_errors": 0, "malformed_call": 0,
                       "unknown_tool": 0, "bad_arguments": 0, "tool_failed": 0}

    def step(self, completion: str) -> list[dict[str, str]] | None:
        self.counts["turns"] += 1
        answer, reason = answer_part(completion, self.env.require_think)
        if answer is None:
            self.format_error = reason
            return None
        calls = parse_tool_calls(answer)
        if not calls:
            return None  # the final answer
        replies = []
        for call in calls:
            self.counts["tool_calls"] += 1
            if isinstance(call, ToolCallError):
                content, kind = json.dumps({"error": call.message}), "malformed_call"
            else:
                content, kind = execute(self.conn, call)
            if kind is not None:
                self.counts["tool_errors"] += 1
                self.counts[kind] += 1
            replies.append({"role": "tool", "content": content})
        return replies

    def score(self) -> Score:
        if self.format_error:
            return Score(0.0, {"state_match": 0.0}, reason=self.format_error)
        got, want = db.snapshot(self.conn), self.env.reference_state(self.task)
        differ = [t for t in want if got[t] != want[t]]
        components = {"state_match": float(not differ), "tables_match": 1 - len(differ) / len(want)}
        if differ:
            return Score(0.0, components, reason=f"wrong state: database differs from the reference in {differ}")
        return Score(1.0, components)

    def metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.counts.items()}

    def close(self) -> None:
        self.conn.close()


class WorkplaceEnvironment(GeneratedTasks, MultiTurnEnvironment):
    """Options: ``train_size``, ``test_size``, ``seed`` (tasks and database),
    ``levels`` (task levels 1-3 to draw from), ``tool_prompt`` ('json': full
    JSON schemas; 'compact': one-line signatures for small context windows),
    ``require_think``, ``data_files`` ({split: JSONL of {id?, instruction,
    calls: [[tool, {args}], ...]}})."""

    name = "workplace"

    def __init__(self, train_size: int = 2000, test_size: int = 200, seed: int = 0, test_fraction: float = 0.1,
                 levels: list[int] = (1, 2, 3), tool_prompt: str = "json", require_think: bool = True,
                 data_files: dict[str, str] | None = None):
        if tool_prompt not in ("json", "compact"):
            raise ValueError(f"environments.workplace.tool_prompt: 'json' or 'compact', not {tool_prompt!r}")
        bad = [lv for lv in levels if lv not in (1, 2, 3)]
        if bad or not levels:
            raise ValueError(f"environments.workplace.levels: choose from 1, 2, 3 (got {list(levels)})")
        super().__init__(train_size, test_size, seed, test_fraction, require_think, data_files)
        self.levels, self.tool_prompt = list(levels), tool_prompt
        self.template = db.build(seed)
        self._reference_states: dict[str, dict] = {}

    # --------------------------------------------------------------- tasks

    def system_prompt(self) -> str:
        if self.tool_prompt == "compact":
            tools = "; ".join(t.signature() for t in TOOLS.values())
        else:
            tools = "\n".join(json.dumps(t.spec()) for t in TOOLS.values())
        return f"Tools: {tools}\nEmails are first.last@acme.test. {FORMAT}"

    def _task(self, task_id: str, instruction: str, turns: list[list[tuple[str, dict]]], level: int) -> Task:
        text = ["<think></think>" + "".join(render_call(n, a) for n, a in calls) for calls in turns]
        text.append("<think></think>Done.")
        return Task(id=task_id, env=self.name,
                    messages=[{"role": "system", "content": self.system_prompt()},
                              {"role": "user", "content": instruction}],
                    answer={"calls": [[n, a] for calls in turns for n, a in calls]},
                    reference=text[0], difficulty=level, meta={"turns": text})

    def task_from_row(self, row: dict, default_id: str) -> Task:
        calls = row["calls"]
        if not isinstance(calls, list) or not all(
                isinstance(c, list) and len(c) == 2 and c[0] in TOOLS and isinstance(c[1], dict) for c in calls):
            raise ValueError("'calls' must be a list of [tool name, {arguments}] with known tools")
        return self._task(str(row.get("id", default_id)), str(row["instruction"]), [[tuple(c) for c in calls]],
                          int(row.get("level", 1)))

    def generate(self, rng: random.Random) -> Task:
        level = rng.choice(self.levels)
        make = rng.choice(GENERATORS[level])
        instruction, turns, key = make(self.template, rng)
        return self._task(f"wp{level}-{make.__name__}-{key}", instruction, turns, level)

    def reference_turns(self, task: Task) -> list[str]:
        return list(task.meta.get("turns") or [task.reference])

    def wrong_completion(self, task: Task, others: list[Task]) -> str:
        return "<think></think>Done."  # no calls: the state stays the seeded one

    # ------------------------------------------------------------- episodes

    def start(self, task: Task) -> WorkplaceEpisode:
        return WorkplaceEpisode(self, task)

    def reference_state(self, task: Task) -> dict:
        if task.id not in self._reference_states:
            conn = db.copy(self.template)
            try:
                for name, args in task.answer["calls"]:
                    call = ToolCall(name, {k: v if isinstance(v, str) else json.dumps(v) for k, v in args.items()})
                    _, error = execute(conn, call)
                    if error is not None:
                        raise ValueError(f"task {task.id}: reference call {name} fails ({error})")
                self._reference_states[task.id] = db.snapshot(conn)
            finally:
                conn.close()
        return self._reference_states[task.id]

    def close(self) -> None:
        self.template.close()


# ------------------------------------------------------------ generators
# Each returns (instruction, reference calls per turn, a key naming the task).


def _people(conn: sqlite3.Connection) -> list[tuple]:
    return conn.execute("SELECT name, email, team, title, manager_email FROM people ORDER BY id").fetchall()


def message_person(conn, rng):
    name, email, *_ = rng.choice(_people(conn))
    text = rng.choice(MESSAGES)
    return f'Send {name} the message "{text}".', [[("send_message", {"to": email, "text": text})]], f"{email}-{text}"


def open_ticket(conn, rng):
    name, email, *_ = rng.choice(_people(conn))
    title, prio = rng.choice(NEW_TITLES), rng.choice(db.PRIORITIES)
    return (f'Open a {prio} priority ticket "{title}" for {name}.',
            [[("create_ticket", {"title": title, "assignee": email, "priority": prio})]], f"{email}-{title}-{prio}")


def set_ticket_status(conn, rng):
    tid, status = rng.choice(conn.execute("SELECT id, status FROM tickets").fetchall())
    new = rng.choice([s for s in db.STATUSES if s != status])
    return (f"Set the status of ticket {tid} to {new}.",
            [[("update_ticket", {"ticket_id": tid, "status": new})]], f"{tid}-{new}")


def comment_ticket(conn, rng):
    tid = rng.choice(conn.execute("SELECT id FROM tickets").fetchall())[0]
    text = rng.choice(COMMENTS)
    return f'Comment "{text}" on ticket {tid}.', [[("add_comment", {"ticket_id": tid, "text": text})]], f"{tid}-{text}"


def cancel_meeting(conn, rng):
    mid = rng.choice(conn.execute("SELECT id FROM meetings").fetchall())[0]
    return f"Cancel meeting {mid}.", [[("cancel_meeting", {"meeting_id": mid})]], str(mid)


def set_project_status(conn, rng):
    pid, name, status = rng.choice(conn.execute("SELECT id, name, status FROM projects").fetchall())
    new = rng.choice([s for s in db.PROJECT_STATUSES if s != status])
    return (f"Set project {name} (id {pid}) to {new}.",
            [[("update_project", {"project_id": pid, "status": new})]], f"{pid}-{new}")


def book_meeting(conn, rng):
    people = rng.sample(_people(conn), rng.choice([2, 3]))
    day, hour = rng.choice(db.DAYS), rng.choice(db.HOURS)
    free = [r for r, _ in conn.execute("SELECT name, capacity FROM rooms WHERE name NOT IN "
                                       "(SELECT room FROM meetings WHERE day = ? AND hour = ?)", (day, hour))]
    room, title = rng.choice(free), rng.choice(["sync", "review", "planning"])
    names = " and ".join(p[0] for p in people)
    args = {"title": title, "attendees": [p[1] for p in people], "day": day, "hour": hour, "room": room}
    return (f"Book a {title} with {names} on {day} at {hour} in room {room}.", [[("book_meeting", args)]],
            f"{'-'.join(args['attendees'])}-{day}-{hour}-{room}")


def reassign_and_tell(conn, rng):
    tid, assignee = rng.choice(conn.execute("SELECT id, assignee FROM tickets").fetchall())
    name, email, *_ = rng.choice([p for p in _people(conn) if p[1] != assignee])
    text = f"ticket {tid} is yours"
    return (f'Reassign ticket {tid} to {name} and send them "{text}".',
            [[("update_ticket", {"ticket_id": tid, "assignee": email}), ("send_message", {"to": email, "text": text})]],
            f"{tid}-{email}")


def ticket_for_manager(conn, rng):
    name, email, _, _, manager = rng.choice([p for p in _people(conn) if p[4]])
    title = rng.choice(NEW_TITLES)
    return (f'Open a high priority ticket "{title}" for the manager of {name}.',
            [[("get_person", {"email": email})],
             [("create_ticket", {"title": title, "assignee": manager, "priority": "high"})]], f"{email}-{title}")


def close_open_tickets(conn, rng):
    owners = [r[0] for r in conn.execute("SELECT DISTINCT assignee FROM tickets WHERE status = 'open'")]
    email = rng.choice(owners)
    name = conn.execute("SELECT name FROM people WHERE email = ?", (email,)).fetchone()[0]
    ids = [r[0] for r in conn.execute("SELECT id FROM tickets WHERE assignee = ? AND status = 'open' ORDER BY id",
                                      (email,))]
    return (f"Close every open ticket of {name}.",
            [[("list_tickets", {"assignee": email, "status": "open"})],
             [("update_ticket", {"ticket_id": i, "status": "closed"}) for i in ids]], email)


def book_free_room(conn, rng):
    people = rng.sample(_people(conn), 2)
    day, hour = rng.choice(db.DAYS), rng.choice(db.HOURS)
    room = conn.execute("SELECT name FROM rooms WHERE capacity >= 2 AND name NOT IN (SELECT room FROM meetings "
                        "WHERE day = ? AND hour = ?) ORDER BY capacity, name", (day, hour)).fetchone()[0]
    emails = [p[1] for p in people]
    return (f"Book a sync with {people[0][0]} and {people[1][0]} on {day} at {hour} in the smallest free room.",
            [[("list_rooms", {"day": day, "hour": hour, "min_capacity": 2})],
             [("book_meeting", {"title": "sync", "attendees": emails, "day": day, "hour": hour, "room": room})]],
            f"{'-'.join(emails)}-{day}-{hour}")


GENERATORS = {
    1: [message_person, open_ticket, set_ticket_status, comment_ticket, cancel_meeting, set_project_status],
    2: [book_meeting, reassign_and_tell],
    3: [ticket_for_manager, close_open_tickets, book_free_room],
}
