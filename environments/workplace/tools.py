"""The workplace tools: a JSON schema for each tool's parameters and its
implementation over a database connection. Results are JSON-serialisable;
a failure raises ``ToolError`` with a message for the model."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any, Callable

from environments.workplace.db import DAYS, HOURS, PRIORITIES, PROJECT_STATUSES, STATUSES
from verifiers.toolcall import ToolCall, coerce_arguments

MAX_ROWS = 20
EMAIL = {"type": "string", "pattern": r"^[a-z]+\.[a-z]+@acme\.test$", "maxLength": 64}
TEXT = {"type": "string", "minLength": 1, "maxLength": 500}


class ToolError(Exception):
    """A tool call that cannot be carried out (the message goes back to the model)."""


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict
    run: Callable[..., Any]

    def signature(self) -> str:
        """Compact form for small context windows: ``name(a, b?)``."""
        req = set(self.parameters.get("required", []))
        return f"{self.name}({', '.join(k + ('' if k in req else '?') for k in self.parameters['properties'])})"

    def spec(self) -> dict:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


def _obj(props: dict, required: list[str]) -> dict:
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


def _rows(cur: sqlite3.Cursor) -> list[dict]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchmany(MAX_ROWS)]


def _where(conn, sql: str, filters: list[tuple[str, Any]]) -> list[dict]:
    """``sql`` narrowed by each ``(clause with one ?, value)`` whose value is given."""
    given = [(clause, value) for clause, value in filters if value is not None]
    where = "".join(f" AND {clause}" for clause, _ in given)  # clauses are fixed strings of this module
    return _rows(conn.execute(f"{sql} WHERE 1 = 1{where} ORDER BY id", [v for _, v in given]))


def _person(conn, email: str) -> dict:
    row = conn.execute("SELECT name, email, team, title, manager_email FROM people WHERE email = ?",
                       (email,)).fetchone()
    if row is None:
        raise ToolError(f"no person with email {email}")
    return dict(zip(["name", "email", "team", "title", "manager_email"], row))


def _ticket(conn, ticket_id: int) -> None:
    if conn.execute("SELECT 1 FROM tickets WHERE id = ?", (ticket_id,)).fetchone() is None:
        raise ToolError(f"no ticket {ticket_id}")


# ----------------------------------------------------------------- tools


def find_people(conn, name: str | None = None, team: str | None = None) -> list[dict]:
    pattern = None if name is None else f"%{_like(name)}%"
    return _where(conn, "SELECT name, email, team, title FROM people",
                  [("name LIKE ? ESCAPE '\\'", pattern), ("team = ?", team)])


def get_person(conn, email: str) -> dict:
    return _person(conn, email)


def list_tickets(conn, assignee: str | None = None, status: str | None = None) -> list[dict]:
    return _where(conn, "SELECT id, title, assignee, priority, status FROM tickets",
                  [("assignee = ?", assignee), ("status = ?", status)])


def create_ticket(conn, title: str, assignee: str, priority: str) -> dict:
    _person(conn, assignee)
    cur = conn.execute("INSERT INTO tickets (title, assignee, priority, status) VALUES (?, ?, ?, 'open')",
                       (title, assignee, priority))
    return {"ticket_id": cur.lastrowid}


def update_ticket(conn, ticket_id: int, status: str | None = None, priority: str | None = None,
                  assignee: str | None = None) -> dict:
    _ticket(conn, ticket_id)
    changes = {"status": status, "priority": priority, "assignee": assignee}
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        raise ToolError("nothing to update: give status, priority or assignee")
    if assignee is not None:
        _person(conn, assignee)
    for column, value in changes.items():  # column names from the fixed dict above
        conn.execute(f"UPDATE tickets SET {column} = ? WHERE id = ?", (value, ticket_id))  # noqa: S608
    return {"ticket_id": ticket_id, "updated": sorted(changes)}


def add_comment(conn, ticket_id: int, text: str) -> dict:
    _ticket(conn, ticket_id)
    cur = conn.execute("INSERT INTO comments (ticket_id, text) VALUES (?, ?)", (ticket_id, text))
    return {"comment_id": cur.lastrowid}


def list_rooms(conn, day: str, hour: int, min_capacity: int = 1) -> list[dict]:
    """Rooms free at (day, hour) with at least ``min_capacity`` seats."""
    return _rows(conn.execute(
        "SELECT name, capacity FROM rooms WHERE capacity >= ? AND name NOT IN "
        "(SELECT room FROM meetings WHERE day = ? AND hour = ?) ORDER BY capacity, name",
        (min_capacity, day, hour)))


def book_meeting(conn, title: str, attendees: list[str], day: str, hour: int, room: str) -> dict:
    cap = conn.execute("SELECT capacity FROM rooms WHERE name = ?", (room,)).fetchone()
    if cap is None:
        raise ToolError(f"no room named {room}")
    if len(attendees) > cap[0]:
        raise ToolError(f"room {room} seats {cap[0]}, not {len(attendees)}")
    if conn.execute("SELECT 1 FROM meetings WHERE room = ? AND day = ? AND hour = ?",
                    (room, day, hour)).fetchone():
        raise ToolError(f"room {room} is taken on {day} at {hour}")
    for email in attendees:
        _person(conn, email)
    cur = conn.execute("INSERT INTO meetings (title, day, hour, room) VALUES (?, ?, ?, ?)", (title, day, hour, room))
    conn.executemany("INSERT INTO attendees VALUES (?, ?)", [(cur.lastrowid, e) for e in attendees])
    return {"meeting_id": cur.lastrowid}


def cancel_meeting(conn, meeting_id: int) -> dict:
    if conn.execute("DELETE FROM meetings WHERE id = ?", (meeting_id,)).rowcount == 0:
        raise ToolError(f"no meeting {meeting_id}")
    return {"cancelled": meeting_id}


def list_meetings(conn, email: str | None = None, day: str | None = None) -> list[dict]:
    return _where(conn, "SELECT id, title, day, hour, room FROM meetings m",
                  [("EXISTS (SELECT 1 FROM attendees a WHERE a.meeting_id = m.id AND a.email = ?)", email),
                   ("day = ?", day)])


def send_message(conn, to: str, text: str) -> dict:
    _person(conn, to)
    cur = conn.execute("INSERT INTO messages (recipient, text) VALUES (?, ?)", (to, text))
    return {"message_id": cur.lastrowid}


def query_projects(conn, owner: str | None = None, status: str | None = None) -> list[dict]:
    return _where(conn, "SELECT id, name, owner, status FROM projects",
                  [("owner = ?", owner), ("status = ?", status)])


def update_project(conn, project_id: int, status: str) -> dict:
    if conn.execute("UPDATE projects SET status = ? WHERE id = ?", (status, project_id)).rowcount == 0:
        raise ToolError(f"no project {project_id}")
    return {"project_id": project_id, "status": status}


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


ID = {"type": "integer", "minimum": 1}
DAY = {"type": "string", "enum": DAYS}
HOUR = {"type": "integer", "enum": HOURS}
TOOLS: dict[str, Tool] = {t.name: t for t in [
    Tool("find_people", "Search people by part of their name and/or team.",
         _obj({"name": {"type": "string", "maxLength": 64}, "team": {"type": "string", "maxLength": 32}}, []),
         find_people),
    Tool("get_person", "A person's details, including their manager's email.", _obj({"email": EMAIL}, ["email"]),
         get_person),
    Tool("list_tickets", "Tickets, filtered by assignee email and/or status.",
         _obj({"assignee": EMAIL, "status": {"type": "string", "enum": STATUSES}}, []), list_tickets),
    Tool("create_ticket", "Open a ticket assigned to a person.",
         _obj({"title": TEXT, "assignee": EMAIL, "priority": {"type": "string", "enum": PRIORITIES}}, ["title", "assignee", "priority"]),
         create_ticket),
    Tool("update_ticket", "Change a ticket's status, priority and/or assignee.",
         _obj({"ticket_id": ID, "status": {"type": "string", "enum": STATUSES}, "priority": {"type": "string", "enum": PRIORITIES}, "assignee": EMAIL},
              ["ticket_id"]), update_ticket),
    Tool("add_comment", "Add a comment to a ticket.", _obj({"ticket_id": ID, "text": TEXT}, ["ticket_id", "text"]),
         add_comment),
    Tool("list_rooms", "Rooms free on a day at an hour, with at least min_capacity seats.",
         _obj({"day": DAY, "hour": HOUR, "min_capacity": {"type": "integer", "minimum": 1}},
              ["day", "hour"]), list_rooms),
    Tool("book_meeting", "Book a room for a meeting with attendees (emails).",
         _obj({"title": TEXT, "attendees": {"type": "array", "items": EMAIL, "minItems": 1, "maxItems": 20,
                                            "uniqueItems": True},
               "day": DAY, "hour": HOUR, "room": {"type": "string", "maxLength": 32}},
              ["title", "attendees", "day", "hour", "room"]), book_meeting),
    Tool("cancel_meeting", "Cancel a meeting.", _obj({"meeting_id": ID}, ["meeting_id"]), cancel_meeting),
    Tool("list_meetings", "Meetings, filtered by attendee email and/or day.",
         _obj({"email": EMAIL, "day": DAY}, []), list_meetings),
    Tool("send_message", "Send a chat message to a person.", _obj({"to": EMAIL, "text": TEXT}, ["to", "text"]),
         send_message),
    Tool("query_projects", "Projects, filtered by owner email and/or status.",
         _obj({"owner": EMAIL, "status": {"type": "string", "enum": PROJECT_STATUSES}}, []), query_projects),
    Tool("update_project", "Set a project's status.",
         _obj({"project_id": ID, "status": {"type": "string", "enum": PROJECT_STATUSES}}, ["project_id", "status"]), update_project),
]}


def execute(conn: sqlite3.Connection, call: ToolCall) -> tuple[str, str | None]:
    """Run one parsed call; (response text, error kind or None). A failed call
    changes nothing (its statements are rolled back)."""
    tool = TOOLS.get(call.name)
    if tool is None:
        return _error(f"unknown tool '{call.name}'; tools: {', '.join(TOOLS)}"), "unknown_tool"
    args, problem = coerce_arguments(call.arguments, tool.parameters)
    if problem is not None:
        return _error(f"{call.name}: {problem}"), "bad_arguments"
    try:
        with conn:  # one transaction per call: committed, or rolled back on error
            result = tool.run(conn, **args)
    except ToolError as exc:
        return _error(f"{call.name}: {exc}"), "tool_failed"
    except sqlite3.Error as exc:
        return _error(f"{call.name}: database rejected the change ({exc})"), "tool_failed"
    return json.dumps(result, separators=(",", ":")), None


def _error(message: str) -> str:
    return json.dumps({"error": message}, separators=(",", ":"))
