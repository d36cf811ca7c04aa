"""``--declare-attributes``: custom attributes declared from an import file's columns.

The columns of a customer file that are neither customer fields nor declared attributes
are read once, and each gets a type from its values (blank cells ignored):

- ``boolean``: every value is yes/no, true/false (any case; 1/0 read as numbers);
- ``number``: every value is a number (``1``, ``-2.5``, ``1e3``);
- ``date``: every value is an ISO date ``YYYY-MM-DD``;
- ``category``: text with at most ``MAX_CATEGORIES`` distinct values (in their order of
  appearance), some of them repeated (fewer distinct values than rows: ids and free
  comments are all different);
- ``text`` otherwise (names, free comments, ids).

The label is the column name with ``_`` as spaces, capitalised. A column without any value
is not declared. Declaring goes through ``define_customer_attribute`` (audited), before the
rows are imported, so the rows are typed by the new declarations.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from core.importers import (
    CUSTOMER_COLUMNS, RecordReader, check_customer_columns, detect_format,
)

MAX_CATEGORIES = 30
_BOOLEAN = {"yes", "no", "true", "false"}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass
class _Column:
    number: bool = True
    boolean: bool = True
    date: bool = True
    rows: int = 0
    distinct: dict[str, None] = field(default_factory=dict)

    def see(self, value: Any) -> None:
        self.rows += 1
        if isinstance(value, bool):
            self.number = self.date = False
            self.distinct.setdefault(str(value).lower(), None)
            return
        if isinstance(value, (int, float, Decimal)):
            self.boolean = self.date = False
            return
        if not isinstance(value, str):
            self.number = self.boolean = self.date = False
            self.distinct.setdefault(repr(value), None)
            return
        text = value.strip()
        if self.boolean and text.lower() not in _BOOLEAN:
            self.boolean = False
        if self.number:
            try:
                self.number = math.isfinite(float(text))
            except ValueError:
                self.number = False
        if self.date:
            try:
                self.date = bool(_DATE.match(text)) and dt.date.fromisoformat(text) is not None
            except ValueError:
                self.date = False
        if len(self.distinct) <= MAX_CATEGORIES:
            self.distinct.setdefault(text, None)

    def declaration(self, key: str) -> dict[str, Any] | None:
        if not self.rows:
            return None
        label = key.replace("_", " ").strip().capitalize() or key
        if self.boolean:
            kind = "boolean"
        elif self.number:
            kind = "number"
        elif self.date:
            kind = "date"
        elif len(self.distinct) <= MAX_CATEGORIES and len(self.distinct) < self.rows:
            return {"key": key, "type": "category", "label": label,
                    "categories": list(self.distinct)}
        else:
            kind = "text"
        return {"key": key, "type": kind, "label": label}


def infer_attributes(path: Path, *, file_format: str | None = None, encoding: str = "utf-8",
                     declared: set[str] | frozenset[str] = frozenset()
                     ) -> list[dict[str, Any]]:
    """The declarations (``key, type, label[, categories]``) the undeclared attribute
    columns of a customer file suggest, in column order."""
    reader = RecordReader(path, detect_format(path, file_format), encoding)
    columns: dict[str, _Column] = {}
    try:
        if reader.columns is not None:
            # A header the import will refuse declares nothing (ImportFileError).
            check_customer_columns(reader.columns)
        for key in reader.columns or ():
            if key not in CUSTOMER_COLUMNS and key not in declared:
                columns[key] = _Column()
        for record in reader:
            values = record.values
            if reader.columns is None:  # JSON Lines: top-level keys and "attributes"
                nested = values.get("attributes")
                values = {**{k: v for k, v in values.items() if k not in CUSTOMER_COLUMNS},
                          **(nested if isinstance(nested, dict) else {})}
            for key, value in values.items():
                if key in CUSTOMER_COLUMNS or key in declared or value is None:
                    continue
                columns.setdefault(key, _Column()).see(value)
    finally:
        reader.close()
    return [d for key, column in columns.items() if (d := column.declaration(key))]
