"""Stored files: job inputs (uploads) and outputs (reports, rejects files).

Bytes go to the ``files`` table, or under ``RAPPORT_FILES_DIR`` when it is set (a folder
every machine running the API or a worker mounts: large files, several machines). Files
are downloaded through short-lived signed links (``core.signing``), never by id alone.

Encryption at rest. An import file is full of e-mails and phones, so a file is stored
encrypted in both places, in this format (the "stored bytes"; big-endian integers)::

    header   = b"RPF1" || frame_size (4 bytes)
    frame i  = AES-256-GCM(data_key, nonce_i, plaintext_i, associated data = header)
               (ciphertext || 16-byte tag)
    nonce_i  = i (11 bytes) || 0x01 for the last frame, 0x00 for the others

Every plaintext frame but the last holds exactly ``frame_size`` bytes (1 MiB), the last
0..frame_size bytes (an empty file is one empty last frame), so frame boundaries need no
length fields. ``data_key`` is 32 random bytes drawn for each file (AES-GCM from
``cryptography``: no home-made primitive), kept in the row's ``data_key`` column, which is
an ``EncryptedString``: Fernet under ``RAPPORT_ENCRYPTION_KEYS``. Hence:

- a frame moved, dropped or repeated fails (its index is in the nonce); a file cut after a
  frame fails (that frame was not sealed as the last); a byte changed fails (the tag);
  each of these, and a data key no configured key opens, is a ``DecryptionError``;
- ``rapport keys rotate`` rewrites the wrapped ``data_key`` (and the sealed digest) like
  any encrypted column: the file bytes are never re-encrypted, whatever their size;
- nonces never repeat, as each key seals one file (the nonce construction is the usual
  STREAM one: a counter and a last-frame flag).

Writing and reading are streamed frame by frame: an upload is sealed while it is spooled
(the spool holds ciphertext only), a download or a job's input is opened frame by frame,
also from the table (``substr`` of the column, one frame per statement). One limit: a file
kept in the table is inserted in one statement, whose value the database driver holds
whole; large files belong in ``RAPPORT_FILES_DIR``. A job reading an input gets a clear
copy in a private temporary folder (mode 0700) removed when the job ends, as importers
read paths; the job's outputs are written there too before they are sealed.

``files`` rows and files from before this format cannot exist: migration ``core_0006``
(which creates the table) is new in the same release.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import struct
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import func, select

from core.app import rapport
from core.context import current
from core.crypto import DecryptionError
from core.db import db
from core.errors import ErrorCode, UserError
from core.ids import decode_global_id, global_id
from core.job_tables import StoredFile
from core.signing import sign, unsign

FILE_TYPE = "File"
LINK_PURPOSE = "file"
DEFAULT_MAX_UPLOAD_BYTES = 1 << 30
_CHUNK = 1 << 20

MAGIC = b"RPF1"
HEADER = struct.Struct(">4sI")
FRAME_SIZE = 1 << 20
TAG_SIZE = 16
#: Frame sizes a reader accepts: the header is authenticated only once the first frame is
#: opened, so its frame size must not make the reader allocate without bound before that.
FRAME_SIZES = range(1 << 10, (16 << 20) + 1)


def files_dir() -> Path | None:
    raw = rapport().settings.extra.get("RAPPORT_FILES_DIR")
    return Path(raw) if raw else None


def max_upload_bytes() -> int:
    raw = rapport().settings.extra.get("RAPPORT_MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD_BYTES)
    try:
        return max(1, int(raw))
    except (TypeError, ValueError):
        return DEFAULT_MAX_UPLOAD_BYTES


class TooLarge(Exception):
    pass


def store_stream(name: str, content_type: str, chunks: Iterable[bytes], *,
                 limit: int | None = None, job_id: int | None = None) -> StoredFile:
    """Store what ``chunks`` yield (the caller commits); ``TooLarge`` past ``limit`` bytes.

    The bytes are sealed (encrypted) into a temporary file as they come, so a refused
    upload writes nothing and no clear copy of an upload is ever on disk.
    """
    digest = hashlib.sha256()
    size = 0
    data_key = AESGCM.generate_key(bit_length=256)
    with tempfile.NamedTemporaryFile(prefix="rapport-upload-", delete=False) as spool:
        try:
            sealer = Sealer(data_key, spool)
            for chunk in chunks:
                size += len(chunk)
                if limit is not None and size > limit:
                    raise TooLarge
                digest.update(chunk)
                sealer.write(chunk)
            sealer.close()
            spool.flush()
            return _store_spooled(Path(spool.name), name, content_type, size,
                                  digest.hexdigest(), data_key, job_id)
        finally:
            Path(spool.name).unlink(missing_ok=True)


def store_path(path: Path, name: str | None = None, content_type: str = "text/csv", *,
               job_id: int | None = None) -> StoredFile:
    """Store a file written on this machine (a job's output); the caller commits."""

    def chunks() -> Iterator[bytes]:
        with path.open("rb") as handle:
            yield from iter(lambda: handle.read(_CHUNK), b"")

    return store_stream(name or path.name, content_type, chunks(), job_id=job_id)


def _store_spooled(spooled: Path, name: str, content_type: str, size: int, sha256: str,
                   data_key: bytes, job_id: int | None) -> StoredFile:
    row = StoredFile(name=safe_name(name), content_type=content_type[:120], size=size,
                     sha256=sha256, data_key=base64.b64encode(data_key).decode("ascii"),
                     job_id=job_id, actor=current().actor.to_json())
    folder = files_dir()
    if folder is not None:
        # No extension of the name: the bytes are sealed (readers get a clear copy named
        # after the row, local_path).
        relative = f"{uuid.uuid4().hex[:2]}/{uuid.uuid4().hex}.sealed"
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(spooled, target)
        row.path = relative
    else:
        row.content = spooled.read_bytes()
    db.session.add(row)
    db.session.flush()
    return row


def safe_name(name: str) -> str:
    base = os.path.basename(name.replace("\\", "/")).strip() or "file"
    return "".join(c for c in base if c.isprintable() and c not in '"\x00')[:255] or "file"


def file_id(row: StoredFile) -> str:
    return global_id(FILE_TYPE, row.id)


def find(reference: str, field: str = "file") -> StoredFile:
    """The stored file a global id names, or a ``UserError`` on ``field``."""
    try:
        _, number = decode_global_id(str(reference), FILE_TYPE)
    except ValueError as exc:
        raise UserError.single(str(exc), ErrorCode.INVALID, field) from None
    row = db.session.get(StoredFile, number)
    if row is None:
        raise UserError.single(f"No file with id {reference}.", ErrorCode.NOT_FOUND, field)
    return row


@contextmanager
def local_path(row: StoredFile) -> Iterator[Path]:
    """A path on this machine holding the file's clear bytes for the block's duration (in
    a private temporary folder, removed afterwards); ``DecryptionError`` if they cannot be
    opened."""
    chunks = read_chunks(row)
    suffix = Path(row.name).suffix
    # The extension stays: readers tell a file's format by it.
    suffix = suffix if suffix[1:].isalnum() and len(suffix) <= 10 else ""
    with tempfile.TemporaryDirectory(prefix="rapport-file-") as tmp:
        target = Path(tmp) / f"input{suffix.lower()}"
        with target.open("wb") as out:
            for chunk in chunks:
                out.write(chunk)
        yield target


def read_chunks(row: StoredFile) -> Iterator[bytes]:
    """The file's clear bytes, one frame at a time (``DecryptionError`` on the frame that
    does not open). The source is opened, and the data key unwrapped, before this returns
    (a missing folder is a ``UserError`` here, not on the first ``next``)."""
    folder = files_dir()
    if row.path is not None and folder is None:
        raise UserError.single(
            f"File {file_id(row)} is kept under RAPPORT_FILES_DIR, which this process "
            f"does not have set.", ErrorCode.NOT_FOUND, "file")
    try:  # reading the column decrypts it: DecryptionError if no configured key opens it
        key = base64.b64decode(row.data_key.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise DecryptionError(f"File {file_id(row)}: its data key is malformed.") from None
    source: IO[bytes] | _ColumnReader = (
        (folder / row.path).open("rb") if row.path is not None and folder is not None
        else _ColumnReader(row.id))
    return _opened(key, source, file_id(row))


def _opened(key: bytes, source: IO[bytes] | _ColumnReader, label: str) -> Iterator[bytes]:
    with source:
        yield from open_frames(key, source, label)


class _ColumnReader:
    """Reads ``files.content`` of one row by slices (one statement per read), so a large
    file kept in the table is never loaded whole."""

    def __init__(self, row_id: int):
        self.row_id = row_id
        self.offset = 0

    def read(self, size: int) -> bytes:
        # substr counts from 1 and works on BLOB (SQLite) and bytea (PostgreSQL) alike.
        chunk = db.session.scalar(select(func.substr(StoredFile.content, self.offset + 1, size))
                                  .where(StoredFile.id == self.row_id))
        data = bytes(chunk or b"")
        self.offset += len(data)
        return data

    def close(self) -> None:
        pass

    def __enter__(self) -> _ColumnReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- The sealed format (see the module's docstring) ----------------------------------------


def _nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


class Sealer:
    """Writes the sealed form of what ``write`` gets to ``out``; ``close`` seals the last
    frame (mandatory: without it the file cannot be opened)."""

    def __init__(self, key: bytes, out: IO[bytes], frame_size: int = FRAME_SIZE):
        if frame_size not in FRAME_SIZES:
            raise ValueError(f"frame size {frame_size} is outside {FRAME_SIZES}")
        self.aead = AESGCM(key)
        self.out = out
        self.frame_size = frame_size
        self.header = HEADER.pack(MAGIC, frame_size)
        self.pending = bytearray()
        self.index = 0
        out.write(self.header)

    def write(self, data: bytes) -> None:
        self.pending += data
        done = 0
        with memoryview(self.pending) as view:
            # Strictly more than a frame: the last frame must stay to be sealed as the last.
            while len(self.pending) - done > self.frame_size:
                self._seal(view[done:done + self.frame_size], last=False)
                done += self.frame_size
        del self.pending[:done]

    def close(self) -> None:
        self._seal(bytes(self.pending), last=True)
        self.pending.clear()

    def _seal(self, frame: bytes | memoryview, last: bool) -> None:
        self.out.write(self.aead.encrypt(_nonce(self.index, last), frame, self.header))
        self.index += 1


def _read_exactly(source: IO[bytes] | _ColumnReader, size: int) -> bytes:
    parts, missing = [], size
    while missing:
        part = source.read(missing)
        if not part:
            break
        parts.append(part)
        missing -= len(part)
    return b"".join(parts)


def open_frames(key: bytes, source: IO[bytes] | _ColumnReader, label: str = "file"
                ) -> Iterator[bytes]:
    """The clear frames of a sealed stream, checked one by one: a ``DecryptionError``
    names the first frame that does not open (altered, moved, cut, or another key)."""
    header = _read_exactly(source, HEADER.size)
    magic, frame_size = HEADER.unpack(header) if len(header) == HEADER.size else (b"", 0)
    if magic != MAGIC or frame_size not in FRAME_SIZES:
        raise DecryptionError(f"{label}: not a sealed Rapport file (bad header).")
    aead = AESGCM(key)
    stored = frame_size + TAG_SIZE
    index = 0
    current = _read_exactly(source, stored)
    while True:
        # A full frame may be the last one: only the next read tells.
        following = _read_exactly(source, stored) if len(current) == stored else b""
        last = not following
        try:
            yield aead.decrypt(_nonce(index, last), current, header)
        except InvalidTag:
            raise DecryptionError(
                f"{label}: frame {index + 1} cannot be decrypted: the file was altered or "
                f"cut, or its data key is not its own.") from None
        if last:
            return
        current, index = following, index + 1


def link(row: StoredFile) -> dict[str, Any]:
    """How a job result shows a file: its name, size and a fresh signed download URL."""
    signed = sign(LINK_PURPOSE, row.id)
    return {"id": file_id(row), "name": row.name, "contentType": row.content_type,
            "size": row.size, "url": f"/files/{signed.token}",
            "expiresAt": signed.expires_at.isoformat()}


def from_token(token: str) -> StoredFile | None:
    """The file a download token opens (``LinkError`` when the token is not valid now)."""
    number = unsign(LINK_PURPOSE, token)
    return db.session.get(StoredFile, int(number)) if isinstance(number, int) else None
