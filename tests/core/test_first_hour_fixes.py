"""The smaller first-hour fixes (issue 13, item 7)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from flask import Flask

from core.importers import open_import
from core.services.customers import create_customer, find_duplicates


def test_duplicate_suggestions_come_likeliest_first(app: Flask) -> None:
    # Berlin's block is read first (its pair is similar), Zurich's pair is identical.
    near = [create_customer({"name": n, "city": "Berlin"}).id
            for n in ("Jonathan Smith", "Jonathon Smith")]
    same = [create_customer({"name": "Anna Berg", "city": "Zurich"}).id for _ in range(2)]
    groups = find_duplicates()
    assert [(g.customer_ids, g.reason) for g in groups] == [
        (same, "name_city"), (near, "name_city")]
    assert groups[0].score == 1.0 > groups[1].score >= 0.88


@pytest.mark.sqlite_only
def test_the_time_split_names_its_date_not_a_timestamp(app: Flask) -> None:
    from plugins.churn.classifier import time_validate

    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 2))
    y = (X[:, 0] + rng.normal(scale=0.5, size=200) > 0).astype(float)
    start = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc).timestamp()
    dates = start + np.arange(200) * 86400.0  # what modeling passes: epoch seconds
    outcome = time_validate("logistic", X, y, dates)
    assert not isinstance(outcome, str), outcome
    assert outcome.metrics.method == (
        "time split: trained before 2025-05-31 00:00 UTC, tested from it")


@pytest.mark.parametrize("rows", [3, 4000])  # within the first 8 KiB read, and well beyond
def test_the_import_progress_counts_every_byte_from_the_first_batch(
        app: Flask, tmp_path: Path, rows: int) -> None:
    path = tmp_path / "customers.csv"
    path.write_text("external_id,name\n" + "".join(f"C-{i},Customer {i}\n"
                                                  for i in range(rows)) + "\n\n")
    steps: list[int] = []
    with open_import("customers", path) as job:
        job.run(batch_size=500, on_progress=steps.append)
    assert steps[0] > 0  # a small file is not left at 0 %
    assert sum(steps) == path.stat().st_size  # and every file ends at 100 %, not 99 %
