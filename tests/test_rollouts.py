"""One rollout path (``rl.rollouts.Rollouts``) for training, validation, ``rl eval``
and profiling: a batch may mix single- and multi-turn environments."""

from __future__ import annotations

import pytest

from curricula.profile import profile_tasks
from environments.pool import EnvironmentPool
from environments.registry import make_environment
from rl.cluster import Actor
from rl.config import load_config
from rl.models import build_tokenizer
from rl.rollout import Completion, SamplingSettings, prompt_token_ids
from rl.rollouts import Rollouts
from verifiers.toolcall import render_call


class ScriptedWorker:
    """A rollout worker that answers each task as scripted: its reference turns
    for tasks in ``right``, a wrong answer for the others."""

    def __init__(self, tok, tasks, right):
        self.tok, self.right = tok, right
        self.prompts = {t.id: tok.decode(prompt_token_ids(tok, t.messages)) for t in tasks}
        self.tasks = {t.id: t for t in tasks}

    def turn_text(self, context: str) -> str:
        task = next(self.tasks[i] for i, p in self.prompts.items() if context.startswith(p))
        if task.env == "math":
            return task.reference if task.id in self.right else "<think>no</think>\\boxed{-12345}"
        turns = task.meta["turns"] if task.id in self.right else [
            "<think></think>" + render_call("list_tickets", {"status": "open"}), "<think></think>Done."]
        done = context[len(self.prompts[task.id]):].count("<|im_start|>user<tool_response>")
        return turns[min(done, len(turns) - 1)]

    def generate(self, prompts, settings: SamplingSettings, max_tokens):
        out = []
        for prompt, limit in zip(prompts, max_tokens):
            ids = self.tok.encode(self.turn_text(self.tok.decode(prompt)) + "<|im_end|>", add_special_tokens=False)
            out.append([Completion(ids[:limit], [-0.1] * min(len(ids), limit), len(ids) > limit)
                        for _ in range(settings.n)])
        return out


@pytest.fixture(scope="module")
def mixed():
    tok = build_tokenizer()
    envs = {"math": make_environment("math", {"levels": [1]}),
            "workplace": make_environment("workplace", {"tool_prompt": "compact", "levels": [1, 2]})}
    tasks = envs["math"].tasks("train")[:6] + envs["workplace"].tasks("train")[:6]
    right = {t.id for t in tasks[::2]}  # half of each environment's tasks answered right
    pool = EnvironmentPool({}, None, tokenizer=tok, environments=envs)
    cfg = load_config(None, ["rollout.max_new_tokens=400", "rollout.max_episode_tokens=1500"])

    def rollouts():
        return Rollouts([Actor(ScriptedWorker(tok, tasks, right), remote=False)], pool, tok, cfg, 4096)

    yield tasks, right, rollouts
    pool.close()
    for env in envs.values():
        env.close()


def test_a_chunk_mixing_single_and_multi_turn_tasks_profiles_as_each_environment_alone(mixed):
    tasks, right, rollouts = mixed
    # the chunk starts with a multi-turn task, then alternates environments
    mixed_order = [t for pair in zip(tasks[6:], tasks[:6]) for t in pair]
    together = profile_tasks(mixed_order, rollouts().rewards, 2, progress=False)
    alone = {**profile_tasks(tasks[:6], rollouts().rewards, 2, progress=False),
             **profile_tasks(tasks[6:], rollouts().rewards, 2, progress=False)}
    assert together == alone
    assert together == {t.id: 1.0 if t.id in right else 0.0 for t in tasks}


def test_groups_carry_episode_counters_and_typed_stats(mixed):
    tasks, right, rollouts = mixed
    groups, stats = rollouts().groups([tasks[6], tasks[0]], 3)
    assert [gr.task.env for gr in groups] == ["workplace", "math"]
    assert all(len(gr.completions) == 3 and len(gr.scores) == 3 for gr in groups)
    assert groups[0].episode_metrics is not None and groups[1].episode_metrics is None
    assert groups[0].completions[0].mask is not None and 0 in groups[0].completions[0].mask  # tool replies
    assert groups[0].completions[0].turns >= 2
    assert stats.generation_s > 0 and stats.env_s > 0 and stats.judge is None
    assert set(stats.timing()) == {"generation_s", "env_s"}


class EngineDeadError(RuntimeError):
    """Stands in for vLLM's (faults are recognised by class name, so vLLM is not imported)."""


class DyingWorker(ScriptedWorker):
    """Dies (its engine core) on the first generate call."""

    def generate(self, prompts, settings, max_tokens):
        raise EngineDeadError("EngineCore encountered an issue")


def _restartable(mixed, first, max_restarts):
    tasks, right, _ = mixed
    r = _rollouts_with(mixed, first)
    killed, rebuilt = [], []
    r.respawn = {"rollout": lambda i: Actor(ScriptedWorker(r.tokenizer, tasks, right), remote=False)}
    r.kill, r.max_restarts = killed.append, max_restarts
    r.on_restart = lambda worker, actor: rebuilt.append((worker, actor))
    return r, killed, rebuilt


def _rollouts_with(mixed, worker_cls):
    tasks, right, rollouts = mixed
    r = rollouts()
    r.engines = [Actor(worker_cls(r.tokenizer, tasks, right), remote=False)]
    return r


def test_a_dead_engine_is_rebuilt_given_the_weights_and_the_call_run_again(mixed):
    tasks, right, _ = mixed
    r, killed, rebuilt = _restartable(mixed, DyingWorker, max_restarts=2)
    dead = r.engines[0]
    groups, _ = r.groups([tasks[0], tasks[6]], 2)
    assert [gr.rewards for gr in groups] == [[1.0, 1.0], [1.0, 1.0]]
    assert killed == [dead] and rebuilt == [("rollout", r.engines[0])] and r.engines[0] is not dead
    assert r.take_restarts() == {"rollout": 1} and r.take_restarts() == {}


def test_past_max_restarts_the_failure_names_the_worker(mixed):
    from rl.rollouts import WorkerFailed
    from rl.train import fault_message

    tasks, right, _ = mixed
    r, killed, _ = _restartable(mixed, DyingWorker, max_restarts=0)
    with pytest.raises(WorkerFailed, match=r"the rollout engine 0 failed \(EngineDeadError: EngineCore") as info:
        r.groups([tasks[0]], 2)
    assert not killed and info.value.restarts == 0
    always = _rollouts_with(mixed, DyingWorker)
    always.respawn = {"rollout": lambda i: Actor(DyingWorker(always.tokenizer, tasks, right), remote=False)}
    always.max_restarts = 2
    with pytest.raises(WorkerFailed) as info:
        always.groups([tasks[0]], 2)
    assert info.value.restarts == 2 and always.restarts["rollout"] == 2
    assert fault_message(info.value).endswith("again after 2 restart(s) (ray.max_restarts)")


def test_an_error_in_the_work_itself_is_not_a_worker_death(mixed):
    class Broken(ScriptedWorker):
        def generate(self, prompts, settings, max_tokens):
            raise ValueError("prompt too long")

    r, killed, _ = _restartable(mixed, Broken, max_restarts=2)
    with pytest.raises(ValueError, match="prompt too long"):
        r.groups([mixed[0][0]], 2)
    assert not killed and r.take_restarts() == {}


def test_a_dead_environment_pool_is_rebuilt(mixed):
    from rl.cluster import WorkerTimeout

    tasks, right, _ = mixed
    r = _rollouts_with(mixed, ScriptedWorker)
    real = r.envs

    class Silent:
        def multi_turn_environments(self):
            return real.multi_turn_environments()

        def score(self, *args):
            raise WorkerTimeout("a worker did not answer within 1 s")

    r.envs = Silent()
    r.respawn, r.max_restarts = {"environments": lambda _: real}, 1
    groups, _ = r.groups([tasks[0]], 2)
    assert groups[0].rewards == [1.0, 1.0] and r.envs is real and r.take_restarts() == {"environments": 1}


def test_the_transformers_engine_samples_in_chunks_of_max_num_seqs_with_the_same_results(tiny_model):
    """``rollout.max_num_seqs`` bounds the transformers backend's batch (its KV cache): a
    chunked call gives each prompt the completions of one whole batch. Greedy (top_p near 0)
    and with prompts of different lengths, so each chunk pads to its own width."""
    from transformers import AutoTokenizer

    from rl.config import RolloutConfig
    from rl.rollout import EngineSpec, HFEngine

    tok = AutoTokenizer.from_pretrained(tiny_model)
    prompts = [prompt_token_ids(tok, [{"role": "user", "content": q}])
               for q in ["What is 2+3?", "What is 12*4-7?", "7", "What is 100-1? Think about it."]]
    settings = SamplingSettings(n=2, max_new_tokens=12, top_p=1e-6, seed=0)
    whole = HFEngine(EngineSpec(str(tiny_model), RolloutConfig(backend="transformers")), device="cpu")
    chunked = HFEngine(EngineSpec(str(tiny_model), RolloutConfig(backend="transformers", max_num_seqs=3)),
                       device="cpu")
    assert (whole.max_num_seqs, chunked.max_num_seqs) == (1024, 3)
    limits = [12, 5, 12, 8]
    a = whole.generate(prompts, settings, limits)
    b = chunked.generate(prompts, settings, limits)
    assert [len(g) for g in b] == [2] * 4
    for ga, gb, limit in zip(a, b, limits):
        for ca, cb in zip(ga, gb):
            assert cb.token_ids == ca.token_ids and cb.truncated == ca.truncated
            assert 0 < len(cb.token_ids) <= limit and len(cb.logprobs) == len(cb.token_ids)
            assert cb.logprobs == pytest.approx(ca.logprobs, abs=1e-4)
