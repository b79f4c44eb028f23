"""Run model-written programs with their tests, never in a trainer or
environment process.

One API, ``sandbox.run(program, tests, limits) -> [Verdict]``: every test is
the program followed by the test code, run in a fresh sandboxed Python
process. A test passes when the process exits 0 after printing a per-run
random token that follows the test code (a program that exits early fails).
Statuses: passed, failed (an exception, e.g. an assertion), timeout (wall or
CPU limit), memory, crashed (a signal, or an exit without a traceback),
output_limit (stdout/stderr or a written file over its cap).

Backends:

- ``bubblewrap`` (default): fresh user, PID, network, IPC, UTS and cgroup
  namespaces (no network, own PID space), a read-only root holding only
  /usr (the system Python), a private writable /sandbox and /tmp, no /etc,
  no home, no project files, a cleared environment; it runs as an
  unprivileged uid with rlimits on CPU time, address space, processes, file
  size and open files, and the whole process tree is killed at the wall-clock
  limit (when the namespace's init dies, every process in it dies).
- ``docker``: the same through the Docker SDK (network disabled, read-only
  root, memory / CPU / pids limits, a tmpfs work dir, a configurable image)
  for hosts with a Docker engine.

Known limit: the test code runs in the same interpreter as the program, so a
program written to forge the pass token (reading its own source) could; the
sandbox contains what a program does to the host, not reward hacking inside
its own process.
"""

from __future__ import annotations

import os
import resource
import secrets
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

STATUSES = ("passed", "failed", "timeout", "memory", "crashed", "output_limit")


@dataclass(frozen=True)
class Limits:
    wall_s: float = 5.0
    """Wall-clock limit per test; the whole process tree is killed past it."""
    cpu_s: int = 5
    memory_mb: int = 512
    """Address-space limit."""
    max_processes: int = 32
    file_size_mb: int = 16
    output_bytes: int = 64 * 1024
    """Cap on captured stdout and on stderr, each."""
    open_files: int = 64


@dataclass(frozen=True)
class TestCase:
    name: str
    code: str


@dataclass
class Verdict:
    test: str
    status: str
    seconds: float
    exit_code: int | None
    stdout: str = ""
    stderr: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass
class _Raw:
    code: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool
    overflow: bool
    seconds: float


def run_capped(cmd: list[str], timeout: float, cap: int, preexec=None, cwd: str | None = None,
               env: dict | None = None, kill=None) -> _Raw:
    """Run ``cmd`` in its own session; kill it (``kill()``, then its process group)
    at ``timeout`` or when stdout or stderr passes ``cap`` bytes."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=preexec, start_new_session=True, cwd=cwd, env=env)
    out = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    sel = selectors.DefaultSelector()
    for f in out:
        sel.register(f, selectors.EVENT_READ)
    timed_out = overflow = False
    open_streams = 2
    while open_streams:
        left = timeout - (time.monotonic() - start)
        if left <= 0:
            timed_out = True
            break
        for key, _ in sel.select(min(left, 0.5)):
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
        _kill_group(proc)
    try:
        code = proc.wait(timeout=max(0.1, timeout - (time.monotonic() - start)) if not (timed_out or overflow) else 5)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        code, timed_out = proc.wait(), True
    sel.close()
    for f in out:
        f.close()
    return _Raw(code, bytes(out[proc.stdout][:cap]), bytes(out[proc.stderr][:cap]), timed_out, overflow,
                time.monotonic() - start)


def processes_of(uid: int, zombies: bool = False) -> list[int]:
    """Pids of every live process owned by ``uid`` (or of its zombies)."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:  # one stat call; /proc/<pid> is owned by the process's uid
                continue
            state = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if (state == "Z") == zombies:
            pids.append(int(entry.name))
    return pids


def kill_uid(uid: int, rounds: int = 20) -> None:
    """SIGKILL every process of ``uid`` (a sandbox slot's whole tree, fork bombs included)."""
    for _ in range(rounds):
        pids = processes_of(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.01)


def _become_subreaper() -> None:
    """Orphaned sandbox processes (bwrap's namespace init outlives its parent
    by a moment) are re-parented to this process instead of PID 1, which in
    some containers never reaps them; ``reap_zombies`` then collects them."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:  # noqa: BLE001 - not Linux
        pass


def reap_zombies(uid: int) -> None:
    """Reap exited sandbox processes re-parented to us (see ``_become_subreaper``);
    zombies count against the uid's process limit. Only pids of ``uid`` are
    waited for, never another thread's subprocess."""
    for pid in processes_of(uid, zombies=True):
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def classify(raw: _Raw, token: str) -> str:
    err = raw.stderr.decode("utf-8", "replace")
    if raw.overflow:
        return "output_limit"
    if raw.timed_out or raw.code in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        return "timeout"
    if raw.code in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ) or "File too large" in err:
        return "output_limit"
    if "MemoryError" in err or "Cannot allocate memory" in err:
        return "memory"
    if raw.code == 0:
        lines = raw.stdout.decode("utf-8", "replace").rstrip("\n").split("\n")
        return "passed" if lines and lines[-1] == token else "crashed"
    if raw.code is not None and raw.code > 0 and ("Traceback (most recent call last)" in err
                                                   or "SyntaxError" in err or "IndentationError" in err):
        return "failed"  # an exception, or a program that does not compile
    return "crashed"


def _script(program: str, test: TestCase, token: str) -> str:
    return f"{program}\n\n\n{test.code}\n\nprint({token!r}, flush=True)\n"


class Sandbox(ABC):
    name: str

    @abstractmethod
    def run_one(self, program: str, test: TestCase, limits: Limits) -> Verdict:
        """Run the program and one test in a fresh sandboxed process."""

    def run(self, program: str, tests: list[TestCase], limits: Limits = Limits()) -> list[Verdict]:
        return [self.run_one(program, t, limits) for t in tests]

    def close(self) -> None:
        pass


def system_python() -> str:
    """The interpreter used inside the sandbox: the distribution's, which lives
    under /usr (the only host tree the sandbox sees)."""
    for path in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(path, os.X_OK):
            return path
    raise RuntimeError("sandbox: no system Python under /usr (install the Debian package python3-minimal)")


class BubblewrapSandbox(Sandbox):
    """``uid``: the unprivileged user id sandboxed processes run as (its
    process limit is per uid, so a pool gives each slot its own)."""

    name = "bubblewrap"

    def __init__(self, python: str | None = None, uid: int = 60000):
        self.bwrap = shutil.which("bwrap")
        if self.bwrap is None:
            raise RuntimeError("sandbox: bubblewrap is not installed (Debian: apt-get install bubblewrap; "
                               "scripts/setup.sh does it)")
        self.python = python or system_python()
        self.uid = uid
        _become_subreaper()

    def command(self, workdir: str) -> list[str]:
        mounts = ["--ro-bind", "/usr", "/usr"]
        for link in ("bin", "lib", "lib64", "sbin"):
            target = os.readlink(f"/{link}") if os.path.islink(f"/{link}") else None
            if target is not None:
                mounts += ["--symlink", target, f"/{link}"]
            elif os.path.isdir(f"/{link}"):
                mounts += ["--ro-bind", f"/{link}", f"/{link}"]
        return [self.bwrap, *mounts, "--bind", workdir, "/sandbox", "--tmpfs", "/tmp", "--proc", "/proc",
                "--dev", "/dev", "--remount-ro", "/", "--unshare-all", "--hostname", "sandbox",
                "--die-with-parent", "--new-session", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin",
                "--setenv", "HOME", "/sandbox", "--setenv", "LANG", "C.UTF-8", "--chdir", "/sandbox",
                self.python, "-I", "-B", "main.py"]

    def _preexec(self, limits: Limits):
        uid = self.uid

        def apply() -> None:
            mb = 2**20
            # CPU: SIGXCPU at the soft limit (reported as timeout), SIGKILL a second later
            resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
            for res, value in ((resource.RLIMIT_AS, limits.memory_mb * mb),
                               (resource.RLIMIT_NPROC, limits.max_processes),
                               (resource.RLIMIT_FSIZE, limits.file_size_mb * mb),
                               (resource.RLIMIT_NOFILE, limits.open_files), (resource.RLIMIT_CORE, 0)):
                resource.setrlimit(res, (value, value))
            if os.getuid() == 0:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
        return apply

    def run_one(self, program: str, test: TestCase, limits: Limits = Limits()) -> Verdict:
        token = secrets.token_hex(16)
        workdir = tempfile.mkdtemp(prefix="rl-sandbox-")
        try:
            Path(workdir, "main.py").write_text(_script(program, test, token))
            if os.getuid() == 0:
                os.chown(workdir, self.uid, self.uid)
                os.chown(Path(workdir, "main.py"), self.uid, self.uid)
            own_uid = os.getuid() == 0  # the slot's uid is ours alone: killing it kills exactly the sandbox
            raw = run_capped(self.command(workdir), limits.wall_s, limits.output_bytes, self._preexec(limits),
                             env={"PATH": "/usr/bin:/bin"}, kill=(lambda: kill_uid(self.uid)) if own_uid else None)
        finally:
            if os.getuid() == 0:
                kill_uid(self.uid)  # anything that outlived the namespace (nothing should)
                reap_zombies(self.uid)
            shutil.rmtree(workdir, ignore_errors=True)
        return Verdict(test.name, classify(raw, token), raw.seconds, raw.code,
                       raw.stdout.decode("utf-8", "replace"), raw.stderr.decode("utf-8", "replace"))


class DockerSandbox(Sandbox):
    """Through the Docker SDK: network disabled, read-only root, memory / CPU /
    pids limits, a tmpfs work dir, an unprivileged user."""

    name = "docker"

    def __init__(self, image: str = "python:3.11-slim", cpus: float = 1.0):
        import docker

        self.client = docker.from_env()
        self.client.ping()
        self.image, self.cpus = image, cpus

    def run_one(self, program: str, test: TestCase, limits: Limits = Limits()) -> Verdict:
        import base64

        token = secrets.token_hex(16)
        source = base64.b64encode(_script(program, test, token).encode()).decode()
        start = time.monotonic()
        container = self.client.containers.create(
            self.image, ["python", "-I", "-B", "-c", f"import base64;exec(base64.b64decode('{source}'))"],
            network_disabled=True, read_only=True, mem_limit=f"{limits.memory_mb}m",
            nano_cpus=int(self.cpus * 1e9), pids_limit=limits.max_processes, user="65534:65534",
            tmpfs={"/sandbox": f"size={limits.file_size_mb}m", "/tmp": f"size={limits.file_size_mb}m"},
            working_dir="/sandbox", environment={}, cap_drop=["ALL"], security_opt=["no-new-privileges"],
            ulimits=[__import__("docker").types.Ulimit(name="cpu", soft=limits.cpu_s, hard=limits.cpu_s)])
        timed_out = False
        try:
            container.start()
            try:
                code = container.wait(timeout=limits.wall_s)["StatusCode"]
            except Exception:  # noqa: BLE001 - requests timeout: past the wall-clock limit
                container.kill()
                code, timed_out = None, True
            stdout = container.logs(stdout=True, stderr=False)[: limits.output_bytes + 1]
            stderr = container.logs(stdout=False, stderr=True)[: limits.output_bytes + 1]
            oom = container.attrs.get("State", {}).get("OOMKilled", False)
        finally:
            container.remove(force=True)
        raw = _Raw(code, stdout[: limits.output_bytes], stderr[: limits.output_bytes], timed_out,
                   len(stdout) > limits.output_bytes or len(stderr) > limits.output_bytes, time.monotonic() - start)
        status = "memory" if oom else classify(raw, token)
        return Verdict(test.name, status, raw.seconds, code, raw.stdout.decode("utf-8", "replace"),
                       raw.stderr.decode("utf-8", "replace"))


def make_sandbox(backend: str = "bubblewrap", **options) -> Sandbox:
    if backend == "bubblewrap":
        return BubblewrapSandbox(**options)
    if backend == "docker":
        return DockerSandbox(**options)
    raise ValueError(f"sandbox backend: 'bubblewrap' or 'docker', got {backend!r}")


@dataclass
class SandboxPool:
    """At most ``size`` sandboxed runs at once; each slot has its own uid
    (bubblewrap) so the per-uid process limit holds per slot."""

    backend: str = "bubblewrap"
    size: int = 4
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.backend == "bubblewrap":
            self._slots = [make_sandbox("bubblewrap", uid=60000 + i, **self.options) for i in range(self.size)]
        else:
            self._slots = [make_sandbox(self.backend, **self.options) for _ in range(self.size)]
        self._free = list(range(self.size))
        self._lock = threading.Condition()
        self._executor = ThreadPoolExecutor(self.size)

    def _run(self, program: str, tests: list[TestCase], limits: Limits) -> list[Verdict]:
        with self._lock:
            while not self._free:
                self._lock.wait()
            slot = self._free.pop()
        try:
            return self._slots[slot].run(program, tests, limits)
        finally:
            with self._lock:
                self._free.append(slot)
                self._lock.notify()

    def run_many(self, jobs: list[tuple[str, list[TestCase]]], limits: Limits = Limits()) -> list[list[Verdict]]:
        futures = [self._executor.submit(self._run, program, tests, limits) for program, tests in jobs]
        return [f.result() for f in futures]

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        for s in self._slots:
            s.close()
