"""``rapport churn import``: does importing churn records slow down as history grows?

Issue 14: 1,869 churn records took 60 s with 228,000 interactions in the database against
4 s with 7,000. Here, in a fresh PostgreSQL database with the churn plugin: ``--customers``
customers (default 2,000), then the same churn file (one dated record for ``--records``
of them, default 1,869) imported through the CLI's path (``open_churn_import`` +
``ImportJob``, batches of 500) with two histories: ``--small`` interactions (default
7,000) and ``--large`` (default 228,000) spread over the customers, purchases mostly,
dated before and after the churn dates (so the back-dated marks have purchases to reopen
them with). The interactions are written with one ``INSERT ... SELECT generate_series``:
scaffolding, not a path under test. Per history: wall time, CPU time of this process,
and SQL statements per batch.

    python -m bench churn_import -- --large 100000
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

from bench import common

NAME = "churn_import"


def load(app: object, customers: int, interactions: int) -> None:
    from sqlalchemy import text

    from core.db import db
    from core.services.customers import import_customers

    with app.app_context():  # type: ignore[attr-defined]
        for low in range(0, customers, 1000):
            result = import_customers([{"external_id": f"C{i}", "name": f"Customer {i}"}
                                       for i in range(low, min(customers, low + 1000))])
            assert not result.errors, result.errors[:3]
        db.session.execute(text(
            "UPDATE customers SET created_at = now() - interval '3 years'"))
        db.session.execute(text("""
            INSERT INTO interactions (customer_id, kind, occurred_at, amount, currency,
                                      payload, recorded_at)
            SELECT c.id, CASE WHEN g % 5 = 0 THEN 'visit' ELSE 'purchase' END,
                   now() - (g % 1000) * interval '1 day',
                   CASE WHEN g % 5 = 0 THEN NULL ELSE 1000 END,
                   CASE WHEN g % 5 = 0 THEN NULL ELSE 'USD' END, '{}', now()
            FROM generate_series(1, :n) g
            JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM customers) c
              ON c.k = g % :customers"""), {"n": interactions, "customers": customers})
        db.session.commit()
        if os.environ.get("BENCH_ANALYZE"):
            db.session.execute(text("ANALYZE"))
            db.session.commit()


def write_file(path: Path, records: int, customers: int, snapshot: bool) -> None:
    """Dated records for the first ``records`` customers; or a snapshot of every customer,
    ``records`` of them churned (the shape of a telecom export: 1,869 of 7,043)."""
    if snapshot:
        path.write_text("customer_external_id,churned\n" + "".join(
            f"C{i},{'Yes' if (i + 1) * records // customers > i * records // customers else 'No'}\n"
            for i in range(customers)), encoding="utf-8")
        return
    when = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=200)).date()
    path.write_text("customer_external_id,churned_at,type,reason\n" + "".join(
        f"C{i},{when - dt.timedelta(days=i % 300)},competitive,pricing\n"
        for i in range(records)), encoding="utf-8")


def run_import(app: object, path: Path, as_of: str | None
               ) -> tuple[float, float, int, dict[str, int]]:
    from sqlalchemy import event

    from core.db import db
    from plugins.churn.importer import open_churn_import

    statements = [0]

    slow: dict[str, list[float]] = {}

    def count(*_args: object) -> None:
        statements[0] += 1
        started.append(time.perf_counter())

    def timed(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        spent = time.perf_counter() - started.pop()
        entry = slow.setdefault(" ".join(statement.split())[:160], [0, 0.0])
        entry[0] += 1
        entry[1] += spent

    started: list[float] = []

    with app.app_context():  # type: ignore[attr-defined]
        engine = db.engine
        event.listen(engine, "before_cursor_execute", count)
        event.listen(engine, "after_cursor_execute", timed)
        try:
            wall, cpu = time.perf_counter(), time.process_time()
            with open_churn_import(path, as_of=as_of) as job:
                report = job.run(500)
                job.importer.check_jumps()  # type: ignore[attr-defined]
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        finally:
            event.remove(engine, "before_cursor_execute", count)
            event.remove(engine, "after_cursor_execute", timed)
        if os.environ.get("BENCH_SHOW_STATEMENTS"):
            for text, (n, spent) in sorted(slow.items(), key=lambda kv: -kv[1][1])[:8]:
                print(f"  {spent:7.3f} s {n:5d}x {text}")
        return wall, cpu, statements[0], {"imported": report.imported,
                                          "rejected": report.rejected}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench churn_import")
    parser.add_argument("--customers", type=int, default=7_043)
    parser.add_argument("--records", type=int, default=1_869)
    parser.add_argument("--small", type=int, default=7_000)
    parser.add_argument("--large", type=int, default=228_000)
    args = parser.parse_args(argv or [])
    print(f"# churn import: {args.records} churned of {args.customers} customers; "
          f"PostgreSQL {common.postgres_version()}; load {os.getloadavg()[0]:.2f}")
    snapshot_date = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30)).date()
    rows = []
    for label, interactions in (("small", args.small), ("large", args.large)):
        with common.fresh_database(f"{NAME}_{label}") as url, \
                tempfile.TemporaryDirectory() as folder:
            app = common.make_app(url, plugins=common.ALL_PLUGINS)
            load(app, args.customers, interactions)
            for snapshot in (False, True):
                path = Path(folder) / f"churn{int(snapshot)}.csv"
                write_file(path, args.records, args.customers, snapshot)
                if snapshot:  # the dated records of the first file reactivated
                    with app.app_context():  # type: ignore[attr-defined]
                        from sqlalchemy import text

                        from core.db import db
                        db.session.execute(text("DELETE FROM churn_records"))
                        db.session.execute(text("UPDATE customers SET status = 'active'"))
                        db.session.commit()
                wall, cpu, statements, report = run_import(
                    app, path, snapshot_date.isoformat() if snapshot else None)
                rows_in = args.customers if snapshot else args.records
                batches = -(-rows_in // 500)
                rows.append([f"{interactions:,}", "snapshot" if snapshot else "dated",
                             rows_in, f"{wall:.2f}", f"{cpu:.2f}",
                             f"{statements / batches:.1f}", report["imported"],
                             report["rejected"]])
            with app.app_context():  # type: ignore[attr-defined]
                from core.db import db
                db.engine.dispose()
    common.print_table(["interactions", "file", "rows", "wall s", "CPU s",
                        "statements/batch", "imported", "rejected"], rows)
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
