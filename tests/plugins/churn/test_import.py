"""``rapport churn import``: CSV and JSON Lines, typed rejects, re-runs, summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from flask import Flask
from sqlalchemy import func, select

from core.cli import cli
from core.db import db
from core.models import Alert, CustomerExternalId
from core.services.customers import update_customer
from plugins.churn.models import ChurnRecord
from tests.plugins.churn.conftest import customer, days_ago


def _customer(name: str, external_id: str, source: str = "default",
              created_days_ago: float = 400) -> int:
    cid = customer(name, created_days_ago=created_days_ago)
    update_customer(cid, {"external_id": external_id, "source": source})
    return cid


def _rejects(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))[1:]


def test_csv_import_rejects_reruns_and_summary(churn_app: Flask, tmp_path: Path) -> None:
    ada = _customer("Ada", "A-1")
    _customer("Bob", "B-1", source="shop")
    _customer("Cy", "C-1")
    when = days_ago(3).isoformat()
    path = tmp_path / "churn.csv"
    path.write_text(
        "customer_external_id,customer_source,churned_at,type,reason,note\n"
        f"A-1,,{when},Competitive,PRICING,Cheaper elsewhere\n"
        f"B-1,shop,{when},bored,pricing,\n"
        f"C-1,,{when},natural,weather,\n"
        f"Z-9,,{when},natural,other,\n"
        f"C-1,,{days_ago(-5).isoformat()},natural,other,\n"
        f"B-1,shop,not a date,natural,other,\n", encoding="utf-8")
    runner = churn_app.test_cli_runner()
    result = runner.invoke(cli, ["churn", "import", str(path)])
    assert result.exit_code == 0, result.output
    assert "imported: 1, skipped (already there): 0, rejected: 5" in result.output
    rows = _rejects(tmp_path / "churn.csv.rejects.csv")
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("3", "type", "UNKNOWN_TYPE"), ("4", "reason", "UNKNOWN_REASON"),
        ("5", "customer_external_id", "NOT_FOUND"), ("6", "churned_at", "IN_THE_FUTURE"),
        ("7", "churned_at", "INVALID")]
    db.session.expire_all()
    record = db.session.scalars(select(ChurnRecord)).one()
    assert (record.customer_id, record.type.value, record.note) == (
        ada, "competitive", "Cheaper elsewhere")
    again = runner.invoke(cli, ["churn", "import", str(path)])
    assert "imported: 0, skipped (already there): 1, rejected: 5" in again.output
    assert db.session.scalar(select(func.count()).select_from(ChurnRecord)) == 1


def test_jsonl_and_bad_files(churn_app: Flask, tmp_path: Path) -> None:
    _customer("Ada", "A-1")
    path = tmp_path / "churn.jsonl"
    path.write_text(json.dumps({"customer_external_id": "A-1", "churned_at":
                                days_ago(2).isoformat(), "type": "natural",
                                "reason": "involuntary", "extra": 1}) + "\n"
                    + json.dumps({"customer_external_id": "A-1", "churned_at":
                                  days_ago(2).isoformat(), "type": "natural",
                                  "reason": "involuntary"}) + "\n", encoding="utf-8")
    runner = churn_app.test_cli_runner()
    result = runner.invoke(cli, ["churn", "import", str(path)])
    assert "imported: 1, skipped (already there): 0, rejected: 1" in result.output
    assert _rejects(tmp_path / "churn.jsonl.rejects.csv")[0][:3] == ["1", "extra",
                                                                      "UNKNOWN_FIELD"]
    header = tmp_path / "bad.csv"
    header.write_text("customer_external_id,type,reason,reasn\n", encoding="utf-8")
    bad = runner.invoke(cli, ["churn", "import", str(header)])
    assert bad.exit_code == 1
    assert "no churned_at column" in bad.output
    missing = runner.invoke(cli, ["churn", "import", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 1 and "No such file" in missing.output


def test_import_checks_the_churn_rate_once_at_the_end(churn_app: Flask, tmp_path: Path) -> None:
    for n in range(20):
        _customer(f"C{n}", f"C-{n}", created_days_ago=1000)
    dates = ["2025-01-15", "2025-02-15", "2025-03-15"] + ["2025-04-10"] * 6
    path = tmp_path / "churn.csv"
    path.write_text("customer_external_id,churned_at,type,reason\n" + "".join(
        f"C-{n},{day}T12:00:00,natural,other\n" for n, day in enumerate(dates)),
        encoding="utf-8")
    result = churn_app.test_cli_runner().invoke(
        cli, ["churn", "import", str(path), "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "2025-04: churn rate 35.29%" in result.output  # 6 of the 17 left at 1 April
    alerts = db.session.scalars(select(Alert).where(Alert.kind == "churn_rate_jump")).all()
    assert [a.evidence["month"] for a in alerts] == ["2025-04"]


def test_statements_per_batch_do_not_grow_with_its_rows(churn_app: Flask,
                                                        tmp_path: Path) -> None:
    """Set-based checks: a batch of 20 marks and one of 120 run the same statements (every
    customer with purchases before and after its churn date, so the back-dated marks
    reopen at once)."""
    from core.services.customers import import_customers
    from core.services.interactions import record_interactions
    from plugins.churn.importer import open_churn_import
    from tests.conftest import count_statements

    def run(prefix: str, n: int) -> list[str]:
        rows = [{"external_id": f"{prefix}{i}", "name": f"{prefix} {i}",
                 "customer_since": days_ago(500).date().isoformat()} for i in range(n)]
        assert not import_customers(rows).errors
        ids = dict(db.session.execute(select(CustomerExternalId.external_id,
                                             CustomerExternalId.customer_id)).all())
        assert not record_interactions([
            {"customer_id": ids[f"{prefix}{i}"], "kind": "purchase", "amount": "5.00",
             "currency": "USD", "occurred_at": days_ago(days).isoformat()}
            for i in range(n) for days in (300, 100 if i % 2 else 30)]).errors
        path = tmp_path / f"{prefix}.csv"
        path.write_text("customer_external_id,churned_at,type,reason\n" + "".join(
            f"{prefix}{i},{days_ago(200).isoformat()},competitive,pricing\n"
            for i in range(n)), encoding="utf-8")
        with open_churn_import(path) as job:
            with count_statements(churn_app) as statements:
                report = job.run(500)
        assert (report.imported, report.rejected) == (n, 0)
        return statements

    small, large = run("S", 20), run("L", 120)
    assert len(small) == len(large), (small, large)
    reopened = db.session.scalar(select(func.count()).select_from(ChurnRecord).where(
        ChurnRecord.reactivated_at.is_not(None)))
    assert reopened == 140
