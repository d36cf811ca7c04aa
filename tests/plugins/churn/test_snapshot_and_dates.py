"""Snapshot churn labels (`rapport churn import --as-of` with a churned column), imports
whose every row was rejected failing, and dates as CONTRACTS.md "Dates" says: an end date
means up to 00:00 of the next day in RAPPORT_TIMEZONE, out-of-range dates are errors."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from sqlalchemy import select

from core.cli import cli
from core.dates import DATE_OUT_OF_RANGE, DateError, parse_moment
from core.db import db
from core.services.customers import update_customer
from core.models import Interaction
from plugins.churn.modeling import active_version
from plugins.churn.models import ChurnRecord, ChurnScore, ChurnScoreRun
from tests.conftest import AppFactory
from tests.plugins.churn.conftest import customer, days_ago, purchase

PARIS = ZoneInfo("Europe/Paris")


def test_parse_moment_follows_the_contract() -> None:
    # 1997-09-30 in Paris (UTC+2 in summer) ends at 1997-09-30 22:00 UTC.
    assert parse_moment("1997-09-30", PARIS, ends=True) == dt.datetime(
        1997, 9, 30, 22, tzinfo=dt.timezone.utc)
    assert parse_moment("1997-09-30", PARIS, ends=False) == dt.datetime(
        1997, 9, 29, 22, tzinfo=dt.timezone.utc)
    assert parse_moment("1997-09-30T10:00:00", PARIS, ends=True) == dt.datetime(
        1997, 9, 30, 10, tzinfo=dt.timezone.utc)  # no zone: UTC, exact
    assert parse_moment("1997-09-30T10:00:00+02:00", "UTC", ends=True) == dt.datetime(
        1997, 9, 30, 8, tzinfo=dt.timezone.utc)
    for text in ("9999-01-01", "1899-12-31", "9999-12-31T00:00:00"):
        with pytest.raises(DateError) as caught:
            parse_moment(text, PARIS, ends=True)
        assert caught.value.errors[0].code == DATE_OUT_OF_RANGE
    assert parse_moment("9998-12-31", "UTC", ends=True).year == 9999
    with pytest.raises(DateError):
        parse_moment("1997-02-30", "UTC", ends=True)


def _with_key(name: str, key: str, **fields: object) -> int:
    cid = customer(name, created_days_ago=400, **fields)
    update_customer(cid, {"external_id": key, "source": "default"})
    return cid


def test_snapshot_import(churn_app: Flask, tmp_path: Path) -> None:
    ada = _with_key("Ada", "A")
    _with_key("Bob", "B")
    cy = _with_key("Cy", "C")
    _with_key("Di", "D")
    snapshot = days_ago(30).date()
    path = tmp_path / "labels.csv"
    path.write_text("customer_external_id,churned,type,reason\n"
                    "A,Yes,,\n"
                    "B,no,,\n"
                    "C,TRUE,competitive,pricing\n"
                    "D,maybe,,\n"
                    "Z,yes,,\n", encoding="utf-8")
    runner = churn_app.test_cli_runner()
    result = runner.invoke(cli, ["churn", "import", str(path), "--as-of",
                                 snapshot.isoformat()])
    assert result.exit_code == 0, result.output
    assert "imported: 2, skipped (already there): 0, rejected: 2, not churned: 1" in result.output
    db.session.expire_all()
    records = {r.customer_id: r for r in db.session.scalars(select(ChurnRecord))}
    assert set(records) == {ada, cy}
    end = dt.datetime.combine(snapshot + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
    assert records[ada].churned_at == end  # RAPPORT_TIMEZONE is UTC here
    assert (records[ada].type.value, records[ada].reason.value) == ("other", "other")
    assert (records[cy].type.value, records[cy].reason.value) == ("competitive", "pricing")
    again = runner.invoke(cli, ["churn", "import", str(path), "--as-of",
                                snapshot.isoformat()])
    assert again.exit_code == 0, again.output
    assert "imported: 0, skipped (already there): 2" in again.output
    # Without a date the snapshot is refused before anything is read.
    refused = runner.invoke(cli, ["churn", "import", str(path)])
    assert refused.exit_code == 1 and "--as-of" in refused.output
    late = runner.invoke(cli, ["churn", "import", str(path), "--as-of", "9999-01-01"])
    assert late.exit_code == 1 and "out of range" in late.output


def test_snapshot_as_of_column_and_jsonl(churn_app: Flask, tmp_path: Path) -> None:
    ada = _with_key("Ada", "A")
    path = tmp_path / "labels.jsonl"
    when = days_ago(3).date().isoformat()
    path.write_text('{"customer_external_id": "A", "churned": "yes", "as_of": "%s"}\n' % when,
                    encoding="utf-8")
    result = churn_app.test_cli_runner().invoke(cli, ["churn", "import", str(path)])
    assert result.exit_code == 0, result.output
    record = db.session.scalars(select(ChurnRecord)).one()
    assert record.customer_id == ada


def test_every_row_rejected_exits_non_zero(churn_app: Flask, tmp_path: Path) -> None:
    path = tmp_path / "churn.csv"
    path.write_text("customer_external_id,churned_at,type,reason\n"
                    f"NOBODY,{days_ago(2).isoformat()},natural,other\n", encoding="utf-8")
    result = churn_app.test_cli_runner().invoke(cli, ["churn", "import", str(path)])
    assert result.exit_code == 1
    assert "every row was rejected" in result.output


def test_back_dated_snapshot_for_an_older_customer(churn_app: Flask, tmp_path: Path) -> None:
    """A record created today for a customer since 2015 takes a churn label dated before
    the record existed."""
    cid = customer("Old", created_days_ago=0, customer_since="2015-04-01")
    update_customer(cid, {"external_id": "OLD", "source": "default"})
    path = tmp_path / "labels.csv"
    path.write_text("customer_external_id,churned\nOLD,1\n", encoding="utf-8")
    result = churn_app.test_cli_runner().invoke(
        cli, ["churn", "import", str(path), "--as-of", days_ago(100).date().isoformat()])
    assert result.exit_code == 0, result.output
    assert db.session.scalars(select(ChurnRecord)).one().customer_id == cid


def test_fit_and_score_as_of_a_date(make_app: AppFactory) -> None:
    from tests.plugins.churn.test_modeling import load_simulation

    app = make_app(enabled=["churn"], RAPPORT_TIMEZONE="Europe/Paris")
    with app.app_context():
        sim = load_simulation(with_marks=False)
        day = days_ago(20).astimezone(PARIS).date()
        end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), PARIS)
        # Bought at 23:30 local on the calibration day: the date includes it.
        buyer = next(iter(sim.ids.values()))
        purchase(buyer, dt.datetime.combine(day, dt.time(23, 30), PARIS))
        runner = app.test_cli_runner()
        fitted = runner.invoke(cli, ["churn", "fit", "--as-of", day.isoformat()])
        assert fitted.exit_code == 0, fitted.output
        version = active_version()
        assert version is not None
        assert version.as_of == end.astimezone(dt.timezone.utc)
        scored = runner.invoke(cli, ["churn", "score", "--as-of", day.isoformat()])
        assert scored.exit_code == 0, scored.output
        run = db.session.scalars(select(ChurnScoreRun)).one()
        assert run.scored_at == end.astimezone(dt.timezone.utc)
        days = {when.astimezone(PARIS).date() for when in db.session.scalars(
            select(Interaction.occurred_at).where(Interaction.customer_id == buyer,
                                                  Interaction.kind == "purchase"))
                if when < end}
        assert day in days
        score = db.session.scalars(select(ChurnScore).where(
            ChurnScore.customer_id == buyer)).one()
        assert score.frequency == len(days) - 1
        bad = runner.invoke(cli, ["churn", "score", "--as-of", "1899-01-01"])
        assert bad.exit_code != 0 and "out of range" in bad.output
        # A date before any customer existed (a mistyped year) keeps the current scores.
        typo = runner.invoke(cli, ["churn", "score", "--as-of", "1901-01-01"])
        assert typo.exit_code == 1 and "current scores are kept" in typo.output, typo.output
        assert "Traceback" not in typo.output
        assert db.session.scalars(select(ChurnScore).where(
            ChurnScore.customer_id == buyer)).one().frequency == len(days) - 1
        assert db.session.scalars(select(ChurnScoreRun)).one().customers >= 1  # not -1


def test_a_snapshot_counts_in_its_month_against_a_base_from_customer_since(
        churn_app: Flask, tmp_path: Path) -> None:
    """Records imported today for subscribers since 2023: a snapshot as of November 30
    is November's churn, out of an active base that their own start dates make."""
    from plugins.churn.report import monthly_report

    for n in range(10):
        cid = customer(f"Sub {n}", created_days_ago=0, customer_since=f"2023-0{1 + n % 9}-15")
        update_customer(cid, {"external_id": f"S{n}", "source": "default"})
    path = tmp_path / "labels.csv"
    path.write_text("customer_external_id,churned\n" + "".join(
        f"S{n},{'yes' if n < 3 else 'no'}\n" for n in range(10)), encoding="utf-8")
    snapshot = (days_ago(0).replace(day=1) - dt.timedelta(days=1)).date()  # last month's end
    result = churn_app.test_cli_runner().invoke(
        cli, ["churn", "import", str(path), "--as-of", snapshot.isoformat()])
    assert result.exit_code == 0, result.output

    figures = monthly_report(snapshot.replace(day=1), days_ago(0).date(), days_ago(0))
    snapshot_month, this_month = figures.months[0], figures.months[1]
    assert snapshot_month.month == f"{snapshot:%Y-%m}"
    assert (snapshot_month.active_at_start, snapshot_month.churned) == (10, 3)
    assert snapshot_month.churn_rate == pytest.approx(0.3)
    assert (this_month.active_at_start, this_month.churned) == (7, 0)
    cohorts = {c.month: c.size for c in monthly_report(dt.date(2023, 1, 1), snapshot,
                                                       days_ago(0)).cohorts}
    assert sum(cohorts.values()) == 10 and cohorts["2023-01"] == 2


def test_a_snapshot_whose_every_churned_row_is_rejected_fails(churn_app: Flask,
                                                              tmp_path: Path) -> None:
    """Customers whose records were created today, with no start date of their own, cannot
    have left before: the rejects say which column and what to give, and the command
    fails although the "no" rows were fine."""
    for key in ("N1", "N2", "N3"):
        cid = customer(key, created_days_ago=0)
        update_customer(cid, {"external_id": key, "source": "default"})
    path = tmp_path / "labels.csv"
    path.write_text("customer_external_id,churned\nN1,yes\nN2,no\nN3,no\n", encoding="utf-8")
    result = churn_app.test_cli_runner().invoke(
        cli, ["churn", "import", str(path), "--as-of", days_ago(30).date().isoformat()])
    assert result.exit_code == 1, result.output
    assert "every churned row was rejected" in result.output
    assert "not churned: 2" in result.output
    rejects = (tmp_path / "labels.csv.rejects.csv").read_text(encoding="utf-8")
    assert ",as_of," in rejects and "customer_since" in rejects, rejects
    assert "churned_at" not in rejects
