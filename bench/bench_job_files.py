"""Job files with and without encryption at rest: upload, then a customers import job.

A customers CSV of about ``--mb`` MB (default 50; e-mail and phone on every row) is
written once. Each measured path gets a fresh PostgreSQL database and stores files either
in the ``files`` table or under ``RAPPORT_FILES_DIR`` (a temporary folder):

- upload: ``POST /files?kind=core.import_customers`` through the WSGI test client (the
  body streamed from the file, sealed frame by frame as it is spooled);
- open: what a job does first with its input, ``files.local_path`` (a clear copy in a
  private temporary folder);
- import: the ``core.import_customers`` job on that file, run in this process
  (``jobs.run_job``): its input is opened again and imported; wall time of the whole job
  (``--no-import`` skips it: at about 1,500 rows/s it dominates and takes minutes).

"Clear" runs the same code with AES-GCM replaced by a copy (each frame is written with
16 zero bytes for a tag, read back without a check), so the difference is the cost of
encrypting and decrypting. Also printed: AES-GCM alone on the file's bytes. Figures are
printed, never asserted; the bench fails only if a job does not import every row.

    python -m bench.bench_job_files --mb 50
    RAPPORT_BENCH_JOB_FILES_MB=5 python -m bench job_files
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import common

NAME = "job_files"
MB = float(os.environ.get("RAPPORT_BENCH_JOB_FILES_MB", "50"))
SEED = 20261206
#: A fixed key for this run's apps (the scratch databases are dropped afterwards).
BENCH_ENCRYPTION_KEY = "YmVuY2gtb25seS1lbmNyeXB0aW9uLWtleS0wMDAwMDA="
BENCH_BLIND_INDEX_KEY = "bench-only-blind-index-key-" + "0" * 24


def write_csv(path: Path, megabytes: float) -> int:
    """A customers CSV of about ``megabytes`` MB; returns its rows."""
    rng = random.Random(SEED)
    target = int(megabytes * 1_000_000)
    cities = ["London", "Oslo", "Lyon", "Austin", "Osaka", "Lima", "Accra", "Perth"]
    rows = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("external_id,name,email,phone,city,country\n")
        while out.tell() < target:
            rows += 1
            first = rng.choice(["Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken"])
            last = rng.choice(["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov"])
            out.write(f"B-{rows:08d},{first} {last} {rows},{first.lower()}.{last.lower()}"
                      f".{rows}@example.org,+1 202 555 {rows % 10_000:04d},"
                      f"{rng.choice(cities)},GB\n")
    return rows


class _CopyAEAD:
    """AES-GCM's interface without the cryptography: the "clear" side."""

    def __init__(self, key: bytes):
        pass

    @staticmethod
    def generate_key(bit_length: int) -> bytes:
        return os.urandom(bit_length // 8)

    def encrypt(self, nonce: bytes, data: bytes, associated: bytes | None) -> bytes:
        return bytes(data) + bytes(16)

    def decrypt(self, nonce: bytes, data: bytes, associated: bytes | None) -> bytes:
        return data[:-16]


@contextmanager
def clear_files(clear: bool) -> Iterator[None]:
    from core import files

    real = files.AESGCM
    if clear:
        files.AESGCM = _CopyAEAD  # type: ignore[assignment,misc]
    try:
        yield
    finally:
        files.AESGCM = real  # type: ignore[misc]


def measure(csv_path: Path, rows: int, where: str, clear: bool, run_import: bool
            ) -> tuple[float, float, float | None]:
    """Seconds to upload ``csv_path``, to open it as a job does (a clear copy in a
    temporary folder) and to run its import job (a fresh database)."""
    from core import files, jobs
    from core.auth import create_api_key
    from core.db import db
    from core.job_tables import Job, JobStatus
    from core.services import transaction

    label = f"{where.replace(' ', '_')}_{'clear' if clear else 'sealed'}"
    with common.fresh_database(f"{NAME}_{label}") as url, \
            tempfile.TemporaryDirectory(prefix="rapport-bench-files-") as shared, \
            clear_files(clear):
        config: dict[str, Any] = {"RAPPORT_ENCRYPTION_KEYS": BENCH_ENCRYPTION_KEY,
                                  "RAPPORT_BLIND_INDEX_KEY": BENCH_BLIND_INDEX_KEY,
                                  "RAPPORT_RATE_LIMIT": "unlimited"}
        if where == "shared folder":
            config["RAPPORT_FILES_DIR"] = shared
        app = common.make_app(url, **config)
        try:
            with app.app_context():
                _, token = create_api_key("bench", ("admin",))
            size = csv_path.stat().st_size
            start = time.perf_counter()
            with csv_path.open("rb") as body:  # read by the route as a stream
                answer = app.test_client().post(
                    "/files?kind=core.import_customers&name=customers.csv",
                    input_stream=body, headers={"Authorization": f"Bearer {token}",
                                                "Content-Type": "text/csv",
                                                "Content-Length": str(size)})
            upload_s = time.perf_counter() - start
            assert answer.status_code == 201, answer.get_json()
            with app.app_context():
                start = time.perf_counter()
                with files.local_path(files.find(answer.get_json()["id"])) as clear_copy:
                    assert clear_copy.stat().st_size == size
                open_s = time.perf_counter() - start
                if not run_import:
                    return upload_s, open_s, None
                with transaction():
                    job_id = jobs.create_job("core.import_customers",
                                             {"file": answer.get_json()["id"]}).id
                start = time.perf_counter()
                jobs.run_job(job_id)
                import_s = time.perf_counter() - start
                job = db.session.get(Job, job_id)
                assert job is not None and job.status is JobStatus.SUCCEEDED, (
                    job and (job.error_code, job.error_message))
                assert job.result["imported"] == rows, job.result
        finally:
            common.dispose(app)
    return upload_s, open_s, import_s


def aead_alone(csv_path: Path) -> tuple[float, float]:
    """Seconds to seal and to open the file's bytes in memory, frame by frame."""
    import io

    from core import files

    key = os.urandom(32)
    data = csv_path.read_bytes()
    out = io.BytesIO()
    start = time.perf_counter()
    sealer = files.Sealer(key, out)
    for i in range(0, len(data), 1 << 20):
        sealer.write(data[i:i + (1 << 20)])
    sealer.close()
    seal_s = time.perf_counter() - start
    start = time.perf_counter()
    opened = sum(len(f) for f in files.open_frames(key, io.BytesIO(out.getvalue())))
    open_s = time.perf_counter() - start
    assert opened == len(data)
    return seal_s, open_s


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_job_files")
    parser.add_argument("--mb", type=float, default=MB)
    parser.add_argument("--where", choices=["table", "shared folder", "both"],
                        default="both")
    parser.add_argument("--repeat", type=int, default=1,
                        help="Runs per side (a fresh database each); medians are shown.")
    parser.add_argument("--no-import", action="store_true",
                        help="Upload and open only (the import dominates, and is long).")
    options = parser.parse_args(argv)
    print(__doc__.strip().splitlines()[0])
    with tempfile.TemporaryDirectory(prefix="rapport-bench-csv-") as tmp:
        csv_path = Path(tmp) / "customers.csv"
        rows = write_csv(csv_path, options.mb)
        megabytes = csv_path.stat().st_size / 1e6
        print(f"{megabytes:.1f} MB, {rows:,} customers; PostgreSQL "
              f"{common.postgres_version()}\n")
        seal_s, open_s = aead_alone(csv_path)
        print(f"AES-GCM alone, 1 MiB frames: seal {megabytes / seal_s:.0f} MB/s, "
              f"open {megabytes / open_s:.0f} MB/s\n")
        places = ["table", "shared folder"] if options.where == "both" else [options.where]
        table = []
        for where in places:
            samples: dict[bool, list[tuple[float, float, float | None]]] = {
                True: [], False: []}
            for _ in range(options.repeat):  # interleaved: drift hits both sides alike
                for clear in (True, False):
                    samples[clear].append(measure(csv_path, rows, where, clear,
                                                  not options.no_import))
            for clear in (True, False):
                upload_s = statistics.median(s[0] for s in samples[clear])
                open_s = statistics.median(s[1] for s in samples[clear])
                runs = [s[2] for s in samples[clear] if s[2] is not None]
                import_s = statistics.median(runs) if runs else None
                table.append([where, "clear" if clear else "encrypted", upload_s,
                              megabytes / upload_s, open_s, megabytes / open_s,
                              "-" if import_s is None else import_s,
                              "-" if import_s is None else rows / import_s])
        print(f"medians of {options.repeat} run(s) per side")
        common.print_table(["files in", "files", "upload s", "upload MB/s", "open s",
                            "open MB/s", "import job s", "rows/s"], table)


if __name__ == "__main__":
    main()
