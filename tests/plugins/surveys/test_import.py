"""``rapport surveys import``: good rows in, every kind of bad row rejected with its line
and reason, re-runs idempotent, the hook fired, header problems stop before writing."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from core.cli import cli
from core.db import db
from core.ids import global_id
from core.services.customers import erase_customer
from plugins.surveys.models import Response
from tests.conftest import AppFactory
from tests.plugins.surveys.conftest import NOW, customer, make_survey
from tests.plugins.surveys.test_hooks import Recorder

HEADER = "customer_external_id,submitted_at,nps,overall,speed,slow,channel,liked,comment"


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _run(app: Flask, *args: Any) -> Any:
    return app.test_cli_runner().invoke(cli, ["surveys", "import", *map(str, args)])


def _rejects(path: Path) -> list[tuple[int, str, str]]:
    with path.open(newline="") as handle:
        return [(int(r["line"]), r["field"], r["code"]) for r in csv.DictReader(handle)]


def _count() -> int:
    return db.session.scalar(select(func.count()).select_from(Response)) or 0


def test_an_import_with_every_kind_of_bad_row(surveys_app: Flask, tmp_path: Path) -> None:
    survey = make_survey()
    ada, bob = customer("Ada", "c-1"), customer("Bob", "c-2")
    erased = customer("Eve", "c-9")
    erase_customer(erased)
    zed = customer("Zed", "c-3")
    day = (NOW - dt.timedelta(days=1)).date().isoformat()  # whole day in the past
    file = _write(tmp_path / "responses.csv", [
        HEADER,
        f"c-1,{day}T10:00:00,9,5,6,2,web,price;staff,Lovely",      # 2 ok
        f"c-2,{day}T11:00:00+02:00,3,,1,,phone,,",                 # 3 ok (zone, blanks)
        f"c-1,{day}T12:00:00,11,,,,,,",                            # 4 nps out of scale
        f"c-1,{day}T12:00:00,8,4.5,,,,,",                          # 5 not a scale step
        f"c-1,{day}T12:00:00,8,,0,,,,",                            # 6 below the scale
        f"c-1,{day}T12:00:00,eight,,,,,,",                         # 7 not a number
        f"c-1,{day}T12:00:00,8,,,,fax,,",                          # 8 unknown option
        f"c-1,{day}T12:00:00,8,,,,,price;gifts,",                  # 9 unknown multi option
        f"c-1,{day}T12:00:00,,3,,,,,",                             # 10 required nps missing
        f"c-404,{day}T12:00:00,8,,,,,,",                           # 11 unknown customer
        f",{day}T12:00:00,8,,,,,,",                                # 12 no customer
        f"c-9,{day}T12:00:00,8,,,,,,",                             # 13 erased: id gone
        "c-1,yesterday,8,,,,,,",                                    # 14 bad time
        "c-3,,8,,,,,,",                                             # 15 no time: now
        "c-1,2999-01-01T00:00:00,8,,,,,,",                          # 16 in the future
        f"c-1,{day}T12:00:00,8,,,",                                 # 17 too few values
        f"c-3,{day}T13:00:00,10,4,7,1,store,range,",               # 18 option 'range'?
    ])
    result = _run(surveys_app, survey.id, file)
    assert result.exit_code == 0, result.output
    assert "imported: 3, skipped (already there): 0, rejected: 14" in result.output
    rejects = _rejects(tmp_path / "responses.csv.rejects.csv")
    assert rejects == [
        (4, "nps", "OUT_OF_SCALE"), (5, "overall", "OUT_OF_SCALE"),
        (6, "speed", "OUT_OF_SCALE"), (7, "nps", "INVALID"), (8, "channel", "UNKNOWN_OPTION"),
        (9, "liked", "UNKNOWN_OPTION"), (10, "nps", "REQUIRED"),
        (11, "customer_external_id", "NOT_FOUND"), (12, "customer_external_id", "REQUIRED"),
        (13, "customer_external_id", "NOT_FOUND"), (14, "submitted_at", "INVALID"),
        (16, "submitted_at", "INVALID"), (17, "", "INVALID"),
        (18, "channel", "UNKNOWN_OPTION"), (18, "liked", "UNKNOWN_OPTION")]
    rows = {r.customer_id: r for r in db.session.scalars(select(Response))}
    assert rows[ada].numbers == {"nps": 9, "overall": 5, "speed": 6, "slow": 2}
    assert rows[ada].choices == {"channel": "web", "liked": ["price", "staff"]}
    assert rows[ada].texts == {"comment": "Lovely"}
    assert rows[bob].numbers == {"nps": 3, "speed": 1}
    assert rows[bob].submitted_at.hour == 9  # 11:00+02:00 in UTC
    # Without a time: dated at the import (no --submitted-at given).
    assert abs(rows[zed].submitted_at - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(
        minutes=5)
    again = _run(surveys_app, survey.id, file)
    assert "imported: 0, skipped (already there): 3, rejected: 14" in again.output
    assert _count() == 3


def test_anonymous_imports_keep_identical_rows_and_rerun_cleanly(
        make_app: AppFactory, tmp_path: Path) -> None:
    recorder = Recorder()
    app = make_app(enabled=["surveys"], plugins=(recorder,))
    with app.app_context():
        survey = make_survey(anonymous=True)
        file = _write(tmp_path / "anon.csv", [
            "submitted_at,nps,overall", "2026-01-05,7,4", "2026-01-05,7,4", "2026-01-06,2,1"])
        result = _run(app, survey.id, file, "--batch-size", 2)
        assert "imported: 3, skipped (already there): 0, rejected: 0" in result.output
        assert [numbers for _, _, numbers in recorder.seen] == [
            {"nps": 7, "overall": 4}, {"nps": 7, "overall": 4}, {"nps": 2, "overall": 1}]
        assert all(customer_id is None for _, customer_id, _ in recorder.seen)
        again = _run(app, survey.id, file)
        assert "imported: 0, skipped (already there): 3, rejected: 0" in again.output
        assert len(recorder.seen) == 3


def test_external_ids_make_rows_idempotent(surveys_app: Flask, tmp_path: Path) -> None:
    survey = make_survey()
    customer("Ada", "c-1")
    file = _write(tmp_path / "ext.csv", [
        "customer_external_id,submitted_at,source,external_id,nps",
        "c-1,2026-01-05,crm,r-1,7", "c-1,2026-01-05,crm,r-1,7", "c-1,2026-01-06,crm,r-2,9"])
    result = _run(surveys_app, global_id("Survey", survey.id), file)  # the global id
    assert f"survey {global_id('Survey', survey.id)}: imported: 2, skipped (already there): " \
        "1, rejected: 0" in result.output
    assert sorted(db.session.scalars(select(Response.external_id))) == ["r-1", "r-2"]


@pytest.mark.parametrize(("header", "message"), [
    ("customer_external_id,submitted_at,NPS,nps", "Several columns give nps"),
    ("submitted_at,nps", "no customer_external_id column"),
    ("customer_external_id,submitted_at,nps,colour", "Unknown columns colour"),
])
def test_header_problems_stop_before_anything_is_written(
        surveys_app: Flask, tmp_path: Path, header: str, message: str) -> None:
    survey = make_survey()
    customer("Ada", "c-1")
    file = _write(tmp_path / "bad.csv", [header, "c-1,2026-01-05,7,red"])
    result = _run(surveys_app, survey.id, file)
    assert result.exit_code != 0 and message in result.output
    assert _count() == 0


def test_survey_problems_stop_the_import(surveys_app: Flask, tmp_path: Path) -> None:
    file = _write(tmp_path / "x.csv", ["customer_external_id,submitted_at,nps",
                                       "c-1,2026-01-05,7"])
    assert f"No survey with id {global_id('Survey', 99)}." in _run(surveys_app, 99, file).output
    # The global id works as the argument too, and the output names the survey by it.
    wrong = _run(surveys_app, global_id("Customer", 99), file)
    assert wrong.exit_code == 2 and "Not a Survey id" in wrong.output
    draft = make_survey(open_it=False)
    output = _run(surveys_app, draft.id, file).output
    assert f"Survey {global_id('Survey', draft.id)} is a draft" in output
    anonymous = make_survey(anonymous=True)
    assert "must not name customers" in _run(surveys_app, anonymous.id, file).output
    assert "No such file" in _run(surveys_app, anonymous.id, tmp_path / "none.csv").output
    assert _count() == 0


def test_columns_match_question_keys_without_case_and_submitted_at_is_optional(
        surveys_app: Flask, tmp_path: Path) -> None:
    """As a business exports it: the survey named by its global id, headers in another
    case, one column named otherwise (--column), no submitted_at column: the rows are
    dated at --submitted-at (a date: 00:00 of that day in RAPPORT_TIMEZONE)."""
    survey = make_survey()
    ada = customer("Ada", "c-1")
    file = _write(tmp_path / "export.csv", [
        "Customer_External_Id,NPS,Overall,Speed,How slow,Channel",
        "c-1,9,5,6,2,web"])
    result = _run(surveys_app, global_id("Survey", survey.id), file, "--column",
                  "How slow=slow", "--submitted-at", "2026-01-05")
    assert result.exit_code == 0, result.output
    assert "imported: 1, skipped (already there): 0, rejected: 0" in result.output
    response = db.session.scalars(select(Response)).one()
    assert response.customer_id == ada
    assert response.numbers == {"nps": 9, "overall": 5, "speed": 6, "slow": 2}
    assert response.choices == {"channel": "web"}
    assert response.submitted_at == dt.datetime(2026, 1, 5, tzinfo=dt.timezone.utc)
    # A re-run recognises the row (its content key does not depend on the default date).
    again = _run(surveys_app, global_id("Survey", survey.id), file, "--column",
                 "How slow=slow")
    assert "imported: 0, skipped (already there): 1" in again.output
    # Without the mapping, the column is unknown; a mapping to no question is refused.
    unmapped = _run(surveys_app, survey.id, file)
    assert unmapped.exit_code != 0 and "Unknown columns How slow" in unmapped.output
    wrong = _run(surveys_app, survey.id, file, "--column", "How slow=slowness")
    assert wrong.exit_code != 0 and "--column names no question" in wrong.output
    bad = _run(surveys_app, survey.id, file, "--column", "How slow")
    assert bad.exit_code == 2 and "COLUMN=KEY" in bad.output
    future = _run(surveys_app, survey.id, file, "--submitted-at", "2999-01-01")
    assert future.exit_code == 2 and "future" in future.output
    assert _count() == 1
