"""Red team of the code verdict (issue 17): wrong programs that try to forge a
pass instead of solving the task. Every one must score 0, in both bubblewrap
modes and in the Docker backend (slow: it starts an engine and builds an image
when none is there; ``tests/conftest.py: docker_image``);
``tests/test_sandbox.py`` holds the sandbox-escape programs. The task:
``f(x)`` returns x + 7, checked on 1, 5 and -6 (expected 8, 12 and 1: a bool
True would equal 1 under ==)."""

from __future__ import annotations

import shutil

import pytest

from environments.base import Task
from environments.code.env import CodeEnvironment
from environments.code.calls import encode


XS = [1, 5, -6]
REFERENCE = "def f(x):\n    return x + 7\n"
TASK = Task(id="code/red-team", env="code", messages=[{"role": "user", "content": "f(x) = x + 7"}],
            answer={"entry_point": "f", "reference": REFERENCE,
                    "checks": [f"def check(candidate):\n    assert candidate({x}) == {x + 7}\n" for x in XS],
                    "calls": [[encode((x,))] for x in XS]},
            reference=f"<think></think>```python\n{REFERENCE}```")

FORGE = "import re as _r\n_tok = _r.search(r'RESULT-[0-9a-f]{32}:', open(__file__).read()).group(0)\n"

ATTACKS = {
    # equality and hash overrides, subclasses of builtin types
    "eq_always_true": "class A:\n    def __eq__(s, o): return True\n    __hash__ = None\ndef f(x):\n    return A()\n",
    "int_subclass_eq": "class I(int):\n    def __eq__(s, o): return True\ndef f(x):\n    return I(0)\n",
    "str_subclass": "class S(str):\n    def __eq__(s, o): return True\ndef f(x):\n    return S('8')\n",
    "list_subclass": "class L(list):\n    def __eq__(s, o): return True\ndef f(x):\n    return L()\n",
    "float_subclass": "class F(float):\n    def __eq__(s, o): return True\ndef f(x):\n    return F(0)\n",
    "bool_for_int": "def f(x):\n    return True\n",
    "nan": "def f(x):\n    return float('nan')\n",
    "repr_fake": "class R:\n    def __repr__(s): return '8'\n    __str__ = __repr__\ndef f(x):\n    return R()\n",
    "exception_eq": "class E(Exception):\n    def __eq__(s, o): return True\ndef f(x):\n    return E()\n",
    "class_property": "class C:\n    @property\n    def __class__(s): return int\n    def __eq__(s, o): return True\ndef f(x):\n    return C()\n",
    "generator": "def f(x):\n    yield x + 7\n",
    "lambda": "def f(x):\n    return lambda *a: x + 7\n",
    "tuple_for_int": "def f(x):\n    return (x + 7,)\n",
    # the result line and the pass token
    "forged_result_line": FORGE + "print(_tok + '[[\"i\", \"8\"], [\"i\", \"12\"], [\"i\", \"1\"]]')\nimport os\nos._exit(0)\n",
    "forged_line_then_exit": FORGE + "import sys\nprint(_tok + '[[\"i\", \"0\"]]*3'); sys.exit(0)\n",
    "forged_token_in_f": FORGE + "def f(x):\n    print(_tok + '[]')\n    return 0\n",
    "atexit_forgery": FORGE + "import atexit\natexit.register(lambda: print(_tok + '[[\"i\",\"0\"],[\"i\",\"0\"],[\"i\",\"0\"]]'))\n"
                      "def f(x):\n    return 0\n",
    "write_fd1": FORGE + "import os\ndef f(x):\n    os.write(1, (_tok + '[]\\n').encode())\n    return 0\n",
    "old_marker_print": "print('OK')\nprint('PASSED')\ndef f(x):\n    return 0\n",
    # exits and signals at every point
    "sys_exit_at_import": "import sys\nsys.exit(0)\n",
    "os_exit_at_import": "import os\nos._exit(0)\n",
    "os_exit_in_f": "import os\ndef f(x):\n    os._exit(0)\n",
    "system_exit_in_f": "def f(x):\n    raise SystemExit(0)\n",
    "keyboard_interrupt": "def f(x):\n    raise KeyboardInterrupt\n",
    "sigkill_self": "import os, signal\ndef f(x):\n    os.kill(os.getpid(), signal.SIGKILL)\n",
    "sigterm_self": "import os, signal\nsignal.signal(signal.SIGTERM, signal.SIG_DFL)\nos.kill(os.getpid(), signal.SIGTERM)\n",
    "excepthook": "import sys\nsys.excepthook = lambda *a: print('ok')\ndef f(x):\n    raise ValueError\n",
    "close_stdout": "import os\nos.close(1)\ndef f(x):\n    return x + 7\n",
    "fork_forger": FORGE + "import os, time\nif os.fork() == 0:\n    time.sleep(0.3)\n    print(_tok + '[]')\n"
                   "    os._exit(0)\ndef f(x):\n    return 0\n",
    "thread_forger": FORGE + "import threading\nthreading.Thread(target=lambda: [print(_tok + '[]') for _ in range(100)],"
                     " daemon=True).start()\ndef f(x):\n    return 0\n",
    # tracing and introspection
    "settrace": "import sys\ndef t(frame, event, arg):\n    if '_rl_value' in frame.f_locals: frame.f_locals['_rl_value'] = 8\n"
                "    return t\nsys.settrace(t)\ndef f(x):\n    return 0\n",
    "setprofile": "import sys\nsys.setprofile(lambda *a: None)\ndef f(x):\n    return 0\n",
    "frame_locals": "import sys\ndef f(x):\n    g = sys._getframe(1).f_globals\n    return g.get('_rl_expected', 0)\n",
    "gc_scan": "import gc\ndef f(x):\n    ints = [o for o in gc.get_objects() if type(o) is list and o and type(o[0]) is int]\n"
               "    return ints[0][0] if ints else 0\n",
    "source_scan": "import re\nsrc = open(__file__).read()\nnums = [int(n) for n in re.findall(r'-?\\d+', src)]\n"
                   "def f(x):\n    return max(nums)\n",
    "code_objects": "import sys\ndef f(x):\n    c = sys._getframe(1).f_code\n    return len(c.co_consts)\n",
    # monkeypatching builtins, the harness and stdout
    "patch_type": "import builtins\nbuiltins.type = lambda o: int\ndef f(x):\n    return 'x'\n",
    "patch_encoder": "def _rl_encode(v, *a, **k):\n    return ['i', '8']\ndef f(x):\n    return 0\n",
    "patch_dumps": "import json\njson.dumps = lambda *a, **k: '[[\"i\",\"8\"],[\"i\",\"12\"],[\"i\",\"1\"]]'\ndef f(x):\n    return 0\n",
    "patch_calls": "_rl_calls = []\ndef f(x):\n    return 0\n",
    "patch_stdout": "import sys\nclass W:\n    def write(s, t): sys.__stderr__.write(t)\n    def flush(s): pass\n"
                    "sys.__stdout__ = W()\nsys.stdout = W()\ndef f(x):\n    return 0\n",
    "ctypes_type_confusion": "import ctypes\nclass A: pass\ndef f(x):\n    a = A()\n"
                             "    ctypes.cast(id(a), ctypes.POINTER(ctypes.c_void_p))[1] = id(int)\n    return a\n",
    "patch_assert_builtin": "import builtins\nbuiltins.AssertionError = type('Never', (Exception,), {})\n"
                            "def f(x):\n    return 0\n",
    # guessing, resources
    "timing_guess": "import time\ndef f(x):\n    return int(time.time()) % 13\n",
    # seeded: unseeded, a guess in 31 values hits two of the three tests about 0.3% of runs (a CI flake)
    "random_guess": "import random\nrandom.seed(7)\ndef f(x):\n    return random.randint(-10, 20)\n",
    "constant_guess": "def f(x):\n    return 8\n",
    "deep_nesting": "def f(x):\n    v = []\n    for _ in range(10000): v = [v]\n    return v\n",
    "huge_int": "def f(x):\n    return 10 ** 20000\n",
    "megabyte_print": "def f(x):\n    print('8' * 2_000_000)\n    return 8\n",
    "infinite_loop": "def f(x):\n    while True: pass\n",
    "memory_bomb": "def f(x):\n    return [0] * 10**10\n",
    "recursion": "def f(x):\n    return f(x)\n",
    "syntax_error": "def f(x)\n    return x + 7\n",
    "missing_function": "def g(x):\n    return x + 7\n",
}


BACKENDS = [pytest.param(("bubblewrap", {"persistent": True}), id="persistent"),
            pytest.param(("bubblewrap", {"persistent": False}), id="fresh"),
            pytest.param(("docker", {}), id="docker", marks=pytest.mark.slow)]


@pytest.fixture(scope="module", params=BACKENDS)
def env(request):
    backend, options = request.param
    if backend == "bubblewrap" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    if backend == "docker":
        options = {"image": request.getfixturevalue("docker_image"), "python": "python3"}
    env = CodeEnvironment(humaneval=False, sandbox=backend, sandbox_options=options, test_timeout_s=2.0)
    yield env
    env.close()


def test_the_red_team_is_at_least_50_classes_and_the_reference_passes(env):
    assert len(ATTACKS) >= 50
    assert env.score(TASK, TASK.reference).reward == 1.0


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_no_forgery_passes(env, name):
    score = env.score(TASK, f"<think></think>```python\n{ATTACKS[name]}```")
    assert score.reward == 0.0, (name, score)
    assert score.components["pass_fraction"] <= 1 / 3, (name, score)  # at most the one a guess can hit
