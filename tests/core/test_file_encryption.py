"""Job files are encrypted at rest (core.files): in the ``files`` table and under
RAPPORT_FILES_DIR alike, opened frame by frame, rotated by rewrapping their data keys.

The proof: a customers import run as a job (upload, ``startJob``, the rejects output)
leaves no plaintext e-mail or phone in any table nor in any file of the shared folder.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, text, update

from core import files
from core.cli import cli
from core.crypto import DecryptionError
from core.db import db
from core.job_tables import StoredFile
from core.plugins import builtin_plugin_names
from core.services import transaction
from tests.conftest import AppFactory, GraphQL, admin_token
from tests.core.test_encryption import NEW_KEY, OLD_KEY, _every_cell, _keys, _where

START = """mutation($kind: String!, $parameters: GenericScalar) {
  startJob(input: {kind: $kind, parameters: $parameters}) {
    job { id } errors { field message code } } }"""
JOB = """query($id: ID!) { job(id: $id) {
    status result error { code message } files { name url } } }"""

#: Two good rows and two rejected ones whose rejection is about their personal values.
CSV = ("external_id,name,email,phone,city\n"
       "p-1,Ada Lovelace,Ada.Lovelace@Analytical.example,+44 20 7946 0958,London\n"
       "p-2,Grace Hopper,grace.hopper@navy.example,+1 (202) 555-0147,Arlington\n"
       "p-3,Bad Mail,ada.lovelace@@analytical,+1 202 555 0199,Oslo\n"
       "p-4,Bad Phone,katherine.johnson@nasa.example,call me maybe,Hampton\n")
NEEDLES = ["ada.lovelace@analytical.example", "grace.hopper@navy.example",
           "+44 20 7946 0958", "442079460958", "2079460958", "+1 (202) 555-0147",
           "12025550147", "2025550147", "ada.lovelace@@analytical", "+1 202 555 0199",
           "2025550199", "katherine.johnson@nasa.example"]


def _upload(app: Flask, token: str, body: bytes, name: str = "customers.csv") -> Any:
    return app.test_client().post(f"/files?kind=core.import_customers&name={name}",
                                  data=body, headers={"Authorization": f"Bearer {token}",
                                                      "Content-Type": "text/csv"})


def _finished(gql: GraphQL, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = gql(JOB, {"id": job_id})["job"]
        if job["status"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return job  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def _import(app: Flask, gql: GraphQL, body: bytes) -> dict[str, Any]:
    uploaded = _upload(app, gql.token or "", body)
    assert uploaded.status_code == 201, uploaded.get_json()
    started = gql(START, {"kind": "core.import_customers",
                          "parameters": {"file": uploaded.get_json()["id"]}})["startJob"]
    assert started["errors"] == []
    return _finished(gql, started["job"]["id"])


def _shared_files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_bytes().decode("latin-1").lower()
            for p in folder.rglob("*") if p.is_file()}


def _job_app(make_app: AppFactory, shared: Path | None, **settings: Any) -> Flask:
    if shared is not None:
        settings["RAPPORT_FILES_DIR"] = str(shared)
    return make_app(enabled=builtin_plugin_names(), RAPPORT_JOB_THREADS=1,
                    RAPPORT_RATE_LIMIT="unlimited", **settings)


@pytest.mark.parametrize("where", ["table", "shared folder"])
def test_an_import_job_leaves_no_plaintext_email_or_phone_at_rest(
        make_app: AppFactory, tmp_path: Path, where: str) -> None:
    shared = tmp_path / "shared" if where == "shared folder" else None
    app = _job_app(make_app, shared)
    gql = GraphQL(app, admin_token(app))
    with app.app_context():
        job = _import(app, gql, CSV.encode())
    assert job["status"] == "SUCCEEDED", job["error"]
    assert (job["result"]["imported"], job["result"]["rejected"]) == (2, 2)
    # The rejects output names lines, fields and reasons (not the refused values); it is
    # sealed like any file all the same.
    [rejects] = job["files"]
    clear_rejects = app.test_client().get(rejects["url"]).get_data(as_text=True)
    assert clear_rejects.splitlines()[1:] == [
        "4,email,INVALID,Not a valid email address.",
        '5,phone,INVALID,"Not a valid phone number (digits, spaces, +, -, parentheses)."']
    with app.app_context():
        stored = db.session.scalars(select(StoredFile).order_by(StoredFile.id)).all()
        assert [f.name for f in stored] == ["customers.csv", "customers.rejects.csv"]
        assert b"".join(files.read_chunks(stored[0])) == CSV.encode()  # the job's input
        assert all((f.path is None) == (shared is None) for f in stored)
        db.session.remove()

    cells = _every_cell(app)
    assert _where(cells, "Ada Lovelace") == ["customers"]  # the scan sees clear data
    on_disk = _shared_files(shared) if shared is not None else {}
    assert len(on_disk) == (2 if shared is not None else 0)
    found = {needle: _where(cells, needle) + [
        name for name, content in on_disk.items() if needle.lower() in content]
        for needle in NEEDLES}
    assert found == {needle: [] for needle in NEEDLES}


@pytest.mark.parametrize("where", ["table", "shared folder"])
def test_a_large_upload_round_trips_through_several_frames(
        make_app: AppFactory, tmp_path: Path, where: str) -> None:
    shared = tmp_path / "shared" if where == "shared folder" else None
    app = _job_app(make_app, shared)
    token = admin_token(app)
    body = os.urandom(files.FRAME_SIZE // 2) * 7 + b"tail"  # 3.5 MiB: four frames
    uploaded = _upload(app, token, body, "big.bin")
    assert uploaded.status_code == 201
    assert uploaded.get_json()["size"] == len(body)
    with app.app_context():
        row = files.find(uploaded.get_json()["id"])
        sealed = (shared / row.path).read_bytes() if shared is not None else row.content
        assert sealed is not None
        assert len(sealed) == files.HEADER.size + len(body) + 4 * files.TAG_SIZE
        assert body[:64] not in sealed
        url = files.link(row)["url"]
        with files.local_path(row) as clear:  # what a job reads
            assert clear.suffix == ".bin" and clear.read_bytes() == body
            assert os.stat(clear.parent).st_mode & 0o077 == 0  # a private folder
        assert not clear.exists()
    downloaded = app.test_client().get(url)
    assert downloaded.status_code == 200
    assert downloaded.headers["Content-Length"] == str(len(body))
    assert downloaded.get_data() == body


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 4096, 5000])
def test_frame_boundaries(size: int) -> None:
    key = bytes(range(32))
    body = os.urandom(size)
    out = io.BytesIO()
    sealer = files.Sealer(key, out, frame_size=1024)
    for start in range(0, size, 700):  # writes that do not line up with frames
        sealer.write(body[start:start + 700])
    sealer.close()
    frames = list(files.open_frames(key, io.BytesIO(out.getvalue())))
    assert b"".join(frames) == body
    assert len(frames) == max(1, -(-size // 1024))


def _sealed(body: bytes, frame_size: int = 1024) -> tuple[bytes, bytes]:
    key = os.urandom(32)
    out = io.BytesIO()
    sealer = files.Sealer(key, out, frame_size=frame_size)
    sealer.write(body)
    sealer.close()
    return key, out.getvalue()


def _open(key: bytes, sealed: bytes) -> bytes:
    return b"".join(files.open_frames(key, io.BytesIO(sealed), "File:1"))


def test_altered_moved_or_cut_frames_are_refused() -> None:
    body = os.urandom(3 * 1024 + 10)  # four frames
    key, sealed = _sealed(body)
    assert _open(key, sealed) == body
    head, stored = files.HEADER.size, 1024 + files.TAG_SIZE
    frames = [sealed[head + i * stored:head + (i + 1) * stored] for i in range(4)]

    flipped = bytearray(sealed)
    flipped[head + stored + 5] ^= 1
    cases = {
        "a flipped bit in frame 2": (bytes(flipped), "frame 2 cannot be decrypted"),
        "frames 2 and 3 swapped": (sealed[:head] + frames[0] + frames[2] + frames[1]
                                   + frames[3], "frame 2 cannot be decrypted"),
        "the last frame cut": (sealed[:head] + b"".join(frames[:3]),
                               "frame 3 cannot be decrypted"),
        "a frame repeated": (sealed + frames[3], "frame 4 cannot be decrypted"),
        "another frame size": (files.HEADER.pack(files.MAGIC, 2048) + sealed[head:],
                               "frame 1 cannot be decrypted"),
        "not sealed at all": (b"external_id,name\n", "not a sealed Rapport file"),
    }
    for case, (altered, message) in cases.items():
        with pytest.raises(DecryptionError, match=message):
            _open(key, altered)
        assert case
    with pytest.raises(DecryptionError, match="frame 1 cannot be decrypted"):
        _open(os.urandom(32), sealed)  # another file's key


def _tamper(app: Flask, shared: Path | None, row_id: int, offset: int) -> None:
    """Flip one byte of a stored file's sealed bytes where they are kept."""
    with app.app_context():
        row = db.session.get(StoredFile, row_id)
        assert row is not None
        if shared is not None:
            path = shared / (row.path or "")
            data = bytearray(path.read_bytes())
            data[offset] ^= 0x40
            path.write_bytes(bytes(data))
        else:
            data = bytearray(row.content or b"")
            data[offset] ^= 0x40
            with transaction():
                db.session.execute(update(StoredFile).where(StoredFile.id == row_id)
                                   .values(content=bytes(data)))
        db.session.remove()


@pytest.mark.parametrize("where", ["table", "shared folder"])
def test_a_tampered_file_is_a_typed_error_for_downloads_and_jobs(
        make_app: AppFactory, tmp_path: Path, where: str) -> None:
    shared = tmp_path / "shared" if where == "shared folder" else None
    app = _job_app(make_app, shared)
    gql = GraphQL(app, admin_token(app))
    uploaded = _upload(app, gql.token or "", CSV.encode())
    file_id = uploaded.get_json()["id"]
    with app.app_context():
        row_id = files.find(file_id).id
        url = files.link(files.find(file_id))["url"]
    _tamper(app, shared, row_id, files.HEADER.size + 20)

    download = app.test_client().get(url)
    assert download.status_code == 500
    body = download.get_json()
    assert body["errors"][0]["extensions"]["code"] == "DECRYPTION_FAILED"
    assert "frame" not in body["errors"][0]["message"]  # details go to the log only

    with app.app_context():
        started = gql(START, {"kind": "core.import_customers",
                              "parameters": {"file": file_id}})["startJob"]
        job = _finished(gql, started["job"]["id"])
        db.session.remove()
    assert job["status"] == "FAILED"
    assert job["error"]["code"] == "DECRYPTION_FAILED", job["error"]
    assert "Ada" not in job["error"]["message"]
    with app.app_context():
        assert db.session.scalar(text("SELECT count(*) FROM customers")) == 0


def test_a_frame_altered_further_on_cuts_the_download_short(make_app: AppFactory,
                                                            tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    app = _job_app(make_app, shared)
    body = os.urandom(files.FRAME_SIZE) * 2 + b"end"  # three frames
    file_id = _upload(app, admin_token(app), body, "big.bin").get_json()["id"]
    with app.app_context():
        row_id = files.find(file_id).id
        url = files.link(files.find(file_id))["url"]
    _tamper(app, shared, row_id, files.HEADER.size + files.FRAME_SIZE + files.TAG_SIZE + 9)
    download = app.test_client().get(url)
    # The first frame opened, so the answer had started: the body stops before the bad
    # frame, short of its Content-Length, and no altered byte is sent.
    assert download.status_code == 200
    assert download.headers["Content-Length"] == str(len(body))
    assert download.get_data() == body[:files.FRAME_SIZE]


def _sealed_state(app: Flask, shared: Path | None) -> list[tuple[Any, ...]]:
    with app.app_context():
        rows = db.session.execute(text(
            "SELECT id, data_key, sha256, content, path FROM files ORDER BY id")).all()
        db.session.remove()
    return [(r[0], r[1], r[2], bytes(r[3]) if r[3] is not None else
             (shared / r[4]).read_bytes() if shared is not None else None) for r in rows]


@pytest.mark.parametrize("where", ["table", "shared folder"])
def test_rotation_rewraps_the_data_keys_and_leaves_the_bytes(
        make_app: AppFactory, tmp_path: Path, where: str) -> None:
    shared = tmp_path / "shared" if where == "shared folder" else None
    old = _job_app(make_app, shared, **_keys(OLD_KEY))
    token = admin_token(old)
    ids = [_upload(old, token, f"n\n{i}\n".encode() * 1000, f"f{i}.csv").get_json()["id"]
           for i in range(3)]
    before = _sealed_state(old, shared)

    both = _job_app(make_app, shared, **_keys(NEW_KEY, OLD_KEY))
    result = both.test_cli_runner().invoke(cli, ["keys", "rotate", "--batch-size", "2"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "files: 3 rows re-encrypted" in result.output
    assert "Re-encrypting files" in result.stderr  # the progress bar
    after = _sealed_state(both, shared)
    assert [a[3] for a in after] == [b[3] for b in before]  # the file bytes: untouched
    assert all(a[1] != b[1] and a[2] != b[2] for a, b in zip(after, before))  # rewrapped

    new = _job_app(make_app, shared, **_keys(NEW_KEY))
    with new.app_context():
        for i, file_id in enumerate(ids):
            row = files.find(file_id)
            assert b"".join(files.read_chunks(row)) == f"n\n{i}\n".encode() * 1000
        url = files.link(files.find(ids[0]))["url"]
        db.session.remove()
    with old.app_context():
        db.session.remove()
        with pytest.raises(DecryptionError):
            b"".join(files.read_chunks(files.find(ids[0])))
        db.session.remove()
    # A signed link made by either app opens on both (the signing key is the same);
    # the old app no longer has the key of the file's data key.
    refused = old.test_client().get(url)
    assert refused.status_code == 500
    assert refused.get_json()["errors"][0]["extensions"]["code"] == "DECRYPTION_FAILED"
    assert new.test_client().get(url).get_data() == b"n\n0\n" * 1000
