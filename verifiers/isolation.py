"""Run a checking function in a child process under a wall-clock limit.

A verifier that hangs (catastrophic backtracking, ``9^9^9^9`` in sympy),
eats memory or crashes must cost one sample its reward, never the run. The
child is long-lived (start-up imports are paid once); on a timeout or a
crash it is killed and a fresh one is started for the next call. A call's
time limit starts once the child is ready: a fresh child re-imports the
parent's main module (seconds on a busy host, or where that module imports
CUDA torch), which must not count as the check's own time.

A child may isolate its own sub-steps in a grandchild (the environment host
runs in one child and sympy in another): it clears its daemon flag so that
multiprocessing lets it start children, and every child asks the kernel to
kill it when its parent dies (PR_SET_PDEATHSIG), so none outlives the
process that started it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import signal
import traceback
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Outcome:
    ok: bool
    value: Any = None
    error: str | None = None
    """'timeout ...', 'start timeout ...' (a fresh child not ready in time), 'crashed: ...' or
    'error: ...' when not ok."""


def _die_with_parent() -> None:
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: the parent's close() still kills it
        pass


def _child_loop(conn, memory_limit_bytes: int | None, initializer) -> None:
    _die_with_parent()
    os.setpgid(0, 0)  # its own process group: a kill takes the processes it started too
    mp.current_process().daemon = False  # allow grandchildren (see the module docstring)
    if memory_limit_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))
    failed = None
    if initializer is not None:
        fn, args = initializer
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - every call reports it
            failed = traceback.format_exception_only(type(exc), exc)[-1].strip()
    conn.send("ready")
    while True:
        try:
            fn, args = conn.recv()
        except EOFError:
            return
        if failed is not None:
            conn.send((False, f"error: {failed[:300]}"))
            continue
        try:
            conn.send((True, fn(*args)))
        except MemoryError:
            conn.send((False, "error: out of memory"))
        except BaseException as exc:  # noqa: BLE001 - reported, not raised
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            conn.send((False, f"error: {last[:300]}"))


class IsolatedRunner:
    """``runner.call(fn, *args, timeout=s)`` -> Outcome; fn must be importable (picklable).

    ``initializer=(fn, args)`` runs in every fresh child before its first call
    (also after a respawn), e.g. to build the objects later calls use.
    """

    def __init__(self, memory_limit_mb: int | None = 2048, initializer: tuple[Callable, tuple] | None = None,
                 start_timeout: float = 120.0):
        """``start_timeout``: seconds a fresh child may take to start (imports, initializer)
        before the call that needs it fails with 'start timeout ...'."""
        self._ctx = mp.get_context("spawn")
        self._start_timeout = start_timeout
        self._memory_limit = memory_limit_mb * 2**20 if memory_limit_mb else None
        self._initializer = initializer
        self._proc = None
        self._conn = None
        self.restarts = 0
        """Children killed so far (after a timeout or crash): state kept in a child is gone."""

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_child_loop, args=(child, self._memory_limit, self._initializer),
                                       daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent

    def _kill(self) -> None:
        if self._proc is not None:
            self.restarts += 1
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)  # the child and whatever it started
            except (ProcessLookupError, PermissionError, TypeError):
                pass
            self._proc.kill()
            self._proc.join(timeout=5)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def call(self, fn: Callable, *args, timeout: float) -> Outcome:
        try:
            if self._proc is None or not self._proc.is_alive():
                self._kill()
                self._start()
                if not self._conn.poll(self._start_timeout):
                    self._kill()
                    return Outcome(False, error=f"start timeout after {self._start_timeout:g}s")
                self._conn.recv()
            self._conn.send((fn, args))
            if not self._conn.poll(timeout):
                self._kill()
                return Outcome(False, error=f"timeout after {timeout:g}s")
            ok, value = self._conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError) as exc:
            code = self._proc.exitcode if self._proc is not None else None
            self._kill()
            return Outcome(False, error=f"crashed: {type(exc).__name__} (exit code {code})")
        return Outcome(True, value) if ok else Outcome(False, error=value)

    def close(self) -> None:
        self._kill()

    def __del__(self):
        try:
            self._kill()
        except Exception:
            pass
