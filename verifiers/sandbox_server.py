"""The process runner shared by the host and the in-sandbox server.

Standard library only: the same source runs on the host (``run_capped`` for
one-shot sandboxes and the benchmark's bare baseline) and, passed with
``python -c``, as the server that a persistent bubblewrap sandbox runs as
its PID-namespace init (``serve``). The project tree is never visible inside
the sandbox, so this file must not import anything of ours.

Server protocol (stdin -> stdout, one request at a time):

- request: one JSON line ``{"argv": [...], "wall_s": float, "cap": int,
  "script": int}`` followed by ``script`` bytes, written to
  ``/sandbox/main.py``;
- response: one JSON line ``{"code", "timed_out", "overflow", "seconds",
  "stdout": int, "stderr": int, "dirty": bool}`` followed by the captured
  stdout and stderr bytes.

After every run the server SIGKILLs every other process in the namespace
(daemons included), reaps them, and empties /sandbox and /tmp, so the next
run starts from the same state as a fresh sandbox. ``dirty`` tells the host
that something could not be reset (SysV IPC objects left behind, a wipe that
failed): the host then replaces the whole sandbox.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass


@dataclass
class Raw:
    code: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool
    overflow: bool
    seconds: float


def run_capped(cmd: list[str], timeout: float, cap: int, cwd: str | None = None, env: dict | None = None,
               kill=None, after_exit=None, **popen) -> Raw:
    """Run ``cmd`` in its own session. Stop at ``timeout`` or when stdout or
    stderr passes ``cap`` bytes: then ``kill()`` if given, and SIGKILL the
    process group. ``after_exit()`` runs as soon as the process itself has
    exited (e.g. to kill children still holding its pipes open). ``popen``:
    further ``subprocess.Popen`` arguments (``user``, ``pass_fds``, ...)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, cwd=cwd, env=env, **popen)
    out = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    sel = selectors.DefaultSelector()
    for f in out:
        sel.register(f, selectors.EVENT_READ)
    exit_fd = None
    if after_exit is not None:
        try:
            exit_fd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):  # Linux < 5.3: children holding the pipes run to the time limit
            pass
        else:
            sel.register(exit_fd, selectors.EVENT_READ)
    timed_out = overflow = False
    open_streams = 2
    while open_streams:
        left = timeout - (time.monotonic() - start)
        if left <= 0:
            timed_out = True
            break
        for key, _ in sel.select(min(left, 0.5)):
            if key.fileobj == exit_fd:
                sel.unregister(exit_fd)
                after_exit()
                continue
            chunk = os.read(key.fileobj.fileno(), 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                open_streams -= 1
                continue
            buf = out[key.fileobj]
            buf += chunk[: cap + 1 - len(buf)] if len(buf) <= cap else b""
            if len(buf) > cap:
                overflow = True
        if overflow:
            break
    if timed_out or overflow:
        if kill is not None:
            kill()
        kill_group(proc)
    try:
        code = proc.wait(timeout=max(0.1, timeout - (time.monotonic() - start)) if not (timed_out or overflow) else 5)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        code, timed_out = proc.wait(), True
    sel.close()
    if exit_fd is not None:
        os.close(exit_fd)
    for f in out:
        f.close()
    return Raw(code, bytes(out[proc.stdout][:cap]), bytes(out[proc.stderr][:cap]), timed_out, overflow,
               time.monotonic() - start)


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# --- the in-sandbox server -------------------------------------------------

WORK, TMP = "/sandbox", "/tmp"


def signal_others() -> None:
    """As the namespace's init, SIGKILL every other process in it (kill(-1)
    spares only the caller)."""
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass  # nothing left to kill


def kill_others() -> bool:
    """``signal_others`` and reap, until no other process is left in the
    namespace (orphans are re-parented to us; a fork racing the first signal
    is caught by the next round). False if some process would not go."""
    for _ in range(1000):
        signal_others()
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
        if not [pid for pid in os.listdir("/proc") if pid.isdigit() and pid != "1"]:
            return True
        time.sleep(0.001)  # e.g. processes of a nested namespace, reaped by their own init
    return False


def wipe(path: str) -> bool:
    """Empty ``path`` (its entries were made by the sandboxed uid, which is
    ours, so restoring permissions first always works). False if anything is left."""
    try:
        os.chmod(path, 0o755)
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    wipe(entry.path)
                    os.rmdir(entry.path)
                else:
                    os.unlink(entry.path)
        return not os.listdir(path)
    except OSError:
        return False


def ipc_objects() -> int:
    """SysV shared memory segments, semaphore sets and message queues alive in
    the sandbox's IPC namespace (they would outlive the run)."""
    count = 0
    for kind in ("shm", "sem", "msg"):
        try:
            with open(f"/proc/sysvipc/{kind}") as f:
                count += max(0, len(f.read().splitlines()) - 1)
        except OSError:
            pass
    return count


def _read_exact(stream, n: int) -> bytes:
    data = stream.read(n)
    if data is None or len(data) != n:
        raise EOFError("sandbox server: request truncated")
    return data


def serve() -> None:
    # As PID 1 of its namespace, signals sent from inside the sandbox reach us
    # only where we installed a handler; Python installs one for SIGINT.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:  # not dumpable: sandboxed processes of our uid cannot open /proc/1/fd or ptrace us
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, 0
    except Exception:  # noqa: BLE001 - then /proc/1 stays readable to our own uid only
        pass
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    env = {"PATH": "/usr/bin:/bin", "HOME": WORK, "LANG": "C.UTF-8"}
    while line := requests.readline():
        request = json.loads(line)
        script = _read_exact(requests, request["script"])
        with open(f"{WORK}/main.py", "wb") as f:
            f.write(script)
        raw = run_capped(request["argv"], request["wall_s"], request["cap"], cwd=WORK, env=env,
                         kill=signal_others, after_exit=signal_others)  # reaped below, after run_capped's wait
        dirty = not (kill_others() and wipe(WORK) and wipe(TMP)) or ipc_objects() > 0
        header = {"code": raw.code, "timed_out": raw.timed_out, "overflow": raw.overflow,
                  "seconds": raw.seconds, "stdout": len(raw.stdout), "stderr": len(raw.stderr), "dirty": dirty}
        replies.write(json.dumps(header).encode() + b"\n" + raw.stdout + raw.stderr)
        replies.flush()


if __name__ == "__main__":
    serve()
