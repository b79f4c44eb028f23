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
  /usr (the system Python), a private writable /sandbox and /tmp (size-capped
  tmpfs), no /etc, no home, no project files, a cleared environment; it runs
  as an unprivileged uid with rlimits on CPU time, address space, processes,
  file size and open files, and the whole process tree is killed at the
  wall-clock limit. By default a slot keeps its sandbox between runs and
  starts a fresh interpreter in it per run (``persistent``: after each run
  every leftover process is killed and /sandbox and /tmp are emptied);
  ``persistent=False`` builds new namespaces for every run.
- ``docker``: the same through the Docker SDK (network disabled, read-only
  root, memory / CPU / pids limits, a tmpfs work dir, a configurable image)
  for hosts with a Docker engine.

``run_one`` (program + test code + a pass token) contains what a program
does to the host, not reward hacking inside its own process: a program can
read the token from its own source. Rewards therefore come from
``environments.code.calls``, which uses ``run_script`` and never lets the sandbox
decide a verdict.
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from verifiers.sandbox_server import Raw, run_capped

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


def classify(raw: Raw, token: str) -> str:
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
    def run_script(self, script: str, limits: Limits = Limits()) -> Raw:
        """Run a Python script in a fresh sandboxed process: exit code, capped output."""

    def run_one(self, program: str, test: TestCase, limits: Limits = Limits()) -> Verdict:
        """Run the program and one test in a fresh sandboxed process (pass token after the test)."""
        token = secrets.token_hex(16)
        raw = self.run_script(_script(program, test, token), limits)
        return Verdict(test.name, classify(raw, token), raw.seconds, raw.code,
                       raw.stdout.decode("utf-8", "replace"), raw.stderr.decode("utf-8", "replace"))

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
    """``uid``: the unprivileged user id sandboxed processes run as when we are
    root (its process limit is per uid, so a pool gives each slot its own).

    ``persistent`` (default): one sandbox (namespaces, mounts) per slot, kept
    between runs; its init is a small server (``verifiers.sandbox_server``)
    that starts a fresh interpreter per run, then kills every process the run
    left, empties /sandbox and /tmp, and has the host replace the sandbox if
    anything else could carry over (SysV IPC objects). Runs then cost about
    what a bare subprocess costs. ``persistent=False`` builds fresh namespaces
    for every run (about 3.5 ms more per run on 2 cores)."""

    name = "bubblewrap"

    def __init__(self, python: str | None = None, uid: int = 60000, persistent: bool = True,
                 tmpfs_mb: int = 64):
        self.bwrap = shutil.which("bwrap")
        if self.bwrap is None:
            raise RuntimeError("sandbox: bubblewrap is not installed (Debian: apt-get install bubblewrap; "
                               "scripts/setup.sh does it)")
        self.python = python or system_python()
        self.uid, self.persistent, self.tmpfs_mb = uid, persistent, tmpfs_mb
        self._root = os.getuid() == 0  # then the slot's uid is ours alone: killing it kills exactly the sandbox
        self._server: subprocess.Popen | None = None
        self._server_init: int | None = None
        _become_subreaper()

    def command(self, argv: list[str], info_fd: int, extra: list[str] = ()) -> list[str]:
        """bwrap around ``argv``; ``extra`` bwrap options go after the mounts."""
        mounts = ["--ro-bind", "/usr", "/usr"]
        for link in ("bin", "lib", "lib64", "sbin"):
            target = os.readlink(f"/{link}") if os.path.islink(f"/{link}") else None
            if target is not None:
                mounts += ["--symlink", target, f"/{link}"]
            elif os.path.isdir(f"/{link}"):
                mounts += ["--ro-bind", f"/{link}", f"/{link}"]
        size = str(self.tmpfs_mb * 2**20)
        return [self.bwrap, "--info-fd", str(info_fd), *mounts, "--size", size, "--tmpfs", "/sandbox",
                "--size", size, "--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev", *extra, "--remount-ro", "/",
                "--unshare-all", "--hostname", "sandbox", "--die-with-parent", "--new-session", "--clearenv",
                "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/sandbox", "--setenv", "LANG", "C.UTF-8",
                "--chdir", "/sandbox", *argv]

    def _interpreter(self, limits: Limits) -> list[str]:
        return [self.python, "-I", "-B", "-c", _bootstrap(limits)]

    def _launch(self) -> dict:
        """Popen arguments: drop to the slot's uid (no preexec_fn: the rlimits are set by ``_bootstrap``)."""
        return {"user": self.uid, "group": self.uid, "extra_groups": []} if self._root else {}

    def run_script(self, script: str, limits: Limits = Limits()) -> Raw:
        data = script.encode()
        return self._run_persistent(data, limits) if self.persistent else self._run_fresh(data, limits)

    def _run_fresh(self, script: bytes, limits: Limits) -> Raw:
        """A new sandbox for this run alone; bwrap copies the script in from a memfd."""
        script_fd = os.memfd_create("main.py")
        info_r, info_w = os.pipe()
        try:
            _write_all(script_fd, script)
            os.lseek(script_fd, 0, os.SEEK_SET)
            cmd = self.command(self._interpreter(limits), info_w, ["--file", str(script_fd), "/sandbox/main.py"])
            return run_capped(cmd, limits.wall_s, limits.output_bytes, env={"PATH": "/usr/bin:/bin"},
                              kill=(lambda: kill_uid(self.uid)) if self._root else None,
                              pass_fds=(info_w, script_fd), **self._launch())
        finally:
            os.close(info_w)
            os.close(script_fd)
            self._reap(_namespace_init(info_r))

    def _run_persistent(self, script: bytes, limits: Limits) -> Raw:
        start = time.monotonic()
        request = {"argv": self._interpreter(limits), "wall_s": limits.wall_s, "cap": limits.output_bytes,
                   "script": len(script)}
        try:
            server = self._start_server()
            server.stdin.write(json.dumps(request).encode() + b"\n" + script)
            server.stdin.flush()
            header, stdout, stderr = _read_reply(server.stdout.fileno(), start + limits.wall_s + 10)
        except (OSError, ValueError, KeyError, EOFError, TimeoutError) as exc:
            reason = f"sandbox server lost: {type(exc).__name__}: {exc}"
            self._stop_server()
            return Raw(None, b"", reason.encode(), False, False, time.monotonic() - start)
        if header["dirty"]:
            self._stop_server()  # something could outlive the run: the next run gets a fresh sandbox
        return Raw(header["code"], stdout, stderr, header["timed_out"], header["overflow"], header["seconds"])

    def _start_server(self) -> subprocess.Popen:
        if self._server is not None and self._server.poll() is None:
            return self._server
        self._stop_server()
        info_r, info_w = os.pipe()
        try:
            argv = [self.python, "-I", "-B", "-c", _SERVER_SOURCE]
            self._server = subprocess.Popen(self.command(argv, info_w, ["--as-pid-1"]), stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                            start_new_session=True, env={"PATH": "/usr/bin:/bin"},
                                            pass_fds=(info_w,), **self._launch())
        finally:
            os.close(info_w)
        self._server_init = _namespace_init(info_r)  # with --as-pid-1: the server itself
        return self._server

    def _stop_server(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        try:
            server.stdin.close()  # the server's loop ends; as the namespace's init, its exit ends the sandbox
            server.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            if self._root:
                kill_uid(self.uid)
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        server.stdout.close()
        self._reap(self._server_init)

    def _reap(self, init: int | None) -> None:
        """Wait for the namespace init (its exit kills everything left in the
        sandbox); if it cannot be waited for, kill by uid."""
        if not _reap_namespace(init) and self._root:
            kill_uid(self.uid)
            reap_zombies(self.uid)

    @property
    def resident_pids(self) -> set[int]:
        """Host pids of this slot's idle sandbox (bwrap and the server) between runs."""
        if self._server is None or self._server.poll() is not None:
            return set()
        return {self._server.pid, self._server_init} - {None}

    def close(self) -> None:
        self._stop_server()


_SERVER_SOURCE = Path(__file__).with_name("sandbox_server.py").read_text()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_reply(fd: int, deadline: float) -> tuple[dict, bytes, bytes]:
    """The server's reply: a JSON header line, then its stdout and stderr bytes."""
    buf = bytearray()
    header = None
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            if header is None and b"\n" in buf:
                line, _, rest = bytes(buf).partition(b"\n")
                header, buf = json.loads(line), bytearray(rest)
            if header is not None and len(buf) >= header["stdout"] + header["stderr"]:
                n = header["stdout"]
                return header, bytes(buf[:n]), bytes(buf[n:n + header["stderr"]])
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply before the wall-clock limit")
            if sel.select(left):
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise EOFError("the server exited")
                buf += chunk


def _bootstrap(limits: Limits) -> str:
    """The sandboxed interpreter's first statements: lower the rlimits (an
    unprivileged process can never raise them again), then run main.py as
    ``__main__``. Setting them here rather than in a ``preexec_fn`` keeps
    Python code out of the forked launcher (about 1.7 ms a run), and lets the
    persistent sandbox's server stay unlimited while every run is limited.
    RLIMIT_MSGQUEUE 0: no POSIX message queue can be made to outlive a run."""
    mb = 2**20
    rlimits = {"RLIMIT_CPU": (limits.cpu_s, limits.cpu_s + 1),  # SIGXCPU (timeout), SIGKILL a second later
               "RLIMIT_AS": (limits.memory_mb * mb,) * 2, "RLIMIT_NPROC": (limits.max_processes,) * 2,
               "RLIMIT_FSIZE": (limits.file_size_mb * mb,) * 2, "RLIMIT_NOFILE": (limits.open_files,) * 2,
               "RLIMIT_CORE": (0, 0), "RLIMIT_MSGQUEUE": (0, 0)}
    pairs = ", ".join(f"(resource.{name}, {value})" for name, value in rlimits.items())
    return (f"import resource\nfor k, v in ({pairs}): resource.setrlimit(k, v)\ndel resource, k, v\n"
            "__file__ = '/sandbox/main.py'\nexec(compile(open(__file__, 'rb').read(), __file__, 'exec'))\n")


def _namespace_init(info_r: int) -> int | None:
    """The host pid of the sandbox's PID-namespace init, from bwrap's --info-fd
    JSON (read to its end; ``info_r`` is closed)."""
    with open(info_r, "rb") as f:
        data = f.read()
    try:
        return int(json.loads(data)["child-pid"])
    except (ValueError, KeyError, TypeError):
        return None  # bwrap failed before it cloned the sandbox


def _reap_namespace(pid: int | None, patience_s: float = 2.0) -> bool:
    """Wait for the namespace init to exit. bwrap's outer process exits as soon
    as the sandboxed command has; the init follows a moment later and, as it
    exits, the kernel kills every process left in its PID namespace (daemons
    included). We are its subreaper, so it is our child to reap. False when
    it cannot be waited for (no subreaper) or is still alive after
    ``patience_s``."""
    if pid is None:
        return False
    deadline = time.monotonic() + patience_s
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return False
        if done == pid:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.0005)


class DockerSandbox(Sandbox):
    """Through the Docker SDK: network disabled, read-only root, memory / CPU /
    pids limits, a tmpfs work dir, an unprivileged user."""

    name = "docker"

    def __init__(self, image: str = "python:3.11-slim", cpus: float = 1.0, python: str = "python3"):
        import docker

        self.client = docker.from_env()
        self.client.ping()
        self.image, self.cpus, self.python = image, cpus, python

    def run_script(self, script: str, limits: Limits = Limits()) -> Raw:
        import base64

        import docker

        source = base64.b64encode(script.encode()).decode()
        start = time.monotonic()
        container = self.client.containers.create(
            self.image, [self.python, "-I", "-B", "-c", f"import base64;exec(base64.b64decode('{source}'))"],
            network_disabled=True, read_only=True, mem_limit=f"{limits.memory_mb}m",
            nano_cpus=int(self.cpus * 1e9), pids_limit=limits.max_processes, user="65534:65534",
            tmpfs={"/sandbox": f"size={limits.file_size_mb}m", "/tmp": f"size={limits.file_size_mb}m"},
            working_dir="/sandbox", environment={}, cap_drop=["ALL"], security_opt=["no-new-privileges"],
            # docker-init as PID 1: the kernel drops default-action signals sent to a namespace's init, so
            # Python as PID 1 ignored its SIGXCPU and died by the hard limit's SIGKILL ("crashed", not
            # "timeout"); under docker-init it gets SIGXCPU like any process and tini reports 128 + 24
            init=True,
            ulimits=[docker.types.Ulimit(name="cpu", soft=limits.cpu_s, hard=limits.cpu_s + 1)],  # SIGXCPU first
            # a flood of output costs the host at most this much disk, and reading it back stays fast
            log_config=docker.types.LogConfig(type="json-file", config={"max-size": "1m", "max-file": "1"}))
        timed_out = False
        try:
            container.start()
            try:
                code = container.wait(timeout=limits.wall_s)["StatusCode"]
            except Exception:  # noqa: BLE001 - requests timeout: past the wall-clock limit
                try:
                    container.kill()
                except docker.errors.APIError:  # it ended on its own meanwhile (its CPU limit)
                    pass
                code, timed_out = None, True
            stdout = _capped_logs(container, "stdout", limits.output_bytes + 1)
            stderr = _capped_logs(container, "stderr", limits.output_bytes + 1)
            container.reload()
            if container.attrs.get("State", {}).get("OOMKilled", False):
                stderr += b"\nMemoryError: the container ran out of memory"
        finally:
            container.remove(force=True)
        return Raw(code, stdout[: limits.output_bytes], stderr[: limits.output_bytes], timed_out,
                   len(stdout) > limits.output_bytes or len(stderr) > limits.output_bytes, time.monotonic() - start)


def _capped_logs(container, stream: str, cap: int) -> bytes:
    """The first ``cap`` bytes of a container's stdout or stderr, read as a stream."""
    out = bytearray()
    chunks = container.logs(stdout=stream == "stdout", stderr=stream == "stderr", stream=True, follow=False)
    try:
        for chunk in chunks:
            out += chunk
            if len(out) >= cap:
                break
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return bytes(out[:cap])


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

    def with_slot(self, fn):
        """``fn(sandbox)`` on a free slot (waits for one)."""
        with self._lock:
            while not self._free:
                self._lock.wait()
            slot = self._free.pop()
        try:
            return fn(self._slots[slot])
        finally:
            with self._lock:
                self._free.append(slot)
                self._lock.notify()

    def run_many(self, jobs: list[tuple[str, list[TestCase]]], limits: Limits = Limits()) -> list[list[Verdict]]:
        futures = [self._executor.submit(self.with_slot, lambda sb, p=program, t=tests: sb.run(p, t, limits))
                   for program, tests in jobs]
        return [f.result() for f in futures]

    def run_scripts(self, scripts: list[str], limits: Limits = Limits()) -> list[Raw]:
        """Each script in a fresh sandboxed process, up to ``size`` at once."""
        futures = [self._executor.submit(self.with_slot, lambda sb, s=script: sb.run_script(s, limits))
                   for script in scripts]
        return [f.result() for f in futures]

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        for s in self._slots:
            s.close()
