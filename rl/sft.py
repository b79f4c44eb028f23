"""Supervised warm-up on the environments' reference solutions (TRL SFTTrainer),
so that RL starts from a non-zero pass rate; and the built-in default model
(init + warm-up), built on first use and cached."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from pathlib import Path

from rl.config import Config, SFTConfig
from rl.models import builtin_model_key, cache_dir, check_model_dir, init_model

log = logging.getLogger(__name__)


def reference_pairs(cfg: Config) -> list[tuple[list[dict], str]]:
    """(conversation so far, reference completion) from the train split of every
    environment with references; a multi-turn reference gives one pair per
    model turn, its conversation played out (tool responses from the episode)."""
    from environments.base import MultiTurnEnvironment
    from environments.registry import make_environment

    pairs = []
    for name, env_cfg in cfg.environments.items():
        env = make_environment(name, env_cfg.options)
        try:
            for t in env.tasks("train"):
                if not t.reference:
                    continue
                if not isinstance(env, MultiTurnEnvironment):
                    pairs.append((t.messages, t.reference))
                    continue
                history = list(t.messages)
                for message in env.play(t, env.reference_turns(t))[1]:
                    if message["role"] == "assistant":
                        pairs.append((list(history), message["content"]))
                    history.append(message)
        finally:
            env.close()
    if not pairs:
        raise ValueError("model.sft: no environment of this config provides reference solutions")
    return pairs


def reference_examples(cfg: Config, tokenizer, num_examples: int, seed: int,
                       pairs: list[tuple[list[dict], str]] | None = None) -> list[dict]:
    """``num_examples`` prompt/completion rows (shuffled, cycled) from ``reference_pairs``."""
    pairs = reference_pairs(cfg) if pairs is None else pairs
    rows = [{"prompt": tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False), "completion": c}
            for m, c in pairs]
    rng = random.Random(seed)
    rng.shuffle(rows)
    return [rows[i % len(rows)] for i in range(num_examples)]


def run_sft(model_path: str | Path, out_dir: str | Path, cfg: Config, sft: SFTConfig | None = None,
            pairs: list[tuple[list[dict], str]] | None = None) -> Path:
    """Fine-tune ``model_path`` on reference completions; save to ``out_dir``."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    sft = sft or cfg.model.sft
    out_dir = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    data = Dataset.from_list(reference_examples(cfg, tokenizer, sft.num_examples, cfg.run.seed, pairs))
    args = TRLSFTConfig(
        output_dir=str(out_dir / "_trainer"),
        max_steps=sft.steps,
        per_device_train_batch_size=sft.batch_size,
        learning_rate=sft.lr,
        lr_scheduler_type="cosine",
        warmup_steps=min(20, max(sft.steps // 10, 1)),
        weight_decay=0.0,
        logging_steps=max(sft.steps // 10, 1),
        save_strategy="no",
        report_to=[],
        use_cpu=not _cuda(),
        bf16=False,
        dataloader_num_workers=0,
        max_length=sft.max_length,
        seed=cfg.run.seed,
        disable_tqdm=False,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    trainer.train()
    trainer.save_model(str(out_dir))
    tokenizer.save_pretrained(out_dir)
    shutil.rmtree(out_dir / "_trainer", ignore_errors=True)
    return out_dir


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_model(cfg: Config) -> Path:
    """``model.path`` if set (checked), else the cached built-in model, built if missing."""
    if cfg.model.path:
        return check_model_dir(cfg.model.path)
    sft = cfg.model.sft
    # what the warm-up data depends on: not the env's ratio, time limit or reward source
    envs = {k: v.model_dump(exclude={"reward", "ratio", "timeout_s"}) for k, v in cfg.environments.items()}
    # and the references themselves, so that an environment whose code changed them gets a new warm-up
    pairs = reference_pairs(cfg) if sft.steps > 0 else []
    digest = hashlib.sha256(json.dumps(pairs, sort_keys=True).encode()).hexdigest()
    fingerprint = {"sft": sft.model_dump(), "envs": envs, "seed": cfg.run.seed, "references": digest}
    target = cache_dir() / "models" / builtin_model_key(cfg.model.init, fingerprint)
    if (target / "config.json").is_file():
        return target
    log.info("building the built-in model %s (init + %d SFT steps); cached for later runs", target.name, sft.steps)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    init_model(cfg.model.init, tmp / "init", seed=cfg.run.seed)
    if sft.steps > 0:
        run_sft(tmp / "init", tmp / "sft", cfg, pairs=pairs)
        built = tmp / "sft"
    else:
        built = tmp / "init"
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        return target
    os.replace(built, target)
    shutil.rmtree(tmp, ignore_errors=True)
    return target
