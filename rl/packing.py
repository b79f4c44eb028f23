"""Micro-batches planned by a token budget, packed, and split between ranks.

The step's batch (``rl.batch.TrainBatch``, padded ``[N, L]``) is cut into
micro-batches of at most ``max_tokens`` tokens each:

- **packed**: the sequences are concatenated into one row ``[1, T]`` with
  position ids restarting at 0 for each; transformers turns restarting
  positions into a block-diagonal causal mask (sdpa, flex attention) or
  varlen kernels (flash attention), so attention never crosses a sequence
  boundary and no padding is computed;
- **padded** (models that cannot pack: Mamba layers carry state across the
  row; or ``policy.packing=off``): the sequences, sorted by length, are
  right-padded to the longest of the micro-batch, and the budget counts the
  padding. No attention mask is passed: every layer is causal, so a real
  token never sees the pads after it, and attention runs as plain causal
  attention (SDPA's flash kernel) instead of a masked one.

Every micro-batch carries its own sequences' training tensors (completion
mask, lp_gen, advantages, truncation; ``data``) and the map from the model's
layout to theirs (``rows``, ``cols``, ``src``), so the per-token values of a
sequence cannot be misaligned by packing.

Work is split between the ``world_size`` ranks by tokens (longest first,
each to the rank with the fewest tokens so far), and every rank gets the same
number of micro-batches (FSDP's collectives run once per forward on every
rank): a rank with fewer gets empty ones, one pad token that carries no loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rl.batch import TrainBatch


@dataclass
class MicroBatch:
    seqs: torch.Tensor
    """[n] indices of its sequences in the step's batch."""
    input_ids: torch.Tensor
    """[1, T] packed, or [n, L] padded."""
    position_ids: torch.Tensor
    """Same shape as input_ids; restarts at 0 for every packed sequence. No attention
    mask travels: packed, the restarting positions define the blocks; padded, the pads
    come after each row's tokens, which causal layers never look ahead to."""
    src: torch.Tensor
    """[P] flat positions of ``input_ids`` whose next token is scored."""
    targets: torch.Tensor
    """[P] the token each of those positions predicts."""
    rows: torch.Tensor
    cols: torch.Tensor
    """[P] where each scored position lands in ``data``'s [n, L-1] tensors."""
    data: TrainBatch
    """The micro-batch's sequences, [n, L-1] per-token tensors."""
    real: torch.Tensor
    """[input_ids.numel()] bool: the flat positions that hold a sequence's token (not padding)."""

    @property
    def num_tokens(self) -> int:
        return self.input_ids.numel()

    def scatter(self, values: torch.Tensor) -> torch.Tensor:
        """Per-position values [P] into the [n, L-1] layout (0 elsewhere); differentiable."""
        out = values.new_zeros(self.data.completion_mask.shape)
        return out.index_put((self.rows, self.cols), values)

    def to(self, device) -> "MicroBatch":
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(self).items()}
        moved["data"] = self.data.to(device)
        return MicroBatch(**moved)


def sequence_lengths(batch: TrainBatch) -> list[int]:
    return batch.attention_mask.sum(dim=1).tolist()


def split_by_tokens(lengths: list[int], world_size: int) -> list[list[int]]:
    """Sequence indices per rank, balanced by tokens (longest-processing-time first)."""
    loads = [0] * world_size
    parts: list[list[int]] = [[] for _ in range(world_size)]
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        r = min(range(world_size), key=lambda r: (loads[r], r))
        parts[r].append(i)
        loads[r] += lengths[i]
    return parts


def plan_bins(indices: list[int], lengths: list[int], max_tokens: int, packed: bool) -> list[list[int]]:
    """First-fit decreasing: bins of sequences whose cost stays within ``max_tokens``
    (packed: the sum of lengths; padded: count x longest). A sequence longer
    than the budget gets a bin of its own."""
    bins: list[list[int]] = []
    costs: list[tuple[int, int]] = []  # (tokens, longest) per bin
    for i in sorted(indices, key=lambda i: (-lengths[i], i)):
        n = lengths[i]
        for b, (tokens, longest) in enumerate(costs):
            cost = tokens + n if packed else (len(bins[b]) + 1) * max(longest, n)
            if cost <= max_tokens:
                bins[b].append(i)
                costs[b] = (tokens + n, max(longest, n))
                break
        else:
            bins.append([i])
            costs.append((n, n))
    return bins


def plan(batch: TrainBatch, max_tokens: int, world_size: int = 1, packed: bool = True) -> list[list[list[int]]]:
    """Per rank, its micro-batches as lists of sequence indices; equal counts per
    rank (an empty list is an empty micro-batch)."""
    lengths = sequence_lengths(batch)
    per_rank = [plan_bins(part, lengths, max_tokens, packed) for part in split_by_tokens(lengths, world_size)]
    count = max(len(bins) for bins in per_rank)
    return [bins + [[] for _ in range(count - len(bins))] for bins in per_rank]


def build(batch: TrainBatch, seqs: list[int], packed: bool, pad_id: int, pad_to_multiple_of: int = 1) -> MicroBatch:
    """The micro-batch of sequences ``seqs`` of ``batch`` (empty: one pad token, no loss)."""
    if not seqs:
        return _empty(batch, pad_id)
    index = torch.tensor(seqs, dtype=torch.long)
    lengths = batch.attention_mask[index].sum(dim=1)
    width = int(lengths.max())
    data = batch.slice_rows(index, width - 1)
    rows, cols = data.completion_mask.nonzero(as_tuple=True)
    if packed:
        offsets = torch.cumsum(lengths, 0) - lengths
        ids = torch.cat([batch.input_ids[i, :n] for i, n in zip(seqs, lengths.tolist())])
        positions = torch.cat([torch.arange(n) for n in lengths.tolist()])
        total = ids.numel()
        padded_total = -(-total // pad_to_multiple_of) * pad_to_multiple_of
        if padded_total > total:  # a tail "sequence" of pad tokens, never scored
            ids = torch.cat([ids, torch.full((padded_total - total,), pad_id, dtype=ids.dtype)])
            positions = torch.cat([positions, torch.arange(padded_total - total)])
        src = offsets[rows] + cols
        real = torch.arange(ids.numel()) < total
        return MicroBatch(index, ids[None], positions[None], src, ids[src + 1], rows, cols, data, real)
    ids = batch.input_ids[index, :width]
    real = batch.attention_mask[index, :width].flatten().bool()
    positions = torch.arange(width).expand(len(seqs), width)
    src = rows * width + cols
    return MicroBatch(index, ids, positions, src, ids.flatten()[src + 1], rows, cols, data, real)


def _empty(batch: TrainBatch, pad_id: int) -> MicroBatch:
    """One pad token scored with mask 0: the forward and backward still run
    through every weight (so FSDP's collectives match the other ranks'), and
    contribute nothing."""
    data = batch.slice_rows(torch.zeros(1, dtype=torch.long), 1)
    data.completion_mask.zero_()
    ids = torch.full((1, 1), pad_id, dtype=torch.long)
    zero = torch.zeros(1, dtype=torch.long)
    return MicroBatch(torch.zeros(0, dtype=torch.long), ids, torch.zeros_like(ids), zero,
                      torch.full((1,), pad_id, dtype=torch.long), zero, zero, data, torch.zeros(1, dtype=torch.bool))


def can_pack(model) -> bool:
    """Whether attention alone mixes tokens between positions (no recurrent
    layers whose state would run from one packed sequence into the next)."""
    text = model.config.get_text_config()
    pattern = getattr(text, "hybrid_override_pattern", None) or getattr(text, "layers_block_type", None)
    if pattern is not None and any(c in ("M", "mamba") for c in pattern):
        return False
    return not any("mamba" in type(m).__name__.lower() or "ssm" in type(m).__name__.lower()
                   for m in model.modules())
