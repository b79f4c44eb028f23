"""Instruction following, structured output and multiple choice; task files;
the isolated, time-limited scoring of every environment (hostile output)."""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import pytest

from environments.base import DataError, Task
from environments.ifeval import IFEvalEnvironment
from environments.ifeval.env import violation
from environments.mcq import MultipleChoiceEnvironment
from environments.pool import EnvironmentPool
from environments.registry import load_tasks
from environments.structured import StructuredOutputEnvironment
from rl.models import build_tokenizer
from environments.ifeval import verifier as ifeval
from environments.mcq.verifier import extract_choice
from environments.structured.verifier import make_strict, validate_answer

TESTS = Path(__file__).resolve().parent


# ------------------------------------------------------------ ifeval


def test_ifeval_has_at_least_25_constraint_types_all_generated_and_satisfiable():
    assert len(ifeval.CONSTRAINTS) >= 25
    env = IFEvalEnvironment(train_size=3000)
    tasks = env.tasks("train")
    seen = {k for t in tasks for k in t.meta["types"]}
    assert seen == set(ifeval.CONSTRAINTS)
    for t in tasks:
        assert env.score(t, t.reference).reward == 1.0, t
        wrong = env.score(t, env.wrong_completion(t, []))
        assert wrong.reward == 0.0 and t.answer[0]["type"] in wrong.reason


@pytest.mark.parametrize("constraint,good,bad", [
    ({"type": "word_count_at_least", "n": 3}, "one two three", "one two"),
    ({"type": "word_count_at_most", "n": 2}, "one two", "one two three"),
    ({"type": "sentence_count_at_least", "n": 2}, "A b. C d!", "A b c d."),
    ({"type": "sentence_count_at_most", "n": 1}, "A b c.", "Go now. Stop."),
    ({"type": "paragraphs", "n": 2}, "a\n***\nb", "a\n***\n***\nb"),
    ({"type": "paragraph_first_word", "n": 2, "i": 2, "word": "sky"}, "a\n***\nSky is", "a\n***\nThe sky"),
    ({"type": "bullet_points", "n": 2}, "* a\n* b", "* a\n* b\n- c"),
    ({"type": "sections", "n": 2}, "SECTION 1 a SECTION 2 b", "SECTION 1 a"),
    ({"type": "keywords", "words": ["echo"]}, "an Echo here", "echoes"),
    ({"type": "keyword_frequency", "word": "ember", "n": 2}, "ember and ember", "ember embers"),
    ({"type": "forbidden_words", "words": ["stone"]}, "stones", "a Stone"),
    ({"type": "letter_frequency", "letter": "e", "n": 3}, "eEe", "ee"),
    ({"type": "lowercase"}, "all lower", "Not lower"),
    ({"type": "uppercase"}, "ALL UP 1", "ALL Up"),
    ({"type": "capital_words_at_least", "n": 2}, "YES and NO", "YES and no"),
    ({"type": "capital_words_at_most", "n": 2}, "ONE cap", "ONE TWO"),
    ({"type": "start_with", "phrase": "In short"}, "  in short, yes", "Yes, in short"),
    ({"type": "end_with", "phrase": "That is all."}, "Done. That is all.", "That is all. Done."),
    ({"type": "no_commas"}, "a b", "a, b"),
    ({"type": "title"}, "<<my title>>\nbody", "<<>> body"),
    ({"type": "placeholders", "n": 2}, "[a] and [b]", "[a] only"),
    ({"type": "highlights", "n": 1}, "a *bold* word", "a ** word"),
    ({"type": "postscript", "marker": "P.S."}, "body\n\nP.S. more", "body P.S. more"),
    ({"type": "json_format"}, '```json\n{"a": 1}\n```', "{'a': 1}"),
    ({"type": "quotation"}, '"quoted"', '"half'),
    ({"type": "two_responses"}, "one\n******\ntwo", "one\n******\none"),
    ({"type": "repeat_prompt", "request": "Write it."}, "write it. Done", "Done. Write it."),
])
def test_each_constraint_checker_by_hand(constraint, good, bad):
    assert ifeval.check(constraint, good)
    assert not ifeval.check(constraint, bad)
    assert not ifeval.check(constraint, violation(constraint))


@pytest.mark.parametrize("answer", ["", "   ", "\n\t \n", "...", ", ; !?", "12 345", "***", "<< >>", "\u00a0"])
def test_answers_without_a_letter_follow_no_instruction(answer):
    """Google's IFEval fails empty responses; constraints like "at most N words",
    "no commas" or "lowercase" must not hold vacuously, for any constraint type."""
    env = IFEvalEnvironment(train_size=3000)
    tasks = env.tasks("train")
    for kind in ifeval.CONSTRAINTS:
        task = next(t for t in tasks if kind in t.meta["types"])
        constraint = next(c for c in task.answer if c["type"] == kind)
        assert not ifeval.check(constraint, answer) and not ifeval.check_loose(constraint, answer), kind
        assert env.score(task, f"<think>x</think>{answer}").reward == 0.0


@pytest.mark.parametrize("text,n", [
    ("Dr. Smith met Mrs. Jones in the U.S. last year. They talked.", 2),
    ("It costs 3.50 dollars, e.g. at the shop. Fine.", 2),
    ("Mr. J. R. R. Tolkien wrote it in 1937. It sold!", 2),
    ("One. Two? Three!", 3),
    ("No end mark at all", 1),
])
def test_sentence_counts_survive_abbreviations_and_decimals(text, n):
    assert ifeval.count_sentences(text) == n


@pytest.mark.parametrize("blank", ["<< >>", "<<\t>>", "<<   >>"])
def test_a_blank_title_is_no_title(blank):
    assert not ifeval.check({"type": "title"}, f"{blank}\nThe body of the answer.")


@pytest.mark.parametrize("blank", ["* *", "*   *", "*\t*"])
def test_a_blank_highlight_is_no_highlight(blank):
    assert not ifeval.check({"type": "highlights", "n": 1}, f"Some text {blank} and more text.")
    assert ifeval.check({"type": "highlights", "n": 1}, "Some text *this part* and more.")


def test_ifeval_loose_mode_as_ifeval_defines_it():
    c = {"type": "start_with", "phrase": "In short"}
    text = "Sure! Here you go:\nIn short, the sea is calm."
    assert not ifeval.check(c, text) and ifeval.check_loose(c, text)  # first line removed
    c = {"type": "highlights", "n": 1}
    assert not ifeval.check_loose({"type": "title"}, "no title at all")
    task = Task("t", "ifeval", [{"role": "user", "content": "x"}], [c, {"type": "start_with", "phrase": "In short"}])
    strict = IFEvalEnvironment(mode="strict").score(task, "<think></think>Sure:\nIn short *yes*")
    loose = IFEvalEnvironment(mode="loose").score(task, "<think></think>Sure:\nIn short *yes*")
    assert strict.reward == 0.0 and strict.components["strict_fraction"] == 0.5
    assert loose.reward == 1.0 and loose.components["loose"] == 1.0


def test_ifeval_reads_only_the_answer_part():
    task = Task("t", "ifeval", [], [{"type": "keywords", "words": ["echo"]}])
    env = IFEvalEnvironment()
    assert env.score(task, "<think>echo</think>nothing").reward == 0.0
    assert env.score(task, "echo without think").reason.startswith("format")


# --------------------------------------------------------- structured


def test_strict_schema_requires_everything_and_forbids_extras():
    schema = {"type": "object", "properties": {"a": {"type": "integer"},
                                               "b": {"type": "object", "properties": {"c": {"type": "string"}}}}}
    strict = make_strict(schema)
    assert validate_answer('{"a": 1, "b": {"c": "x"}}', strict) == (True, True, None)
    assert validate_answer('{"a": 1}', strict)[1] is False                      # missing b
    assert validate_answer('{"a": 1, "b": {"c": "x", "d": 2}}', strict)[1] is False  # extra, nested
    assert validate_answer('{"a": "1", "b": {"c": "x"}}', strict)[1] is False    # wrong type
    assert validate_answer('```json\n{"a": 1, "b": {"c": "x"}}\n```', strict)[2].startswith("format: markdown")
    assert "required" not in schema  # the original is untouched


KEYWORD_NAMES = ["properties", "required", "type", "items", "additionalProperties", "anyOf", "$defs"]


@pytest.mark.parametrize("name", KEYWORD_NAMES)
def test_strict_schema_leaves_properties_named_like_keywords_alone(name):
    """Property names are data, not keywords: making a schema strict must not
    rewrite the ``properties`` map, at any depth, and answers carrying such keys score."""
    inner = {"type": "object", "properties": {name: {"type": "integer"}, "b": {"type": "string"}}}
    schema = {"type": "object", "properties": {name: {"type": "boolean"}, "child": inner,
                                               "list": {"type": "array", "items": inner}}}
    strict = make_strict(schema)
    for node in (strict, strict["properties"]["child"], strict["properties"]["list"]["items"]):
        assert set(node["properties"]) - {"child", "list"} in ({name, "b"}, {name}), node["properties"].keys()
        assert node["additionalProperties"] is False and set(node["required"]) == set(node["properties"])
    good = {name: True, "child": {name: 1, "b": "x"}, "list": [{name: 2, "b": "y"}]}
    assert validate_answer(json.dumps(good), strict) == (True, True, None)
    bad = {name: True, "child": {name: "not an int", "b": "x"}, "list": []}
    parses, valid, reason = validate_answer(json.dumps(bad), strict)
    assert parses and not valid and reason.startswith("schema:")
    extra = {**good, "extra": 1}
    assert validate_answer(json.dumps(extra), strict)[1] is False


def test_structured_generated_tasks_and_scoring():
    env = StructuredOutputEnvironment(train_size=300)
    tasks = env.tasks("train")
    assert len(tasks) == 300 and not {t.id for t in tasks} & {t.id for t in env.tasks("test")}
    for t in tasks:
        assert env.score(t, t.reference).reward == 1.0
        s = env.score(t, env.wrong_completion(t, []))
        assert s.reward == 0.0 and s.components["parses"] == 0.0


# ------------------------------------------------------ multiple choice


@pytest.mark.parametrize("answer,expected", [
    ("B", "B"), ("(C)", "C"), ("D.", "D"), ("The answer is A.", "A"), ("answer: (b)", None),
    ("Answer: B", "B"), ("\\boxed{C}", "C"), ("I pick A, not B", None), ("nothing here", None),
    ("A) 12 is it", "A"), ("Option E", None),
])
def test_choice_extraction(answer, expected):
    assert extract_choice(answer, "ABCD") == expected


def test_mcq_letter_comes_from_the_answer_part_only():
    env = MultipleChoiceEnvironment(train_size=200)
    tasks = env.tasks("train")
    for t in tasks:
        assert env.score(t, t.reference).reward == 1.0
    t = tasks[0]
    other = next(letter for letter in t.meta["letters"] if letter != t.answer)
    assert env.score(t, f"<think>{t.answer}</think>{other}").reward == 0.0
    assert env.score(t, f"<think>maybe {other}</think>The answer is {t.answer}").reward == 1.0


def test_mcq_worked_references_name_the_right_option_and_keep_the_tasks():
    plain = MultipleChoiceEnvironment(train_size=300).tasks("train")
    worked_env = MultipleChoiceEnvironment(train_size=300, worked=True)
    worked = worked_env.tasks("train")
    assert [t.id for t in worked] == [t.id for t in plain]  # same questions, same split
    kinds = set()
    for t in worked:
        assert worked_env.score(t, t.reference).reward == 1.0
        working, letter = t.reference.removeprefix("<think>").split("</think>")
        question, *options = t.messages[0]["content"].splitlines()[:-1]
        right = options["ABCD".index(letter)].split(") ", 1)[1]
        if question.startswith("What is"):  # 23*10 = 230: the computation, then the right value
            expr, value = working.split(" = ")
            assert expr == question.removeprefix("What is ").removesuffix("?") and value == right == str(eval(expr))
            kinds.add("arithmetic")
        else:  # "187 is the largest", "apple comes first"
            assert working.split(" ")[0] == right
            kinds.add(question)
    assert len(kinds) == 3
    assert all(t.reference == f"<think></think>{t.answer}" for t in plain)


def test_mcq_arithmetic_operands_set_the_sums_difficulty_and_leave_the_default_tasks_alone():
    digest = lambda tasks: hashlib.sha256("\n".join(t.id + t.reference for t in tasks).encode()).hexdigest()[:16]
    default = MultipleChoiceEnvironment()
    # the task sets that the mixed config's warm-up and measured rows were made from
    assert (digest(default.tasks("train")), digest(default.tasks("test"))) == ("fd67683c289f0a0f", "4ae772109b98dd24")
    small = MultipleChoiceEnvironment(train_size=600, arithmetic_operands=[2, 9], worked=True)
    kinds = {1: 0, 2: 0}
    for t in small.tasks("train"):
        kinds[t.difficulty] += 1
        question = t.messages[0]["content"].splitlines()[0]
        assert (t.difficulty == 2) == question.startswith("What is")
        if t.difficulty == 2:
            a, b = re.fullmatch(r"What is (\d+)[-+*](\d+)\?", question).groups()
            assert 2 <= int(a) <= 9 and 2 <= int(b) <= 9
        assert small.score(t, t.reference).reward == 1.0
    assert kinds[2] > 100 and kinds[1] > 2 * 100  # a third of the questions are sums, as by default
    for bad in ([9, 2], [2], "2-9", [2.0, 9], [-1, 9]):
        with pytest.raises(ValueError, match="environments.mcq.arithmetic_operands"):
            MultipleChoiceEnvironment(arithmetic_operands=bad)


# ----------------------------------------------------------- task files


def test_malformed_task_file_rows_name_file_and_line(tmp_path):
    good = {"question": "2+2?", "choices": ["3", "4"], "answer": "B"}
    cases = {
        "not valid JSON": "{oops",
        "missing field 'choices'": json.dumps({"question": "q", "answer": "A"}),
        "'answer' must be one of": json.dumps({**good, "answer": "Z"}),
        "expected a JSON object": "[1, 2]",
    }
    for expected, bad_line in cases.items():
        path = tmp_path / "train.jsonl"
        path.write_text(json.dumps(good) + "\n\n" + bad_line + "\n")
        with pytest.raises(DataError) as err:
            load_tasks("mcq", {"data_files": {"train": str(path)}}, "train")
        assert f"{path}:3:" in str(err.value) and expected in str(err.value)
    path.write_text(json.dumps(good) + "\n")
    (task,) = load_tasks("mcq", {"data_files": {"train": str(path)}}, "train")
    assert task.answer == "B" and "B) 4" in task.messages[0]["content"]

    bad_schema = tmp_path / "s.jsonl"
    bad_schema.write_text(json.dumps({"prompt": "p", "schema": {"type": "no-such-type"}}) + "\n")
    with pytest.raises(DataError, match=r"s.jsonl:1: invalid JSON schema"):
        load_tasks("structured", {"data_files": {"train": str(bad_schema)}}, "train")
    bad_constraint = tmp_path / "i.jsonl"
    bad_constraint.write_text(json.dumps({"prompt": "p", "constraints": [{"type": "rhymes"}]}) + "\n")
    with pytest.raises(DataError, match=r"i.jsonl:1: unknown constraint type 'rhymes'"):
        load_tasks("ifeval", {"data_files": {"train": str(bad_constraint)}}, "train")


# ----------------------------------------------- robustness (hostile output)


@pytest.fixture(scope="module")
def pool(tmp_path_factory, monkeypatch_module):
    monkeypatch_module.syspath_prepend(str(TESTS))
    tok = tmp_path_factory.mktemp("tok")
    build_tokenizer().save_pretrained(tok)
    specs = {"math": {}, "ifeval": {}, "structured": {}, "mcq": {}, "plugins.hostile_env:Hostile": {}}
    p = EnvironmentPool(specs, str(tok), timeouts={name: 3.0 for name in specs}, memory_limit_mb=1024)
    yield p
    p.close()


def test_an_environment_that_never_constructs_fails_with_its_name(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    build_tokenizer().save_pretrained(tmp_path)
    t = time.monotonic()
    with pytest.raises(ValueError, match=r"environments.plugins.hostile_env:HangsOnConstruction: its constructor "
                                         r"did not return within 3 s"):
        EnvironmentPool({"math": {}, "plugins.hostile_env:HangsOnConstruction": {}}, str(tmp_path),
                        construct_timeout_s=3)
    assert time.monotonic() - t < 30
    with pytest.raises(ValueError, match=r"^environments.math: .*bogus"):
        EnvironmentPool({"math": {"bogus": 1}}, str(tmp_path))


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


HOSTILE = {
    "megabyte string": "<think></think>" + "9" * 3_000_000,
    "megabyte of boxes": "<think></think>" + "\\boxed{" * 300_000,
    "deeply nested JSON": "<think></think>" + "[" * 500_000 + "]" * 500_000,
    "nested objects": "<think></think>" + '{"a":' * 200_000 + "1" + "}" * 200_000,
    "catastrophic backtracking": "<think></think>" + "answer is " * 50_000 + "(" * 50_000 + "!",
    "power tower": "<think></think>\\boxed{9^9^9^9}",
    "huge factorial": "<think></think>\\boxed{(10^10)!}",
    "binary junk": "<think></think>" + "".join(chr(i % 0x2FF) for i in range(200_000)),
    "no think": "\\boxed{1}" * 10_000,
}


@pytest.mark.parametrize("env", ["math", "ifeval", "structured", "mcq"])
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_output_scores_zero_within_the_time_limit(pool, env, case):
    task = load_tasks(env, {}, "test")[0]
    start = time.monotonic()
    score = pool.score_text(task, HOSTILE[case])
    elapsed = time.monotonic() - start
    assert score.reward == 0.0 and score.reason, score
    assert elapsed < 3.0 + 2.0, f"{case} on {env} took {elapsed:.1f}s"


@pytest.mark.parametrize("action,reason", [
    ("raise", "verifier error: RuntimeError: verifier bug"),
    ("hang", "verifier timeout after 3s"),
    ("crash", "verifier crashed"),
    ("memory", "verifier error: out of memory"),
    ("garbage", "invalid score"),
    ("nan", "invalid score"),
])
def test_misbehaving_verifier_costs_one_sample_not_the_run(pool, action, reason):
    task = Task("hostile/0", "plugins.hostile_env:Hostile", [], "ok")
    start = time.monotonic()
    score = pool.score_text(task, f"<think></think>{action}")
    assert score.reward == 0.0 and reason in score.reason, score
    assert time.monotonic() - start < 3.0 + 2.0
    assert pool.score_text(task, "<think></think>ok").reward == 1.0  # the host is back


def test_a_hung_verifier_is_killed_with_its_children(pool):
    """Issue 20, item 8: the process tree of a timed-out verifier goes with it."""
    import psutil

    task = Task("hostile/0", "plugins.hostile_env:Hostile", [], "ok")
    score = pool.score_text(task, "<think></think>spawn-and-hang:4242")
    assert score.reward == 0.0 and "timeout" in score.reason

    def orphans():
        return [p for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [])[-2:] == ["300", "4242"]]

    deadline = time.monotonic() + 5
    while orphans() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not orphans()


class _Vacuous(StructuredOutputEnvironment):
    """A verifier with the classic hole: it rewards whatever is not wrong."""

    def score(self, task, completion):
        from environments.base import Score

        return Score(0.0 if "wrong" in completion else 1.0, {})

    def wrong_completion(self, task, others):
        return "wrong"


def test_env_check_fails_an_environment_that_rewards_empty_blank_or_huge_answers(monkeypatch):
    from environments import registry, tools

    real = registry.environment_class
    monkeypatch.setattr(registry, "environment_class", lambda name: _Vacuous if name == "vacuous" else real(name))
    report = tools.check("vacuous", {"train_size": 20, "test_size": 5}, splits=("train",), limit=5)
    assert not report["ok"]
    cases = {e["case"] for e in report["splits"]["train"]["examples"]}
    assert "empty" in cases and "whitespace" in cases, report
    for name in ("math", "ifeval", "structured", "mcq"):  # the built-in ones hold
        assert tools.check(name, splits=("test",), limit=5)["ok"], name
