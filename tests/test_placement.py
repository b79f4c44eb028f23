"""Placement of the policy ranks and rollout engines on GPUs, and the refit transports."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest
import torch

from rl.cluster import Cluster, Slot, plan_placement
from rl.config import RayConfig
from rl.refit import Sender, choose_transport, receive


def test_colocated_puts_engine_i_on_rank_i_gpu():
    p = plan_placement("colocated", num_ranks=4, num_engines=2, judge=True, cluster_gpus=4)
    assert p.num_bundles == 4
    assert [s.bundle for s in p.policy] == [0, 1, 2, 3] and [s.bundle for s in p.engines] == [0, 1]
    assert p.judge.bundle == 0
    for bundle in range(4):  # the shares of one GPU add up to at most 1
        assert sum(s.num_gpus for s in [*p.policy, *p.engines, p.judge] if s.bundle == bundle) <= 1.0


def test_split_gives_everyone_a_gpu_of_its_own():
    p = plan_placement("split", num_ranks=2, num_engines=2, judge=True, cluster_gpus=8)
    bundles = [s.bundle for s in [*p.policy, *p.engines, p.judge]]
    assert sorted(bundles) == [0, 1, 2, 3, 4] and p.num_bundles == 5
    assert all(s.num_gpus == 1.0 for s in [*p.policy, *p.engines, p.judge])


def test_auto_is_cpu_without_gpus_and_colocated_with_them():
    assert plan_placement("auto", 2, 1, False, cluster_gpus=0).mode == "cpu"
    assert plan_placement("auto", 2, 1, False, cluster_gpus=2).mode == "colocated"
    cpu = plan_placement("cpu", 2, 1, False, cluster_gpus=8)
    assert not cpu.gpus and all(s.num_gpus == 0 and s.bundle is None for s in [*cpu.policy, *cpu.engines])


@pytest.mark.parametrize("mode,ranks,engines,gpus,needle", [
    ("split", 2, 2, 3, "needs 4 GPUs (policy.num_ranks=2 + rollout.num_workers=2)"),
    ("colocated", 4, 1, 2, "needs 4 GPUs (policy.num_ranks=4)"),
    ("colocated", 1, 2, 8, "rollout.num_workers (2) must be at most policy.num_ranks (1)"),
])
def test_too_few_gpus_fail_naming_the_keys(mode, ranks, engines, gpus, needle):
    with pytest.raises(ValueError, match=None) as err:
        plan_placement(mode, ranks, engines, False, cluster_gpus=gpus)
    assert needle in str(err.value)


class _Probe:
    def gpu_ids(self) -> list[str]:
        import ray

        return [str(i) for i in ray.get_gpu_ids()]

    def cuda_visible_devices(self) -> str | None:
        import os

        return os.environ.get("CUDA_VISIBLE_DEVICES")


@pytest.fixture(scope="module")
def logical_gpu_cluster():
    """A local Ray cluster that believes it has 3 GPUs (Ray assigns ids; nothing touches CUDA)."""
    ray = pytest.importorskip("ray")
    here = Path(__file__).resolve().parent  # the workers import this module's actor classes
    ray.init(num_cpus=2, num_gpus=3, include_dashboard=False, logging_level="warning",
             runtime_env={"env_vars": {"PYTHONPATH": f"{here}:{here.parent}"}})
    yield ray
    ray.shutdown()


def _ids(cluster: Cluster, slots: list[Slot]) -> list[list[str]]:
    return [cluster.spawn(_Probe, slot=s).gpu_ids() for s in slots]


def test_ray_gives_ranks_and_engines_their_gpus_in_both_modes(logical_gpu_cluster):
    ray = logical_gpu_cluster
    from ray.util.placement_group import remove_placement_group

    cluster = Cluster(RayConfig(num_cpus=2))
    p = cluster.place("colocated", num_ranks=2, num_engines=2, judge=False)
    ranks, engines = _ids(cluster, p.policy), _ids(cluster, p.engines)
    assert all(len(i) == 1 for i in ranks + engines)
    assert ranks[0] != ranks[1] and engines[0] != engines[1]  # distinct GPUs between ranks, between engines
    assert ranks == engines  # engine i shares rank i's GPU
    assert cluster.address_of(p.policy[0]) == ray.util.get_node_ip_address()
    remove_placement_group(cluster.placement_group)

    p = cluster.place("split", num_ranks=2, num_engines=1, judge=False)
    ids = _ids(cluster, [*p.policy, *p.engines])
    assert sorted(i[0] for i in ids) == ["0", "1", "2"]  # three actors, three distinct GPUs
    remove_placement_group(cluster.placement_group)

    with pytest.raises(ValueError, match="needs 4 GPUs"):
        cluster.place("split", num_ranks=2, num_engines=2, judge=False)
    # placement=cpu hides the GPUs from the actor
    assert cluster.spawn(_Probe, slot=Slot()).cuda_visible_devices() == ""


def test_object_store_transport(logical_gpu_cluster):
    bucket = [("a.weight", torch.randn(3, 4)), ("b.bias", torch.arange(5, dtype=torch.bfloat16))]
    sender = Sender("object_store")
    got = Cluster(RayConfig()).spawn(_Receiver).take(sender.send(bucket))
    for (n, t), (m, u) in zip(bucket, got):
        assert n == m and torch.equal(t, u)


class _Receiver:
    def take(self, handle):
        return receive(handle)


def _receive_in_child(handle, out: str) -> None:
    torch.save(receive(handle), out)


def test_shared_memory_transport_crosses_processes_and_cleans_up(tmp_path):
    sender = Sender("shm")
    buckets = [[("x", torch.randn(4, 8)), ("empty", torch.zeros(0)), ("h", torch.randn(3).to(torch.bfloat16))],
               [("big", torch.randn(100, 100)), ("i", torch.arange(7))]]  # larger: the segment grows
    ctx = mp.get_context("spawn")
    names = []
    for k, bucket in enumerate(buckets):
        handle = sender.send(bucket)
        names.append(handle.payload["name"])
        child = ctx.Process(target=_receive_in_child, args=(handle, str(tmp_path / f"{k}.pt")))
        child.start()
        child.join(60)
        assert child.exitcode == 0
        got = torch.load(tmp_path / f"{k}.pt")
        assert [n for n, _ in got] == [n for n, _ in bucket]
        for (_, t), (_, u) in zip(bucket, got):
            assert t.dtype == u.dtype and torch.equal(t, u)
    assert names[0] != names[1] and not Path(f"/dev/shm/{names[0]}").exists()  # the small one was replaced
    sender.close()
    assert not Path(f"/dev/shm/{names[1]}").exists()


def test_direct_transport_copies_and_auto_choice():
    t = torch.randn(3)
    (name, got), = receive(Sender("direct").send([("w", t)]))
    assert name == "w" and torch.equal(got, t) and got.data_ptr() != t.data_ptr()
    assert choose_transport("auto", in_process=True, gpu=False) == "direct"
    assert choose_transport("auto", in_process=False, gpu=True) == "cuda_ipc"
    assert choose_transport("auto", in_process=False, gpu=False) == "shm"
    assert choose_transport("object_store", in_process=True, gpu=False) == "object_store"
    with pytest.raises(ValueError, match="cuda_ipc needs the policy on GPUs"):
        Sender("cuda_ipc").send([("w", t)])


def test_stale_shared_memory_is_removed_and_live_segments_are_kept(tmp_path):
    import mmap
    import os
    import time

    from rl.refit import cleanup_shared_memory

    stale = tmp_path / "psm_deadbeef"
    stale.write_bytes(b"x" * 4096)
    old = time.time() - 3600
    os.utime(stale, (old, old))
    fresh = tmp_path / "rl-refit-0123456789ab"  # being created right now: kept
    fresh.write_bytes(b"x")
    live = tmp_path / "sem.mp-live"
    live.write_bytes(b"x" * 4096)
    os.utime(live, (old, old))
    other = tmp_path / "torch_123"  # not ours
    other.write_bytes(b"x")
    os.utime(other, (old, old))
    with open(live, "r+b") as f, mmap.mmap(f.fileno(), 4096):  # mapped by a live process: kept
        removed = cleanup_shared_memory(str(tmp_path))
    assert removed == ["psm_deadbeef"]
    assert fresh.exists() and live.exists() and other.exists() and not stale.exists()


def test_a_semaphore_another_process_holds_is_not_released():
    """glibc maps a named semaphore under a temporary name before linking it
    to ``sem.mp-*``: a run ending beside another (a second run, a test) must
    still see it in use, by inode, and leave it alone (it used to unlink the
    other's live semaphores: its vLLM workers then failed to start)."""
    import multiprocessing as mp

    from rl.refit import release_shared_memory, shared_memory_segments

    before = shared_memory_segments()
    lock = mp.get_context("spawn").Lock()  # spawn keeps the name until the lock is gone
    new = shared_memory_segments() - before
    assert new and all(n.startswith("sem.mp-") for n in new)
    release_shared_memory(before, patience_s=0.0)
    assert new <= shared_memory_segments()
    del lock
