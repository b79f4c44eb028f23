"""Sandboxed test runs per second on this machine and the overhead against a
bare subprocess running the same script with the same interpreter.
Targets (issue): >= 30 short runs per second on 2 cores, <= 1.5x bare time.

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


def sandboxed(n: int, workers: int) -> float:
    pool = SandboxPool("bubblewrap", workers)
    t = time.perf_counter()
    results = pool.run_many([(PROGRAM, [TEST])] * n, Limits())
    elapsed = time.perf_counter() - t
    pool.close()
    assert all(v[0].passed for v in results), {v[0].status for v in results}
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = p.parse_args()
    bare(20, args.workers), sandboxed(20, args.workers)  # warm-up
    b = bare(args.runs, args.workers)
    s = sandboxed(args.runs, args.workers)
    print(f"{args.runs} runs, {args.workers} workers, {os.cpu_count()} cores")
    print(f"bare subprocess: {args.runs / b:.1f} runs/s ({1000 * b / args.runs:.1f} ms/run)")
    print(f"bubblewrap sandbox: {args.runs / s:.1f} runs/s ({1000 * s / args.runs:.1f} ms/run)")
    print(f"overhead: {s / b:.2f}x bare-subprocess time")


if __name__ == "__main__":
    main()
