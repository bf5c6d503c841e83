"""Instructions per pair on a worker's whole path, counted by valgrind: a
figure this shared, noisy host cannot move (timings here swing by ±30%
between runs; instruction counts by well under 1%).

Runs bench_worker.py (or bench_supervisor.py) under cachegrind at two sizes and divides the
difference by the pairs between them, so start-up and imports cancel out;
for the worker, less the same for its --setup-only run (the bench making
the records, interpreted Python that is no part of the worker).
Given other trees (checkouts or worktrees of other commits, built in place),
measures each the same way and prints the ratios to the first.

    .venv/bin/python bench/bench_instructions.py [--tree DIR ...] [--pairs 2000 12000] [--traffic api|nginx]
                                                 [--bench worker|supervisor]

Instructions are not time (a cache miss costs hundreds of them), but for
interpreter-bound code they track CPU closely, and a change that removes
work shows here whatever the load on the machine.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def instructions(tree: Path, pairs: int, traffic: str, bench: str, setup_only: bool = False) -> int:
    cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
           sys.executable, str(tree / "bench" / f"bench_{bench}.py"), "--pairs", str(pairs)]
    if traffic != "api" and bench == "worker":  # the default, and all bench_worker.py knew before --traffic
        cmd += ["--traffic", traffic]
    if setup_only:
        cmd.append("--setup-only")
    env = dict(os.environ, PYTHONHASHSEED="0")  # the same dict layouts in every run
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tree)
    m = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
    if out.returncode != 0 or m is None:
        sys.exit(f"bench_{bench} under valgrind failed in {tree}:\n{out.stderr[-2000:]}")
    return int(m.group(1).replace(",", ""))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", action="append", default=[], type=Path,
                    help="another tree to measure (default: only this one)")
    ap.add_argument("--pairs", type=int, nargs=2, default=(2000, 12000))
    ap.add_argument("--traffic", choices=("api", "nginx"), default="api", help="bench_worker.py's --traffic")
    ap.add_argument("--bench", choices=("worker", "supervisor"), default="worker",
                    help="worker: bench_worker.py; supervisor: bench_supervisor.py (its traffic is nginx's)")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("bench_instructions: valgrind is not installed (apt-get install valgrind)")
    small, large = args.pairs
    trees = [HERE, *args.tree]
    figures = []
    for tree in trees:
        per_pair = (instructions(tree, large, args.traffic, args.bench) -
                    instructions(tree, small, args.traffic, args.bench)) / (large - small)
        if args.bench == "worker":  # less the bench's own making of the records (interpreted, per pair)
            per_pair -= (instructions(tree, large, args.traffic, args.bench, True) -
                         instructions(tree, small, args.traffic, args.bench, True)) / (large - small)
        figures.append(per_pair)
        ratio = "" if tree == HERE else f"; this tree needs {figures[0] / per_pair:.3f}x of that"
        print(f"{tree}: {per_pair:,.0f} instructions per pair{ratio}")


if __name__ == "__main__":
    main()
