"""Sandboxed test runs per second on this machine and the overhead against a
bare subprocess running the same script with the same interpreter.
Targets (issue): >= 30 short runs per second on 2 cores, <= 1.5x bare time.

Both bubblewrap modes are measured: ``persistent`` (the default: one sandbox
per pool slot, a fresh interpreter per run) and ``fresh`` (new namespaces
for every run).

    .venv/bin/python benchmarks/sandbox_throughput.py [--runs 300] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from verifiers.sandbox import Limits, SandboxPool, TestCase, run_capped, system_python

PROGRAM = "def add(a, b):\n    return a + b\n"
TEST = TestCase("t", "assert add(2, 3) == 5")


def bare(n: int, workers: int) -> float:
    python = system_python()

    def one(_):
        with tempfile.TemporaryDirectory() as d:
            Path(d, "main.py").write_text(PROGRAM + "\n" + TEST.code + "\nprint('ok')\n")
            raw = run_capped([python, "-I", "-B", "main.py"], 5, 65536, cwd=d)
            assert raw.code == 0
    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(one, range(n)))
    return time.perf_counter() - t


def sandboxed(pool: SandboxPool, n: int) -> float:
    t = time.perf_counter()
    results = pool.run_many([(PROGRAM, [TEST])] * n, Limits())
    elapsed = time.perf_counter() - t
    assert all(v[0].passed for v in results), {v[0].status for v in results}
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--rounds", type=int, default=3, help="alternate the three measurements this many times")
    args = p.parse_args()
    pools = {mode: SandboxPool("bubblewrap", args.workers, {"persistent": mode == "persistent"})
             for mode in ("persistent", "fresh")}
    bare(20, args.workers)
    for pool in pools.values():
        sandboxed(pool, 20)  # warm-up (starts the persistent sandboxes)
    times = {"bare": 0.0, "persistent": 0.0, "fresh": 0.0}
    for _ in range(args.rounds):  # interleaved, so machine noise hits all three alike
        times["bare"] += bare(args.runs, args.workers)
        for mode, pool in pools.items():
            times[mode] += sandboxed(pool, args.runs)
    for pool in pools.values():
        pool.close()
    n = args.runs * args.rounds
    print(f"{n} runs each, {args.workers} workers, {os.cpu_count()} cores")
    for mode, label in (("bare", "bare subprocess"), ("persistent", "bubblewrap, persistent (default)"),
                        ("fresh", "bubblewrap, fresh per run")):
        overhead = "" if mode == "bare" else f"  overhead {times[mode] / times['bare']:.2f}x bare"
        print(f"{label:34s} {n / times[mode]:6.1f} runs/s ({1000 * times[mode] / n:5.1f} ms/run){overhead}")


if __name__ == "__main__":
    main()
