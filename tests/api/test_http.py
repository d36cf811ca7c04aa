"""HTTP details around the endpoint: CORS, GET, plugin routes protected by scopes."""

from __future__ import annotations

from flask import Blueprint, jsonify

from core import hookimpl
from core.auth import require_scope
from tests.conftest import AppFactory, admin_token


def test_cors_allows_only_listed_origins(make_app: AppFactory) -> None:
    app = make_app(RAPPORT_CORS_ORIGINS="https://app.example.com")
    client = app.test_client()
    allowed = client.options("/graphql", headers={"Origin": "https://app.example.com"})
    assert allowed.status_code == 200  # Flask answers the preflight itself
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "Authorization" in allowed.headers["Access-Control-Allow-Headers"]
    other = client.options("/graphql", headers={"Origin": "https://evil.example.com"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_get_without_graphiql_explains_how_to_query(make_app: AppFactory) -> None:
    response = make_app().test_client().get("/graphql")
    assert response.status_code == 405
    assert "POST" in response.get_json()["errors"][0]["message"]


class ReportPage:
    __name__ = "report_page"

    @hookimpl
    def rapport_register_scopes(self) -> list[tuple[str, str]]:
        return [("reports:read", "Read reports")]

    @hookimpl
    def rapport_register_routes(self) -> list[Blueprint]:
        blueprint = Blueprint("report_page", __name__)

        @blueprint.route("/reports/demo")
        @require_scope("reports:read")
        def demo() -> object:
            return jsonify(ok=True)

        return [blueprint]


def test_plugin_routes_are_protected_by_scope(make_app: AppFactory) -> None:
    app = make_app(plugins=(ReportPage(),))
    client = app.test_client()
    assert client.get("/reports/demo").status_code == 401
    wrong = admin_token(app, ("customers:read",))
    denied = client.get("/reports/demo", headers={"Authorization": f"Bearer {wrong}"})
    assert denied.status_code == 403
    assert denied.get_json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    right = admin_token(app, ("reports:read",))
    ok = client.get("/reports/demo", headers={"Authorization": f"Bearer {right}"})
    assert ok.status_code == 200 and ok.get_json() == {"ok": True}
