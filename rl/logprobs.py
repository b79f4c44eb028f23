"""Per-token log-probabilities and entropies without [tokens x vocab] fp32 logits.

A policy with a 152k vocabulary and a 64k-token micro-batch would need
39 GB for its fp32 logits alone, and as much again for their gradient. Here
the head is applied to a chunk of hidden states at a time:

    logits_c = h_c W^T / T                      (T: the sampling temperature)
    lp_c     = logits_c[target] - logsumexp(logits_c)
    H_c      = logsumexp(logits_c) - sum softmax(logits_c) * logits_c

and each chunk is checkpointed, so only one chunk's logits exist at a time,
in the forward and again in the backward. Only positions whose next token
is scored (completion tokens) are passed in, so prompt tokens never reach
the head.

``liger`` uses Liger-Kernel's fused linear scaled cross-entropy (CUDA;
it computes the same two quantities), where it is installed.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

IMPLEMENTATIONS = ("chunked", "liger")


def _chunk_logprobs(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                    temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    logits = hidden @ weight.t()
    if bias is not None:
        logits = logits + bias
    logits = logits.float() / temperature
    lse = torch.logsumexp(logits, dim=-1)
    lp = logits.gather(-1, targets[:, None]).squeeze(-1) - lse
    with torch.no_grad():  # a metric: no gradient
        entropy = lse - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    return lp, entropy


def chunked_logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                     chunk_size: int = 4096, bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lp [P] fp32, entropy [P] fp32, detached)`` of ``targets [P]`` under
    the head ``weight [V, H]`` (+ ``bias``) applied to ``hidden [P, H]``."""
    if hidden.shape[0] == 0:
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return (hidden.sum() * 0.0).float() + empty, empty
    lps, entropies = [], []
    grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    for start in range(0, hidden.shape[0], chunk_size):
        args = (hidden[start:start + chunk_size], weight, bias, targets[start:start + chunk_size], temperature)
        if grad:
            lp, entropy = checkpoint(_chunk_logprobs, *args, use_reentrant=False)
        else:
            lp, entropy = _chunk_logprobs(*args)
        lps.append(lp)
        entropies.append(entropy)
    return torch.cat(lps), torch.cat(entropies).detach()


def liger_logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                   bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The same through Liger-Kernel (``liger-kernel>=0.8.5``, CUDA)."""
    from liger_kernel.ops.fused_linear_scaled_cross_entropy import LigerFusedLinearScaledCrossEntropyFunction

    if bias is not None:
        raise ValueError("policy.logprob_impl=liger: the output head has a bias, which Liger's kernel does not take; "
                         "use logprob_impl=chunked")
    nll, entropy = LigerFusedLinearScaledCrossEntropyFunction.apply(
        hidden.contiguous(), weight, targets.contiguous(), float(temperature), -100, 1, True)
    return -nll.float(), entropy.float().detach()


def token_logprobs(hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor, temperature: float,
                   impl: str = "chunked", chunk_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch on ``impl`` (``policy.logprob_impl``); ``head`` is the model's output embedding."""
    bias = getattr(head, "bias", None)
    if impl == "liger" and hidden.is_cuda and hidden.shape[0] > 0:
        return liger_logprobs(hidden, head.weight, targets, temperature, bias)
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"policy.logprob_impl: unknown implementation {impl!r}; one of {IMPLEMENTATIONS}")
    return chunked_logprobs(hidden, head.weight, targets, temperature, chunk_size, bias)
