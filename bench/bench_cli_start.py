"""How long `rapport --help` takes, against `python -c pass` (the interpreter's own start).

Both commands run in turn (A B A B ...), each in a fresh process with no RAPPORT_*
setting, and the ratio is taken pair by pair so a machine whose speed drifts still gives a
fair ratio. CPU time (user + system of the child) is reported beside wall time: on a
shared machine it moves less. The run also checks that the help imported none of the
statistics stack (numpy, scipy, scikit-learn, matplotlib, pandas).

    python -m bench cli_start -- --runs 15
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("numpy", "scipy", "sklearn", "matplotlib", "pandas")
PROBE = ("import atexit, sys\n"
         f"atexit.register(lambda: print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules],"
         " file=sys.stderr))\n"
         "from core.cli import main\nmain(['--help'])\n")


def _run(command: list[str], cwd: str, env: dict[str, str]) -> tuple[float, float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stderr


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench cli_start")
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAPPORT_", "FLASK_"))}
    env["PYTHONPATH"] = str(ROOT)
    rapport = [sys.executable, "-c", PROBE]
    baseline = [sys.executable, "-c", "pass"]
    with tempfile.TemporaryDirectory() as cwd:  # no instance folder, no .env: no config
        _, _, stderr = _run(rapport, cwd, env)  # warm-up (and the import check)
        _run(baseline, cwd, env)
        if f"HEAVY {[]}" not in stderr:
            raise SystemExit(f"`rapport --help` imported the statistics stack: {stderr}")
        rows = []
        for _ in range(args.runs):
            a = _run(rapport, cwd, env)
            b = _run(baseline, cwd, env)
            rows.append((a[0], a[1], b[0], b[1]))
    med = statistics.median
    print(f"rapport --help ({args.runs} runs, interleaved with python -c pass)")
    print(f"  rapport --help   wall median {med(r[0] for r in rows):.3f} s, "
          f"cpu median {med(r[1] for r in rows):.3f} s")
    print(f"  python -c pass   wall median {med(r[2] for r in rows):.3f} s, "
          f"cpu median {med(r[3] for r in rows):.3f} s")
    print(f"  difference (the CLI's own start): wall median "
          f"{med(r[0] - r[2] for r in rows):.3f} s, cpu median "
          f"{med(r[1] - r[3] for r in rows):.3f} s")
    print(f"  statistics stack imported by --help: none ({', '.join(HEAVY)})")


if __name__ == "__main__":
    main()
