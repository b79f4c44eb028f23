"""Data parallelism for the policy, at the edge of the model.

Following torchtitan, the model stays a plain ``nn.Module``; separate
functions apply activation checkpointing (``apply_ac``) and FSDP2 sharding
(``apply_fsdp``) to it, and the distributed state of a rank lives in one
small object (``RankGroup``). Nothing else in the trainer knows about
``torch.distributed`` except the few reductions in ``rl.policy``.

One rank per process; ranks form one ``torch.distributed`` process group:
NCCL on GPUs, gloo on CPU. A single rank is a world of one with the same
code path (FSDP2 over one rank still gives the mixed-precision casts and
keeps fp32 master weights).
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankGroup:
    """Where this rank sits in the policy's process group."""

    rank: int = 0
    world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 0
    """0 (world of one only): no rendezvous, an in-process store."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def node_address() -> str:
    """An address other nodes can reach this one at (Ray's, when Ray runs here)."""
    try:
        import ray

        if ray.is_initialized():
            return ray.util.get_node_ip_address()
    except ImportError:
        pass
    return "127.0.0.1"


def launch_local(target, world_size: int, *args, timeout_s: float | None = None) -> list[int]:
    """Start ``target(rank, world_size, port, *args)`` in ``world_size`` fresh
    processes of this host (spawn), one rank each, rendezvous on a free port;
    wait for all; return their exit codes. For tests and benchmarks on hosts
    without Ray (``rl train`` starts its ranks as Ray actors)."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=target, args=(rank, world_size, port, *args)) for rank in range(world_size)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=timeout_s)
        if proc.exitcode is None:
            proc.kill()
            proc.join()
    return [proc.exitcode for proc in procs]


def init_rank(group: RankGroup, device: torch.device, timeout_s: float = 1800) -> None:
    """Join (or create) the default process group for ``group``.

    A process that already belongs to a group of the same size (tests that
    build several policies in one process) keeps it.
    """
    if dist.is_initialized():
        if dist.get_world_size() != group.world_size or dist.get_rank() != group.rank:
            raise RuntimeError(f"this process is already rank {dist.get_rank()} of {dist.get_world_size()}; "
                               f"cannot become rank {group.rank} of {group.world_size}")
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    if group.world_size == 1 and group.master_port == 0:
        store = dist.HashStore()
        dist.init_process_group(backend, store=store, rank=0, world_size=1, timeout=timeout)
    else:
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = group.master_addr, str(group.master_port)
        dist.init_process_group(backend, init_method=f"tcp://{group.master_addr}:{group.master_port}",
                                rank=group.rank, world_size=group.world_size, timeout=timeout)
    if device.type == "cuda":
        torch.cuda.set_device(device)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The repeated blocks of a transformers causal LM (the units to shard and checkpoint)."""
    decoder = model.get_decoder()
    for name in ("layers", "h", "blocks"):
        layers = getattr(decoder, name, None)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise ValueError(f"{type(model).__name__}: cannot find its decoder layers (looked for layers, h, blocks)")


def apply_ac(model: nn.Module) -> int:
    """Activation checkpointing of every decoder layer: their activations are
    recomputed in the backward pass instead of kept (less memory, about one
    more forward of compute). Returns the number of layers wrapped."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    layers = decoder_layers(model)
    for i, layer in enumerate(layers):
        layers[i] = checkpoint_wrapper(layer, preserve_rng_state=False)
    return len(layers)


def apply_compile(model: nn.Module) -> int:
    """``torch.compile`` each decoder layer (as torchtitan does, before sharding):
    the norms, rotary embedding, activation and residual adds fuse into few
    kernels. Layers share their code, so one compilation serves all of them;
    shapes that vary between micro-batches are marked dynamic after the first
    change. Returns the number of layers compiled."""
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile(dynamic=None)  # in place: parameter names keep no ``_orig_mod`` prefix
    return len(layers)


def mixed_precision(device: torch.device, compute_dtype: torch.dtype):
    """fp32 master weights (the parameters as stored and optimized), ``compute_dtype``
    for forward and backward, fp32 gradient reduction."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if compute_dtype == torch.float32:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)


def apply_fsdp(root: nn.Module, layers: list[nn.Module], device: torch.device, compute_dtype: torch.dtype,
               cpu_offload: bool = False, reshard_after_forward: bool = True) -> None:
    """Shard every decoder layer and then the root (embeddings, final norm,
    head) over the default process group with FSDP2 ``fully_shard``.

    Gradients are *summed* over ranks (divide factor 1): each rank's loss is
    already divided by the global normaliser, so N ranks make the same update
    as one.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    kwargs = dict(mesh=mesh, mp_policy=mixed_precision(device, compute_dtype))
    if cpu_offload:
        kwargs["offload_policy"] = CPUOffloadPolicy()
    for layer in layers:
        fully_shard(layer, reshard_after_forward=reshard_after_forward, **kwargs)
    fully_shard(root, reshard_after_forward=reshard_after_forward, **kwargs)
    for module in [*layers, root]:
        module.set_gradient_divide_factor(1.0)
        module.set_force_sum_reduction_for_comms(True)  # plain SUM: gloo has no PREMUL_SUM


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum of a small tensor over the ranks (in place on a copy, on the group's device)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    out = values.detach().to(device, torch.float64).clone()
    dist.all_reduce(out)
    return out.to(values.device, values.dtype)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a sharded (DTensor) parameter; a collective call on every rank."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t
