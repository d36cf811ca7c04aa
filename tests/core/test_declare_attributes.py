"""`rapport import customers --declare-attributes`: types inferred from a file as exported,
declared before the rows are imported (so the rows are typed), and reported."""

from __future__ import annotations

from pathlib import Path

from flask import Flask
from sqlalchemy import select

from core.attribute_inference import infer_attributes
from core.cli import cli
from core.db import db
from core.models import Customer, CustomerAttributeDefinition

TELCO = ("external_id,name,Contract,MonthlyCharges,PaperlessBilling,SeniorCitizen,"
         "signed_on,comment\n"
         "T-1,Ann,Month-to-month,29.85,Yes,0,2020-01-05,likes the app\n"
         "T-2,Bob,Two year,56.95,No,1,2019-03-01,\n"
         "T-3,Cy,Month-to-month,53.85,yes,0,2021-07-30,called twice\n"
         "T-4,Di,One year,42.30,NO,0,2018-11-11,moved\n"
         "T-5,Ed,Month-to-month,70.70,Yes,1,2022-02-02,asked for a discount\n")


def test_inference_from_values(tmp_path: Path) -> None:
    path = tmp_path / "telco.csv"
    path.write_text(TELCO, encoding="utf-8")
    found = {d["key"]: d for d in infer_attributes(path, declared={"comment"})}
    assert found["Contract"] == {"key": "Contract", "type": "category", "label": "Contract",
                                 "categories": ["Month-to-month", "Two year", "One year"]}
    assert found["MonthlyCharges"]["type"] == "number"
    assert found["PaperlessBilling"]["type"] == "boolean"
    assert found["SeniorCitizen"]["type"] == "number"  # 0/1 stays a number
    assert found["signed_on"] == {"key": "signed_on", "type": "date", "label": "Signed on"}
    assert "comment" not in found and "name" not in found


def test_cli_declares_then_imports_typed_rows(app: Flask, tmp_path: Path) -> None:
    path = tmp_path / "telco.csv"
    path.write_text(TELCO, encoding="utf-8")
    with app.app_context():
        result = app.test_cli_runner().invoke(
            cli, ["import", "customers", str(path), "--declare-attributes"])
        assert result.exit_code == 0, result.output
        assert "declared attribute Contract: category (Month-to-month, Two year, One year)" \
            in result.output
        assert "declared attribute comment: text" in result.output
        assert "imported: 5" in result.output
        types = dict(db.session.execute(select(CustomerAttributeDefinition.key,
                                               CustomerAttributeDefinition.type)).all())
        assert {k: t.value for k, t in types.items()} == {
            "Contract": "category", "MonthlyCharges": "number", "PaperlessBilling": "boolean",
            "SeniorCitizen": "number", "signed_on": "date", "comment": "text"}
        ann = db.session.scalars(select(Customer).where(Customer.name == "Ann")).one()
        assert ann.attributes["MonthlyCharges"] == 29.85
        assert ann.attributes["PaperlessBilling"] is True
        # A second run declares nothing new.
        again = app.test_cli_runner().invoke(
            cli, ["import", "customers", str(path), "--declare-attributes"])
        assert again.exit_code == 0 and "declared attribute" not in again.output


def test_a_header_the_import_refuses_declares_nothing(app: Flask, tmp_path: Path) -> None:
    with app.app_context():
        runner = app.test_cli_runner()
        for header, problem in (("customerID,Contract,tenure\n", "external_id"),
                                ("external_id,Senior Citizen,tenure\n", "'Senior Citizen'")):
            path = tmp_path / "export.csv"
            path.write_text(header + "C-1,Two year,5\n", encoding="utf-8")
            result = runner.invoke(cli, ["import", "customers", str(path),
                                         "--declare-attributes"])
            assert result.exit_code == 1 and problem in result.output, result.output
            assert "declared attribute" not in result.output and "Traceback" not in \
                result.output
            assert db.session.scalars(select(CustomerAttributeDefinition)).all() == []
