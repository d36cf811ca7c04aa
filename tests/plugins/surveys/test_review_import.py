"""Hostile review of ``rapport surveys import``: odd cells, duplicate keys, concurrent
re-runs. Each test failed before its fix (or pins an attack that must stay harmless)."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select

from core.db import db
from core.importers import FileFormat, ImportJob, ImportReport, RecordReader
from plugins.surveys.importer import ResponseImporter, open_survey_import
from plugins.surveys.models import Response
from tests.conftest import AppFactory
from tests.plugins.surveys.conftest import customer, make_survey
from tests.plugins.surveys.test_import import _rejects, _run, _write
from tests.plugins.surveys.test_review import race


def _count() -> int:
    return db.session.scalar(select(func.count()).select_from(Response)) or 0


def test_nul_in_any_cell_rejects_the_row_not_the_import(
        surveys_app: Flask, tmp_path: Path) -> None:
    survey = make_survey()
    customer("Ada", "c-1")
    file = tmp_path / "nul.csv"
    file.write_text("customer_external_id,customer_source,submitted_at,source,external_id,"
                    "nps,comment\n"
                    "c-1,,2026-01-05,crm,r-1,7,fine\n"
                    "c-1\x00,,2026-01-05,crm,r-2,7,\n"
                    "c-1,de\x00fault,2026-01-05,crm,r-3,7,\n"
                    "c-1,,2026-01-05,cr\x00m,r-4,7,\n"
                    "c-1,,2026-01-05,crm,r-\x005,7,\n"
                    "c-1,,2026-01-05\x00,crm,r-6,7,\n"
                    "c-1,,2026-01-05,,,7,bad\x00text\n", encoding="utf-8")
    result = _run(surveys_app, survey.id, file)
    assert result.exit_code == 0, result.output
    assert "imported: 1, skipped (already there): 0, rejected: 6" in result.output
    assert {line for line, _, _ in _rejects(tmp_path / "nul.csv.rejects.csv")} == {
        3, 4, 5, 6, 7, 8}
    assert _count() == 1


def test_a_rejected_row_does_not_hide_a_good_one_with_the_same_external_id(
        surveys_app: Flask, tmp_path: Path) -> None:
    survey = make_survey()
    customer("Ada", "c-1")
    file = _write(tmp_path / "dup.csv", [
        "customer_external_id,submitted_at,source,external_id,nps",
        "c-1,2026-01-05,crm,r-1,77",   # rejected: out of scale
        "c-1,2026-01-05,crm,r-1,7"])  # the corrected row, same external id
    result = _run(surveys_app, survey.id, file)
    assert "imported: 1, skipped (already there): 0, rejected: 1" in result.output
    assert _count() == 1
    # In separate batches the outcome is the same.
    db.session.execute(Response.__table__.delete())
    db.session.commit()
    result = _run(surveys_app, survey.id, file, "--batch-size", 1)
    assert "imported: 1, skipped (already there): 0, rejected: 1" in result.output


def test_duplicate_columns_stop_the_import(surveys_app: Flask, tmp_path: Path) -> None:
    survey = make_survey()
    customer("Ada", "c-1")
    file = _write(tmp_path / "twice.csv", ["customer_external_id,submitted_at,nps,nps",
                                          "c-1,2026-01-05,7,2"])
    result = _run(surveys_app, survey.id, file)
    assert result.exit_code != 0 and "nps" in result.output
    assert _count() == 0


def test_concurrent_runs_of_one_file_store_each_row_once(
        make_app: AppFactory, dialect: str, tmp_path: Path) -> None:
    if dialect != "postgresql":
        pytest.skip("SQLite serialises writers: no concurrent import to race")
    app = make_app(enabled=["surveys"])
    with app.app_context():
        survey = make_survey(anonymous=True)
        survey_id = survey.id
    lines = ["submitted_at,source,external_id,nps"]
    lines += [f"2026-01-05,crm,r-{i},{i % 11}" for i in range(400)]
    lines += [f"2026-01-06,,,{i % 11}" for i in range(400)]
    file = _write(tmp_path / "race.csv", lines)

    def run(n: int) -> ImportReport:
        # The job itself, not the CLI: click's test runner swaps sys.stdout per call.
        importer = ResponseImporter(open_survey_import(survey_id))
        reader = RecordReader(file, FileFormat.CSV, "utf-8")
        try:
            assert reader.columns is not None
            importer.check_columns(reader.columns)
            return ImportJob(importer, reader, tmp_path / f"rejects{n}.csv").run(50)
        finally:
            reader.close()

    reports = race(app, 3, run)
    with app.app_context():
        assert _count() == 800
    assert sum(r.imported for r in reports) == 800
    assert sum(r.skipped for r in reports) == 1600
    assert all(r.rejected == 0 for r in reports)
