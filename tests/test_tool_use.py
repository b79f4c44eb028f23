"""Multi-turn tool use: XML tool calls, the workplace database environment,
the token-in/token-out episode loop and reasoning control."""

from __future__ import annotations

import json

import pytest

from environments.pool import EnvironmentPool
from environments.registry import make_environment
from environments.workplace import db
from environments.workplace.tools import execute
from rl.batch import collate
from rl.episodes import EpisodeLimits, ReasoningControl, Trajectory, TurnGenerator, continuation_ids, run_episodes
from rl.models import build_tokenizer
from rl.rollout import Completion, SamplingSettings, prompt_token_ids
from verifiers.toolcall import ToolCall, ToolCallError, coerce_arguments, parse_tool_calls, render_call

# ------------------------------------------------------------ the parser


def test_parses_calls_in_order_with_raw_string_values():
    text = ("I will look. <tool_call><function=get_person><parameter=email>ada.lee@acme.test</parameter>"
            "</function></tool_call> then <tool_call><function=list_tickets><parameter=status>\nopen\n"
            "</parameter><parameter=assignee>a</parameter></function></tool_call>")
    calls = parse_tool_calls(text)
    assert calls == [ToolCall("get_person", {"email": "ada.lee@acme.test"}),
                     ToolCall("list_tickets", {"status": "open", "assignee": "a"})]
    assert parse_tool_calls("no calls here") == []


@pytest.mark.parametrize("text, fragment", [
    ("<tool_call><function=x><parameter=a>1</parameter></function>", "without </tool_call>"),
    ("<tool_call>get_person(email=1)</tool_call>", "expected <function=NAME>"),
    ("<tool_call><function=x><parameter=a>1</parameter></tool_call>", "expected <function=NAME>"),
    ("<tool_call><function=x>junk<parameter=a>1</parameter></function></tool_call>", "unexpected text"),
    ("<tool_call><function=x><parameter=a>1</parameter><parameter=a>2</parameter></function></tool_call>",
     "given twice"),
])
def test_malformed_calls_are_errors_not_exceptions(text, fragment):
    (result,) = parse_tool_calls(text)
    assert isinstance(result, ToolCallError) and fragment in result.message


def test_call_count_per_turn_is_bounded():
    one = "<tool_call><function=f></function></tool_call>"
    calls = parse_tool_calls(one * 40)
    assert len(calls) == 17 and isinstance(calls[-1], ToolCallError)


def test_arguments_are_typed_by_the_schema():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "tags": {"type": "array"},
                                               "name": {"type": "string"}},
              "required": ["n"], "additionalProperties": False}
    assert coerce_arguments({"n": "7", "tags": '["a"]', "name": "42"}, schema) == (
        {"n": 7, "tags": ["a"], "name": "42"}, None)
    assert "expected integer" in coerce_arguments({"n": "seven"}, schema)[1]
    assert "is not of type 'integer'" in coerce_arguments({"n": "1.5"}, schema)[1]
    assert "unknown parameter" in coerce_arguments({"n": "1", "x": "1"}, schema)[1]
    assert "'n' is a required property" in coerce_arguments({}, schema)[1]
    assert render_call("f", {"n": 7, "s": "x"}) == (
        "<tool_call><function=f><parameter=n>7</parameter><parameter=s>x</parameter></function></tool_call>")


# ---------------------------------------------------- workplace environment


@pytest.fixture(scope="module")
def env():
    e = make_environment("workplace", {"train_size": 300, "test_size": 50, "tool_prompt": "compact"})
    yield e
    e.close()


def test_has_many_tools_and_every_reference_reaches_the_reference_state(env):
    from environments.workplace.tools import TOOLS

    assert len(TOOLS) >= 10
    tasks = env.tasks("train")
    assert {t.difficulty for t in tasks} == {1, 2, 3}
    assert not {t.id for t in tasks} & {t.id for t in env.tasks("test")}
    for task in tasks:
        score, transcript = env.play(task, env.reference_turns(task))
        assert score.reward == 1.0, (task.id, score.reason)
        assert sum(m["role"] == "assistant" for m in transcript) == len(env.reference_turns(task))


def test_wrong_call_sequences_score_zero_with_the_differing_tables(env):
    task = next(t for t in env.tasks("train") if t.id.startswith("wp1-open_ticket"))
    args = task.answer["calls"][0][1]
    wrong_priority = next(p for p in db.PRIORITIES if p != args["priority"])
    turns = [
        "<think></think>Done.",  # nothing done
        "<think></think>" + render_call("create_ticket", {**args, "priority": wrong_priority}),
        "<think></think>" + render_call("create_ticket", args) * 2,  # done twice
        "<think></think>" + render_call("create_ticket", args) + render_call("send_message",
                                                                               {"to": args["assignee"], "text": "hi"}),
    ]
    for turn in turns:
        score, _ = env.play(task, [turn, "<think></think>Done."])
        assert score.reward == 0.0, turn
        assert "tickets" in score.reason or "messages" in score.reason
    # a missing </think> is a format failure even when the calls are right
    score, _ = env.play(task, [render_call("create_ticket", args), "Done."])
    assert score.reward == 0.0 and score.reason.startswith("format")


def test_errors_come_back_as_tool_responses_and_are_counted(env):
    task = env.tasks("train")[0]
    episode = env.start(task)
    try:
        reply = episode.step(
            "<think></think>"
            "<tool_call><function=fire_everyone></function></tool_call>"                       # unknown tool
            "<tool_call><function=get_person><parameter=email>nobody</parameter></function></tool_call>"  # bad args
            "<tool_call><function=update_ticket><parameter=ticket_id>99999</parameter>"
            "<parameter=status>closed</parameter></function></tool_call>"                       # fails
            "<tool_call>oops</tool_call>"                                                        # malformed
            "<tool_call><function=list_tickets><parameter=status>open</parameter></function></tool_call>")
        assert [m["role"] for m in reply] == ["tool"] * 5
        errors = [json.loads(m["content"]).get("error", "") if m["content"].startswith("{") else ""
                  for m in reply]
        assert "unknown tool 'fire_everyone'" in errors[0]
        assert "email" in errors[1] and "does not match" in errors[1]
        assert "no ticket 99999" in errors[2]
        assert "malformed" in errors[3]
        assert isinstance(json.loads(reply[4]["content"]), list)
        m = episode.metrics()
        assert (m["tool_calls"], m["tool_errors"], m["unknown_tool"], m["bad_arguments"], m["tool_failed"],
                m["malformed_call"]) == (5, 4, 1, 1, 1, 1)
        assert episode.step("<think></think>All done.") is None
    finally:
        episode.close()


@pytest.mark.parametrize("call", [
    ToolCall("find_people", {"name": "x' OR '1'='1"}),
    ToolCall("find_people", {"name": "%"}),
    ToolCall("find_people", {"team": "infra' OR 1=1 --"}),
    ToolCall("send_message", {"to": "{someone}", "text": "'); DROP TABLE people; --"}),
    ToolCall("add_comment", {"ticket_id": "1", "text": "x'); DELETE FROM tickets; --"}),
    ToolCall("update_ticket", {"ticket_id": "1; DROP TABLE tickets", "status": "closed"}),
    ToolCall("update_ticket", {"ticket_id": "1", "status": "closed' WHERE 1=1 --"}),
    ToolCall("list_tickets", {"assignee": "a@b.c' UNION SELECT name, email, 1, 1, 1 FROM people --"}),
])
def test_sql_injection_is_just_data(env, call):
    conn = db.copy(env.template)
    someone = conn.execute("SELECT email FROM people").fetchone()[0]
    call = ToolCall(call.name, {k: v.replace("{someone}", someone) for k, v in call.arguments.items()})
    try:
        people = conn.execute("SELECT COUNT(*) FROM people").fetchone()[0]
        tickets = conn.execute("SELECT COUNT(*), SUM(status = 'closed') FROM tickets").fetchone()
        response, _ = execute(conn, call)
        result = json.loads(response)
        if call.name == "find_people":
            assert result == []  # no name contains the literal text
        assert conn.execute("SELECT COUNT(*) FROM people").fetchone()[0] == people
        after = conn.execute("SELECT COUNT(*), SUM(status = 'closed') FROM tickets").fetchone()
        assert after == tickets  # no row deleted or mass-updated
        if call.name in ("send_message", "add_comment"):
            table = "messages" if call.name == "send_message" else "comments"
            assert conn.execute(f"SELECT text FROM {table}").fetchall()[-1][0] == call.arguments["text"]
    finally:
        conn.close()


def test_a_failed_call_changes_nothing(env):
    conn = db.copy(env.template)
    try:
        before = db.snapshot(conn)
        response, error = execute(conn, ToolCall("book_meeting", {
            "title": "x", "attendees": '["ada.lee@acme.test", "no.body@acme.test"]', "day": "mon", "hour": "9",
            "room": "delta"}))
        assert error in ("tool_failed", "bad_arguments") and "error" in json.loads(response)
        assert db.snapshot(conn) == before
    finally:
        conn.close()


def test_episodes_have_their_own_database(env):
    task = next(t for t in env.tasks("train") if t.id.startswith("wp1-open_ticket"))
    first, second = env.start(task), env.start(task)
    try:
        first.step(env.reference_turns(task)[0])
        assert first.score().reward == 1.0
        assert second.score().reward == 0.0
    finally:
        first.close()
        second.close()


# ------------------------------------------------ chat template, reasoning


def test_template_drops_earlier_turns_reasoning_and_keeps_the_current_turns():
    tok = build_tokenizer()
    messages = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "<think>old</think>a1"},
                {"role": "user", "content": "q2"},
                {"role": "assistant", "content": "<think>plan</think><tool_call>c</tool_call>"},
                {"role": "tool", "content": "r1"}, {"role": "tool", "content": "r2"}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert "old" not in text and "a1" in text
    assert "<think>plan</think>" in text
    assert "<tool_response>r1</tool_response><tool_response>r2</tool_response>" in text
    off = tok.apply_chat_template(messages[:1], add_generation_prompt=True, tokenize=False, enable_thinking=False)
    assert off.endswith("<|im_start|>assistant\n<think></think>")
    assert prompt_token_ids(tok, messages[:1], thinking=False)[-2:] == tok.convert_tokens_to_ids(
        ["<think>", "</think>"])


class ScriptedEngine:
    """Generates scripted text (vLLM's semantics: stops after a stop token or
    at max_tokens; logprobs recorded per call so alignment can be checked)."""

    def __init__(self, tok, script):
        self.tok, self.script, self.calls = tok, script, []

    def __call__(self, prompts, settings: SamplingSettings, max_tokens):
        out = []
        for prompt, limit in zip(prompts, max_tokens):
            group = []
            for k in range(settings.n):
                ids = self.tok.encode(self.script(self.tok.decode(prompt), k), add_special_tokens=False)
                stops = set(settings.stop_token_ids) | {self.tok.eos_token_id}
                cut = next((i + 1 for i, t in enumerate(ids) if t in stops), len(ids))
                ids = ids[:min(cut, limit)]
                truncated = not ids or ids[-1] not in stops
                lps = [-0.01 * (len(self.calls) + 1) - 0.001 * i for i in range(len(ids))]
                group.append(Completion(ids, lps, truncated))
            out.append(group)
        self.calls.append((prompts, settings, max_tokens))
        return out


def _workplace_script(task_turns):
    def script(context: str, k: int) -> str:
        done = context.count("<tool_response>") and context.count("<|im_start|>user<tool_response>")
        turn = task_turns[min(done, len(task_turns) - 1)]
        return turn + "<|im_end|>"
    return script


def test_multi_turn_tokens_are_exactly_the_generated_and_appended_ones(env):
    tok = build_tokenizer()
    task = next(t for t in env.tasks("train") if t.difficulty == 3)
    turns = env.reference_turns(task)
    engine = ScriptedEngine(tok, _workplace_script(turns))
    pool = EnvironmentPool({}, None, tokenizer=tok, environments={"workplace": env})
    turn = TurnGenerator(engine, SamplingSettings(n=1, max_new_tokens=400), tok.eos_token_id,
                         tok.convert_tokens_to_ids("</think>"), ReasoningControl())
    prompt = prompt_token_ids(tok, task.messages)
    groups, keys = run_episodes([task], [prompt], 2, turn, pool, tok, EpisodeLimits(8, 1500, 400))
    (traj_a, traj_b), = groups
    # rebuild what must be there: each generated turn, then the template's rendering of the replies
    _, transcript = env.play(task, turns)
    expected, mask, replies = [], [], []
    for message in transcript + [None]:
        if replies and (message is None or message["role"] != "tool"):
            ids = continuation_ids(tok, replies)
            expected, mask, replies = expected + ids, mask + [0] * len(ids), []
        if message is None:
            break
        if message["role"] == "tool":
            replies.append(message)
            continue
        ids = tok.encode(message["content"] + "<|im_end|>", add_special_tokens=False)
        expected, mask = expected + ids, mask + [1] * len(ids)
    assert traj_a.tokens == expected and traj_a.mask == mask and traj_a.turns == len(turns)
    assert traj_b.tokens == expected
    # engine logprobs sit exactly on the generated tokens, zeros on the appended ones
    assert all((lp != 0) == bool(m) for lp, m in zip(traj_a.logprobs, traj_a.mask))
    # the full sequence is the template's own rendering of the conversation (no re-tokenising drift)
    rendered = tok.apply_chat_template(task.messages + transcript, tokenize=False)
    assert tok.decode(prompt + traj_a.tokens, skip_special_tokens=False) == rendered
    scores = pool.finish(keys[0])
    assert [s.reward for s, _ in scores] == [1.0, 1.0]
    assert scores[0][1]["turns"] == len(turns) and scores[0][1]["tool_errors"] == 0
    # the trainer's batch: loss only on generated tokens, logprobs aligned to the predicted positions
    c = traj_a.completion()
    batch = collate([prompt], [c.token_ids], [c.logprobs], [c.truncated], [1.0], tok.pad_token_id, [c.mask])
    start = len(prompt) - 1
    assert batch.completion_mask[0, start:start + len(mask)].tolist() == [float(m) for m in mask]
    assert batch.input_ids[0, len(prompt):len(prompt) + len(expected)].tolist() == expected
    assert batch.lp_gen[0, start].item() == pytest.approx(traj_a.logprobs[0])


def test_episode_limits_cut_turns_and_tokens(env):
    tok = build_tokenizer()
    task = next(t for t in env.tasks("train") if t.difficulty == 3)
    looping = "<think></think>" + render_call("list_tickets", {"status": "open"})  # never gives a final answer
    engine = ScriptedEngine(tok, lambda ctx, k: looping + "<|im_end|>")
    pool = EnvironmentPool({}, None, tokenizer=tok, environments={"workplace": env})
    turn = TurnGenerator(engine, SamplingSettings(n=1, max_new_tokens=200), tok.eos_token_id,
                         tok.convert_tokens_to_ids("</think>"), ReasoningControl())
    prompt = prompt_token_ids(tok, task.messages)
    (trajs,), keys = run_episodes([task], [prompt], 1, turn, pool, tok, EpisodeLimits(3, 10_000, 200))
    assert trajs[0].turns == 3 and not trajs[0].truncated
    (trajs,), keys2 = run_episodes([task], [prompt], 1, turn, pool, tok, EpisodeLimits(10, 250, 200))
    assert trajs[0].truncated and len(trajs[0].tokens) <= 250
    (score, metrics), = pool.finish(keys[0])
    assert score.reward == 0.0 and metrics["tool_calls"] == 3
    pool.finish(keys2[0])


def test_reasoning_budget_forces_the_end_of_thinking_then_answers():
    tok = build_tokenizer()
    think_end = tok.convert_tokens_to_ids("</think>")

    def script(context: str, k: int) -> str:
        if context.endswith("</think>"):
            return "42<|im_end|>"
        return "<think>" + "hmm " * 50 + "</think>7<|im_end|>"

    engine = ScriptedEngine(tok, script)
    turn = TurnGenerator(engine, SamplingSettings(n=1, max_new_tokens=100), tok.eos_token_id, think_end,
                         ReasoningControl(budget=20))
    prompt = prompt_token_ids(tok, [{"role": "user", "content": "q"}])
    (t,), = turn([Trajectory(prompt)], 1, [100])
    assert tok.decode(t.tokens[:20]) == tok.decode(tok.encode("<think>" + "hmm " * 50)[:20])
    assert t.tokens[20] == think_end and t.mask[20] == 0 and t.logprobs[20] == 0.0
    assert tok.decode(t.tokens[21:]) == "42<|im_end|>" and t.mask[21:] == [1] * len(t.tokens[21:])
    assert t.forced_think_end == 1
    assert engine.calls[0][2] == [20] and engine.calls[1][2] == [100 - 21]
    assert think_end in engine.calls[0][1].stop_token_ids and think_end not in engine.calls[1][1].stop_token_ids
    assert not t.truncated

    # reasoning that ends within the budget is left alone; the answer follows in the same turn
    short = ScriptedEngine(tok, lambda ctx, k: "42<|im_end|>" if ctx.endswith("</think>") else "<think>ok</think>")
    turn = TurnGenerator(short, SamplingSettings(n=2, max_new_tokens=100), tok.eos_token_id, think_end,
                         ReasoningControl(budget=20))
    (a, b), = turn([Trajectory(prompt)], 2, [100])
    assert tok.decode(a.tokens) == "<think>ok</think>42<|im_end|>" and a.mask == [1] * len(a.tokens)
    assert a.forced_think_end == 0 and b.tokens == a.tokens

    # the turn's own limit, not the budget, cutting the reasoning: truncated, nothing forced
    turn = TurnGenerator(engine, SamplingSettings(n=1, max_new_tokens=10), tok.eos_token_id, think_end,
                         ReasoningControl(budget=20))
    (t,), = turn([Trajectory(prompt)], 1, [10])
    assert t.truncated and think_end not in t.tokens and len(t.tokens) == 10

    # thinking off: no budget phase at all
    turn = TurnGenerator(engine, SamplingSettings(n=1, max_new_tokens=100), tok.eos_token_id, think_end,
                         ReasoningControl(thinking=False, budget=20))
    engine.calls.clear()
    turn([Trajectory(prompt)], 1, [100])
    assert len(engine.calls) == 1 and think_end not in engine.calls[0][1].stop_token_ids


def test_an_episode_whose_environment_crashes_scores_zero_with_the_reason():
    tok = build_tokenizer()
    pool = EnvironmentPool({"tests.plugins.hostile_env:CrashingEpisodes": {}}, None, tokenizer=tok,
                           timeouts={"tests.plugins.hostile_env:CrashingEpisodes": 5})
    try:
        env_name = "tests.plugins.hostile_env:CrashingEpisodes"
        from environments.registry import load_tasks
        tasks = load_tasks(env_name, {}, "train")[:3]
        keys = pool.start(tasks)
        replies = pool.step(keys, ["fine", "crash", "fine"])
        assert replies[0] is not None
        scores = pool.finish(keys)
        assert scores[1][0].reward == 0.0 and "crashed" in scores[1][0].reason
        # the host came back for new episodes
        keys = pool.start(tasks[:1])
        assert pool.step(keys, ["fine"])[0] is not None
        assert pool.finish(keys)[0][0].reward == 1.0
    finally:
        pool.close()
