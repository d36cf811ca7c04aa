"""Jobs without a broker: started through GraphQL, run on the server's threads.

The flows an app follows (upload, startJob, job(id) until it finishes, download the
produced file), cancelling, parameter validation and scopes. The same flows on a real
broker and worker process: tests/core/test_jobs_broker.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from marshmallow import Schema, fields
from sqlalchemy import func, select, update

from core import hookimpl, jobs
from core.db import db
from core.errors import UserError
from core.job_tables import Job, JobStatus
from core.jobs import JobKind, Progress
from core.models import Customer
from core.services.customers import create_customer
from tests.conftest import AppFactory, GraphQL, admin_token

START = """mutation($kind: String!, $parameters: GenericScalar) {
  startJob(input: {kind: $kind, parameters: $parameters}) {
    job { id kind status progress parameters actor }
    errors { field message code }
  }
}"""

JOB = """query($id: ID!) {
  job(id: $id) {
    id kind status progress message result attempts
    files { name size url expiresAt contentType }
    error { code message }
    actor createdAt startedAt finishedAt
  }
}"""

CANCEL = """mutation($id: ID!) {
  cancelJob(input: {id: $id}) { job { id status } errors { field code message } }
}"""

CSV = ("external_id,name,email,country\n"
       "c-1,Ada Lovelace,ada@example.com,GB\n"
       "c-2,Grace Hopper,grace@example.com,US\n"
       "c-3,Bad Row,not-an-email,US\n")

#: Released by a test to let ``testing.wait`` jobs end.
RELEASE = threading.Event()


class WaitParameters(Schema):
    seconds = fields.Float(load_default=15.0)


def wait(parameters: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Report progress every 20 ms until released or cancelled (bounded)."""
    deadline = time.monotonic() + parameters["seconds"]
    step = 0
    while not RELEASE.is_set() and time.monotonic() < deadline:
        step += 1
        progress(min(step / 1000, 0.99), f"step {step}")
        time.sleep(0.02)
    return {"steps": step}


def fail(parameters: dict[str, Any], progress: Progress) -> None:
    progress(0.5, "half way")
    raise UserError.single("The data is not there yet.", "NOT_READY", "since")


def crash(parameters: dict[str, Any], progress: Progress) -> None:
    raise RuntimeError("secret connection string")


def hold(parameters: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Report progress while the job's own transaction holds a write (a scoring chunk's
    staging rows): how long the reports took."""
    db.session.execute(update(Customer).values(name=Customer.name + "!"))
    began = time.monotonic()
    progress(0.5, "holding")
    progress(1.0, "still holding")
    return {"reporting": time.monotonic() - began}


class NoParameters(Schema):
    pass


class Testing:
    """Job kinds of a throwaway plugin (domain: customers)."""

    name = "testing"

    @hookimpl
    def rapport_job_kinds(self) -> list[JobKind]:
        return [JobKind("testing.wait", WaitParameters, "customers", wait, "Waits."),
                JobKind("testing.fail", NoParameters, "customers", fail, "Fails."),
                JobKind("testing.crash", NoParameters, "customers", crash, "Crashes."),
                JobKind("testing.hold", NoParameters, "customers", hold, "Holds a write.")]


@pytest.fixture
def job_app(make_app: AppFactory) -> Iterator[Flask]:
    RELEASE.clear()
    app = make_app(enabled=["loyalty", "complaints"], plugins=(Testing(),),
                   RAPPORT_JOB_THREADS=1, RAPPORT_JOB_HEARTBEAT_SECONDS=0.2,
                   RAPPORT_RATE_LIMIT="unlimited")  # the tests poll job(id) quickly
    with app.app_context():
        yield app
    RELEASE.set()
    jobs.wait_for_threads(app)


@pytest.fixture
def admin(job_app: Flask) -> GraphQL:
    return GraphQL(job_app, admin_token(job_app))


def finished(gql: GraphQL, job_id: str, timeout: float = 30.0,
             statuses: tuple[str, ...] = ("SUCCEEDED", "FAILED", "CANCELLED")
             ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = gql(JOB, {"id": job_id})["job"]
        if job["status"] in statuses:
            return job  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"job still {job['status']}: {job}"
        time.sleep(0.05)


def upload(app: Flask, token: str, body: bytes, kind: str = "core.import_customers",
           name: str = "customers.csv") -> Any:
    return app.test_client().post(f"/files?kind={kind}&name={name}", data=body,
                                  headers={"Authorization": f"Bearer {token}",
                                           "Content-Type": "text/csv"})


def test_an_import_started_through_graphql_reports_progress_and_its_result(
        job_app: Flask, admin: GraphQL) -> None:
    token = admin_token(job_app, ("customers:write", "customers:read", "jobs:read",
                                  "jobs:write"))
    clerk = GraphQL(job_app, token)
    uploaded = upload(job_app, token, CSV.encode())
    assert uploaded.status_code == 201, uploaded.get_json()
    file_id = uploaded.get_json()["id"]

    started = clerk(START, {"kind": "core.import_customers",
                            "parameters": {"file": file_id, "batchSize": 2}})["startJob"]
    assert started["errors"] == []
    assert started["job"]["status"] in ("QUEUED", "RUNNING", "SUCCEEDED")
    assert started["job"]["parameters"]["batchSize"] == 2
    job = finished(clerk, started["job"]["id"])

    assert job["status"] == "SUCCEEDED", job
    assert job["progress"] == 1.0 and job["attempts"] == 1 and job["error"] is None
    assert job["result"]["imported"] == 2 and job["result"]["rejected"] == 1
    assert job["actor"]["via"] == "job" and job["actor"]["apiKeyPrefix"] == token.split("_")[1]
    assert job["startedAt"] <= job["finishedAt"]
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 2
    (rejects,) = job["files"]
    assert rejects["name"] == "customers.rejects.csv"
    assert job["result"]["files"][0]["name"] == rejects["name"]  # links signed at read time
    download = job_app.test_client().get(rejects["url"])  # the link is the credential
    assert download.status_code == 200
    assert 'filename="customers.rejects.csv"' in download.headers["Content-Disposition"]
    lines = download.get_data(as_text=True).splitlines()
    assert lines[0] == "line,field,code,message" and lines[1].startswith("4,email,")


def test_a_running_job_is_cancelled_at_its_next_progress_report(admin: GraphQL) -> None:
    started = admin(START, {"kind": "testing.wait"})["startJob"]["job"]
    running = finished(admin, started["id"], statuses=("RUNNING",))
    assert running["startedAt"] is not None
    deadline = time.monotonic() + 10
    while admin(JOB, {"id": started["id"]})["job"]["progress"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)

    cancelled = admin(CANCEL, {"id": started["id"]})["cancelJob"]
    assert cancelled["errors"] == []
    job = finished(admin, started["id"])
    assert job["status"] == "CANCELLED" and 0 < job["progress"] < 1
    assert job["message"] == "Cancelled while running." and job["result"] is None

    again = admin(CANCEL, {"id": started["id"]})["cancelJob"]
    assert again["errors"] == [{"field": "input.id", "code": "ALREADY_FINISHED",
                                "message": "The job already finished (CANCELLED)."}]


def test_a_queued_job_is_cancelled_before_it_starts(admin: GraphQL) -> None:
    # One thread: the first job holds it, the second waits in the queue.
    first = admin(START, {"kind": "testing.wait"})["startJob"]["job"]
    finished(admin, first["id"], statuses=("RUNNING",))
    second = admin(START, {"kind": "testing.wait"})["startJob"]["job"]
    assert admin(JOB, {"id": second["id"]})["job"]["status"] == "QUEUED"
    assert admin(CANCEL, {"id": second["id"]})["cancelJob"]["job"]["status"] == "CANCELLED"
    RELEASE.set()
    assert finished(admin, first["id"])["status"] == "SUCCEEDED"
    job = finished(admin, second["id"])
    assert job["status"] == "CANCELLED" and job["startedAt"] is None and job["attempts"] == 0


def test_progress_does_not_wait_for_the_jobs_own_write(job_app: Flask, admin: GraphQL
                                                      ) -> None:
    """On SQLite the job's open write holds the file's lock: a report gives up at once
    (it waited the driver's 5 s, twice per scoring chunk) and the next one makes it good;
    the pooled connection gets its own lock wait back. PostgreSQL: a different row."""
    create_customer({"name": "Ada"})
    job = finished(admin, admin(START, {"kind": "testing.hold"})["startJob"]["job"]["id"])
    assert job["status"] == "SUCCEEDED" and job["progress"] == 1.0
    assert job["result"]["reporting"] < 2.5, job["result"]  # 10 s when they waited
    assert db.session.scalar(select(Customer.name)) == "Ada"  # not committed for it
    with db.engine.connect() as conn:
        raw = conn.connection.driver_connection
        if db.engine.dialect.name == "sqlite":
            before = raw.execute("PRAGMA busy_timeout").fetchone()[0]
            with jobs._brief_sqlite_lock_wait(conn.connection):
                assert raw.execute("PRAGMA busy_timeout").fetchone()[0] == 100
            assert raw.execute("PRAGMA busy_timeout").fetchone()[0] == before == 5000


def test_failures_carry_a_code_and_a_message_without_internal_detail(admin: GraphQL) -> None:
    failed = finished(admin, admin(START, {"kind": "testing.fail"})["startJob"]["job"]["id"])
    assert failed["status"] == "FAILED" and failed["progress"] == 0.5
    assert failed["error"] == {"code": "NOT_READY",
                               "message": "since: The data is not there yet."}
    crashed = finished(admin, admin(START, {"kind": "testing.crash"})["startJob"]["job"]["id"])
    assert crashed["status"] == "FAILED" and crashed["error"]["code"] == "INTERNAL_ERROR"
    assert "RuntimeError" in crashed["error"]["message"]
    assert "secret" not in crashed["error"]["message"]


@pytest.mark.parametrize(("kind", "parameters", "expected"), [
    ("core.import_customers", {"file": "RmlsZTox", "batchSize": 0},
     [("input.parameters.batchSize", "INVALID")]),
    ("core.import_customers", {}, [("input.parameters.file", "INVALID")]),
    ("core.import_customers", {"file": "RmlsZTo5OTk="}, [("input.parameters.file",
                                                         "NOT_FOUND")]),
    ("core.import_customers", {"file": "x", "colour": "red"},
     [("input.parameters.colour", "UNKNOWN_FIELD")]),
    ("loyalty.expire", {"asOf": "yesterday"}, [("input.parameters.asOf", "INVALID")]),
    ("loyalty.expire", [1, 2], [("input.parameters", "INVALID")]),
    ("nope.nothing", {}, [("input.kind", "UNKNOWN_KIND")]),
])
def test_parameters_are_validated_by_the_kinds_schema(
        admin: GraphQL, kind: str, parameters: Any, expected: list[tuple[str, str]]) -> None:
    payload = admin(START, {"kind": kind, "parameters": parameters})["startJob"]
    assert payload["job"] is None
    assert [(e["field"], e["code"]) for e in payload["errors"]] == expected
    assert db.session.scalar(
        select(func.count()).select_from(Job).where(Job.kind == kind)) == 0


def test_a_server_side_path_is_for_administrators_only(job_app: Flask, admin: GraphQL,
                                                        tmp_path: Any) -> None:
    source = tmp_path / "customers.csv"
    source.write_text(CSV)
    clerk = GraphQL(job_app, admin_token(job_app, ("customers:write", "jobs:write",
                                                   "jobs:read", "customers:read")))
    refused = clerk(START, {"kind": "core.import_customers",
                            "parameters": {"path": str(source)}})["startJob"]
    assert [(e["field"], e["code"]) for e in refused["errors"]] == [
        ("input.parameters.path", "NOT_ALLOWED")]
    started = admin(START, {"kind": "core.import_customers",
                            "parameters": {"path": str(source)}})["startJob"]["job"]
    assert finished(admin, started["id"])["result"]["imported"] == 2


def test_scopes_of_jobs_and_of_the_kinds_domain(job_app: Flask, admin: GraphQL) -> None:
    jobs_only = GraphQL(job_app, admin_token(job_app, ("jobs:write", "jobs:read")))
    response = jobs_only.raw(START, {"kind": "loyalty.tiers"})
    assert response.get_json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert "loyalty:write" in response.get_json()["errors"][0]["message"]
    assert db.session.scalar(select(func.count()).select_from(Job).where(
        Job.kind == "loyalty.tiers")) == 0

    no_jobs = GraphQL(job_app, admin_token(job_app, ("loyalty:write", "loyalty:read")))
    assert no_jobs.raw(START, {"kind": "loyalty.tiers"}).status_code == 403
    assert no_jobs.raw("{ jobs { totalCount } }").status_code == 403

    loyalty_job = finished(admin, admin(START, {"kind": "loyalty.tiers"})[
        "startJob"]["job"]["id"])
    assert loyalty_job["status"] == "SUCCEEDED" and loyalty_job["result"] == {"moved": 0}
    complaints_reader = GraphQL(job_app, admin_token(job_app, ("jobs:read",
                                                               "complaints:read")))
    # A key sees only jobs of the domains it can read, by list, by id and by node.
    assert complaints_reader("{ jobs { totalCount } }")["jobs"]["totalCount"] == 0
    assert complaints_reader(JOB, {"id": loyalty_job["id"]})["job"] is None
    loyalty_reader = GraphQL(job_app, admin_token(job_app, ("jobs:read", "loyalty:read")))
    listed = loyalty_reader('{ jobs(filter: {kind: ["loyalty.tiers"], status: [SUCCEEDED]}) '
                            '{ totalCount edges { node { id kind } } } }')["jobs"]
    assert listed["totalCount"] == 1 and listed["edges"][0]["node"]["id"] == loyalty_job["id"]

    reader_upload = upload(job_app, admin_token(job_app, ("customers:read",)), b"x")
    assert reader_upload.status_code == 403
    unknown_kind = upload(job_app, admin_token(job_app, ("admin",)), b"x", kind="nope")
    assert unknown_kind.status_code == 400


def test_uploads_are_limited(make_app: AppFactory) -> None:
    app = make_app(RAPPORT_MAX_UPLOAD_BYTES=10)
    token = admin_token(app)
    assert upload(app, token, b"0123456789").status_code == 201
    too_big = upload(app, token, b"0123456789A")
    assert too_big.status_code == 413
    assert too_big.get_json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    # The GraphQL body limit is /graphql's own: an upload may be far larger.
    roomy = make_app()
    big = upload(roomy, admin_token(roomy), b"x" * (3 << 20))
    assert big.status_code == 201 and big.get_json()["size"] == 3 << 20


def test_download_links_expire_and_cannot_be_forged(make_app: AppFactory,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from itsdangerous.timed import TimestampSigner

    from core import files
    from core.services import transaction

    app = make_app(RAPPORT_SIGNED_LINK_TTL=1)
    with app.app_context():
        with transaction():
            row = files.store_stream("rapport d'été.html", "text/html", [b"<p>hi</p>"])
        url = files.link(row)["url"]
    client = app.test_client()
    opened = client.get(url)
    assert opened.get_data() == b"<p>hi</p>" and opened.mimetype == "text/html"
    assert opened.headers["Content-Disposition"] == (
        "attachment; filename=\"rapport d'_t_.html\"; "
        "filename*=UTF-8''rapport%20d%27%C3%A9t%C3%A9.html")
    forged = client.get(url[:-3] + ("aaa" if not url.endswith("aaa") else "bbb"))
    assert forged.status_code == 404
    # Two seconds later (the lifetime is counted in whole seconds), without waiting them.
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: int(time.time()) + 2)
    expired = client.get(url)
    assert expired.status_code == 410
    assert expired.get_json()["errors"][0]["extensions"]["code"] == "LINK_EXPIRED"


def test_the_job_kinds_are_listed(admin: GraphQL) -> None:
    kinds = {k["kind"]: k["domain"] for k in admin("{ jobKinds { kind domain } }")["jobKinds"]}
    assert kinds["core.import_customers"] == "customers"
    assert kinds["core.import_interactions"] == "interactions"
    assert kinds["loyalty.expire"] == kinds["loyalty.tiers"] == "loyalty"
    assert kinds["complaints.escalate"] == kinds["complaints.detect"] == "complaints"
    assert "churn.fit" not in kinds  # churn is not enabled in this app


def test_the_worker_command_needs_a_broker(job_app: Flask) -> None:
    from core.cli import cli

    result = job_app.test_cli_runner().invoke(cli, ["worker"])
    assert result.exit_code == 1 and "RAPPORT_BROKER_URL is not set" in result.output


def test_jobs_no_runner_holds_are_taken_up_again(job_app: Flask) -> None:
    """Without a broker nothing redelivers: a server stopped with a queued job, or killed
    while running one, leaves rows that ``recover_orphans`` (the scheduler) runs again."""
    import datetime as dt

    from core.db import utcnow
    from core.services import transaction

    long_ago = utcnow() - dt.timedelta(minutes=10)
    with transaction():
        queued = Job(kind="testing.wait", parameters={"seconds": 0.1}, actor={},
                     status=JobStatus.QUEUED, created_at=long_ago)
        dead = Job(kind="testing.wait", parameters={"seconds": 0.1}, actor={},
                   status=JobStatus.RUNNING, attempts=1, worker="gone:1:thread",
                   heartbeat_at=long_ago, started_at=long_ago, created_at=long_ago)
        fresh = Job(kind="testing.wait", parameters={"seconds": 0.1}, actor={},
                    status=JobStatus.QUEUED)
        db.session.add_all([queued, dead, fresh])
    assert jobs.recover_orphans() == [queued.id, dead.id]
    jobs.wait_for_threads(job_app)
    db.session.expire_all()
    assert (queued.status, queued.attempts) == (JobStatus.SUCCEEDED, 1)
    assert (dead.status, dead.attempts) == (JobStatus.SUCCEEDED, 2)
    assert fresh.status is JobStatus.QUEUED  # its runner may still be about to take it


def test_files_live_in_the_shared_folder_when_one_is_configured(make_app: AppFactory,
                                                                tmp_path: Any) -> None:
    from core import files
    from core.job_tables import StoredFile

    shared = tmp_path / "shared"
    app = make_app(RAPPORT_FILES_DIR=str(shared), RAPPORT_JOB_THREADS=1,
                   RAPPORT_RATE_LIMIT="unlimited")
    with app.app_context():
        admin = GraphQL(app, admin_token(app))
        file_id = upload(app, admin.token or "", CSV.encode()).get_json()["id"]
        job = finished(admin, admin(START, {"kind": "core.import_customers",
                                            "parameters": {"file": file_id}})[
            "startJob"]["job"]["id"])
        assert job["status"] == "SUCCEEDED" and job["result"]["rejected"] == 1, job["error"]
        db.session.remove()
        stored = db.session.scalars(select(StoredFile).order_by(StoredFile.id)).all()
        assert [f.name for f in stored] == ["customers.csv", "customers.rejects.csv"]
        assert all(f.content is None and (shared / f.path).is_file() for f in stored)
        # Sealed on the shared disk (core.files), clear to the job that reads it.
        assert (shared / stored[0].path).read_bytes()[:4] == b"RPF1"
        assert b"".join(files.read_chunks(stored[0])) == CSV.encode()
        rejects = app.test_client().get(job["files"][0]["url"]).get_data(as_text=True)
        assert rejects.startswith("line,field,code,message")
        jobs.wait_for_threads(app)


def test_an_uploaded_file_is_for_the_key_that_uploaded_it(job_app: Flask) -> None:
    scopes = ("customers:write", "jobs:write", "jobs:read", "customers:read")
    owner, other = (admin_token(job_app, scopes) for _ in range(2))
    file_id = upload(job_app, owner, CSV.encode()).get_json()["id"]
    refused = GraphQL(job_app, other)(START, {"kind": "core.import_customers",
                                              "parameters": {"file": file_id}})["startJob"]
    assert [(e["field"], e["code"]) for e in refused["errors"]] == [
        ("input.parameters.file", "NOT_FOUND")]
    mine = GraphQL(job_app, owner)(START, {"kind": "core.import_customers",
                                           "parameters": {"file": file_id}})["startJob"]
    assert mine["errors"] == []
