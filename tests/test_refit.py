"""The vLLM refit and sleep/wake control flow against a scripted ``vllm.LLM``.

vLLM on GPUs (sleep mode, CUDA IPC) cannot run on the machines here, so the
engine's side is driven through a stand-in with vLLM's method names:
``collective_rpc`` runs the worker functions on a fake worker in this
process (what vLLM does in its worker processes), ``sleep``/``wake_up``
record their calls. The policy is the real one; the transport is shared
memory, as on CPU hosts.
"""

from __future__ import annotations

import pickle

import pytest
import torch

from rl.config import GRPOConfig, ModelInitConfig, PolicyConfig
from rl.models import init_model
from rl.policy import PolicyWorker
from rl.refit import refit_engines
from rl.rollout import VLLMEngine


class _ModelRunner:
    def __init__(self):
        self.loads: list[dict[str, torch.Tensor]] = []

    def reload_weights(self, weights_iterator, is_checkpoint_format: bool):
        assert is_checkpoint_format
        self.loads.append(dict(weights_iterator))


class _Worker:
    device = "cpu"

    def __init__(self):
        self.model_runner = _ModelRunner()


class ScriptedLLM:
    """vllm.LLM's refit and sleep surface; every call is recorded."""

    def __init__(self):
        self.worker, self.calls = _Worker(), []

    def collective_rpc(self, method, args=()):
        # vLLM serialises the arguments (msgspec turns dataclasses into dicts):
        # the engine must send plain data.
        assert all(isinstance(a, (bytes, str, int, float)) for a in args)
        self.calls.append(method.__name__)
        return [method(self.worker, *args)]

    def reset_prefix_cache(self):
        self.calls.append("reset_prefix_cache")

    def sleep(self, level: int):
        self.calls.append(f"sleep({level})")

    def wake_up(self, tags=None):
        self.calls.append(f"wake_up({tags})")


def _engine(sleep_mode: bool) -> tuple[VLLMEngine, ScriptedLLM]:
    engine = VLLMEngine.__new__(VLLMEngine)  # no vLLM start-up: the scripted LLM stands in
    engine.llm, engine.sleep_mode = ScriptedLLM(), sleep_mode
    return engine, engine.llm


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    path = init_model(ModelInitConfig(hidden_size=256, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32,
                                      intermediate_size=1024), tmp_path_factory.mktemp("refit") / "model")
    # 3.5 MB of weights when cast to bf16 (buckets count the bytes sent) in 1 MiB buckets: several
    worker = PolicyWorker(str(path), GRPOConfig(), PolicyConfig(compute_dtype="float32", refit_bucket_mb=1),
                          device="cpu")
    yield worker
    worker.close()


def test_colocated_engine_sleeps_wakes_and_loads_every_weight_once(policy):
    engines = [_engine(sleep_mode=True) for _ in range(2)]

    def call(method, *args):
        return [getattr(e, method)(*args) for e, _ in engines]

    call("sleep")  # the trainer's step puts them to sleep before the update
    buckets = refit_engines(policy, call, "shm", checkpoint_format=True, dtype="bfloat16")
    expected = policy.state_dict(checkpoint_format=True)
    for _, llm in engines:
        staged = [c for c in llm.calls if c == "_stage_in_worker"]
        assert len(staged) == buckets >= 3
        assert llm.calls[0] == "sleep(2)" and llm.calls[1] == "wake_up(['weights'])"
        assert llm.calls[-3:] == ["_commit_in_worker", "reset_prefix_cache", "wake_up(['kv_cache'])"]
        (loaded,) = llm.worker.model_runner.loads  # one reload_weights call with everything
        assert loaded.keys() == expected.keys()
        for name, w in expected.items():
            assert loaded[name].dtype == torch.bfloat16 and torch.equal(loaded[name], w.to(torch.bfloat16)), name
        assert not hasattr(llm.worker, "_rl_refit_staged")  # staging is dropped after the load


def test_engine_without_sleep_mode_never_sleeps(policy):
    engine, llm = _engine(sleep_mode=False)
    refit_engines(policy, lambda m, *a: [getattr(engine, m)(*a)], "shm", checkpoint_format=True)
    assert not any(c.startswith(("sleep", "wake_up")) for c in llm.calls)
    assert len(llm.worker.model_runner.loads) == 1


def test_refit_handles_survive_pickling_for_the_worker(policy):
    policy.refit_start("shm", checkpoint_format=True)
    handle = policy.refit_next()
    assert pickle.loads(pickle.dumps(handle)).names == handle.names
    while policy.refit_next() != "done":
        pass


def test_reload_drops_only_the_rotary_cache_warning():
    """vLLM warns once per refit that the rotary embedding (its cos/sin cache,
    in no checkpoint) got no weights; that line is dropped, the same warning for
    any other layer still reaches the log."""
    import logging

    layerwise = pytest.importorskip("vllm.model_executor.model_loader.reload.layerwise")
    from rl.rollout import _quiet_rotary_reload_warning

    _quiet_rotary_reload_warning()
    _quiet_rotary_reload_warning()  # idempotent
    logger = layerwise.logger
    assert sum(type(f).__name__ == "_QuietRotaryReload" for f in logger.filters) == 1

    def passes(msg, layer):  # the logger's own filters, whatever its level or handlers in this process
        record = logger.makeRecord(logger.name, logging.WARNING, __file__, 0, msg, (layer,), None)
        return bool(logger.filter(record))

    assert not passes("%s: Failed to load weights", "RotaryEmbedding")
    assert not passes("%s: Failed to load weights", "MRotaryEmbedding")
    assert passes("%s: Failed to load weights", "QKVParallelLinear")
    assert passes("%s: Delayed processing", "RotaryEmbedding")
