"""Count the runner's own work per step: CPU instructions, with no I/O to hide it.

Wall-clock A/B runs of pure-Python changes swing by more than the changes on a
small shared machine, so this counts instructions with valgrind's callgrind:
a process running ``--runs`` 100-step workflows on a ``MemoryStore``, against
one running 2 (start-up, imports and the first run cancel out). The difference
over the steps between them is what one step costs the runner.

Run from the project root (valgrind must be installed, e.g. ``apt-get install
valgrind``; about a minute)::

    .venv/bin/python benchmarks/bench_step_python.py
    .venv/bin/python benchmarks/bench_step_python.py --before /tmp/before   # another checkout too
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from measure import print_table

STEPS = 100
ROOT = Path(__file__).resolve().parent.parent

WORKLOAD = f"""
import sys
import sqlalchemy_awaitly
from sqlalchemy_awaitly import durable
from sqlalchemy_awaitly.durable.memory import MemoryStore

def workflow(step, deps):
    for i in range({STEPS}):
        step(lambda i=i: i, key=f"s{{i}}")

assert sqlalchemy_awaitly.__file__.startswith(sys.argv[2]), sqlalchemy_awaitly.__file__
store = MemoryStore()
for n in range(int(sys.argv[1])):
    assert durable.run(None, workflow, id=f"run-{{n}}", store=store).ok
"""


def instructions(checkout: Path, runs: int) -> int:
    """Instructions callgrind counted for a process running ``runs`` workflows."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "workload.py"
        script.write_text(WORKLOAD)
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        out = Path(tmp) / "callgrind.out"
        valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        done = subprocess.run(
            [*valgrind, sys.executable, str(script), str(runs), str(checkout)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{done.stderr}")
    return int(found.group(1))


def per_step(checkout: Path, runs: int) -> float:
    return (instructions(checkout, runs) - instructions(checkout, 2)) / ((runs - 2) * STEPS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=12, help="workflows in the long process")
    parser.add_argument("--before", type=Path, help="another checkout of the project to count")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    if args.runs <= 2:
        sys.exit("--runs must be more than 2")
    if args.before is not None and not (args.before / "sqlalchemy_awaitly").is_dir():
        sys.exit(f"--before {args.before}: no sqlalchemy_awaitly package there")
    checkouts = [("this checkout", ROOT)]
    if args.before is not None:
        checkouts.insert(0, ("--before", args.before.resolve()))
    rows = []
    for name, checkout in checkouts:
        count = per_step(checkout, args.runs)
        rows.append([name, str(checkout), f"{count / 1000:,.1f}k"])
        print(f"  {name}: {count:,.0f} instructions per step", file=sys.stderr)
    print_table(
        f"the runner's instructions per step ({STEPS}-step runs on a MemoryStore, callgrind)",
        ["code", "path", "instructions per step"],
        rows,
    )


if __name__ == "__main__":
    main()
