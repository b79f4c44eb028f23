"""Ray at the edge: run the plain worker classes as actors, or in-process.

The training loop talks to ``Actor`` handles: ``actor.method(...)`` blocks
and returns the result; ``actor.submit("method", ...)`` returns a future for
concurrent calls, collected with ``gather``. With ``ray.enabled: false``
the same loop runs every worker in the driver process (debugging, tests,
hosts without Ray).

Placement (``ray.placement``): ``plan_placement`` decides, from the config
and the cluster's GPU count, which GPU bundle of one Ray placement group each
policy rank, rollout engine and judge gets:

- ``colocated``: one bundle of 1 GPU per policy rank; engine i (and the judge,
  on bundle 0) shares rank i's GPU, and vLLM sleeps while the trainer works;
- ``split``: one GPU per rank, per engine and for the judge;
- ``cpu``: no GPUs (Ray hides them from every actor).
"""

from __future__ import annotations

import os
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from rl.config import RayConfig


class Actor:
    def __init__(self, target: Any, remote: bool):
        self._target, self._remote = target, remote

    def submit(self, method: str, *args, **kwargs):
        if self._remote:
            return getattr(self._target, method).remote(*args, **kwargs)
        fut: Future = Future()
        try:
            fut.set_result(getattr(self._target, method)(*args, **kwargs))
        except BaseException as exc:  # re-raised by gather, like ray.get
            fut.set_exception(exc)
        return fut

    def __getattr__(self, method: str):
        if method.startswith("_"):
            raise AttributeError(method)
        return lambda *args, **kwargs: gather([self.submit(method, *args, **kwargs)])[0]


class ActorGroup:
    """Actors that take every call together (the policy's ranks, SPMD):
    ``group.method(...)`` calls it on all of them and returns rank 0's result.
    Arguments travel once through Ray's object store, not once per rank."""

    def __init__(self, actors: list[Actor]):
        self.actors = actors

    def submit_all(self, method: str, *args, **kwargs) -> list:
        if len(self.actors) > 1 and self.actors[0]._remote:  # noqa: SLF001
            import ray

            args = tuple(ray.put(a) for a in args)  # top-level refs are resolved for the callee
            kwargs = {k: ray.put(v) for k, v in kwargs.items()}
        return [a.submit(method, *args, **kwargs) for a in self.actors]

    def __getattr__(self, method: str):
        if method.startswith("_"):
            raise AttributeError(method)
        return lambda *args, **kwargs: gather(self.submit_all(method, *args, **kwargs))[0]


class WorkerTimeout(RuntimeError):
    """A worker did not answer within ``ray.call_timeout_s``."""


CALL_TIMEOUT_S: float | None = None
"""Deadline of one call to Ray workers (``ray.call_timeout_s``, set by ``Cluster``)."""


def gather(futures: list) -> list:
    if futures and not isinstance(futures[0], Future):
        import ray

        try:
            return ray.get(futures, timeout=CALL_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise WorkerTimeout(f"a worker did not answer within {CALL_TIMEOUT_S:g} s (ray.call_timeout_s): "
                                "a vLLM engine core that died, or a hung worker") from None
    return [f.result() for f in futures]


@dataclass(frozen=True)
class Slot:
    """Where one actor runs: a bundle of the placement group and its GPU share."""

    bundle: int | None = None
    num_gpus: float = 0.0


@dataclass
class Placement:
    mode: str
    """colocated, split or cpu."""
    num_bundles: int = 0
    """Bundles of one GPU each in the placement group (0: no group)."""
    policy: list[Slot] = field(default_factory=list)
    engines: list[Slot] = field(default_factory=list)
    judge: Slot = Slot()

    @property
    def gpus(self) -> bool:
        return self.num_bundles > 0


# GPU shares of one colocated bundle: they only need to add up to at most 1 for
# Ray; memory is split by vLLM's gpu_memory_utilization and by sleep mode.
_COLOCATED_SHARES = {"policy": 0.4, "engine": 0.3, "judge": 0.3}


def plan_placement(mode: str, num_ranks: int, num_engines: int, judge: bool, cluster_gpus: float) -> Placement:
    """Which GPU bundle each actor gets (pure: the cluster's GPU count is an argument).
    Raises ValueError, naming the keys, when the cluster has too few GPUs."""
    if mode == "auto":
        mode = "colocated" if cluster_gpus >= 1 else "cpu"
    if mode == "cpu":
        return Placement("cpu", policy=[Slot()] * num_ranks, engines=[Slot()] * num_engines)
    if mode == "colocated":
        if num_engines > num_ranks:
            raise ValueError(f"ray.placement=colocated puts one rollout engine on each policy rank's GPU: "
                             f"rollout.num_workers ({num_engines}) must be at most policy.num_ranks ({num_ranks})")
        need = num_ranks
        policy = [Slot(i, _COLOCATED_SHARES["policy"]) for i in range(num_ranks)]
        engines = [Slot(i, _COLOCATED_SHARES["engine"]) for i in range(num_engines)]
        judge_slot = Slot(0, _COLOCATED_SHARES["judge"]) if judge else Slot()
    elif mode == "split":
        need = num_ranks + num_engines + int(judge)
        policy = [Slot(i, 1.0) for i in range(num_ranks)]
        engines = [Slot(num_ranks + i, 1.0) for i in range(num_engines)]
        judge_slot = Slot(num_ranks + num_engines, 1.0) if judge else Slot()
    else:
        raise ValueError(f"ray.placement: unknown mode {mode!r} (auto, colocated, split, cpu)")
    if cluster_gpus < need:
        parts = f"policy.num_ranks={num_ranks}" + ("" if mode == "colocated" else
                                                  f" + rollout.num_workers={num_engines}" + (" + judge" if judge else ""))
        raise ValueError(f"ray.placement={mode} needs {need} GPUs ({parts}), but the Ray cluster has "
                         f"{cluster_gpus:g}; lower those keys, add GPU nodes (docs/scaling.md), "
                         "or set ray.placement=cpu")
    return Placement(mode, need, policy, engines, judge_slot)


class Cluster:
    def __init__(self, cfg: RayConfig):
        global CALL_TIMEOUT_S
        self.remote = cfg.enabled
        self.placement_group = None
        CALL_TIMEOUT_S = cfg.call_timeout_s
        if not self.remote:
            return
        try:
            import ray
        except ImportError:
            raise RuntimeError("ray.enabled is true but Ray is not installed; install ray or set ray.enabled=false") from None
        threads = str(cfg.num_cpus or os.cpu_count() or 1)
        env_vars = {"OMP_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false"}
        for key in ("RL_CACHE_DIR", "VLLM_CPU_KVCACHE_SPACE", "WANDB_MODE", "PYTHONPATH"):
            if key in os.environ:
                env_vars[key] = os.environ[key]
        if not ray.is_initialized():
            ray.init(address=cfg.address, num_cpus=cfg.num_cpus if cfg.address is None else None,
                     include_dashboard=False, log_to_driver=True, configure_logging=True,
                     logging_level="warning", runtime_env={"env_vars": env_vars})

    def gpus(self) -> float:
        """GPUs of the whole cluster (local: those this host has)."""
        if not self.remote:
            import torch

            return float(torch.cuda.device_count())
        import ray

        return float(ray.cluster_resources().get("GPU", 0))

    def place(self, mode: str, num_ranks: int, num_engines: int, judge: bool, timeout_s: float = 120) -> Placement:
        """Plan the placement and reserve its GPUs (one placement group, PACK: as
        few nodes as possible). In-process runs plan nothing: the driver uses
        the GPU it sees, or the CPU."""
        if not self.remote:
            return Placement("local", policy=[Slot()] * num_ranks, engines=[Slot()] * num_engines)
        placement = plan_placement(mode, num_ranks, num_engines, judge, self.gpus())
        if placement.gpus:
            import ray
            from ray.util.placement_group import placement_group

            self.placement_group = placement_group([{"GPU": 1.0}] * placement.num_bundles, strategy="PACK")
            try:
                ray.get(self.placement_group.ready(), timeout=timeout_s)
            except ray.exceptions.GetTimeoutError:
                raise RuntimeError(f"ray.placement={placement.mode}: the cluster could not reserve "
                                   f"{placement.num_bundles} GPUs within {timeout_s:g} s (are they in use?)") from None
        return placement

    def spawn(self, cls: type, *args, slot: Slot = Slot(), name: str | None = None, **kwargs) -> Actor:
        if not self.remote:
            return Actor(cls(*args, **kwargs), remote=False)
        import ray

        options: dict[str, Any] = {"name": name}
        if not slot.num_gpus:  # no GPU asked for: none seen (Ray leaves them visible otherwise)
            options["runtime_env"] = {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}
        if slot.bundle is not None:
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                self.placement_group, placement_group_bundle_index=slot.bundle)
        # Actors take no CPU reservation: the loop is synchronous, so the
        # engine, the trainer and the environments take turns on the cores.
        handle = ray.remote(num_cpus=0, num_gpus=slot.num_gpus)(cls).options(**options).remote(*args, **kwargs)
        return Actor(handle, remote=True)

    def kill(self, actor: Actor) -> None:
        """Stop a worker that failed: its Ray actor is killed (no restart by Ray);
        an in-process one is closed, as far as that still works."""
        if actor._remote:  # noqa: SLF001
            import ray

            try:
                ray.kill(actor._target, no_restart=True)  # noqa: SLF001
            except Exception:  # noqa: BLE001 - already gone
                pass
            return
        try:
            actor.close()
        except Exception:  # noqa: BLE001 - the worker is broken; whatever it holds goes with it
            pass

    def address_of(self, slot: Slot) -> str:
        """The IP address of the node that ``slot`` runs on (the driver's without a bundle)."""
        from rl.parallel import node_address

        if not self.remote or slot.bundle is None:
            return node_address()
        import ray
        from ray.util.placement_group import placement_group_table

        node_id = placement_group_table(self.placement_group)["bundles_to_node_id"][slot.bundle]
        return next(n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id)

    def shutdown(self) -> None:
        if self.remote:
            import ray

            ray.shutdown()
