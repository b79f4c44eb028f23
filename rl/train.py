"""``rl train``: synchronous GRPO, one step as in docs/recipe.md section 1.

    for step in steps:
        1.   tasks      = sampler.next_batch(B, step)          fixed ratios or the curriculum (curricula.base)
        2-3. groups     = rollouts.groups(tasks, G)            G completions or episodes per task, current
                                                               weights, scored by the environments (and the
                                                               judge where an environment asks; rl.rollouts)
             sampler.observe(groups)                           the curriculum's online pass rates
             dynamic_sampling(groups)                          optional refills of zero-variance groups
        4.   advantages = group_advantages(rewards)            leave-one-out, std-normalised
        5-9.              policy.train_step(batch)             lp_old from the training forward itself
                                                               (one update per step), clipped surrogate,
                                                               IS correction, AdamW; on every policy rank
        10.               refit()                              weights to the engines in memory, by bucket

The policy is ``policy.num_ranks`` rank actors in one torch.distributed
group (FSDP2, ``rl.parallel``); ``ray.placement`` gives them and the engines
their GPUs (``rl.cluster``). Colocated on GPUs, the engines sleep during 5-9.
"""

from __future__ import annotations

import logging
import random
import re
import time
from pathlib import Path

import torch

from curricula.base import Sampler
from curricula.gaussian import GaussianCurriculum, Plateau
from curricula.mixed import MixedSampler
from curricula.profile import profile_tasks, read_profile
from environments.base import Task
from environments.registry import load_tasks
from rl import grpo
from rl.batch import collate
from rl.checkpoint import latest_checkpoint, save_checkpoint, usable_checkpoint
from rl.cluster import ActorGroup, Cluster, WorkerTimeout, gather
from rl.config import Config, load_config, parse_override, save_config
from rl.metrics import step_metrics, validation_metrics
from rl.models import check_model_dir
from rl.parallel import RankGroup, free_port
from rl.policy import PolicyWorker
from rl.refit import (choose_transport, cleanup_shared_memory, refit_engines, release_shared_memory,
                      shared_memory_segments)
from rl.rollouts import Group, RolloutStats, WorkerFailed, open_rollouts
from rl.sft import resolve_model
from rl.tracking import MetricsLog, read_metrics

log = logging.getLogger(__name__)


class Trainer:
    def __init__(self, cfg: Config, run_dir: Path):
        self.cfg, self.run_dir = cfg, run_dir
        from transformers import AutoTokenizer

        self.model_path = str(resolve_model(cfg))
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
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
        placement = self.cluster.place(cfg.ray.placement, cfg.policy.num_ranks, cfg.rollout.num_workers,
                                       cfg.needs_judge_model)
        log.info("placement: %s", placement.mode)
        self.rollouts = open_rollouts(cfg, self.cluster, placement, self.model_path, self.tokenizer,
                                      weights=policy_path, seed=cfg.run.seed + 1000 * self.start_step)
        self.rollouts.on_restart = self.restarted
        n, master = cfg.policy.num_ranks, self.cluster.address_of(placement.policy[0])
        port = free_port() if n > 1 else 0
        self.policy = ActorGroup([
            self.cluster.spawn(PolicyWorker, policy_path, cfg.grpo, cfg.policy, temperature=cfg.rollout.temperature,
                               seed=cfg.run.seed, rank=RankGroup(r, n, master, port), trainer_state=trainer_state,
                               slot=placement.policy[r])
            for r in range(n)
        ])
        gpu = placement.gpus or (not self.cluster.remote and torch.cuda.is_available())
        self.refit_transport = choose_transport(
            cfg.policy.refit_transport, in_process=not self.cluster.remote and cfg.rollout.backend == "transformers",
            gpu=gpu)
        self.sampler: Sampler = self.make_sampler(pools)
        if state is not None:
            self.sampler.load_state_dict(state["sampler"])
        self.metrics = MetricsLog(run_dir, cfg, resume_step=self.start_step - 1)
        self.best = (state or {}).get("best")  # {"step", "value"} of the best validation so far
        self.val_tasks: list[Task] = []
        if cfg.run.eval_every:
            for name, opts in env_specs.items():
                pool = load_tasks(name, opts, "test")
                self.val_tasks += random.Random(cfg.run.seed + 17).sample(pool, min(cfg.run.eval_prompts, len(pool)))

    def make_sampler(self, pools: dict[str, list[Task]]) -> Sampler:
        """Fixed ratios, or the Gaussian curriculum over a pass-rate profile (read from
        ``curriculum.profile``, or made now with the starting policy, resumable in the run folder)."""
        cfg, cur = self.cfg, self.cfg.curriculum
        ratios = {n: e.ratio for n, e in cfg.environments.items()}
        if not cur.enabled:
            return MixedSampler(pools, ratios, seed=cfg.run.seed)
        if cur.profile is not None:
            profile, k = read_profile(cur.profile)
            k = k or cur.k
        else:
            rng = random.Random(cfg.run.seed)
            sample = [t for pool in pools.values() for t in rng.sample(pool, min(cur.profile_tasks, len(pool)))]
            profile, k = profile_tasks(sample, self.rollouts.rewards, cur.k, self.run_dir / "profile.jsonl"), cur.k
        profiled = {d: [t for t in pool if t.id in profile] for d, pool in pools.items()}
        missing = [d for d, pool in profiled.items() if not pool]
        if missing:
            raise ValueError(f"curriculum.profile: no profiled tasks of environments {missing}")
        rp = cur.reprofile
        return GaussianCurriculum(
            profiled, ratios, profile, k, cfg.run.steps, cur.mu_start, cur.mu_end, cur.sigma, cur.drop_solved,
            cur.drop_unsolved, cur.online_weight if cur.online_update else 0.0, seed=cfg.run.seed,
            plateau=Plateau(rp.window, rp.patience, rp.delta) if rp.enabled else None,
            profiler=lambda tasks: profile_tasks(tasks, self.rollouts.rewards, k, progress=False),
            reprofile_tasks=rp.max_tasks)

    # --------------------------------------------------------------- a step

    def step(self, step: int) -> dict[str, float]:
        """One step of the loop in this module's docstring."""
        cfg = self.cfg.grpo
        t_step = time.perf_counter()
        tasks = self.sampler.next_batch(cfg.prompts_per_step, step)                      # 1
        groups, stats = self.rollouts.groups(tasks, cfg.group_size)                      # 2, 3
        self.sampler.observe([(gr.task, gr.rewards) for gr in groups])
        zero_std_before = sum(gr.zero_std for gr in groups) / len(groups)
        groups, rounds, stats = self.dynamic_sampling(groups, stats, step)
        rewards = torch.tensor([gr.rewards for gr in groups], dtype=torch.float32)
        advantages = grpo.group_advantages(rewards, cfg.baseline, cfg.std_normalize)      # 4
        t1 = time.perf_counter()
        self.rollouts.survive(lambda: self.engines("sleep"))  # colocated: free the GPU for the trainer
        train = self.policy.train_step(self.batch(groups, advantages))                   # 5-9
        t2 = time.perf_counter()
        self.refit()                                                                    # 10
        t3 = time.perf_counter()
        timing = {**stats.timing(), "train_s": t2 - t1, "refit_s": t3 - t2, "step_s": t3 - t_step,
                  "refit_frac": (t3 - t2) / (t3 - t_step)}
        metrics = step_metrics(groups, advantages, train, timing, rounds, zero_std_before, stats.judge,
                               cfg.loss_aggregation)
        metrics.update(self.sampler.metrics())
        return metrics

    def dynamic_sampling(self, groups: list[Group], stats: RolloutStats,
                         step: int) -> tuple[list[Group], int, RolloutStats]:
        """Replace zero-variance groups by groups of fresh prompts, at most ``max_rounds`` extra rounds."""
        ds = self.cfg.grpo.dynamic_sampling
        rounds = 0
        while ds.enabled and rounds < ds.max_rounds:
            dead = [i for i, gr in enumerate(groups) if gr.zero_std]
            if not dead:
                break
            fresh, more = self.rollouts.groups(self.sampler.next_batch(len(dead), step), self.cfg.grpo.group_size)
            stats = stats + more
            for i, gr in zip(dead, [gr for gr in fresh if not gr.zero_std]):
                groups[i] = gr
            rounds += 1
        return groups, rounds, stats

    def batch(self, groups: list[Group], advantages: torch.Tensor):
        """The groups as the policy's training batch (``rl.batch.collate``)."""
        completions = [c for gr in groups for c in gr.completions]
        envs = sorted({gr.task.env for gr in groups})
        return collate([gr.prompt for gr in groups for _ in gr.completions],
                       [c.token_ids for c in completions], [c.logprobs for c in completions],
                       [c.truncated for c in completions], advantages.flatten().tolist(),
                       pad_id=self.tokenizer.pad_token_id,
                       model_token_masks=[c.mask or [1] * len(c.token_ids) for c in completions],
                       env_ids=[envs.index(gr.task.env) for gr in groups for _ in gr.completions])

    def engines(self, method: str, *args) -> list:
        """Call ``method`` on every rollout engine at once."""
        return self.rollouts.call_engines(method, *args)

    def refit(self) -> None:
        """The policy's weights to every engine, one bucket at a time (``rl.refit``): vLLM reads
        checkpoint names, the transformers engine the model's own. An engine that dies meanwhile
        is rebuilt and the refit done again."""
        self.rollouts.survive(lambda: self.refit_into(self.engines))

    def refit_into(self, engines) -> None:
        refit_engines(self.policy, engines, self.refit_transport, self.cfg.rollout.backend == "vllm",
                      self.cfg.model.dtype)

    def restarted(self, worker: str, actor) -> None:
        """A rebuilt rollout engine gets the policy's current weights."""
        if worker == "rollout":
            self.refit_into(lambda method, *args: gather([actor.submit(method, *args)]))

    # ----------------------------------------------------------------- run

    def validate(self) -> dict[str, float]:
        """``val/*`` metrics of the fixed validation tasks, with the engines' current weights."""
        groups, _ = self.rollouts.groups(self.val_tasks, self.cfg.run.eval_samples)
        return validation_metrics(groups, self.cfg.run.eval_samples)

    def checkpoint(self, step: int) -> None:
        state = {"sampler": self.sampler.state_dict(), "python_rng": random.getstate(), "best": self.best}
        save_checkpoint(self.run_dir, step, self.policy.save, state, self.cfg.run.keep_checkpoints)

    def validation(self, step: int) -> dict[str, float]:
        """Validate, time it, and keep the policy if it is the best so far."""
        t = time.perf_counter()
        metrics = self.validate()
        metrics["timing/validation_s"] = time.perf_counter() - t
        self.keep_if_best(step, metrics)
        return metrics

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
        if cfg.eval_every and cfg.eval_before_train and self.start_step == 1 \
                and not any(r["step"] == 0 for r in read_metrics(self.metrics.path)):  # not again on resume
            self.metrics.log(0, self.validation(0))
        for step in bar:
            metrics = self.step(step)
            if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
                metrics.update(self.validation(step))
            metrics.update({f"train/restarts/{w}": float(n) for w, n in self.rollouts.take_restarts().items()})
            self.metrics.log(step, metrics)
            bar.set_postfix(reward=f"{metrics['train/reward_mean']:.3f}",
                            pass_rate=f"{metrics['train/pass_rate']:.2f}")
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                self.checkpoint(step)

    def close(self) -> None:
        self.metrics.close()
        self.rollouts.close()
        try:
            self.policy.close()
        except Exception:  # noqa: BLE001 - best effort at shutdown
            pass
        self.cluster.shutdown()
        left = release_shared_memory(self.segments_before)  # this run's segments, once nothing maps them
        if left:
            log.warning("shared memory still in use after the run: %s", sorted(left))


def _tuple_state(state):
    return tuple(_tuple_state(s) if isinstance(s, list) else s for s in state)


def new_run_dir(cfg: Config) -> Path:
    if cfg.run.dir:
        return Path(cfg.run.dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(cfg.run.output_dir) / f"{cfg.run.name}-{stamp}"


RESUME_OVERRIDES = ("run.steps",)
"""The keys a resumed run may change: its length (to extend a finished run). Any other change
would make the run's later steps a different experiment from its earlier ones."""


def train(cfg: Config | None = None, resume_dir: str | Path | None = None, overrides: list[str] = ()) -> Path:
    """Run (or resume) a training run; returns the run folder. ``overrides`` apply to a resumed
    run's config (only ``RESUME_OVERRIDES``) and are saved with it."""
    if resume_dir is not None:
        run_dir = Path(resume_dir)
        if not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"--resume: {run_dir} has no config.yaml; is it a run folder?")
        for text in overrides:
            if "=" not in text:
                raise ValueError(f"--resume takes no config file ({text!r}): the run's config.yaml is used")
        cfg = load_config(run_dir / "config.yaml", list(overrides))  # a misspelt key is named here
        for key in (".".join(parse_override(text)[0]) for text in overrides):
            if key not in RESUME_OVERRIDES:
                raise ValueError(f"--resume: {key} cannot change in a resumed run (only {', '.join(RESUME_OVERRIDES)}: "
                                 "the run's config.yaml is used)")
        done = latest_checkpoint(run_dir)
        if done is not None and done[0] > cfg.run.steps:
            raise ValueError(f"--resume: run.steps={cfg.run.steps} is below the run's latest checkpoint, step {done[0]}")
        if overrides:
            save_config(cfg, run_dir / "config.yaml")
    else:
        if cfg.model.path:
            check_model_dir(cfg.model.path)  # fail before making a run folder
        if cfg.needs_judge_model:
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
    if isinstance(exc, WorkerFailed):
        return f"{exc}" + (f", again after {exc.restarts} restart(s) (ray.max_restarts)" if exc.restarts else "")
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
