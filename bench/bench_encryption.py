"""The nested customers read (bench_graphql) with and without encryption at rest.

E-mails and phones are encrypted in the database (core/crypto.py): the GraphQL path and the
hand-written baseline of bench_graphql both decrypt the page's 100 e-mails. The "clear"
side runs the same code with ``EncryptedString`` passing values through unchanged. The
column type is global and SQLAlchemy caches its processors, so the two sides cannot share a
process: each measurement is a child process (``python -m bench.bench_encryption clear`` or
``encrypted``), the sides alternate, ``ROUNDS`` rounds, each in its own scratch database.

Goal: the GraphQL / baseline ratio grows by at most 10% with encryption (medians of the
rounds' ratios). Also printed: one decryption and one blind index, timed directly.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from typing import Any

from bench import common

NAME = "encryption"
ROUNDS = int(os.environ.get("RAPPORT_BENCH_ENCRYPTION_ROUNDS", "3"))
GROWTH_GOAL = 1.10
_MARK = "RESULT"


def _measure_side(side: str) -> None:
    """Child process: one bench_graphql measurement, ``side`` = clear | encrypted."""
    from bench import bench_graphql

    if side == "clear":
        from core.crypto import EncryptedString

        def passthrough(self: Any, value: Any, dialect: Any) -> Any:
            return value

        EncryptedString.process_bind_param = passthrough  # type: ignore[method-assign]
        EncryptedString.process_result_value = passthrough  # type: ignore[method-assign]
    with common.fresh_database(f"{NAME}_{side}") as url:
        app = common.make_app(url)
        try:
            bench_graphql.seed(app)
            bench_graphql.add_baseline_routes(app)
            row = bench_graphql.measure(app, side)
        finally:
            common.dispose(app)
    graphql_ms, baseline_ms, ratio = row[1], row[3], row[5]
    print(f"{_MARK} {graphql_ms} {baseline_ms} {ratio}", flush=True)


def _run_side(side: str) -> tuple[float, float, float]:
    done = subprocess.run([sys.executable, "-m", "bench.bench_encryption", side],
                          capture_output=True, text=True, check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith(_MARK))
    graphql_ms, baseline_ms, ratio = (float(v) for v in line.split()[1:])
    return graphql_ms, baseline_ms, ratio


def _primitive_costs() -> tuple[float, float]:
    """Microseconds per decryption of an e-mail and per blind index."""
    from core.crypto import Keyring, generate_blind_index_key, generate_encryption_key

    ring = Keyring.from_keys((generate_encryption_key(),), generate_blind_index_key())
    token = ring.encrypt("customer042@example.com")
    n = 20_000
    decrypt = common.timeit(lambda: [ring.decrypt(token) for _ in range(n)], repeat=5)
    index = common.timeit(lambda: [ring.blind_index("email", "customer042@example.com")
                                   for _ in range(n)], repeat=5)
    return decrypt.median / n * 1e6, index.median / n * 1e6


def main() -> None:
    print(__doc__.strip().splitlines()[0])
    print(f"bench_graphql's query and data; {ROUNDS} rounds, clear and encrypted "
          f"alternating, each a child process.\n")
    results: dict[str, list[tuple[float, float, float]]] = {"clear": [], "encrypted": []}
    for _ in range(ROUNDS):
        for side in results:
            results[side].append(_run_side(side))
    rows = []
    for side, runs in results.items():
        rows.append([side, statistics.median(r[0] for r in runs),
                     statistics.median(r[1] for r in runs),
                     statistics.median(r[2] for r in runs),
                     ", ".join(f"{r[2]:.2f}" for r in runs)])
    common.print_table(["side", "graphql ms", "baseline ms", "ratio (median)",
                        "ratio per round"], rows)
    growth = common.ratio(rows[1][3], rows[0][3])
    print(f"\nratio growth with encryption: {growth:.3f} (goal <= {GROWTH_GOAL}: "
          f"{common.verdict(growth, GROWTH_GOAL)})")
    decrypt_us, index_us = _primitive_costs()
    print(f"one decryption: {decrypt_us:.1f} us; one blind index: {index_us:.1f} us "
          f"(a 100-customer page decrypts 100 e-mails: {decrypt_us * 100 / 1000:.2f} ms)")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        _measure_side(sys.argv[1])
    else:
        main()
