"""The bubblewrap sandbox: verdict classes, a red-team suite of hostile
programs (each contained, reported as the right failure class, the host
unaffected), HumanEval canonical solutions pass and broken ones fail. The
Docker backend's tests run only where a Docker engine answers."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from verifiers.sandbox import BubblewrapSandbox, Limits, processes_of
from verifiers.sandbox import TestCase as Case

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/bin/bwrap"), reason="bubblewrap not installed")
ROOT = Path(__file__).resolve().parent.parent
SECRET = "RL_SANDBOX_SECRET_VALUE_4242"
LIMITS = Limits(wall_s=3.0, cpu_s=2, memory_mb=256, max_processes=16, file_size_mb=4, output_bytes=32 * 1024)
UID = 60100

# name -> (test code, expected status); the program defines add(a, b)
RED_TEAM = {
    "fork bomb": ("import os\nwhile True:\n    try: os.fork()\n    except OSError: pass", "timeout"),
    "thread bomb": ("import threading, time\nwhile True: threading.Thread(target=time.sleep, args=(60,)).start()",
                    ("failed", "timeout")),
    "memory bomb": ("x = bytearray(2 * 1024**3)", "memory"),
    "slow memory growth": ("x = []\nwhile True: x.append(bytearray(10**6))", ("memory", "timeout")),  # timeout on a busy host
    "infinite loop": ("while True: pass", "timeout"),
    "sleep past the limit": ("import time; time.sleep(60)", "timeout"),
    "gigabytes of output": ("import sys\nwhile True: sys.stdout.write('x' * 65536)", "output_limit"),
    "stderr flood": ("import sys\nwhile True: sys.stderr.write('y' * 65536)", "output_limit"),
    "huge file": ("open('big', 'wb').write(b'x' * 64 * 1024**2)", "output_limit"),
    "loopback connection": ("import socket; socket.create_connection(('127.0.0.1', 22), timeout=1)", "failed"),
    "outside connection": ("import socket; socket.create_connection(('1.1.1.1', 80), timeout=1)", "failed"),
    "dns lookup": ("import socket; socket.getaddrinfo('pypi.org', 443)", "failed"),
    "raw socket": ("import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, 1)", "failed"),
    "write outside the work dir": ("open('/usr/evil', 'w').write('x')", "failed"),
    "write to root": ("open('/evil', 'w').write('x')", "failed"),
    "read /etc/shadow": ("print(open('/etc/shadow').read())", "failed"),
    "read /etc/passwd": ("print(open('/etc/passwd').read())", "failed"),
    "read the home dir": ("import os; print(os.listdir('/root'))", "failed"),
    "read the project tree": (f"print(open({str(ROOT / 'pyproject.toml')!r}).read())", "failed"),
    "read parent env vars": (f"import os\nassert {SECRET!r} not in str(os.environ)\n"
                             "for p in os.listdir('/proc'):\n"
                             "    try: assert b'" + SECRET + "' not in open(f'/proc/{p}/environ','rb').read()\n"
                             "    except (OSError, PermissionError): pass\nassert False, 'contained'", "failed"),
    "kill the parent": ("import os, signal; os.kill(os.getppid(), signal.SIGKILL)", "passed"),  # namespace init: immune
    "kill everything": ("import os, signal; os.kill(-1, signal.SIGKILL)", ("crashed", "failed")),
    "daemonised child": ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                         "        time.sleep(30)\n        open('/sandbox/late', 'w').write('x')\n    os._exit(0)\n"
                         "time.sleep(0.2)\nassert add(1, 2) == 3", "passed"),
    "hijack the sandbox's init": ("import os\nfor fd in os.listdir('/proc/1/fd'):\n"
                                  "    os.write(os.open(f'/proc/1/fd/{fd}', os.O_WRONLY), b'{}\\n')",
                                  ("failed", "passed")),
    "nested namespace escape": ("import ctypes, os, time\nlibc = ctypes.CDLL(None)\n"
                                "if libc.unshare(0x10000000 | 0x20000000) == 0 and os.fork() == 0:\n"  # USER | PID
                                "    if os.fork() == 0: time.sleep(30)\n    time.sleep(30)\n"
                                "assert add(1, 2) == 3", "passed"),
    "ctypes null dereference": ("import ctypes; ctypes.string_at(0)", "crashed"),
    "ctypes setuid root": ("import ctypes; assert ctypes.CDLL(None).setuid(0) == 0", "failed"),
    "exit before the tests": ("import os; os._exit(0)", "crashed"),
    "sys.exit(0) early": ("import sys; sys.exit(0)", "crashed"),
    "mount": ("import ctypes; assert ctypes.CDLL(None).mount(b'none', b'/mnt', b'tmpfs', 0, None) == 0", "failed"),
    "ptrace the parent": ("import ctypes, os; assert ctypes.CDLL(None).ptrace(16, os.getppid(), 0, 0) == 0",
                          ("failed", "timeout")),
    "open files exhaustion": ("fs = [open('/dev/null') for _ in range(100000)]", "failed"),
    "recursion bomb": ("def f(): return f()\nf()", "failed"),
    "wrong answer": ("assert add(1, 2) == 4", "failed"),
    "right answer": ("assert add(1, 2) == 3", "passed"),
}


@pytest.fixture(scope="module", params=[True, False], ids=["persistent", "fresh"])
def sandbox(request):
    os.environ[SECRET] = SECRET
    sb = BubblewrapSandbox(uid=UID, persistent=request.param)
    yield sb
    sb.close()
    assert processes_of(UID) == [], "the sandbox outlived close()"
    os.environ.pop(SECRET, None)


def _leftovers(sandbox) -> set[int]:
    """Processes of the sandbox's uid besides its idle resident server."""
    return set(processes_of(UID)) - sandbox.resident_pids


def test_red_team_has_at_least_30_hostile_programs():
    assert len(RED_TEAM) - 2 >= 30


@pytest.mark.parametrize("name", sorted(RED_TEAM))
def test_hostile_program_is_contained(sandbox, name, tmp_path):
    code, expected = RED_TEAM[name]
    verdict = sandbox.run_one("def add(a, b):\n    return a + b\n", Case(name, code), LIMITS)
    assert verdict.status in (expected if isinstance(expected, tuple) else (expected,)), (verdict.status, verdict.exit_code, verdict.stderr[-500:])
    assert verdict.seconds < LIMITS.wall_s + 2
    assert len(verdict.stdout) <= LIMITS.output_bytes and len(verdict.stderr) <= LIMITS.output_bytes
    assert _leftovers(sandbox) == set(), "a sandboxed process outlived its run"
    assert not Path("/evil").exists() and not Path("/usr/evil").exists()
    assert SECRET not in verdict.stdout + verdict.stderr


def test_host_still_works_after_the_red_team(sandbox):
    assert sandbox.run_one("x = 1", Case("t", "assert x == 1"), LIMITS).status == "passed"


def test_nothing_carries_over_between_runs(sandbox):
    """Files in /sandbox and /tmp, environment variables, and SysV IPC objects
    of one run are gone in the next (the persistent sandbox resets or replaces itself)."""
    leave = ("import os, ctypes\nopen('/sandbox/left', 'w').write('x'); open('/tmp/left', 'w').write('x')\n"
             "os.mkdir('/sandbox/d'); open('/sandbox/d/f', 'w').close(); os.chmod('/sandbox/d', 0)\n"
             "os.environ['LEFT'] = '1'\n"
             "assert ctypes.CDLL(None).shmget(4242, 4096, 0o1666) >= 0")  # IPC_CREAT | 0666
    assert sandbox.run_one("", Case("leave", leave), LIMITS).status == "passed"
    check = ("import os, ctypes\nassert not os.path.exists('/sandbox/left') and not os.path.exists('/tmp/left')\n"
             "assert not os.path.exists('/sandbox/d') and 'LEFT' not in os.environ\n"
             "assert ctypes.CDLL(None).shmget(4242, 0, 0) == -1")
    before = sandbox.resident_pids
    verdict = sandbox.run_one("", Case("check", check), LIMITS)
    assert verdict.passed, verdict.stderr
    if sandbox.persistent:  # the IPC object made the server report itself dirty: replaced
        assert before == set() and sandbox.resident_pids


def test_lost_server_is_a_crashed_run_and_the_next_run_recovers():
    import threading

    sandbox = BubblewrapSandbox(uid=UID + 1)
    try:
        assert sandbox.run_one("", Case("t", "pass"), LIMITS).passed
        first = sandbox.resident_pids
        killer = threading.Timer(0.5, os.killpg, (sandbox._server.pid, 9))  # the sandbox dies mid-run
        killer.start()
        verdict = sandbox.run_one("", Case("t", "import time; time.sleep(2)"), LIMITS)
        killer.join()
        assert verdict.status == "crashed" and "sandbox server lost" in verdict.stderr, verdict
        verdict = sandbox.run_one("", Case("t", "pass"), LIMITS)  # a fresh sandbox
        assert verdict.passed, verdict.stderr
        assert sandbox.resident_pids.isdisjoint(first)
    finally:
        sandbox.close()
    assert processes_of(UID + 1) == []


@pytest.mark.slow
def test_humaneval_canonical_solutions_pass_and_broken_ones_fail():
    from environments.code import CodeEnvironment

    env = CodeEnvironment(train_size=1, test_size=1, pool_size=2)
    try:
        tasks = [t for t in env.tasks("test") if t.meta["source"] == "humaneval"]
        assert len(tasks) == 164
        for t in tasks:
            good = env.score(t, t.reference)
            assert good.reward == 1.0, (t.id, good.reason)
            bad = env.score(t, env.wrong_completion(t, []))
            assert bad.reward == 0.0, t.id
    finally:
        env.close()


@pytest.fixture(scope="module")
def docker_sandbox(docker_image):
    from verifiers.sandbox import DockerSandbox

    return DockerSandbox(image=docker_image)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RED_TEAM))
def test_hostile_program_is_contained_by_docker(docker_sandbox, name):
    """The same programs in the Docker backend: contained (the host untouched, no
    secret out, within the time limit), and never a pass unless bubblewrap's is
    one too (the failure class may differ: a container is another kernel view)."""
    code, expected = RED_TEAM[name]
    verdict = docker_sandbox.run_one("def add(a, b):\n    return a + b\n", Case(name, code), LIMITS)
    allowed = expected if isinstance(expected, tuple) else (expected,)
    if name == "read /etc/passwd":  # the image's own file (bubblewrap shows no /etc at all); not the host's
        allowed = (*allowed, "passed")
    assert verdict.status != "passed" or "passed" in allowed, (verdict.status, verdict.stderr[-500:])
    assert verdict.seconds < LIMITS.wall_s + 10
    assert not Path("/evil").exists() and not Path("/usr/evil").exists()
    assert SECRET not in verdict.stdout + verdict.stderr


@pytest.mark.slow
def test_docker_backend(docker_image):
    from verifiers.sandbox import DockerSandbox

    sb = DockerSandbox(image=docker_image)
    assert sb.run_one("x = 1", Case("t", "assert x == 1"), LIMITS).status == "passed"
    assert sb.run_one("x = 1", Case("t", "assert x == 2"), LIMITS).status == "failed"
    assert sb.run_one("x = 1", Case("t", "while True: pass"), LIMITS).status == "timeout"
    # the CPU limit alone (the wall clock far off): SIGXCPU reaches the program, which is not PID 1
    cpu_bound = Limits(wall_s=20.0, cpu_s=1, memory_mb=256, max_processes=16, file_size_mb=4, output_bytes=1024)
    raw = sb.run_script("while True: pass", cpu_bound)
    assert (raw.code, raw.timed_out) == (128 + signal.SIGXCPU, False) and raw.seconds < 10, raw
    assert sb.run_one("x = 1", Case("t", "while True: pass"), cpu_bound).status == "timeout"
    assert sb.run_one("x = 1", Case("t", "import socket; socket.create_connection(('1.1.1.1', 80), timeout=1)"),
                      LIMITS).status == "failed"
