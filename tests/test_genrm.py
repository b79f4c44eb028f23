"""GenRM circular comparison, tie rule, base rewards, length control and the
judge-training reward, against numbers computed by hand."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from reward_models.genrm import (Judgement, base_rewards, circular_pairs, judge_reward, length_control,
                                 parse_judgement, percentile, swapped, tie_adjusted)

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("n", [2, 3, 4, 8, 16])
def test_circular_pairs_are_n_calls_each_response_twice_once_per_position(n):
    pairs = circular_pairs(n)
    assert len(pairs) == n
    assert Counter(a for a, _ in pairs) == Counter(range(n)) == Counter(b for _, b in pairs)
    assert all(a != b for a, b in pairs)


def test_circular_pairs_need_two():
    with pytest.raises(ValueError):
        circular_pairs(1)


def test_tie_rule():
    assert tie_adjusted(Judgement(3, 3, 2)) == (4.5, 1.5)   # tie, first better by a margin of 2
    assert tie_adjusted(Judgement(3, 3, 5)) == (1.5, 4.5)
    assert tie_adjusted(Judgement(2, 2, 3)) == (2.5, 1.5)
    assert tie_adjusted(Judgement(4, 2, 6)) == (4.0, 2.0)   # no tie: scores as given


def test_base_rewards_by_hand():
    # pairs (0,1), (1,2), (2,0)
    j = [Judgement(4, 2, 1), Judgement(3, 3, 2), Judgement(5, 1, 1)]
    assert base_rewards(3, j) == ([2.5, 3.25, 3.25], 0)       # r0=(4+1)/2, r1=(2+4.5)/2, r2=(1.5+5)/2
    assert base_rewards(3, [j[0], None, j[2]]) == ([2.5, 2.0, 5.0], 0)  # a dropped call: the other score
    assert base_rewards(3, [None, j[1], None]) == ([3.0, 4.5, 1.5], 1)  # no score left: group mean
    assert base_rewards(3, [None, None, None]) == ([0.0, 0.0, 0.0], 3)


def test_parse_judgement_is_strict():
    ok = '{"score_1": 4, "score_2": 2, "ranking": 2}'
    assert parse_judgement(ok) == Judgement(4, 2, 2)
    assert parse_judgement("<think>compare</think> " + ok) == Judgement(4, 2, 2)
    for bad in ['```json\n' + ok + '\n```', '{"score_1": 4.0, "score_2": 2, "ranking": 2}',
                '{"score_1": true, "score_2": 2, "ranking": 2}', '{"score_1": 6, "score_2": 2, "ranking": 2}',
                '{"score_1": 4, "score_2": 2, "ranking": 7}', '{"score_1": 4, "score_2": 2}',
                '{"score_1": 4, "score_2": 2, "ranking": 2, "why": "x"}', "[" * 100_000, "4, 2, 2", ""]:
        assert parse_judgement(bad) is None, bad


def test_percentile_matches_numpy_linear():
    assert percentile([3, 2, 4, 1], 0.8) == pytest.approx(3.4)
    assert percentile([5.0], 0.8) == 5.0
    assert percentile([1, 2], 0.5) == 1.5


def test_length_control_without_bonus_by_hand():
    out = length_control([3, 2, 4, 1], think_lengths=[10, 20, 0, 40], answer_lengths=[5, 5, 5, 5])
    # think w = [.75, .5, 1, 0], mean .5625, centred [.1875, -.0625, .4375, -.5625], x0.5
    assert out.think_adjustment == pytest.approx([0.09375, -0.03125, 0.21875, -0.28125])
    assert out.answer_adjustment == [0.0] * 4                     # equal lengths: no adjustment
    assert sum(out.think_adjustment) == pytest.approx(0.0)        # zero-sum
    # shortest non-empty reasoning is #0 (10), base 3 < 80th percentile 3.4: no bonus
    assert out.bonus == [0.0] * 4
    assert out.rewards == pytest.approx([3.09375, 1.96875, 4.21875, 0.71875])


def test_length_control_bonus_is_gated_at_the_80th_percentile():
    out = length_control([3, 2, 4, 1], think_lengths=[30, 20, 10, 40], answer_lengths=[3, 0, 8, 5])
    assert out.think_adjustment == pytest.approx([-1 / 12, 1 / 12, 0.25, -0.25])
    assert out.answer_adjustment == pytest.approx([0.0625, 0.25, -0.25, -0.0625])
    # shortest reasoning: #2 (base 4 >= 3.4) gets the bonus; shortest non-empty answer: #0 (base 3): none
    assert out.bonus == [0.0, 0.0, 0.5, 0.0]
    assert out.rewards == pytest.approx([3 - 1 / 12 + 0.0625, 2 + 1 / 12 + 0.25, 4.5, 0.6875])
    assert sum(out.rewards) - sum([3, 2, 4, 1]) == pytest.approx(0.5)  # only the bonus adds reward


def test_length_control_coefficients_are_knobs():
    out = length_control([1, 1], [1, 3], [2, 2], lam_think=1.0, lam_answer=0.0, bonus=0.0)
    assert out.rewards == pytest.approx([1.5, 0.5])


def test_judge_reward_and_swapped_pairs():
    truth = Judgement(4, 2, 2)
    assert judge_reward('{"score_1": 5, "score_2": 2, "ranking": 4}', truth)[0] == -3.0  # -(1 + 0 + 1*2)
    assert judge_reward('{"score_1": 4, "score_2": 2, "ranking": 2}', truth)[0] == 0.0
    assert judge_reward("not json", truth) == (-10.0, None)
    assert judge_reward('{"score_1": 1, "score_2": 5, "ranking": 6}', truth, c2=2.0)[0] == -(3 + 3 + 2 * 4)
    assert swapped(truth) == Judgement(2, 4, 5) and swapped(swapped(truth)) == truth


# ------------------------------------------------- judge worker and judge env


class _ScriptedJudgeEngine:
    """Answers the i-th call's prompts with scripted texts."""

    def __init__(self, tok, rounds):
        self.tok, self.rounds, self.seen = tok, rounds, []

    def generate(self, prompts, settings):
        from rl.rollout import Completion

        texts = self.rounds[len(self.seen)]
        self.seen.append(len(prompts))
        return [[Completion(self.tok.encode(t, add_special_tokens=False), [0.0], False)] for t in texts]


def test_judge_retries_unparseable_answers_then_counts_failures():
    from reward_models.judge import Judge
    from rl.models import build_tokenizer

    good = '{"score_1": 4, "score_2": 2, "ranking": 2}'
    judge = Judge.__new__(Judge)
    judge.tokenizer = build_tokenizer()
    judge.max_new_tokens, judge.temperature, judge.retries = 32, 1.0, 2
    judge.engine = _ScriptedJudgeEngine(judge.tokenizer, [[good, "nonsense", "{}"], [good, "nope"], ["still no"]])
    prompts = [[{"role": "user", "content": f"q{i}"}] for i in range(3)]
    results, counters = judge.judge(prompts)
    assert judge.engine.seen == [3, 2, 1]  # only the failed ones are asked again
    assert results == [Judgement(4, 2, 2), Judgement(4, 2, 2), None]
    assert counters == {"judge/calls": 6.0, "judge/retries": 3.0, "judge/failures": 1.0}


def test_judge_environment_reads_pairs_adds_swapped_ones_and_scores_by_the_recipe(tmp_path):
    from environments.base import DataError
    from environments.registry import make_environment

    rows = [{"prompt": "2+2?", "response_1": "4", "response_2": "5", "score_1": 5, "score_2": 1, "ranking": 1},
            {"conversation": [{"role": "user", "content": "hi"}], "response_1": "a", "response_2": "b",
             "score_1": 3, "score_2": 3, "ranking": 4}]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    env = make_environment("genrm", {"data_files": {"train": str(path)}})
    tasks = env.tasks("train")
    assert len(tasks) == 4 and tasks[2].id.endswith("-swapped")
    assert tasks[2].answer == {"score_1": 1, "score_2": 5, "ranking": 6}
    assert "Answer 1:\n5\nAnswer 2:\n4" in tasks[2].messages[0]["content"]
    assert env.score(tasks[0], tasks[0].reference).reward == 0.0
    s = env.score(tasks[0], '{"score_1": 4, "score_2": 2, "ranking": 3}')
    assert s.reward == -(1 + 1 + 2) and s.components["preference_right"] == 1.0
    assert env.score(tasks[0], "```json\n{}\n```").reward == -10.0
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**rows[0], "ranking": 7}) + "\n")
    env = make_environment("genrm", {"data_files": {"train": str(bad)}})
    with pytest.raises(DataError, match=r"bad.jsonl:1: 'ranking' must be an integer in 1..6"):
        env.tasks("train")


def test_judge_reasoning_in_the_reference_follows_the_answers_when_swapped(tmp_path):
    from environments.base import DataError
    from environments.registry import make_environment

    row = {"prompt": "2+2?", "response_1": "4", "response_2": "5", "score_1": 5, "score_2": 1, "ranking": 1,
           "analysis": "2+2=4", "notes": ["4 right", "5 wrong"]}
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(row) + "\n")
    env = make_environment("genrm", {"data_files": {"train": str(path)}})
    plain, flipped = env.tasks("train")
    assert plain.reference == '<think>2+2=4 1: 4 right 2: 5 wrong</think>{"score_1": 5, "score_2": 1, "ranking": 1}'
    assert flipped.reference == '<think>2+2=4 1: 5 wrong 2: 4 right</think>{"score_1": 1, "score_2": 5, "ranking": 6}'
    assert env.score(plain, plain.reference).reward == 0.0 and env.score(flipped, flipped.reference).reward == 0.0
    path.write_text(json.dumps({**row, "notes": ["only one"]}) + "\n")
    with pytest.raises(DataError, match=r"pairs.jsonl:1: 'notes' must be a list of two strings"):
        make_environment("genrm", {"data_files": {"train": str(path)}}).tasks("train")


def test_synthetic_pairs_carry_the_arithmetic_and_a_verdict_per_answer():
    from environments.registry import make_environment

    one, four = (make_environment("genrm", {"pairs_per_question": k}) for k in (1, 4))
    for split in ("train", "test"):
        assert len(four.tasks(split)) == 4 * len(one.tasks(split))
        assert len({t.id for t in four.tasks(split)}) == len(four.tasks(split))
    questions = {s: {t.meta["conversation"][0]["content"] for t in four.tasks(s)} for s in ("train", "test")}
    assert not questions["train"] & questions["test"]
    env = make_environment("genrm", {"train_size": 40, "test_size": 10})
    for task in env.tasks("train"):
        question = task.meta["conversation"][0]["content"]
        assert task.meta["analysis"] == f"{question}={eval(question)}"  # noqa: S307 - our own arithmetic
        for response, note in zip(task.meta["responses"], task.meta["notes"]):
            value = response.split("{")[1].split("}")[0]
            gold = str(eval(question))  # noqa: S307 - our own arithmetic
            verdict = "wrong" if value != gold else ("right, short" if len(response) <= 16 else "right, long")
            assert note == f"{value} vs {gold}: {verdict}"


def test_policy_answers_become_labelled_pairs_right_against_wrong_first(tmp_path):
    """A policy's own answers to 8+4: two right and short, one right and padded,
    one wrong, one without a box; the labels and notes by hand."""
    from environments.base import DataError
    from environments.registry import make_environment

    completions = ["<think>8+4=12</think>\\boxed{12}", "<think>8+4=12</think> \\boxed{12}",
                   "<think>8+4=12</think>\\boxed{12} That is the result.", "<think>8+4=13</think>\\boxed{13}",
                   "<think>8+4</think>twelve"]
    row = {"question": "8+4", "answer": "12", "reference": "<think>8+4=12</think>\\boxed{12}",
           "completions": completions}
    path = tmp_path / "answers.jsonl"
    path.write_text(json.dumps(row) + "\n")
    env = make_environment("genrm", {"train_size": 10, "policy_answers": str(path), "policy_pairs_per_question": 9,
                                     "swap": False})
    pairs = [t for t in env.tasks("train") if t.id.startswith("policy-")]
    # 5 answers, 10 pairs, one of two identical answer texts ("\boxed{12}" twice) left out: 9;
    # equally good: the two right short ones with each other (none left) -> every pair is strict but
    # right-short against right-short, of which there are none after dropping the duplicate
    assert len(pairs) == 9
    truth = {"\\boxed{12}": 5, "\\boxed{12} That is the result.": 4, "\\boxed{13}": 1, "twelve": 1}
    notes = {"\\boxed{12}": "12 vs 12: right, short", "\\boxed{12} That is the result.": "12 vs 12: right, long",
             "\\boxed{13}": "13 vs 12: wrong", "twelve": "twelve vs 12: wrong"}
    strict = 0
    for t in pairs:
        r1, r2 = t.meta["responses"]
        assert (t.answer["score_1"], t.answer["score_2"]) == (truth[r1], truth[r2])
        assert t.meta["notes"] == [notes[r1], notes[r2]] and t.meta["analysis"] == "8+4=12"
        assert (t.answer["ranking"] <= 3) == (truth[r1] > truth[r2]) or truth[r1] == truth[r2]
        strict += truth[r1] != truth[r2]
    assert strict == 8  # the one equal pair (13 against twelve: both wrong) comes last
    assert truth[pairs[-1].meta["responses"][0]] == truth[pairs[-1].meta["responses"][1]] == 1
    assert make_environment("genrm", {"train_size": 10, "policy_answers": str(path)}).tasks("test") == \
        make_environment("genrm", {"train_size": 10}).tasks("test")  # the training split only
    path.write_text(json.dumps({**row, "completions": "12"}) + "\n")
    with pytest.raises(DataError, match=r"answers.jsonl:1: 'completions' must be a list of strings"):
        make_environment("genrm", {"policy_answers": str(path)}).tasks("train")


def test_preference_environment_scores_the_truth_by_hand():
    """1 correct and short, 0.75 correct and long (> 16 characters after the
    reasoning), 0 wrong or unparseable; a padded reference earns what it is worth."""
    from environments.registry import make_environment
    from environments.tools import check

    env = make_environment("preference", {"padded_references": 0.5, "copies": 4})
    tasks = env.tasks("train")
    copies = [t for t in tasks if t.messages[0]["content"] == "8+4"]
    assert [(t.id, t.env, t.answer) for t in copies] == [(f"preference/8+4#{k}", "preference", "12") for k in range(4)]
    assert len(tasks) == 4 * len(make_environment("preference", {"copies": 1}).tasks("train"))
    task = copies[0]
    cases = {"<think>8+4=12</think>\\boxed{12}": (1.0, None),
             "<think>8+4=12</think>\\boxed{12} Done.": (1.0, None),  # 16 characters: still short
             "<think>8+4=12</think>\\boxed{12} That is it.": (0.75, "answer longer than 16 characters"),
             "<think>8+4=13</think>\\boxed{13}": (0.0, "wrong answer"),
             "<think>8+4=12</think>12": (0.0, "format: no \\boxed{} answer")}
    for completion, (reward, reason) in cases.items():
        score = env.score(task, completion)
        assert (score.reward, score.reason) == (reward, reason), completion
    assert env.score(task, "<think>x</think>\\boxed{12} That is it.").components == {
        "format": 1.0, "correct": 1.0, "short": 0.0, "answer_chars": 22.0}
    padded = [t for t in tasks if not t.reference.endswith("}")]
    assert 0.35 < len(padded) / len(tasks) < 0.65
    assert {env.reference_reward(t) for t in padded} == {1.0, 0.75}
    assert check("preference", {"padded_references": 0.5}, limit=50)["ok"]
    assert all(t.reference.endswith("}") for t in make_environment("preference", {"padded_references": 0}).tasks("train"))
    with pytest.raises(ValueError, match="environments.preference.padded_references"):
        make_environment("preference", {"padded_references": 1.5})
    with pytest.raises(ValueError, match="environments.preference.copies"):
        make_environment("preference", {"copies": 0})


def test_verifier_agreement_counts_judge_errors_tie_noise_and_noise_groups():
    """Four equally right answers judged with the tie rule (3 or 4 at equal
    helpfulness): every comparison is a verifier tie with spread 1 and the
    group is a noise group; a wrong answer ranked below is agreement."""
    from reward_models.genrm import base_rewards, verifier_agreement

    def agreement(judgements, verifier):
        return verifier_agreement(judgements, base_rewards(len(verifier), judgements)[0], verifier)

    ties = [Judgement(5, 5, 3), Judgement(5, 5, 4), Judgement(5, 5, 4), Judgement(5, 5, 3)]
    out = agreement(ties, [1.0, 1.0, 1.0, 1.0])
    # base rewards 5.0, 4.5, 5.0, 5.5 (each the mean of two +-0.5 tie adjustments): not all equal
    assert out == {"compared": 0.0, "agreed": 0.0, "tied": 4.0, "tie_spread": 4.0, "noise_groups": 1.0}
    mixed = [Judgement(5, 1, 1), Judgement(1, 5, 5), None, Judgement(5, 5, 3)]  # pairs (0,1) (1,2) (2,3) (3,0)
    out = agreement(mixed, [1.0, 0.0, 1.0, 1.0])
    assert out == {"compared": 2.0, "agreed": 2.0, "tied": 1.0, "tie_spread": 1.0, "noise_groups": 0.0}
    wrong = agreement([Judgement(1, 5, 6), Judgement(5, 1, 1)], [1.0, 0.0])  # pairs (0,1), (1,0)
    assert (wrong["compared"], wrong["agreed"]) == (2.0, 0.0)
    assert agreement([Judgement(5, 5, 3), Judgement(5, 5, 3)], [1.0, 1.0])["noise_groups"] == 0.0


def test_trainer_judges_each_group_in_a_circle_and_returns_additive_counters():
    """GenRMReward with a scripted judge: N calls per group of N, base
    rewards from the judgements, zero-sum length control, counters that sum
    over dynamic-sampling rounds."""
    from environments.base import Score, Task
    from rl.config import load_config
    from rl.models import build_tokenizer
    from rl.rollout import Completion
    from reward_models.group_reward import GenRMReward, JudgeStats
    from rl.rollouts import Group

    tok = build_tokenizer()
    answers = [["\\boxed{4}", "\\boxed{4} Done.", "\\boxed{5}"], ["\\boxed{9}", "\\boxed{8}", "\\boxed{9}"]]
    groups = [Group(Task(id=f"t{i}", env="math", messages=[{"role": "user", "content": "2+2"}], answer="4"),
                    [1], [Completion(tok.encode(f"<think>x</think>{a}", add_special_tokens=False), [], False) for a in group],
                    [Score(1.0 if "4}" in a else 0.0, {"format": 1.0}) for a in group])
              for i, group in enumerate(answers)]
    seen = []

    class ScriptedJudge:  # the first answer is always better; the batch's last two comparisons fail
        def judge(self, prompts):
            seen.extend(prompts)
            out = [Judgement(5, 2, 1) for _ in prompts[:-2]] + [None, None]
            return out, {"judge/calls": float(len(prompts)), "judge/retries": 0.0, "judge/failures": 2.0}

    cfg = load_config(None, ["rlhf.length_control.enabled=true", "rlhf.length_control.bonus=0.0"])
    stage = GenRMReward(ScriptedJudge(), lambda ids: tok.decode(ids, skip_special_tokens=True),
                        cfg.rlhf.length_control)
    counters = stage(groups)
    assert len(seen) == 6  # N judge calls per group of N
    assert "Answer 1:\n\\boxed{4}\nAnswer 2:\n\\boxed{4} Done." in seen[0][0]["content"]  # pair (0, 1)
    assert "Answer 1:\n\\boxed{5}\nAnswer 2:\n\\boxed{4}" in seen[2][0]["content"]  # pair (2, 0)
    judged = ([Judgement(5, 2, 1)] * 3, [Judgement(5, 2, 1), None, None])  # answer 3 of group 2: no score
    # against the verifier (group 1: [1, 1, 0], group 2: all 0): pair (0, 1) of each group is a verifier
    # tie judged 5 vs 2 (spread 3); group 1's (1, 2) agrees, its (2, 0) does not; group 2 is all equal but
    # its base rewards are 5, 2 and 3.5 (the fallback): a noise group
    assert counters == JudgeStats(calls=6.0, retries=0.0, failures=2.0, responses=6.0, unscored=1.0, bonuses=0.0,
                                  groups=2.0, compared=2.0, agreed=1.0, tied=2.0, tie_spread=6.0, noise_groups=1.0)
    m = counters.metrics()
    assert m["rlhf/unscored_frac"] == pytest.approx(1 / 6)
    assert (m["rlhf/judge_agreement"], m["rlhf/tie_spread"], m["rlhf/verifier_tied_frac"],
            m["rlhf/noise_groups_frac"]) == (0.5, 3.0, 0.5, 0.5)
    for gr, j in zip(groups, judged):
        base, _ = base_rewards(3, j)
        assert [s.components["base"] for s in gr.scores] == base
        assert abs(sum(s.reward for s in gr.scores) - sum(base)) < 1e-9  # length control is zero-sum
        assert [s.components["verifier"] for s in gr.scores] == [1.0 if "4}" in a else 0.0 for a in answers[groups.index(gr)]]
        assert all(s.components["verifier/format"] == 1.0 for s in gr.scores)


def test_groups_the_judge_ties_throughout_get_equal_base_rewards_when_asked():
    """rlhf.tied_groups: a group whose every valid comparison has h1 == h2 keeps the tie rule's
    +-0.5 under "tie_rule" (the recipe) and gets one base reward under "equal"; one strict
    comparison keeps the tie rule."""
    from environments.base import Score, Task
    from rl.config import load_config
    from rl.models import build_tokenizer
    from rl.rollout import Completion
    from reward_models.genrm import tied_throughout
    from reward_models.group_reward import GenRMReward
    from rl.rollouts import Group

    tie_a, tie_b, strict = Judgement(5, 5, 3), Judgement(5, 5, 4), Judgement(5, 4, 2)
    assert tied_throughout([tie_a, tie_b, None]) and not tied_throughout([tie_a, strict, tie_b])
    assert not tied_throughout([None, None, None])
    tok = build_tokenizer()

    def group():
        return Group(Task(id="t", env="math", messages=[{"role": "user", "content": "2+2"}], answer="4"), [1],
                     [Completion(tok.encode("<think>x</think>\\boxed{4}", add_special_tokens=False), [], False)] * 3,
                     [Score(1.0, {"format": 1.0})] * 3)

    class Judge:
        def __init__(self, judgements):
            self.judgements = judgements

        def judge(self, prompts):
            return self.judgements, {"judge/calls": 3.0, "judge/retries": 0.0, "judge/failures": 0.0}

    cfg = load_config(None, ["rlhf.length_control.enabled=false"])
    decode = lambda ids: tok.decode(ids, skip_special_tokens=True)  # noqa: E731
    for mode, judgements, expected in (
            # pairs (0,1) r=3: 5.5, 4.5; (1,2) r=4: 4.5, 5.5; (2,0) r=3: 5.5, 4.5 -> means 5.0, 4.5, 5.5
            ("tie_rule", [tie_a, tie_b, tie_a], [5.0, 4.5, 5.5]),
            ("equal", [tie_a, tie_b, tie_a], [5.0, 5.0, 5.0]),
            ("equal", [tie_a, strict, tie_a], None)):
        g = [group()]
        stats = GenRMReward(Judge(judgements), decode, cfg.rlhf.length_control, mode)(g)
        base = [s.components["base"] for s in g[0].scores]
        if expected is None:  # one strict comparison: the tie rule applies
            expected = base_rewards(3, judgements)[0]
            assert len(set(expected)) > 1
        assert base == pytest.approx(expected)
        assert stats.noise_groups == float(len(set(expected)) > 1)


def test_the_oracle_judge_answers_from_the_environments_rewards_with_the_tie_rules_coin():
    """rlhf.oracle_judge: helpfulness 1 + 4 * reward (the synthetic task's labels: 1 wrong,
    4 correct and long, 5 correct and short), the margin's ranking, 3 or 4 between equal
    answers; no judge model is needed and no judge call is made."""
    import random

    from environments.base import Score, Task
    from rl.config import load_config
    from rl.models import build_tokenizer
    from rl.rollout import Completion
    from reward_models.genrm import oracle_judgement
    from reward_models.group_reward import GenRMReward
    from reward_models.synthetic import helpfulness
    from rl.rollouts import Group

    rng = random.Random(0)
    assert oracle_judgement(1.0, 0.0, rng) == Judgement(5, 1, 1)
    assert oracle_judgement(0.75, 1.0, rng) == Judgement(4, 5, 4)
    assert oracle_judgement(0.0, 0.75, rng) == Judgement(1, 4, 6)
    assert {oracle_judgement(1.0, 1.0, rng).ranking for _ in range(50)} == {3, 4}
    for correct, length in ((True, 3), (True, 40), (False, 3)):  # the judge's training labels
        from reward_models.synthetic import true_score
        assert oracle_judgement(true_score(correct, length), 0.0, rng).score_1 == helpfulness(correct, length)

    cfg = load_config(None, ["environments.preference.reward=genrm", "rlhf.oracle_judge=true",
                             "rlhf.length_control.enabled=false"])
    assert cfg.rlhf.judge.model_path is None  # accepted without a judge model
    with pytest.raises(ValueError, match="rlhf.judge.model_path"):
        load_config(None, ["environments.preference.reward=genrm"])
    tok = build_tokenizer()
    rewards = [1.0, 0.0, 0.75, 0.0]
    group = Group(Task(id="t", env="preference", messages=[{"role": "user", "content": "2+2"}], answer="4"), [1],
                  [Completion(tok.encode(f"<think>x</think>\\boxed{{{i}}}", add_special_tokens=False), [], False)
                   for i in range(4)], [Score(r, {"correct": float(r > 0)}) for r in rewards])
    stats = GenRMReward(None, lambda ids: tok.decode(ids, skip_special_tokens=True), cfg.rlhf.length_control)([group])
    # pairs (0,1) 5/1, (1,2) 1/4, (2,3) 4/1, (3,0) 1/5: no ties, so base = helpfulness
    assert [s.components["base"] for s in group.scores] == [5.0, 1.0, 4.0, 1.0]
    assert (stats.calls, stats.agreed, stats.compared, stats.noise_groups) == (0.0, 4.0, 4.0, 0.0)


def test_several_rounds_of_the_circle_average_each_responses_scores():
    """rlhf.judge.samples=k: k rounds of the circle (kN calls), each response's base reward
    the mean of its 2k tie-adjusted scores; a failed judgement drops only itself."""
    from environments.base import Score, Task
    from rl.config import load_config
    from rl.models import build_tokenizer
    from rl.rollout import Completion
    from reward_models.group_reward import GenRMReward
    from rl.rollouts import Group

    # n = 3, two rounds: round 1 (0,1) 5/1, (1,2) 1/5, (2,0) 5/5 r=3; round 2 (0,1) 1/5 (an error),
    # (1,2) None, (2,0) 4/5
    rounds = [Judgement(5, 1, 1), Judgement(1, 5, 6), Judgement(5, 5, 3),
              Judgement(1, 5, 6), None, Judgement(4, 5, 4)]
    base, missing = base_rewards(3, rounds)
    # answer 0: 5, 4.5 (tie: 5 + 3.5 - 3... second position: 5 + 3 - 3.5), 1, 5 -> (5 + 4.5 + 1 + 5) / 4
    # answer 1: 1, 1, 5 -> 7 / 3; answer 2: 5, 5.5, 4 -> 14.5 / 3
    assert base == pytest.approx([15.5 / 4, 7 / 3, 14.5 / 3]) and missing == 0
    assert base_rewards(3, rounds[:3])[0] == pytest.approx([4.75, 1.0, 5.25])  # one round: the recipe
    with pytest.raises(ValueError, match="multiple of 3"):
        base_rewards(3, rounds[:4])

    tok = build_tokenizer()
    group = Group(Task(id="t", env="math", messages=[{"role": "user", "content": "2+2"}], answer="4"), [1],
                  [Completion(tok.encode(f"<think>x</think>\\boxed{{{i}}}", add_special_tokens=False), [], False)
                   for i in range(3)], [Score(r, {}) for r in (1.0, 0.0, 1.0)])
    seen = []

    class Judge:
        def judge(self, prompts):
            seen.extend(p[0]["content"] for p in prompts)
            return rounds, {"judge/calls": 6.0, "judge/retries": 0.0, "judge/failures": 1.0}

    cfg = load_config(None, ["rlhf.length_control.enabled=false", "rlhf.judge.samples=2"])
    stats = GenRMReward(Judge(), lambda ids: tok.decode(ids, skip_special_tokens=True), cfg.rlhf.length_control,
                        samples=cfg.rlhf.judge.samples)([group])
    assert len(seen) == 6 and seen[:3] == seen[3:]  # the same circle twice
    assert [s.components["base"] for s in group.scores] == pytest.approx(base)
    # against the verifier [1, 0, 1]: (0,1) agrees in round 1 and not in round 2, (1,2) agrees in round 1;
    # (2,0) is a verifier tie twice (spread 1.0 and 1.0)
    assert (stats.compared, stats.agreed, stats.tied, stats.tie_spread) == (3.0, 2.0, 2.0, 2.0)


def test_rollouts_with_the_oracle_judge_need_no_judge_model(tiny_model):
    """rlhf.oracle_judge through the real rollout path (configs/rlhf_genrm_tiny.yaml, whose
    judge folder does not exist here): no judge worker is started, and each answer's base
    reward is its helpfulness 1 + 4 * (environment's score), moved by at most 0.5 by the tie
    rule's coin flips."""
    from environments.registry import make_environment
    from rl.config import load_config
    from rl.rollouts import local_rollouts

    cfg = load_config(ROOT / "configs" / "rlhf_genrm_tiny.yaml",
                      ["rlhf.oracle_judge=true", "rlhf.length_control.enabled=false", "rollout.backend=transformers",
                       "rollout.max_new_tokens=24", "rlhf.judge.model_path=/nonexistent/judge"])
    env = make_environment("preference", cfg.environments["preference"].options)
    tasks = env.tasks("train")[:3]
    env.close()
    rollouts = local_rollouts(cfg, str(tiny_model))
    try:
        assert rollouts.judge is not None and rollouts.judge.judge is None and "judge" not in rollouts.respawn
        groups, stats = rollouts.groups(tasks, 4)
    finally:
        rollouts.close()
    assert stats.judge.calls == 0 and stats.judge.groups == 3 and stats.judge.agreed == stats.judge.compared
    for gr in groups:
        for s in gr.scores:
            assert abs(s.components["base"] - (1 + round(4 * s.components["verifier"]))) <= 0.5
