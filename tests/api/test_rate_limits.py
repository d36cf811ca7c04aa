"""Rate limits per API key: 429 RATE_LIMITED with Retry-After once a key's budget is spent.

Redis storage is tested against RAPPORT_TEST_REDIS_URL (or a redis:// RAPPORT_TEST_BROKER_URL);
without one those tests skip, unless RAPPORT_REQUIRE_BROKER=1 (CI), where they fail.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from flask import Flask

from core.config import ConfigError, load_settings
from core.errors import UserError
from core.ratelimit import UNLIMITED, parse_rate_limit, set_key_rate_limit
from tests.conftest import AppFactory, admin_token

QUERY = "{ plugins { name } }"


def _redis_url() -> str | None:
    url = os.environ.get("RAPPORT_TEST_REDIS_URL") or os.environ.get(
        "RAPPORT_TEST_BROKER_URL", "")
    return url if url.startswith("redis://") else None


def _post(app: Flask, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return app.test_client().post("/graphql", json={"query": QUERY}, headers=headers)


def _statuses(app: Flask, token: str | None, count: int) -> list[int]:
    return [_post(app, token).status_code for _ in range(count)]


def _prefix(token: str) -> str:
    return token.split("_")[1]


def _assert_limited(response: Any, limit: str) -> None:
    assert response.status_code == 429
    body = response.get_json()
    assert body["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert limit in body["errors"][0]["message"]
    assert 0 < int(response.headers["Retry-After"]) <= 60


def test_the_default_limit_trips_at_n_plus_one(make_app: AppFactory) -> None:
    app = make_app(RAPPORT_RATE_LIMIT="3/minute")
    token = admin_token(app)
    allowed = [_post(app, token) for _ in range(3)]
    assert [r.status_code for r in allowed] == [200, 200, 200]
    assert [r.headers["X-RateLimit-Remaining"] for r in allowed] == ["2", "1", "0"]
    assert all("Retry-After" not in r.headers for r in allowed)
    _assert_limited(_post(app, token), "3 per 1 minute")
    # another key has its own budget
    assert _statuses(app, admin_token(app), 3) == [200, 200, 200]


def test_a_key_of_its_own_limit_and_an_exempt_key(make_app: AppFactory) -> None:
    app = make_app(RAPPORT_RATE_LIMIT="2/minute")
    generous, exempt, plain = admin_token(app), admin_token(app), admin_token(app)
    with app.app_context():
        assert set_key_rate_limit(_prefix(generous), "5/minute").rate_limit == "5/minute"
        assert set_key_rate_limit(_prefix(exempt), "Unlimited").rate_limit == UNLIMITED
    assert _statuses(app, generous, 5) == [200] * 5
    _assert_limited(_post(app, generous), "5 per 1 minute")
    assert _statuses(app, exempt, 30) == [200] * 30
    assert _statuses(app, plain, 3) == [200, 200, 429]
    with app.app_context():  # back to the default (after the key cache's lifetime)
        assert set_key_rate_limit(_prefix(generous), None).rate_limit is None


def test_bad_rate_limits_are_refused(make_app: AppFactory) -> None:
    app = make_app()
    token = admin_token(app)
    with app.app_context():
        for bad in ["often", "5/fortnight", "-1/minute", "1/minute;" * 20]:
            with pytest.raises(UserError):
                set_key_rate_limit(_prefix(token), bad)
        with pytest.raises(UserError):
            set_key_rate_limit("nosuchkey", "5/minute")
    assert parse_rate_limit(" 10/second;1000/minute ") == "10/second;1000/minute"
    assert parse_rate_limit("") is None
    with pytest.raises(ConfigError):
        load_settings({"RAPPORT_ENV": "test", "RAPPORT_RATE_LIMIT": "lots"})
    assert load_settings({"RAPPORT_ENV": "test"}).rate_limit == "600/minute"


def test_a_forged_key_spends_the_callers_address_budget_not_the_keys(
        make_app: AppFactory) -> None:
    app = make_app(RAPPORT_RATE_LIMIT="2/minute")
    token = admin_token(app)
    forged = f"rpk_{_prefix(token)}_not-the-secret"
    assert _statuses(app, forged, 3) == [401, 401, 429]
    assert _statuses(app, None, 1) == [429]  # same address, no key: the same budget
    assert _statuses(app, token, 2) == [200, 200]


def test_a_globally_unlimited_setting_limits_nobody(make_app: AppFactory) -> None:
    app = make_app(RAPPORT_RATE_LIMIT="unlimited")
    token = admin_token(app)
    assert _statuses(app, token, 20) == [200] * 20
    assert _statuses(app, None, 5) == [401] * 5


def test_report_routes_share_the_keys_budget(make_app: AppFactory) -> None:
    app = make_app(enabled=["surveys"], RAPPORT_RATE_LIMIT="2/minute")
    token = admin_token(app)
    assert _statuses(app, token, 2) == [200, 200]
    report = app.test_client().get("/reports/surveys/1.html",
                                   headers={"Authorization": f"Bearer {token}"})
    _assert_limited(report, "2 per 1 minute")


def test_memory_storage_counts_per_process(make_app: AppFactory) -> None:
    first = make_app(RAPPORT_RATE_LIMIT="2/minute")
    second = make_app(RAPPORT_RATE_LIMIT="2/minute")
    token = admin_token(first)  # both apps share the database, not the counters
    assert _statuses(first, token, 2) + _statuses(second, token, 2) == [200] * 4


def test_redis_storage_shares_the_budget_between_processes(make_app: AppFactory) -> None:
    url = _redis_url()
    if url is None:
        if os.environ.get("RAPPORT_REQUIRE_BROKER") == "1":
            pytest.fail("RAPPORT_REQUIRE_BROKER=1 but no redis:// RAPPORT_TEST_REDIS_URL or "
                        "RAPPORT_TEST_BROKER_URL")
        pytest.skip("no Redis: set RAPPORT_TEST_REDIS_URL=redis://127.0.0.1:6379/0")
    config = {"RAPPORT_RATE_LIMIT": "3/minute", "RAPPORT_RATE_LIMIT_STORAGE": url}
    first, second = make_app(**config), make_app(**config)
    token = admin_token(first)  # a new key: a new bucket in Redis, whatever ran before
    assert _statuses(first, token, 2) == [200, 200]
    assert _statuses(second, token, 1) == [200]
    _assert_limited(_post(first, token), "3 per 1 minute")
    _assert_limited(_post(second, token), "3 per 1 minute")


def test_the_cli_creates_limited_and_exempt_keys(make_app: AppFactory) -> None:
    from core.cli import cli
    from core.models import AuditEntry, ApiKey

    app = make_app(RAPPORT_RATE_LIMIT="1/minute")
    runner = app.test_cli_runner()
    created = runner.invoke(cli, ["apikey", "create", "--service", "bench", "--scopes", "admin",
                                  "--rate-limit", "unlimited"])
    assert created.exit_code == 0, created.output
    exempt = created.output.strip().splitlines()[-1]
    assert _statuses(app, exempt, 5) == [200] * 5
    bad = runner.invoke(cli, ["apikey", "create", "--service", "x", "--scopes", "admin",
                              "--rate-limit", "many"])
    assert bad.exit_code == 1 and "Rate limit 'many'" in bad.output
    with app.app_context():
        assert ApiKey.query.count() == 1  # the refused key was not created
    changed = runner.invoke(cli, ["apikey", "limit", _prefix(exempt), "3/hour"])
    assert changed.exit_code == 0 and "3/hour" in changed.output, changed.output
    listed = runner.invoke(cli, ["apikey", "list"])
    assert "rate limit 3/hour" in listed.output
    with app.app_context():
        entry = AuditEntry.query.filter_by(operation="apikey.limit").one()
        assert entry.changes["rateLimit"] == ["unlimited", "3/hour"]
    back = runner.invoke(cli, ["apikey", "limit", _prefix(exempt), "default"])
    assert back.exit_code == 0 and "default" in back.output


def test_browser_apps_may_read_the_rate_limit_headers(make_app: AppFactory) -> None:
    app = make_app(RAPPORT_RATE_LIMIT="1/minute", RAPPORT_CORS_ORIGINS="https://app.example.com")
    token = admin_token(app)
    headers = {"Authorization": f"Bearer {token}", "Origin": "https://app.example.com"}
    client = app.test_client()
    client.post("/graphql", json={"query": QUERY}, headers=headers)
    refused = client.post("/graphql", json={"query": QUERY}, headers=headers)
    assert refused.status_code == 429
    assert refused.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    exposed = refused.headers["Access-Control-Expose-Headers"].split(", ")
    assert {"Retry-After", "X-RateLimit-Remaining"} <= set(exposed)
