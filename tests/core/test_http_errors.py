"""Every non-GraphQL route answers errors in one JSON shape (CONTRACTS "One face")."""

from __future__ import annotations

import pytest
from flask import Blueprint, Flask

from core.hookspecs import hookimpl
from tests.conftest import AppFactory

pytestmark = pytest.mark.sqlite_only

failing = Blueprint("failing_probe", __name__)


@failing.route("/probe/crash")
def crash() -> str:
    raise RuntimeError("secret detail that must not leak")


class FailingRoutes:
    @hookimpl
    def rapport_register_routes(self) -> list[Blueprint]:
        return [failing]


def _error(response: object) -> dict[str, object]:
    body = response.get_json()  # type: ignore[attr-defined]
    assert response.content_type == "application/json"  # type: ignore[attr-defined]
    assert list(body) == ["errors"] and len(body["errors"]) == 1
    return body["errors"][0]  # type: ignore[no-any-return]


def test_an_unknown_route_is_a_json_404(app: Flask) -> None:
    response = app.test_client().get("/no/such/page")
    assert response.status_code == 404
    assert _error(response)["extensions"] == {"code": "NOT_FOUND"}


def test_a_wrong_method_is_a_json_405_with_allow(app: Flask) -> None:
    response = app.test_client().delete("/graphql")
    assert response.status_code == 405
    assert _error(response)["extensions"] == {"code": "METHOD_NOT_ALLOWED"}
    assert "POST" in response.headers["Allow"]


def test_a_crash_is_a_json_500_without_detail(make_app: AppFactory) -> None:
    app = make_app(plugins=(FailingRoutes(),))
    response = app.test_client().get("/probe/crash")
    assert response.status_code == 500
    error = _error(response)
    assert error == {"message": "Internal server error.",
                     "extensions": {"code": "INTERNAL_SERVER_ERROR"}}
    assert b"secret detail" not in response.data
