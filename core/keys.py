"""``rapport keys``: make keys, and re-encrypt personal data under the newest key.

Rotation: put a new key first in ``RAPPORT_ENCRYPTION_KEYS`` (``NEW,OLD``) on every process,
run ``rapport keys rotate``, then drop ``OLD``. Rotation rewrites every ``EncryptedString``
column of the enabled tables and the sealed values inside audit entries, one transaction
per batch; it can be stopped and run again (any configured key opens any token). Blind
indexes are never touched: they depend on ``RAPPORT_BLIND_INDEX_KEY`` only. Job files
(``core.files``) are rotated through their ``data_key`` column: the per-file key is
rewrapped, the file's bytes are not re-encrypted.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import click
from flask.cli import AppGroup
from sqlalchemy import func, select, update

from core.app import rapport
from core.crypto import (
    DEFAULT_BATCH_SIZE, DecryptionError, Keyring, Progress, encrypted_columns, generate_blind_index_key,
    generate_encryption_key, keyring, no_progress, rotate_table,
)
from core.db import db, tables_for_plugins


def progress_bar(label: str, total: int) -> Any:
    """A ``core.crypto.Progress`` for the CLI: a bar on stderr."""
    return click.progressbar(length=max(total, 1), label=label, file=sys.stderr)


def _rotate_audit_changes(ring: Keyring, batch_size: int, progress: Progress) -> int:
    """Re-encrypt the sealed values in audit entries' ``changes`` (``core.changes``).

    An entry is rewritten only if each value is still the token read: erasure may have
    redacted it meanwhile, and a redaction must never come back as the old value.
    """
    from core.changes import ENCRYPTED_FIELDS, REDACTED
    from core.models import AuditEntry

    entries = AuditEntry.__table__
    has_changes = entries.c.changes.is_not(None)
    total = db.session.scalar(select(func.count()).where(has_changes)) or 0
    rewritten, last = 0, 0
    with progress("Re-encrypting audit entries", total) as bar:
        while True:
            rows = db.session.execute(
                select(entries.c.id, entries.c.changes).where(has_changes, entries.c.id > last)
                .order_by(entries.c.id).limit(batch_size)).all()
            if not rows:
                break
            for entry_id, changes in rows:
                sealed = [(name, i, value) for name, pair in (changes or {}).items()
                          if name in ENCRYPTED_FIELDS for i, value in enumerate(pair)
                          if isinstance(value, str) and value != REDACTED]
                if not sealed:
                    continue
                renewed: Mapping[str, Any] = {
                    name: [ring.rotate(v) if (name, i, v) in sealed else v
                           for i, v in enumerate(pair)] if name in ENCRYPTED_FIELDS else pair
                    for name, pair in changes.items()}
                unchanged = [entries.c.changes[(name, i)].as_string() == value
                             for name, i, value in sealed]
                result = db.session.execute(update(entries).where(
                    entries.c.id == entry_id, *unchanged).values(changes=renewed))
                rewritten += max(result.rowcount, 0)  # type: ignore[attr-defined]
            db.session.commit()
            last = rows[-1][0]
            bar.update(len(rows))
    return rewritten


def rotate_personal_data(batch_size: int = DEFAULT_BATCH_SIZE,
                         progress: Progress = no_progress) -> dict[str, int]:
    """Re-encrypt every encrypted value of the database under the newest key; returns
    the rows rewritten per table."""
    ring = keyring()
    enabled = set(tables_for_plugins(rapport().enabled_plugins))
    rewritten: dict[str, int] = {}
    for table, columns in encrypted_columns(db.metadata):
        if table in enabled:
            rewritten[table.name] = rotate_table(
                db.engine.begin, table, columns, ring, batch_size=batch_size,
                progress=progress)
    if "audit_entries" in db.metadata.tables:
        rewritten["audit_entries"] = _rotate_audit_changes(ring, batch_size, progress)
    return rewritten


keys_group = AppGroup("keys", help="Keys of personal data at rest: generate, rotate.")


@keys_group.command("generate", with_appcontext=False)
@click.option("--blind-index", is_flag=True,
              help="A RAPPORT_BLIND_INDEX_KEY instead of an encryption key.")
def generate_command(blind_index: bool) -> None:
    """Print a new random key (for RAPPORT_ENCRYPTION_KEYS, or --blind-index)."""
    click.echo(generate_blind_index_key() if blind_index else generate_encryption_key())


@keys_group.command("rotate")
@click.option("--batch-size", default=DEFAULT_BATCH_SIZE, show_default=True,
              type=click.IntRange(1, 100_000), help="Rows per transaction.")
def rotate_command(batch_size: int) -> None:
    """Re-encrypt every e-mail and phone (and the audit's copies) under the newest key of
    RAPPORT_ENCRYPTION_KEYS, and rewrap job files' data keys (their bytes stay as they
    are). Afterwards the older keys can be removed."""
    ring = keyring()
    if ring.key_count == 1:
        click.echo("One encryption key is configured: values are re-encrypted under it. To "
                   "rotate, put a new key first: RAPPORT_ENCRYPTION_KEYS=NEW,OLD.", err=True)
    try:
        rewritten = rotate_personal_data(batch_size, progress_bar)
    except DecryptionError as exc:  # batches before the failing one are committed
        raise click.ClickException(str(exc)) from None
    for table, count in rewritten.items():
        click.echo(f"{table}: {count} rows re-encrypted")
    click.echo("every encrypted value is now under the newest key; older keys can be "
               "removed from RAPPORT_ENCRYPTION_KEYS")
