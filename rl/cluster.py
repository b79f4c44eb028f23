"""Ray at the edge: run the plain worker classes as actors, or in-process.

The training loop talks to ``Actor`` handles: ``actor.method(...)`` blocks
and returns the result; ``actor.submit("method", ...)`` returns a future for
concurrent calls, collected with ``gather``. With ``ray.enabled: false``
the same loop runs every worker in the driver process (debugging, tests,
hosts without Ray).
"""

from __future__ import annotations

import os
from concurrent.futures import Future
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


def gather(futures: list) -> list:
    if futures and not isinstance(futures[0], Future):
        import ray

        return ray.get(futures)
    return [f.result() for f in futures]


class Cluster:
    def __init__(self, cfg: RayConfig):
        self.remote = cfg.enabled
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

    def spawn(self, cls: type, *args, num_gpus: float = 0, name: str | None = None, **kwargs) -> Actor:
        if not self.remote:
            return Actor(cls(*args, **kwargs), remote=False)
        import ray

        # Actors take no CPU reservation: the loop is synchronous, so the
        # engine, the trainer and the environments take turns on the cores.
        handle = ray.remote(num_cpus=0, num_gpus=num_gpus)(cls).options(name=name).remote(*args, **kwargs)
        return Actor(handle, remote=True)

    def shutdown(self) -> None:
        if self.remote:
            import ray

            ray.shutdown()
