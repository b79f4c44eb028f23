"""Refit (step 10): the policy's new weights into the rollout engines, in memory.

The policy's rank 0 gathers the sharded weights a bucket at a time
(``PolicyWorker.weight_buckets``); a transport turns each bucket into a small
picklable *handle* that says where its bytes are; every engine opens the
handle, stages the tensors, and loads them all in one call after the last
bucket (``RolloutWorker.load_bucket / finish_refit``; ``refit_engines`` runs
the whole exchange). No file
is written and no rank holds more than one bucket of full tensors.

Transports (``policy.refit_transport``):

- ``direct``: the tensors themselves; engines in the trainer's own process
  (``ray.enabled=false`` with the transformers backend).
- ``shm``: one POSIX shared-memory segment (``/dev/shm``), reused for every
  bucket and grown when a bucket is larger; any process of the node attaches
  to it by name. CPU hosts.
- ``cuda_ipc``: CUDA IPC handles of the gathered GPU tensors
  (``torch.multiprocessing.reductions``); an engine on the same GPU maps them
  without a copy, one on another GPU of the node copies peer to peer. GPU
  hosts, one node.
- ``object_store``: Ray's object store (``ray.put``); the one that crosses
  nodes.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path
from typing import Callable

import torch

TRANSPORTS = ("direct", "shm", "cuda_ipc", "object_store")
SEGMENT_PREFIX = "rl-refit-"
# Shared memory that runs leave behind when killed: our refit segments, and
# vLLM's message-queue segments and multiprocessing semaphores.
LEAKED_PREFIXES = (SEGMENT_PREFIX, "psm_", "sem.mp-")


def shared_memory_segments(directory: str = "/dev/shm", prefixes: tuple[str, ...] = LEAKED_PREFIXES) -> set[str]:
    root = Path(directory)
    return {p.name for p in root.iterdir() if p.name.startswith(prefixes)} if root.is_dir() else set()


def release_shared_memory(before: set[str], patience_s: float = 10.0, directory: str = "/dev/shm") -> set[str]:
    """At the end of a run: remove the segments that appeared since ``before``
    as soon as no process maps them, waiting at most ``patience_s`` while this
    run's own processes still hold some (an engine core can outlive its actor
    by a moment); segments held only by other processes (another run on the
    host) are theirs: left at once. Returns what is left."""
    import time

    deadline = time.monotonic() + patience_s
    while True:
        ours = shared_memory_segments(directory) - before
        for name in ours - segments_in_use(directory):
            Path(directory, name).unlink(missing_ok=True)
        ours = shared_memory_segments(directory) - before
        if not ours or time.monotonic() > deadline or not ours & segments_in_use(directory, _own_processes()):
            return ours
        time.sleep(0.2)


def _own_processes() -> set[int]:
    """This process and its descendants (a local Ray cluster and its workers included)."""
    import os

    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) if proc.name.isdigit() else None
        except (OSError, IndexError, ValueError):
            continue
        if ppid is not None:
            children.setdefault(ppid, []).append(int(proc.name))
    own, todo = set(), [os.getpid()]
    while todo:
        pid = todo.pop()
        if pid not in own:
            own.add(pid)
            todo += children.get(pid, [])
    return own


def segments_in_use(directory: str = "/dev/shm", pids: set[int] | None = None) -> set[str]:
    """Names under ``directory`` that some live process (of ``pids``, default
    any) maps or holds open.

    Matched by inode as well as by name: glibc's ``sem_open`` creates a
    semaphore under a temporary name, maps it, then links it to its final
    name (``sem.mp-*``), so the maps of its owner never show that name."""
    import os

    in_use: set[str] = set()
    inodes: set[int] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or (pids is not None and int(proc.name) not in pids):
            continue
        try:
            for line in (proc / "maps").read_text().splitlines():
                if directory + "/" in line:
                    fields = line.split(maxsplit=5)
                    inodes.add(int(fields[4]))
                    in_use.add(fields[5].split(directory + "/", 1)[1].split(" ")[0])
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith(directory + "/"):
                    in_use.add(target[len(directory) + 1:].split(" ")[0])
                    inodes.add(os.stat(fd).st_ino)
        except (OSError, ValueError, IndexError):
            continue
    root = Path(directory)
    if inodes and root.is_dir():
        for path in root.iterdir():
            try:
                if path.stat().st_ino in inodes:
                    in_use.add(path.name)
            except OSError:
                continue
    return in_use


def cleanup_shared_memory(directory: str = "/dev/shm", prefixes: tuple[str, ...] = LEAKED_PREFIXES,
                          min_age_s: float = 30.0) -> list[str]:
    """Remove segments of ``prefixes`` that no live process maps or holds open and
    that are older than ``min_age_s`` (a segment being created is not taken).
    Run at the start of a run (after a SIGKILLed one) and at its end. Returns
    the names removed."""
    import time

    root = Path(directory)
    if not root.is_dir():
        return []
    candidates = [p for p in root.iterdir() if p.name.startswith(prefixes)]
    if not candidates:
        return []
    in_use = segments_in_use(directory)
    removed, now = [], time.time()
    for path in candidates:
        try:
            if path.name in in_use or now - path.stat().st_mtime < min_age_s:
                continue
            path.unlink()
            removed.append(path.name)
        except OSError:
            continue
    return removed


@dataclass(frozen=True)
class Handle:
    """One bucket in transit: the transport, and what it needs to find the tensors."""

    transport: str
    payload: object
    names: tuple[str, ...]


def choose_transport(setting: str, *, in_process: bool, gpu: bool) -> str:
    """``auto``: direct in-process, CUDA IPC from GPU ranks, shared memory on CPU."""
    if setting != "auto":
        return setting
    if in_process:
        return "direct"
    return "cuda_ipc" if gpu else "shm"


class Sender:
    """The policy rank 0's side: ``send(bucket)`` -> Handle. Keeps what a handle
    points at alive until the next ``send`` or ``close``."""

    def __init__(self, transport: str):
        if transport not in TRANSPORTS:
            raise ValueError(f"policy.refit_transport: unknown transport {transport!r}; one of {TRANSPORTS}")
        self.transport = transport
        self._shm: shared_memory.SharedMemory | None = None
        self._alive: object = None

    def send(self, bucket: list[tuple[str, torch.Tensor]]) -> Handle:
        names = tuple(n for n, _ in bucket)
        if self.transport == "direct":
            payload = [t for _, t in bucket]
        elif self.transport == "shm":
            payload = self._to_shm([t for _, t in bucket])
        elif self.transport == "cuda_ipc":
            from torch.multiprocessing.reductions import reduce_tensor

            tensors = [t.contiguous() for _, t in bucket]
            if any(not t.is_cuda for t in tensors):
                raise ValueError("policy.refit_transport=cuda_ipc needs the policy on GPUs; use shm on CPU hosts")
            self._alive = tensors
            payload = [reduce_tensor(t) for t in tensors]
        else:
            import ray

            self._alive = ray.put([t.cpu() for _, t in bucket])
            payload = self._alive
        return Handle(self.transport, payload, names)

    def _to_shm(self, tensors: list[torch.Tensor]) -> dict:
        layout, offset = [], 0
        for t in tensors:
            nbytes = t.numel() * t.element_size()
            layout.append((str(t.dtype).removeprefix("torch."), tuple(t.shape), offset, nbytes))
            offset += -(-nbytes // 64) * 64  # 64-byte aligned
        if self._shm is None or self._shm.size < offset:
            self._close_shm()
            self._shm = shared_memory.SharedMemory(name=f"{SEGMENT_PREFIX}{secrets.token_hex(6)}", create=True,
                                                   size=max(offset, 1))
        buf = self._shm.buf
        for t, (_, _, start, nbytes) in zip(tensors, layout):
            view = torch.frombuffer(buf, dtype=t.dtype, count=t.numel(), offset=start) if nbytes else None
            if view is not None:
                view.copy_(t.detach().reshape(-1))
        return {"name": self._shm.name, "layout": layout}

    def _close_shm(self) -> None:
        if self._shm is not None:
            self._shm.close()
            self._shm.unlink()
            self._shm = None

    def close(self) -> None:
        self._close_shm()
        self._alive = None


def refit_engines(policy, call_engines: Callable[..., list], transport: str, checkpoint_format: bool,
                  dtype: str | None = None) -> int:
    """Step 10: wake the engines' weights (colocated engines sleep during the
    update), send every bucket, have the engines load them, wake their KV cache.
    ``policy`` is the policy's handle (every rank takes each call);
    ``call_engines(method, *args)`` calls a method on every engine. Returns the
    number of buckets."""
    call_engines("wake_up", ["weights"])
    policy.refit_start(transport, checkpoint_format, dtype)
    buckets = 0
    while (handle := policy.refit_next()) != "done":
        call_engines("load_bucket", handle)
        buckets += 1
    call_engines("finish_refit")
    call_engines("wake_up", ["kv_cache"])
    return buckets


def receive(handle: Handle, device: torch.device | str = "cpu") -> list[tuple[str, torch.Tensor]]:
    """The engine's side: the bucket's tensors, copied onto ``device`` (never views
    of memory the sender reuses for the next bucket)."""
    if handle.transport == "direct":
        tensors = [t.to(device, copy=True) for t in handle.payload]
    elif handle.transport == "shm":
        tensors = _from_shm(handle.payload, device)
    elif handle.transport == "cuda_ipc":
        from torch.multiprocessing.reductions import rebuild_cuda_tensor  # noqa: F401 (the rebuild functions)

        tensors = [fn(*args).to(device, copy=True) for fn, args in handle.payload]
    elif handle.transport == "object_store":
        import ray

        tensors = [t.to(device, copy=True) for t in ray.get(handle.payload)]
    else:
        raise ValueError(f"refit: unknown transport {handle.transport!r}")
    return list(zip(handle.names, tensors))


def _from_shm(payload: dict, device) -> list[torch.Tensor]:
    shm = shared_memory.SharedMemory(name=payload["name"])
    # Attaching registers the segment with this process's resource tracker, which
    # would unlink it (and warn) when this process exits; the sender owns it.
    resource_tracker.unregister(shm._name, "shared_memory")  # noqa: SLF001
    flat = None
    try:
        out = []
        for dtype, shape, offset, nbytes in payload["layout"]:
            dt = getattr(torch, dtype)
            count = nbytes // torch.empty((), dtype=dt).element_size()
            flat = torch.frombuffer(shm.buf, dtype=dt, count=count, offset=offset) if count else torch.empty(0, dtype=dt)
            out.append(flat.reshape(shape).to(device, copy=True))
        return out
    finally:
        flat = None  # release the exported buffer before closing  # noqa: F841
        shm.close()
