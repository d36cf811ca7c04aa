"""Run the benchmarks: every ``bench/bench_*.py`` in name order, or the ones named.

    python -m bench                 # all of them (what ``make bench`` runs)
    python -m bench graphql         # bench_graphql only (``bench_graphql`` works too)
    python -m bench graphql pagination
    python -m bench import -- --rows 200000   # arguments after -- go to that main(argv)
    python -m bench --list          # the names found

Each module has a ``main()`` that prints its figures. Benchmarks never pass or fail on
timing; the exit status is non-zero only when a benchmark raised.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
import traceback
from pathlib import Path

PREFIX = "bench_"


def discover() -> list[str]:
    """Module names ``bench_*`` next to this file, in name order."""
    folder = str(Path(__file__).resolve().parent)
    return sorted(m.name for m in pkgutil.iter_modules([folder])
                  if m.name.startswith(PREFIX) and not m.ispkg)


def _module_name(name: str) -> str:
    name = name.removesuffix(".py").rsplit("/", 1)[-1]
    return name if name.startswith(PREFIX) else PREFIX + name


def main(argv: list[str]) -> int:
    extra: list[str] | None = None
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1:]
    available = discover()
    if "--list" in argv or "-l" in argv:
        print("\n".join(n.removeprefix(PREFIX) for n in available))
        return 0
    if "--help" in argv or "-h" in argv:
        print(__doc__)
        return 0
    wanted = [_module_name(a) for a in argv] or available
    unknown = [w for w in wanted if w not in available]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: "
              f"{', '.join(n.removeprefix(PREFIX) for n in available) or 'none'}",
              file=sys.stderr)
        return 2
    if extra is not None and len(wanted) != 1:
        print("arguments after -- need exactly one benchmark name", file=sys.stderr)
        return 2
    failed: list[str] = []
    for name in wanted:
        print(f"=== {name} ===", flush=True)
        started = time.perf_counter()
        try:
            module = importlib.import_module(f"{__package__ or 'bench'}.{name}")
            if extra is None:
                module.main()
            else:
                module.main(extra)
        except Exception:  # noqa: BLE001 - report and go on with the next benchmark
            traceback.print_exc()
            failed.append(name)
        print(f"--- {name}: {time.perf_counter() - started:.1f} s\n", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
