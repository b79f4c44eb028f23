"""Gaussian pass-rate curriculum: allocation by hand, quotas, the left-over
rule, the schedule, online updates, plateaus, profiling and state."""

from __future__ import annotations

import json
import math

import pytest

from curricula.gaussian import GaussianCurriculum, Plateau, allocate, bin_of, gaussian_weights, target_mean
from curricula.profile import profile_tasks, read_profile
from environments.base import Task


def _task(i: int, env: str = "a") -> Task:
    return Task(id=f"{env}/{i}", env=env, messages=[], answer=None)


def test_gaussian_weights_and_schedule_by_hand():
    w = gaussian_weights(4, 0.5, 0.15)
    assert w[2] == 1.0
    assert w[1] == pytest.approx(math.exp(-0.5 * (0.25 / 0.15) ** 2)) == pytest.approx(0.249352, abs=1e-6)
    assert w[0] == pytest.approx(0.003866, abs=1e-6) and w[0] == w[4]
    assert target_mean(0, 10, 0.8, 0.2) == 0.8
    assert target_mean(5, 10, 0.8, 0.2) == pytest.approx(0.5)
    assert target_mean(10, 10, 0.8, 0.2) == pytest.approx(0.2)
    assert [bin_of(p, 4) for p in (0.0, 0.1, 0.13, 0.5, 0.99, 1.0)] == [0, 0, 1, 2, 4, 4]


def test_allocation_proportional_then_capped_then_largest_remaining_pools():
    w = gaussian_weights(4, 0.5, 0.15)
    # exact shares 0.026, 1.655, 6.638, 1.655, 0.026 -> floors 0,1,6,1,0; two largest remainders: bins 1, 3
    assert allocate(10, [50] * 5, w) == [0, 2, 6, 2, 0]
    # bin 2 holds only 3: 3 left over go one by one to the largest remaining pools (5 in bins 0 and 4,
    # equal weight: the lower bin first), then bin 4 (5 > 4), then bin 0 (4 = 4, lower bin)
    assert allocate(10, [5, 5, 3, 5, 5], w) == [2, 2, 3, 2, 1]
    assert allocate(10, [1, 0, 2, 0, 1], w) == [1, 0, 2, 0, 1]          # fewer than the quota: all of it
    assert sum(allocate(7, [3, 3, 3, 3, 3], gaussian_weights(4, 0.9, 0.15))) == 7


def _curriculum(pools, ratios, profile, k=8, steps=20, **kw):
    return GaussianCurriculum(pools, ratios, profile, k, steps, 0.8, 0.2, 0.15, **kw)


def _uniform_pool(env: str, k: int, per_bin: int) -> tuple[list[Task], dict[str, float]]:
    tasks, profile = [], {}
    for j in range(k + 1):
        for i in range(per_bin):
            t = _task(j * 1000 + i, env)
            tasks.append(t)
            profile[t.id] = j / k
    return tasks, profile


def test_domain_quotas_and_no_repeats_within_an_epoch():
    a, pa = _uniform_pool("a", 8, 30)
    b, pb = _uniform_pool("b", 8, 30)
    cur = _curriculum({"a": a, "b": b}, {"a": 0.75, "b": 0.25}, {**pa, **pb}, drop_solved=False)
    seen = set()
    for step in range(1, 6):
        batch = cur.next_batch(16, step)
        assert sum(t.env == "a" for t in batch) == 12 and sum(t.env == "b" for t in batch) == 4
        assert not seen & {t.id for t in batch}
        seen |= {t.id for t in batch}


def test_batch_pass_rate_follows_the_target_mean_over_the_schedule():
    tasks, profile = _uniform_pool("math", 8, 1000)  # large enough that no bin runs dry
    cur = _curriculum({"math": tasks}, {"math": 1.0}, profile, steps=20, drop_solved=False)
    for step in range(0, 21):
        batch = cur.next_batch(64, step)
        mean = sum(profile[t.id] for t in batch) / len(batch)
        assert abs(mean - cur.target_mean()) < 0.03, (step, mean, cur.target_mean())
        assert cur.metrics()["curriculum/batch_pass_rate_mean"] == pytest.approx(mean)
        assert cur.metrics()["curriculum/batch_pass_rate_mean/math"] == pytest.approx(mean)


def test_solved_and_unsolved_tasks_are_knobs():
    tasks, profile = _uniform_pool("a", 4, 10)
    cur = _curriculum({"a": tasks}, {"a": 1.0}, profile, k=4, drop_solved=True, drop_unsolved=True)
    assert cur.pool_left() == 30
    batch = cur.next_batch(30, 20)  # mu = 0.2: the Gaussian favours bin 0, which is dropped
    assert {profile[t.id] for t in batch} == {0.25, 0.5, 0.75}


def test_online_updates_blend_into_the_profile_and_move_tasks_between_bins():
    tasks, profile = _uniform_pool("a", 4, 2)
    cur = _curriculum({"a": tasks}, {"a": 1.0}, profile, k=4, online_weight=0.5)
    t = tasks[0]  # profiled 0.0
    cur.observe([(t, [1.0] * 4)])
    assert cur.profile[t.id] == 0.5
    cur.observe([(t, [1.0, 1.0, 1.0, 1.5])])  # full reward or more passes
    assert cur.profile[t.id] == 0.75
    cur.observe([(t, [1.0] * 8)])
    cur.observe([(t, [1.0] * 8)])
    assert cur.profile[t.id] == pytest.approx(0.9375) and bin_of(cur.profile[t.id], 4) == 4
    assert cur.eligible(t)  # in the top bin, yet p < 1: not dropped as solved
    cur.observe([(t, [0.0, 0.99, 0.0, 0.0])])  # partial reward is no pass
    assert cur.profile[t.id] == pytest.approx(0.46875)
    off = _curriculum({"a": tasks}, {"a": 1.0}, profile, k=4, online_weight=0.0)
    off.observe([(t, [1.0] * 4)])
    assert off.profile[t.id] == 0.0  # online updates off


def test_a_reward_plateau_reprofiles_a_seeded_sample_with_the_profiler():
    tasks, profile = _uniform_pool("a", 4, 10)
    asked = []

    def profiler(sample):
        asked.append([t.id for t in sample])
        return {t.id: 1.0 for t in sample}

    cur = _curriculum({"a": tasks}, {"a": 1.0}, profile, k=4, online_weight=0.0,
                      plateau=Plateau(window=1, patience=2, delta=0.0), profiler=profiler, reprofile_tasks=5)
    group = [(tasks[0], [0.5, 0.5])]
    cur.observe(group)  # a new best
    cur.observe(group)
    assert not asked and "timing/reprofile_s" not in cur.metrics()
    cur.observe(group)  # the second step without improvement: re-profile 5 tasks
    assert len(asked) == 1 and len(asked[0]) == 5 and len(set(asked[0])) == 5
    assert all(cur.profile[i] == 1.0 and not cur.eligible(next(t for t in tasks if t.id == i)) for i in asked[0])
    m = cur.metrics()
    assert m["curriculum/reprofiles"] == 1.0 and m["timing/reprofile_s"] >= 0
    state = json.loads(json.dumps(cur.state_dict()))
    again = _curriculum({"a": tasks}, {"a": 1.0}, profile, k=4, online_weight=0.0,
                        plateau=Plateau(window=1, patience=2, delta=0.0), profiler=profiler, reprofile_tasks=5)
    again.load_state_dict(state)
    assert again.reprofiles == 1 and again.plateau.state_dict() == cur.plateau.state_dict()
    for _ in range(3):  # after firing the plateau starts over: a new best, then two steps without improvement
        cur.observe(group), again.observe(group)
    assert asked[1] == asked[2] != asked[0]  # the next sample is seeded by the count: same after a resume


def test_plateau_triggers_after_patience_without_improvement():
    p = Plateau(window=3, patience=4, delta=0.01)
    fired = [p.update(r) for r in [0.1, 0.2, 0.3, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4]]
    # moving averages from the 3rd reward: .2, .3, .367, .4 (each a new best by > .01), then .4 four
    # times without improvement: the 4th of those (the 10th reward) is the plateau
    assert fired == [False] * 9 + [True]
    assert [p.update(0.4) for _ in range(2)] == [False, False]  # history restarts after firing


def test_state_round_trip_resumes_the_same_batches():
    tasks, profile = _uniform_pool("a", 8, 20)
    cur = _curriculum({"a": tasks}, {"a": 1.0}, profile)
    for step in (1, 2, 3):
        cur.next_batch(16, step)
        cur.observe([(tasks[step], [1.0, 0.0])])
    state = json.loads(json.dumps(cur.state_dict()))
    expected = [t.id for t in cur.next_batch(16, 4)]
    fresh = _curriculum({"a": tasks}, {"a": 1.0}, profile)
    fresh.load_state_dict(state)
    assert [t.id for t in fresh.next_batch(16, 4)] == expected
    assert fresh.profile == {**cur.profile}


def test_profile_is_written_incrementally_and_resumes(tmp_path):
    tasks = [_task(i) for i in range(10)]
    calls = []

    def run_groups(part, k):
        calls.extend(t.id for t in part)
        return [[1.0] * (int(t.id.split("/")[1]) % (k + 1)) + [0.0] * (k - int(t.id.split("/")[1]) % (k + 1))
                for t in part]

    path = tmp_path / "profile.jsonl"
    first = profile_tasks(tasks[:6], run_groups, 4, path, chunk=4, progress=False)
    assert first["a/3"] == 0.75 and first["a/5"] == 0.0
    calls.clear()
    rates = profile_tasks(tasks, run_groups, 4, path, chunk=4, progress=False)
    assert calls == [f"a/{i}" for i in range(6, 10)]  # only what was missing
    assert read_profile(path) == (rates, 4) and len(rates) == 10
    path.write_text(path.read_text() + '{"task_id": "x"}\n')
    with pytest.raises(ValueError, match=r"profile.jsonl:11: malformed"):
        read_profile(path)
