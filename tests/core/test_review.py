"""Review findings in core: input PostgreSQL cannot store is a rejected row, not a crash."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select

from core.db import db
from core.errors import UserError
from core.importers import open_import
from core.models import Customer
from core.services.customers import create_customer


@pytest.mark.parametrize("row", ["e2,B\x00ob,Lyon", "e\x002,Bob,Lyon", "e2,Bob,Ly\x00on"])
def test_customer_import_rejects_a_row_with_nul_and_keeps_the_others(
        app: Flask, tmp_path: Path, row: str) -> None:
    path = tmp_path / "customers.csv"
    path.write_text(f"external_id,name,city\ne1,Ann,Paris\n{row}\ne3,Cy,Nice\n")
    with open_import("customers", path) as job:
        report = job.run()
    assert (report.imported, report.rejected) == (2, 1)
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 2


def test_service_refuses_nul_as_a_field_error(app: Flask) -> None:
    with pytest.raises(UserError) as caught:
        create_customer({"name": "Ann", "tags": ["v\x00ip"]})
    assert [e.field for e in caught.value.errors] == ["tags"]
