"""Personal data at rest: authenticated encryption and blind indexes.

- Values (customers' e-mail and phone, personal values inside audit and outbox rows) are
  encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) under the keys of
  ``RAPPORT_ENCRYPTION_KEYS``, newest first: the newest encrypts, every key decrypts, so a
  new key can be put in front and ``rapport keys rotate`` re-encrypts the old rows before
  the old key is dropped. A token that no key opens is a ``DecryptionError``, never a guess.
- Exact look-up and duplicate detection use a blind index: HMAC-SHA256 of the normalised
  value under ``RAPPORT_BLIND_INDEX_KEY``. Rotation never touches it; changing that key
  would orphan every index, so it is not rotatable.
- Production requires both settings (``core.config``). In development and test each key is
  generated once and kept in a file of the instance folder (mode 0600), so every process of
  a checkout (server, CLI, worker, tests) reads the same rows.

Columns use ``EncryptedString``: the ORM and SQLAlchemy Core see plain text, the database
only ciphertext. Such a column cannot be compared in SQL (each encryption uses a fresh
nonce, so equal values differ): compare its blind index instead.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import Flask, current_app
from sqlalchemy import (
    Column, MetaData, String, Table, bindparam, column, func, or_, select, table, update,
)
from sqlalchemy.sql import operators
from sqlalchemy.sql.operators import OperatorType
from sqlalchemy.types import TypeDecorator

from core.config import ConfigError, Settings

EXTENSION = "rapport.crypto"
ENCRYPTION_KEY_FILE = "encryption.key"
BLIND_INDEX_KEY_FILE = "blind-index.key"
SECRET_KEY_FILE = "secret.key"
#: A blind-index key shorter than this gives too little to brute-force against.
MIN_BLIND_INDEX_KEY_LENGTH = 32
DEFAULT_BATCH_SIZE = 1000


class DecryptionError(RuntimeError):
    """A stored value cannot be opened with any configured key (wrong or missing key, or a
    value altered in the database)."""


_DECRYPTION_HELP = (
    "A stored personal value cannot be decrypted with any key of RAPPORT_ENCRYPTION_KEYS "
    "(keys in use: {source}). The key that encrypted it is not configured, or the value "
    "was altered. Put the old key back after the new one (RAPPORT_ENCRYPTION_KEYS=NEW,OLD) "
    "and run 'rapport keys rotate' before removing it.")


@dataclass(frozen=True)
class Keyring:
    """The app's keys: encryption (newest first) and the blind-index key."""

    fernet: MultiFernet
    key_count: int
    blind_index_key: bytes
    key_source: str  # where the keys came from (a setting or a file), for error messages

    @classmethod
    def from_keys(cls, encryption_keys: tuple[str, ...], blind_index_key: str,
                  key_source: str = "the RAPPORT_ENCRYPTION_KEYS setting") -> Keyring:
        if not encryption_keys:
            raise ConfigError("RAPPORT_ENCRYPTION_KEYS is empty: give at least one key")
        fernets = []
        for position, key in enumerate(encryption_keys, start=1):
            try:
                fernets.append(Fernet(key.encode("ascii")))
            except (ValueError, UnicodeEncodeError):
                raise ConfigError(
                    f"RAPPORT_ENCRYPTION_KEYS: key {position} is not a Fernet key (32 bytes, "
                    f"url-safe base64, 44 characters); make one with 'rapport keys generate'"
                ) from None
        if len(blind_index_key) < MIN_BLIND_INDEX_KEY_LENGTH:
            raise ConfigError(
                f"RAPPORT_BLIND_INDEX_KEY must be at least {MIN_BLIND_INDEX_KEY_LENGTH} "
                f"characters of random text; make one with 'rapport keys generate "
                f"--blind-index'")
        return cls(MultiFernet(fernets), len(fernets), blind_index_key.encode("utf-8"),
                   key_source)

    def encrypt(self, text: str | None) -> str | None:
        if text is None:
            return None
        return self.fernet.encrypt(text.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str | None) -> str | None:
        if token is None:
            return None
        try:
            return self.fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeEncodeError):
            raise DecryptionError(_DECRYPTION_HELP.format(source=self.key_source)) from None

    def rotate(self, token: str | None) -> str | None:
        """``token`` re-encrypted under the newest key (any configured key may open it)."""
        if token is None:
            return None
        try:
            return self.fernet.rotate(token.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeEncodeError):
            raise DecryptionError(_DECRYPTION_HELP.format(source=self.key_source)) from None

    def blind_index(self, kind: str, normalised: str | None) -> str | None:
        if not normalised:
            return None
        # The kind is part of the message so an e-mail and a phone never share an index.
        message = f"{kind}\x00{normalised}".encode("utf-8")
        return hmac.new(self.blind_index_key, message, hashlib.sha256).hexdigest()


def instance_secret(instance_path: str, filename: str, generate: Callable[[], str]) -> str:
    """The secret kept in ``instance_path/filename``, generated on first use (mode 0600,
    as ``mkstemp`` creates files).

    Safe when several processes start at once: the file appears complete or not at all
    (written aside, then hard-linked into place), and the loser of a race reads the
    winner's secret.
    """
    os.makedirs(instance_path, exist_ok=True)
    path = os.path.join(instance_path, filename)
    if not os.path.exists(path):
        fd, draft = tempfile.mkstemp(dir=instance_path, prefix=f".{filename}.")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(generate() + "\n")
            try:
                os.link(draft, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(draft)
    with open(path, encoding="ascii") as secret_file:
        secret = secret_file.read().strip()
    if not secret:
        raise ConfigError(f"{path} is empty: delete it to generate a new key (only if no "
                          f"data was written with it) or restore it from a backup")
    return secret


def generate_encryption_key() -> str:
    return Fernet.generate_key().decode("ascii")


def generate_blind_index_key() -> str:
    return secrets.token_urlsafe(48)


def secret_key(app: Flask, settings: Settings) -> str:
    """The signing secret: the configured one, else (outside production, where
    ``core.config`` requires it) the instance folder's, generated once."""
    return settings.secret_key or instance_secret(app.instance_path, SECRET_KEY_FILE,
                                                  lambda: secrets.token_urlsafe(32))


def init_app(app: Flask, settings: Settings) -> None:
    """Attach the keyring to ``app``: configured keys, or the instance folder's outside
    production (``core.config`` has already refused production without keys)."""
    source = "the RAPPORT_ENCRYPTION_KEYS setting"
    keys = settings.encryption_keys
    if not keys:
        keys = (instance_secret(app.instance_path, ENCRYPTION_KEY_FILE,
                                generate_encryption_key),)
        source = f"the file {os.path.join(app.instance_path, ENCRYPTION_KEY_FILE)}"
    blind = settings.blind_index_key or instance_secret(
        app.instance_path, BLIND_INDEX_KEY_FILE, generate_blind_index_key)
    app.extensions[EXTENSION] = Keyring.from_keys(keys, blind, source)


def keyring(app: Flask | None = None) -> Keyring:
    target = app if app is not None else current_app
    return target.extensions[EXTENSION]  # type: ignore[no-any-return]


def encrypt(text: str | None) -> str | None:
    """``text`` encrypted under the current app's newest key (None stays None)."""
    return keyring().encrypt(text)


def decrypt(token: str | None) -> str | None:
    """The text of a token made by ``encrypt``; ``DecryptionError`` if no key opens it."""
    return keyring().decrypt(token)


def blind_index(kind: str, normalised: str | None) -> str | None:
    """The blind index of an already normalised value (``kind``: ``email``, ``phone``)."""
    return keyring().blind_index(kind, normalised)


# --- Columns ---------------------------------------------------------------------------------


class EncryptedString(TypeDecorator[str]):
    """Text encrypted on the way into the database and decrypted on the way out."""

    # Unbounded VARCHAR: a token is about 4/3 of (value + 57) bytes, so the value's own
    # length limit lives in the input schema. (TEXT would force SQLite to rebuild the
    # table in the migration; VARCHAR lengths mean nothing to SQLite.)
    impl = String
    cache_ok = True

    class Comparator(TypeDecorator.Comparator[str]):
        """Only IS [NOT] NULL: any other comparison would silently match nothing."""

        def operate(self, op: OperatorType, *other: Any, **kwargs: Any) -> Any:
            if op in (operators.is_, operators.is_not) or (
                    op in (operators.eq, operators.ne) and other and other[0] is None):
                return super().operate(op, *other, **kwargs)
            raise TypeError(
                f"{self.expr} is encrypted and cannot be compared in SQL; compare its "
                f"blind index (core.crypto.blind_index) instead")

        def reverse_operate(self, op: OperatorType, other: Any, **kwargs: Any) -> Any:
            raise TypeError(f"{self.expr} is encrypted and cannot be compared in SQL")

    comparator_factory = Comparator

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return encrypt(value)

    def process_literal_param(self, value: str | None, dialect: Any) -> str:
        # SQLAlchemy renders a None as NULL without calling this; a value inlined in SQL
        # (literal_binds) is encrypted like a bound one, never written in clear.
        return keyring().encrypt(value or "") or ""

    def process_result_value(self, value: str | None, dialect: Any) -> str | None:
        return decrypt(value)

    @property
    def python_type(self) -> type:
        return str


# --- Rotation --------------------------------------------------------------------------------


class Progress(Protocol):
    """How batch work reports progress: ``progress(label, total)`` opens a bar whose
    ``update(n)`` counts ``n`` more items done (``click.progressbar`` fits)."""

    def __call__(self, label: str, total: int) -> AbstractContextManager[Any]: ...


class _NoBar:
    def update(self, n: int) -> None:
        pass


@contextmanager
def no_progress(label: str, total: int) -> Iterator[_NoBar]:
    yield _NoBar()


def encrypted_columns(metadata: MetaData) -> list[tuple[Table, list[Column[Any]]]]:
    """Every table with ``EncryptedString`` columns, and those columns."""
    found = []
    for tbl in metadata.sorted_tables:
        columns = [c for c in tbl.columns if isinstance(c.type, EncryptedString)]
        if columns:
            found.append((tbl, columns))
    return found


def rotate_table(connection_factory: Callable[[], AbstractContextManager[Any]],
                 tbl: Table, columns: list[Column[Any]], ring: Keyring, *,
                 batch_size: int = DEFAULT_BATCH_SIZE, progress: Progress = no_progress
                 ) -> int:
    """Re-encrypt ``columns`` of ``tbl`` under the newest key, one transaction per batch
    (``connection_factory()`` opens one: ``engine.begin``). Returns the rows rewritten.

    A row is rewritten only if it still holds the tokens read, so a value an app process
    changed meanwhile (written under the newest key already) is never put back.
    """
    keys = list(tbl.primary_key.columns)
    if len(keys) != 1:
        raise ValueError(f"{tbl.name}: rotation needs a single-column primary key")
    pk_name = keys[0].name
    names = [c.name for c in columns]
    # The columns as plain text: the ciphertext itself is read and compared, not decrypted.
    raw = table(tbl.name, column(pk_name), *(column(n, String()) for n in names))
    pk = raw.c[pk_name]
    holds_a_value = [raw.c[n].is_not(None) for n in names]
    any_value = or_(*holds_a_value)
    with connection_factory() as conn:
        total = conn.scalar(select(func.count()).select_from(raw).where(any_value)) or 0
    rewritten = 0
    last: Any = None
    statement = (update(raw).where(pk == bindparam("_pk"), *(
        raw.c[n].is_not_distinct_from(bindparam(f"_old_{n}")) for n in names))
        .values({n: bindparam(f"_new_{n}") for n in names}))
    with progress(f"Re-encrypting {tbl.name}", total) as bar:
        while True:
            query = select(pk, *(raw.c[n] for n in names)).where(any_value)
            if last is not None:
                query = query.where(pk > last)
            with connection_factory() as conn:
                rows = conn.execute(query.order_by(pk).limit(batch_size)).all()
                if not rows:
                    break
                params = [{"_pk": row[0], **{f"_old_{n}": row[i + 1] for i, n in
                                             enumerate(names)},
                           **{f"_new_{n}": ring.rotate(row[i + 1]) for i, n in
                              enumerate(names)}} for row in rows]
                result = conn.execute(statement, params)
                rewritten += max(result.rowcount, 0)
            last = rows[-1][0]
            bar.update(len(rows))
    return rewritten
