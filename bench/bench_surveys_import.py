"""``rapport surveys import``: response import rate, 100,000 responses x 20 rating items.

A CSV of ``--rows`` anonymous responses (default 100,000; 20 items on a 1-5 scale, a few
left blank) is written to a temporary folder and imported into a fresh PostgreSQL
database, in this process, through the same ``ResponseImporter`` + ``ImportJob`` the CLI
runs (validation of every answer, content keys for idempotency, set-based inserts; the
surveys plugin enabled). Then:

- the same file again: every row recognised and skipped (the re-run rate);
- baseline: psycopg ``COPY`` of the same rows, already as JSON documents, into a bare
  table with the response's columns (no validation, index or constraint): the fastest
  honest way in;
- ``load_matrix`` of the imported survey (what the analysis starts with).

Figures are printed, never asserted.

    python -m bench surveys_import -- --rows 20000
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from bench import common

NAME = "surveys_import"
ROWS = 100_000
ITEMS = 20
SEED = 20261123


def write_file(path: Path, rows: int) -> None:
    rng = random.Random(SEED)
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["submitted_at", *(f"q{i + 1}" for i in range(ITEMS))])
        for n in range(rows):
            latent = rng.gauss(0, 1)
            out.writerow([f"2025-{1 + n % 12:02d}-{1 + n % 28:02d}T{n % 24:02d}:{n % 60:02d}:00",
                          *("" if rng.random() < 0.02 else
                            max(1, min(5, round(3 + latent + rng.gauss(0, 0.8))))
                            for _ in range(ITEMS))])


def rapport_import(app: object, survey_id: int, path: Path) -> tuple[float, object]:
    from core.db import db
    from core.importers import FileFormat, ImportJob, RecordReader
    from plugins.surveys.importer import ResponseImporter
    from plugins.surveys.models import Survey

    with app.app_context():  # type: ignore[attr-defined]
        survey = db.session.get(Survey, survey_id)
        started = time.perf_counter()
        reader = RecordReader(path, FileFormat.CSV)
        try:
            importer = ResponseImporter(survey)
            assert reader.columns is not None
            importer.check_columns(reader.columns)
            report = ImportJob(importer, reader, path.with_suffix(".rejects.csv")).run()
        finally:
            reader.close()
        return time.perf_counter() - started, report


def copy_baseline(url: str, path: Path) -> float:
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = [(r[0], json.dumps({k: int(v) for k, v in zip(header[1:], r[1:]) if v}))
                for r in reader]
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE baseline (id bigserial, survey_id bigint, "
                     "submitted_at timestamptz, numbers jsonb)")
        started = time.perf_counter()
        with conn.cursor().copy("COPY baseline (survey_id, submitted_at, numbers) FROM STDIN"
                                ) as copy:
            for submitted_at, numbers in rows:
                copy.write_row((1, submitted_at + "+00:00", numbers))
        conn.commit()
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_surveys_import")
    parser.add_argument("--rows", type=int, default=ROWS)
    args = parser.parse_args(argv or [])
    print(__doc__.strip().splitlines()[0])
    print(f"PostgreSQL {common.postgres_version()}; {common.machine()}\n")
    with tempfile.TemporaryDirectory() as folder, common.fresh_database(NAME) as url:
        path = Path(folder) / "responses.csv"
        write_file(path, args.rows)
        app = common.make_app(url, plugins=["surveys"])
        from core.db import db
        from plugins.surveys import service
        from plugins.surveys.data import load_matrix
        from plugins.surveys.models import Survey

        with app.app_context():
            survey = service.create_survey({"title": "bench", "anonymous": True, "questions": [
                {"key": f"q{i + 1}", "text": f"Item {i + 1}", "type": "rating",
                 "scale_min": 1, "scale_max": 5} for i in range(ITEMS)]})
            service.open_survey(survey.id)
            survey_id = survey.id
        seconds, report = rapport_import(app, survey_id, path)
        again, second = rapport_import(app, survey_id, path)
        with app.app_context():
            common.analyze(db.engine)
            started = time.perf_counter()
            matrix = load_matrix(db.session.get(Survey, survey_id))
            load = time.perf_counter() - started
        common.dispose(app)
        baseline = copy_baseline(url, path)
        rate, base_rate = args.rows / seconds, args.rows / baseline
        common.print_table(
            ["path", "rows", "seconds", "rows/s"],
            [["rapport surveys import", f"{report.imported:,}",  # type: ignore[attr-defined]
              f"{seconds:.2f}", f"{rate:,.0f}"],
             ["same file again (all skipped)", f"{second.skipped:,}",  # type: ignore
              f"{again:.2f}", f"{args.rows / again:,.0f}"],
             ["baseline: COPY of JSON documents", f"{args.rows:,}", f"{baseline:.2f}",
              f"{base_rate:,.0f}"]])
        print(f"\nRapport / COPY: {common.ratio(rate, base_rate):.2f}")
        print(f"load_matrix after the import: {matrix.n_responses:,} x {len(matrix.questions)}"
              f" in {load:.3f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
