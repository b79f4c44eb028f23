"""``rl train``: synchronous GRPO, one step as in docs/recipe.md section 1.

    for step in steps:
        1. tasks      = sampler.next_batch(B)                 fixed ratios between environments
        2. groups     = rollout.generate(tasks, G)            token ids + lp_gen, current weights
        3. scores     = environments.score(groups)            reward + components (+ reason)
        4. advantages = group_advantages(rewards)             leave-one-out, std-normalised
        5-9.            policy.train_step(batch)              lp_old from the training forward itself
                                                              (one update per step), clipped surrogate,
                                                              IS correction, AdamW; on every policy rank
        10.             refit()                               weights to the engines in memory, by bucket

The policy is ``policy.num_ranks`` rank actors in one torch.distributed
group (FSDP2, ``rl.parallel``); ``ray.placement`` gives them and the engines
their GPUs (``rl.cluster``). Colocated on GPUs, the engines sleep during 5-9.
"""

from __future__ import annotations

import logging
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from curricula.gaussian import GaussianCurriculum, Plateau
from curricula.mixed import MixedSampler
from curricula.profile import profile_tasks, read_profile
from environments.base import Score, Task
from environments.pool import EnvironmentPool
from environments.registry import load_tasks
from rl import grpo
from rl.batch import collate
from rl.checkpoint import latest_checkpoint, save_checkpoint, usable_checkpoint
from rl.cluster import ActorGroup, Cluster, WorkerTimeout, gather
from rl.config import Config, load_config, save_config
from rl.models import check_model_dir
from rl.episodes import EpisodeLimits, ReasoningControl, Trajectory, TurnGenerator, run_episodes
from rl.parallel import RankGroup, free_port
from rl.policy import PolicyWorker
from rl.refit import (choose_transport, cleanup_shared_memory, refit_engines, release_shared_memory,
                      shared_memory_segments)
from rl.rollout import Completion, RolloutWorker, SamplingSettings, context_length, prompt_token_ids
from rl.sft import resolve_model
from rl.tracking import MetricsLog
from reward_models.genrm import base_rewards, circular_pairs, length_control
from reward_models.judge import Judge, judge_messages
from verifiers.text import split_reasoning

log = logging.getLogger(__name__)

@dataclass
class Group:
    """One prompt's G completions and their scores."""

    task: Task
    prompt: list[int]
    completions: list[Completion]
    scores: list[Score]
    episode_metrics: list[dict[str, float]] | None = None
    """Multi-turn: each episode's counters (turns, tool calls, tool errors ...)."""

    @property
    def rewards(self) -> list[float]:
        return [s.reward for s in self.scores]

    @property
    def zero_std(self) -> bool:
        """All rewards equal: the group's advantages are 0 (no learning signal)."""
        return len(set(self.rewards)) == 1


class Trainer:
    def __init__(self, cfg: Config, run_dir: Path):
        self.cfg, self.run_dir = cfg, run_dir
        from transformers import AutoTokenizer

        self.model_path = str(resolve_model(cfg))
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.max_model_len = context_length(self.model_path, cfg.rollout.max_model_len)
        env_specs = {name: e.options for name, e in cfg.environments.items()}
        pools = {name: load_tasks(name, opts, "train") for name, opts in env_specs.items()}

        resume = usable_checkpoint(run_dir)
        self.start_step = 1
        policy_path, trainer_state, state = self.model_path, None, None
        if resume is not None:
            step, ckpt, state = resume
            random.setstate(_tuple_state(state["python_rng"]))
            policy_path, trainer_state = str(ckpt / "policy" / "model"), str(ckpt / "policy" / "trainer_state.pt")
            self.start_step = step + 1
            log.info("resuming %s from step %d", run_dir, step)
        else:
            random.seed(cfg.run.seed)
            if (run_dir / "metrics.jsonl").is_file():
                log.warning("%s has no usable checkpoint yet: starting over from step 1 (metrics.jsonl trimmed)",
                            run_dir)
        stale = cleanup_shared_memory()  # what a killed run left in /dev/shm
        self.segments_before = shared_memory_segments()
        if stale:
            log.info("removed %d stale shared-memory segments of earlier runs", len(stale))
        self.cluster = Cluster(cfg.ray)
        ro = cfg.rollout
        self.judged = {n for n, e in cfg.environments.items() if e.reward == "genrm"}
        placement = self.cluster.place(cfg.ray.placement, cfg.policy.num_ranks, ro.num_workers, bool(self.judged))
        log.info("placement: %s", placement.mode)
        self.rollout = [
            self.cluster.spawn(RolloutWorker, ro.backend, policy_path, dtype=cfg.model.dtype,
                               seed=cfg.run.seed + i + 1000 * self.start_step, kv_cache_gib=ro.kv_cache_gib,
                               gpu_memory_utilization=ro.gpu_memory_utilization, enforce_eager=ro.enforce_eager,
                               max_model_len=self.max_model_len, sleep_mode=placement.mode == "colocated",
                               slot=placement.engines[i])
            for i in range(ro.num_workers)
        ]
        n, master = cfg.policy.num_ranks, self.cluster.address_of(placement.policy[0])
        port = free_port() if n > 1 else 0
        self.policy = ActorGroup([
            self.cluster.spawn(PolicyWorker, policy_path, cfg.grpo, cfg.policy, temperature=ro.temperature,
                               seed=cfg.run.seed, rank=RankGroup(r, n, master, port), trainer_state=trainer_state,
                               slot=placement.policy[r])
            for r in range(n)
        ])
        gpu = placement.gpus or (not self.cluster.remote and torch.cuda.is_available())
        self.refit_transport = choose_transport(
            cfg.policy.refit_transport, in_process=not self.cluster.remote and ro.backend == "transformers", gpu=gpu)
        self.envs = self.cluster.spawn(EnvironmentPool, env_specs, self.model_path,
                                       timeouts={n: e.timeout_s for n, e in cfg.environments.items()})
        self.multi_turn: dict[str, bool] = self.envs.multi_turn_environments()
        self.judge = None
        if self.judged:
            jc = cfg.rlhf.judge
            judge_path = str(check_model_dir(jc.model_path, "rlhf.judge.model_path"))
            self.judge = self.cluster.spawn(
                Judge, jc.backend, judge_path, max_new_tokens=jc.max_new_tokens,
                temperature=jc.temperature, retries=jc.retries, seed=cfg.run.seed + 7, dtype=cfg.model.dtype,
                kv_cache_gib=jc.kv_cache_gib, gpu_memory_utilization=jc.gpu_memory_utilization,
                enforce_eager=ro.enforce_eager, max_model_len=context_length(judge_path, cfg.rollout.max_model_len),
                slot=placement.judge)
        settings = SamplingSettings(n=1, max_new_tokens=ro.max_new_tokens, temperature=ro.temperature,
                                    top_p=ro.top_p)
        self.turn = TurnGenerator.for_tokenizer(self.generate, settings, self.tokenizer,
                                                ReasoningControl(ro.thinking, ro.reasoning_budget))
        self.sampler = self.make_sampler(pools)
        self.plateau = Plateau(cfg.curriculum.reprofile.window, cfg.curriculum.reprofile.patience,
                               cfg.curriculum.reprofile.delta)
        self.reprofiles = 0
        if state is not None:
            self.sampler.load_state_dict(state["sampler"])
            if "plateau" in state:
                self.plateau.load_state_dict(state["plateau"])
                self.reprofiles = state.get("reprofiles", 0)
        self.metrics = MetricsLog(run_dir, cfg, resume_step=self.start_step - 1)
        self.best = (state or {}).get("best")  # {"step", "value"} of the best validation so far
        self.val_tasks: list[Task] = []
        if cfg.run.eval_every:
            for name, opts in env_specs.items():
                pool = load_tasks(name, opts, "test")
                self.val_tasks += random.Random(cfg.run.seed + 17).sample(pool, min(cfg.run.eval_prompts, len(pool)))

    # ------------------------------------------------------------ sampling

    def make_sampler(self, pools: dict[str, list[Task]]) -> MixedSampler | GaussianCurriculum:
        cfg, cur = self.cfg, self.cfg.curriculum
        ratios = {n: e.ratio for n, e in cfg.environments.items()}
        if not cur.enabled:
            return MixedSampler(pools, ratios, seed=cfg.run.seed)
        if cur.profile is not None:
            profile, k = read_profile(cur.profile)
        else:  # profile a sample of each pool with the starting policy (resumable file in the run folder)
            rng = random.Random(cfg.run.seed)
            sample = [t for pool in pools.values() for t in rng.sample(pool, min(cur.profile_tasks, len(pool)))]
            profile = profile_tasks(sample, self.group_rewards, cur.k, self.run_dir / "profile.jsonl")
            k = cur.k
        profiled = {d: [t for t in pool if t.id in profile] for d, pool in pools.items()}
        missing = [d for d, pool in profiled.items() if not pool]
        if missing:
            raise ValueError(f"curriculum.profile: no profiled tasks of environments {missing}")
        return GaussianCurriculum(profiled, ratios, profile, k or cur.k, cfg.run.steps, cur.mu_start, cur.mu_end,
                                  cur.sigma, cur.drop_solved, cur.drop_unsolved, cur.online_weight,
                                  seed=cfg.run.seed)

    def group_rewards(self, tasks: list[Task], k: int) -> list[list[float]]:
        """Rewards of k completions per task (profiling)."""
        groups, _ = self.rollout_and_score(tasks, n=k)
        return [gr.rewards for gr in groups]

    def reprofile(self) -> None:
        """Re-estimate pass rates with the current policy on a sample of every pool."""
        cur = self.cfg.curriculum
        rng = random.Random(self.cfg.run.seed + 7919 * (self.reprofiles + 1))
        sample = [t for pool in self.sampler.pools.values()
                  for t in rng.sample(pool, min(cur.reprofile.max_tasks, len(pool)))]
        self.sampler.reprofile(profile_tasks(sample, self.group_rewards, self.sampler.k, progress=False))
        self.reprofiles += 1

    # ------------------------------------------------------------ steps 2-3

    def generate(self, prompts: list[list[int]], settings: SamplingSettings,
                 max_tokens: list[int]) -> list[list[Completion]]:
        """One engine call, the prompts split evenly between the rollout workers."""
        shards = [s for s in _split(list(range(len(prompts))), len(self.rollout)) if s]
        futures = [w.submit("generate", [prompts[i] for i in shard], settings, [max_tokens[i] for i in shard])
                   for w, shard in zip(self.rollout, shards)]
        return [group for result in gather(futures) for group in result]

    def rollout_and_score(self, tasks: list[Task], n: int | None = None) -> tuple[list[Group], dict[str, float]]:
        """Steps 2-3: G completions (single-turn) or episodes (multi-turn) per task, scored.
        Returns the groups and additive stats: seconds per phase, and the judge's
        counters (``judge/*``, ``rlhf/*``) when a judge scores some environment."""
        ro = self.cfg.rollout
        g = n or self.cfg.grpo.group_size
        prompts = [prompt_token_ids(self.tokenizer, t.messages, ro.thinking) for t in tasks]
        single = [i for i, t in enumerate(tasks) if not self.multi_turn.get(t.env, False)]
        multi = [i for i, t in enumerate(tasks) if self.multi_turn.get(t.env, False)]
        trajs: dict[int, list[Trajectory]] = {}
        scored: dict[int, tuple[list[Score], list[dict] | None]] = {}
        t0 = time.perf_counter()
        if single:
            forks = self.turn([Trajectory(prompts[i]) for i in single], g, [ro.max_new_tokens] * len(single))
            trajs.update(zip(single, forks))
        env_s = 0.0
        if multi:
            client = _EpisodeClient(self.envs)
            limits = EpisodeLimits(ro.max_turns, min(ro.max_episode_tokens, self.max_model_len - max(
                len(prompts[i]) for i in multi)), ro.max_new_tokens)
            groups, keys = run_episodes([tasks[i] for i in multi], [prompts[i] for i in multi], g, self.turn,
                                        client, self.tokenizer, limits, ro.thinking)
            env_s += client.seconds
            t = time.perf_counter()
            finished = self.envs.finish([k for ks in keys for k in ks])
            env_s += time.perf_counter() - t
            for j, (i, group) in enumerate(zip(multi, groups)):
                trajs[i] = group
                done = finished[j * g:(j + 1) * g]
                scored[i] = ([s for s, _ in done], [m for _, m in done])
        generation_s = time.perf_counter() - t0 - env_s  # engine time (the episodes' env steps taken out)
        if single:
            flat_tasks = [tasks[i] for i in single for _ in range(g)]
            scores, s = self.envs.score(flat_tasks, [t.tokens for i in single for t in trajs[i]])
            env_s += s
            for j, i in enumerate(single):
                scored[i] = (scores[j * g:(j + 1) * g], None)
        groups_out = [Group(t, prompts[i], [tr.completion() for tr in trajs[i]], *scored[i])
                      for i, t in enumerate(tasks)]
        timing = {"generation_s": generation_s, "env_s": env_s}
        if self.judge is not None:
            t = time.perf_counter()
            timing.update(self.judge_groups([gr for gr in groups_out if gr.task.env in self.judged]))
            timing["judge_s"] = time.perf_counter() - t
        return groups_out, timing

    def judge_groups(self, groups: list[Group]) -> dict[str, float]:
        """RLHF rewards (docs/recipe.md sections 4-5): circular comparison of each group's
        answers by the judge, base rewards, then group-relative length control.
        The verifier's reward stays in the components as ``verifier`` (its own
        components as ``verifier/<name>``). Returns
        counters (judge calls, retries, failures; responses judged, left
        unscored, given the bonus) that add up over dynamic-sampling rounds."""
        if not groups:
            return {"judge/calls": 0.0, "judge/retries": 0.0, "judge/failures": 0.0,
                    "rlhf/responses": 0.0, "rlhf/unscored": 0.0, "rlhf/bonuses": 0.0}
        lc = self.cfg.rlhf.length_control
        parts = [[_reasoning_and_answer(self.tokenizer.decode(c.token_ids, skip_special_tokens=True))
                  for c in gr.completions] for gr in groups]
        prompts = [judge_messages(gr.task.messages, p[a][1], p[b][1])
                   for gr, p in zip(groups, parts) for a, b in circular_pairs(len(p))]
        judgements, metrics = self.judge.judge(prompts)
        unscored, bonuses, start = 0, 0, 0
        for gr, p in zip(groups, parts):
            n = len(p)
            base, missing = base_rewards(n, judgements[start:start + n])
            start += n
            unscored += missing
            think = [len(r) for r, _ in p]
            answer = [len(a) for _, a in p]
            if lc.enabled:
                out = length_control(base, think, answer, lc.lam_think, lc.lam_answer, lc.bonus, lc.bonus_percentile)
                rewards, adj = out.rewards, list(zip(out.think_adjustment, out.answer_adjustment, out.bonus))
                bonuses += sum(b > 0 for b in out.bonus)
            else:
                rewards, adj = base, [(0.0, 0.0, 0.0)] * n
            gr.scores = [Score(r, {"base": b, "think_adjustment": ta, "answer_adjustment": aa, "bonus": bo,
                                   "verifier": s.reward, "think_chars": float(th), "answer_chars": float(an),
                                   **{f"verifier/{k}": v for k, v in s.components.items()}})
                         for r, b, (ta, aa, bo), s, th, an in zip(rewards, base, adj, gr.scores, think, answer)]
        metrics.update({"rlhf/responses": float(sum(len(p) for p in parts)), "rlhf/unscored": float(unscored),
                        "rlhf/bonuses": float(bonuses)})
        return metrics

    def dynamic_sampling(self, groups: list[Group], timing: dict) -> tuple[list[Group], int]:
        """Replace zero-variance groups by groups of fresh prompts, at most ``max_rounds`` extra rounds."""
        ds = self.cfg.grpo.dynamic_sampling
        rounds = 0
        while ds.enabled and rounds < ds.max_rounds:
            dead = [i for i, gr in enumerate(groups) if gr.zero_std]
            if not dead:
                break
            fresh, t = self.rollout_and_score(self.sampler.next_batch(len(dead)))
            for key in timing:
                timing[key] += t[key]
            useful = [gr for gr in fresh if not gr.zero_std]
            for i, gr in zip(dead, useful):
                groups[i] = gr
            rounds += 1
        return groups, rounds

    # --------------------------------------------------------------- a step

    def step(self, step: int) -> dict[str, float]:
        cfg = self.cfg.grpo
        t_step = time.perf_counter()
        curriculum = isinstance(self.sampler, GaussianCurriculum)
        if curriculum:
            self.sampler.set_step(step)
        tasks = self.sampler.next_batch(cfg.prompts_per_step)                           # 1
        groups, timing = self.rollout_and_score(tasks)                                   # 2, 3
        if curriculum and self.cfg.curriculum.online_update:
            for gr in groups:
                self.sampler.observe(gr.task.id, sum(r >= 1.0 for r in gr.rewards), len(gr.rewards))
        zero_std_before = sum(gr.zero_std for gr in groups) / len(groups)
        groups, ds_rounds = self.dynamic_sampling(groups, timing)
        counters = {k: timing.pop(k) for k in list(timing) if k.startswith(("judge/", "rlhf/"))}
        rewards = torch.tensor([gr.rewards for gr in groups], dtype=torch.float32)
        advantages = grpo.group_advantages(rewards, cfg.baseline, cfg.std_normalize)      # 4
        completions = [c for gr in groups for c in gr.completions]
        batch = collate([gr.prompt for gr in groups for _ in gr.completions],
                        [c.token_ids for c in completions], [c.logprobs for c in completions],
                        [c.truncated for c in completions], advantages.flatten().tolist(),
                        pad_id=self.tokenizer.pad_token_id,
                        model_token_masks=[c.mask or [1] * len(c.token_ids) for c in completions])
        t1 = time.perf_counter()
        self.engines("sleep")  # colocated on GPUs: free the engines' memory for the trainer
        train = self.policy.train_step(batch)                                           # 5-9
        t2 = time.perf_counter()
        self.refit()                                                                    # 10
        t3 = time.perf_counter()
        timing.update(train_s=t2 - t1, refit_s=t3 - t2, step_s=t3 - t_step, refit_frac=(t3 - t2) / (t3 - t_step))
        metrics = step_metrics(groups, advantages, train, timing, ds_rounds, zero_std_before)
        if counters:  # summed over the step's dynamic-sampling rounds
            responses = max(counters.pop("rlhf/responses"), 1.0)
            metrics.update({"rlhf/unscored_frac": counters.pop("rlhf/unscored") / responses,
                            "rlhf/bonus_frac": counters.pop("rlhf/bonuses") / responses, **counters})
        if curriculum:
            metrics.update(self.sampler.metrics())
            if self.cfg.curriculum.reprofile.enabled and self.plateau.update(metrics["train/reward_mean"]):
                t = time.perf_counter()
                self.reprofile()
                metrics["timing/reprofile_s"] = time.perf_counter() - t
            metrics["curriculum/reprofiles"] = float(self.reprofiles)
        return metrics

    def engines(self, method: str, *args) -> list:
        """Call ``method`` on every rollout engine at once."""
        return gather([w.submit(method, *args) for w in self.rollout])

    def refit(self) -> None:
        """The policy's weights to every engine, one bucket at a time (``rl.refit``):
        vLLM reads checkpoint names, the transformers engine the model's own."""
        refit_engines(self.policy, self.engines, self.refit_transport, self.cfg.rollout.backend == "vllm",
                      self.cfg.model.dtype)

    # ----------------------------------------------------------------- run

    def validate(self) -> dict[str, float]:
        """``val/*`` metrics of the fixed validation tasks, with the engines' current weights."""
        k = self.cfg.run.eval_samples
        groups, _ = self.rollout_and_score(self.val_tasks, n=k)
        out: dict[str, float] = {}
        for env in [None, *sorted({gr.task.env for gr in groups})]:
            mine = [gr for gr in groups if env is None or gr.task.env == env]
            correct = [sum(r >= 1.0 for r in gr.rewards) for gr in mine]
            suffix = "" if env is None else f"/{env}"
            out[f"val/reward_mean{suffix}"] = sum(sum(gr.rewards) / len(gr.rewards) for gr in mine) / len(mine)
            out[f"val/pass@1{suffix}"] = sum(grpo.pass_at_k(k, c, 1) for c in correct) / len(mine)
            out[f"val/pass@{k}{suffix}"] = sum(grpo.pass_at_k(k, c, k) for c in correct) / len(mine)
        return out

    def checkpoint(self, step: int) -> None:
        state = {"sampler": self.sampler.state_dict(), "python_rng": random.getstate(),
                 "plateau": self.plateau.state_dict(), "reprofiles": self.reprofiles, "best": self.best}
        save_checkpoint(self.run_dir, step, self.policy.save, state, self.cfg.run.keep_checkpoints)

    def keep_if_best(self, step: int, metrics: dict[str, float]) -> None:
        """Keep this step's policy in ``checkpoints/best`` when ``run.best_metric`` improved
        (never rotated away; its state.json names the step and the value)."""
        key = self.cfg.run.best_metric
        if key is None or key not in metrics:
            return
        if self.best is None or metrics[key] > self.best["value"]:
            self.best = {"step": step, "value": metrics[key], "metric": key}
            save_checkpoint(self.run_dir, step, self.policy.save, {"best": self.best}, keep=1, name="best")

    def fit(self) -> None:
        from tqdm import tqdm

        cfg = self.cfg.run
        bar = tqdm(range(self.start_step, cfg.steps + 1), initial=self.start_step - 1, total=cfg.steps,
                   desc="GRPO", unit="step", dynamic_ncols=True)
        for step in bar:
            metrics = self.step(step)
            if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
                t = time.perf_counter()
                metrics.update(self.validate())
                metrics["timing/validation_s"] = time.perf_counter() - t
                self.keep_if_best(step, metrics)
            self.metrics.log(step, metrics)
            bar.set_postfix(reward=f"{metrics['train/reward_mean']:.3f}",
                            pass_rate=f"{metrics['train/pass_rate']:.2f}")
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                self.checkpoint(step)

    def close(self) -> None:
        self.metrics.close()
        for component in (self.envs, self.policy, *self.rollout):
            try:
                component.close()
            except Exception:  # noqa: BLE001 - best effort at shutdown
                pass
        self.cluster.shutdown()
        left = release_shared_memory(self.segments_before)  # this run's segments, once nothing maps them
        if left:
            log.warning("shared memory still in use after the run: %s", sorted(left))


def step_metrics(groups: list[Group], advantages: torch.Tensor, train: dict, timing: dict,
                 ds_rounds: int, zero_std_before: float) -> dict[str, float]:
    rewards = torch.tensor([gr.rewards for gr in groups], dtype=torch.float32)
    lengths = torch.tensor([len(c.token_ids) for gr in groups for c in gr.completions], dtype=torch.float32)
    truncated = torch.tensor([c.truncated for gr in groups for c in gr.completions], dtype=torch.float32)
    m = {
        "train/reward_mean": float(rewards.mean()),
        "train/reward_std": float(rewards.std()) if rewards.numel() > 1 else 0.0,
        "train/pass_rate": float((rewards >= 1.0).float().mean()),
        # the groups as sampled; after dynamic sampling's refills, the groups trained on
        "train/frac_zero_std": zero_std_before,
        "train/frac_zero_std_after_refill": float(grpo.zero_std_groups(rewards).float().mean()),
        "train/advantage_mean": float(advantages.mean()),
        "train/advantage_abs_mean": float(advantages.abs().mean()),
        "train/response_len_mean": float(lengths.mean()),
        "train/response_len_max": float(lengths.max()),
        "train/truncated_frac": float(truncated.mean()),
        "train/dynamic_sampling_rounds": float(ds_rounds),
    }
    completions = [c for gr in groups for c in gr.completions]
    if any(c.mask is not None for c in completions):
        m["train/model_tokens_mean"] = sum(sum(c.mask) if c.mask else len(c.token_ids)
                                           for c in completions) / len(completions)
        m["train/turns_mean"] = sum(c.turns for c in completions) / len(completions)
        m["train/think_forced_frac"] = sum(c.forced_think_end > 0 for c in completions) / len(completions)
    for env in sorted({gr.task.env for gr in groups if "verifier" in gr.scores[0].components}):
        scores = [s for gr in groups if gr.task.env == env for s in gr.scores]
        m[f"train/verifier_reward_mean/{env}"] = sum(s.components["verifier"] for s in scores) / len(scores)
        m[f"rlhf/think_chars_mean/{env}"] = sum(s.components["think_chars"] for s in scores) / len(scores)
        m[f"rlhf/answer_chars_mean/{env}"] = sum(s.components["answer_chars"] for s in scores) / len(scores)
        for key in sorted({k for s in scores for k in s.components if k.startswith("verifier/")}):
            m[f"train/{key.replace('/', f'/{env}/', 1)}"] = sum(s.components.get(key, 0.0) for s in scores) / len(scores)
    for env in sorted({gr.task.env for gr in groups if gr.episode_metrics}):
        episodes = [em for gr in groups if gr.task.env == env for em in gr.episode_metrics or []]
        for key in sorted({k for em in episodes for k in em}):
            m[f"episode/{env}/{key}"] = sum(em.get(key, 0.0) for em in episodes) / len(episodes)
    for env in sorted({gr.task.env for gr in groups}):
        r = torch.tensor([gr.rewards for gr in groups if gr.task.env == env])
        m[f"train/reward_mean/{env}"] = float(r.mean())
        m[f"train/pass_rate/{env}"] = float((r >= 1.0).float().mean())
    reasons: dict[str, int] = {}
    for gr in groups:
        for s in gr.scores:
            if s.reason:
                key = s.reason.split(":")[0].strip().replace(" ", "_")[:40]
                reasons[key] = reasons.get(key, 0) + 1
    total = max(rewards.numel(), 1)
    for key, n in reasons.items():
        m[f"train/zero_reason/{key}"] = n / total
    m.update({f"train/{k}": v for k, v in train.items()})
    m.update({f"timing/{k}": v for k, v in timing.items()})
    return m


def _reasoning_and_answer(completion: str) -> tuple[str, str]:
    """The reasoning ('' when absent) and the stripped answer the judge reads."""
    reasoning, answer = split_reasoning(completion)
    return reasoning or "", answer.strip()


class _EpisodeClient:
    """The environment actor as the episode loop sees it, timing its steps."""

    def __init__(self, envs):
        self.envs, self.seconds = envs, 0.0

    def start(self, tasks: list[Task]) -> list[str]:
        t = time.perf_counter()
        keys = self.envs.start(tasks)
        self.seconds += time.perf_counter() - t
        return keys

    def step(self, keys: list[str], texts: list[str]) -> list[list[dict] | None]:
        t = time.perf_counter()
        replies = self.envs.step(keys, texts)
        self.seconds += time.perf_counter() - t
        return replies


def _split(items: list, n: int) -> list[list]:
    k, r = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        stop = start + k + (1 if i < r else 0)
        out.append(items[start:stop])
        start = stop
    return out


def _tuple_state(state):
    return tuple(_tuple_state(s) if isinstance(s, list) else s for s in state)


def new_run_dir(cfg: Config) -> Path:
    if cfg.run.dir:
        return Path(cfg.run.dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(cfg.run.output_dir) / f"{cfg.run.name}-{stamp}"


def train(cfg: Config | None = None, resume_dir: str | Path | None = None) -> Path:
    """Run (or resume) a training run; returns the run folder."""
    if resume_dir is not None:
        run_dir = Path(resume_dir)
        if not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"--resume: {run_dir} has no config.yaml; is it a run folder?")
        cfg = load_config(run_dir / "config.yaml")
    else:
        if cfg.model.path:
            check_model_dir(cfg.model.path)  # fail before making a run folder
        if any(e.reward == "genrm" for e in cfg.environments.values()):
            check_model_dir(cfg.rlhf.judge.model_path, "rlhf.judge.model_path")
        run_dir = new_run_dir(cfg)
        if latest_checkpoint(run_dir) is not None:
            raise FileExistsError(f"run.dir {run_dir} already holds a run; use `rl train --resume {run_dir}`")
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    trainer = None
    try:
        trainer = Trainer(cfg, run_dir)
        trainer.fit()
    except Exception as exc:
        message = fault_message(exc)
        if message is None:
            raise
        log.debug("worker failure", exc_info=True)  # the whole Ray traceback, with -v
        raise RunStopped(f"{message}\nresume with: rl train --resume {run_dir}") from exc
    finally:
        if trainer is not None:
            trainer.close()
    return run_dir


class RunStopped(RuntimeError):
    """A worker died or failed: what, why if known, and the resume command."""


def fault_message(exc: BaseException) -> str | None:
    """A few lines for a Ray worker's death or failure (None: not a worker fault)."""
    if isinstance(exc, WorkerTimeout):
        return str(exc)
    try:
        from ray import exceptions as rex
    except ImportError:
        return None
    text = str(exc)
    if isinstance(exc, rex.RayActorError):
        cls = re.search(r"class_name: (\w+)", text)
        why = re.search(r"(The actor died[^.\n]*|killed[^.\n]*|exit[^.\n]*)", text)
        return (f"the {cls.group(1) if cls else 'worker'} actor died"
                f"{f' ({why.group(1).strip()})' if why else ''}")
    if isinstance(exc, rex.RayTaskError):
        cause = getattr(exc, "cause", None)
        root = f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}" \
            if cause is not None else text.strip().splitlines()[-1]
        return f"{getattr(exc, 'function_name', 'a worker call')} failed: {root[:500]}"
    return None
