from collections import Counter

from curricula.mixed import MixedSampler, quotas
from environments.base import Task


def _pool(env, n):
    return [Task(id=f"{env}/{i}", env=env, messages=[], answer=None) for i in range(n)]


def test_quotas_largest_remainder():
    assert quotas(10, {"a": 0.4, "b": 0.3, "c": 0.3}) == {"a": 4, "b": 3, "c": 3}
    assert quotas(7, {"a": 1, "b": 1, "c": 1}) == {"a": 3, "b": 2, "c": 2}
    assert sum(quotas(128, {"a": 0.33, "b": 0.33, "c": 0.34}).values()) == 128


def test_each_batch_keeps_the_ratios_and_epochs_cover_the_pool():
    s = MixedSampler({"a": _pool("a", 10), "b": _pool("b", 5)}, {"a": 0.5, "b": 0.5}, seed=3)
    seen = Counter()
    for _ in range(5):
        batch = s.next_batch(4)
        assert Counter(t.env for t in batch) == {"a": 2, "b": 2}
        seen.update(t.id for t in batch)
    assert all(seen[f"a/{i}"] == 1 for i in range(10))  # one epoch of a: no repeats
    assert all(seen[f"b/{i}"] == 2 for i in range(5))  # two epochs of b


def test_state_round_trip_resumes_exactly():
    pools = {"a": _pool("a", 13)}
    s1 = MixedSampler(pools, {"a": 1.0}, seed=1)
    s1.next_batch(5)
    state = s1.state_dict()
    expected = [t.id for t in s1.next_batch(20)]
    s2 = MixedSampler(pools, {"a": 1.0}, seed=1)
    s2.load_state_dict(state)
    assert [t.id for t in s2.next_batch(20)] == expected
