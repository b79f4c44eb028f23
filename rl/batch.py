"""Token batches for the trainer: prompt + completion ids, right-padded, with
per-position tensors aligned to the *predicted* token (position t of a
[N, L-1] tensor is about token t+1 of ``input_ids``)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class TrainBatch:
    input_ids: torch.Tensor        # [N, L] long
    attention_mask: torch.Tensor   # [N, L] long
    completion_mask: torch.Tensor  # [N, L-1] float: 1 on model-produced tokens
    lp_gen: torch.Tensor           # [N, L-1] float: engine logprobs (0 elsewhere)
    truncated: torch.Tensor        # [N] bool: cut at the length limit
    advantages: torch.Tensor       # [N] float
    env_ids: torch.Tensor          # [N] long: index of the sequence's environment (loss_aggregation=environment)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def slice(self, start: int, stop: int) -> "TrainBatch":
        return TrainBatch(**{f.name: getattr(self, f.name)[start:stop] for f in fields(self)})

    def slice_rows(self, index: torch.Tensor, width: int) -> "TrainBatch":
        """The sequences ``index`` (a copy), per-token tensors cut to ``width`` positions."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)[index]
            if f.name in ("completion_mask", "lp_gen"):
                value = value[:, :width]
            elif f.name in ("input_ids", "attention_mask"):
                value = value[:, :width + 1]
            out[f.name] = value.clone()
        return TrainBatch(**out)

    def to(self, device) -> "TrainBatch":
        return TrainBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def collate(prompts: list[list[int]], completions: list[list[int]], lp_gen: list[list[float]],
            truncated: list[bool], advantages: list[float], pad_id: int,
            model_token_masks: list[list[int]] | None = None, env_ids: list[int] | None = None) -> TrainBatch:
    """Build a TrainBatch. ``model_token_masks`` (multi-turn) marks which
    completion tokens the model produced; by default all of them. ``env_ids``:
    each sequence's environment as an index (by default all 0)."""
    n = len(prompts)
    env_ids = [0] * n if env_ids is None else env_ids
    if not (len(completions) == len(lp_gen) == len(truncated) == len(advantages) == len(env_ids) == n):
        raise ValueError("collate: prompts, completions, lp_gen, truncated, advantages and env_ids differ in length")
    width = max(len(p) + len(c) for p, c in zip(prompts, completions))
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    attn = torch.zeros((n, width), dtype=torch.long)
    cmask = torch.zeros((n, width - 1), dtype=torch.float32)
    lps = torch.zeros((n, width - 1), dtype=torch.float32)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        if len(lp_gen[i]) != len(c):
            raise ValueError(f"collate: sequence {i} has {len(c)} tokens but {len(lp_gen[i])} logprobs")
        seq = p + c
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attn[i, : len(seq)] = 1
        start = len(p) - 1  # logits at position len(p)-1 predict the first completion token
        m = model_token_masks[i] if model_token_masks is not None else [1] * len(c)
        cmask[i, start: start + len(c)] = torch.tensor(m, dtype=torch.float32)
        lps[i, start: start + len(c)] = torch.tensor(lp_gen[i], dtype=torch.float32)
    return TrainBatch(ids, attn, cmask, lps, torch.tensor(truncated, dtype=torch.bool),
                      torch.tensor(advantages, dtype=torch.float32), torch.tensor(env_ids, dtype=torch.long))
