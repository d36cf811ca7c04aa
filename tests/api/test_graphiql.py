"""GraphiQL works without internet: assets come from this server, a browser runs a query.

The browser test drives Debian's Chromium through Playwright (its own browser download is
not used) with every request to another host aborted and recorded.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from flask import Flask

from api import graphiql
from tests.browser import chromium_page, live_server
from tests.conftest import AppFactory

# The page and its assets do not depend on the database.
pytestmark = pytest.mark.sqlite_only


def _html(app: Flask) -> str:
    response = app.test_client().get("/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_the_page_loads_nothing_from_other_hosts(make_app: AppFactory) -> None:
    html = _html(make_app(RAPPORT_ENV="development"))
    assert "unpkg.com" not in html and "https://" not in html
    for name in graphiql.ASSET_NAMES:
        assert f"/graphiql/assets/{name}" in html


def test_assets_are_served_and_unknown_names_are_not(make_app: AppFactory) -> None:
    client = make_app(RAPPORT_ENV="development").test_client()
    if graphiql.missing_assets():
        pytest.skip("GraphiQL assets not fetched (python -m api.graphiql)")
    response = client.get("/graphiql/assets/graphiql.min.js")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith(("text/javascript",
                                                        "application/javascript"))
    assert client.get("/graphiql/assets/..%2Fsetup.cfg").status_code == 404
    assert client.get("/graphiql/assets/other.js").status_code == 404


def test_missing_assets_say_how_to_fetch_them(make_app: AppFactory, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAPPORT_GRAPHIQL_ASSETS", str(tmp_path / "empty"))
    html = _html(make_app(RAPPORT_ENV="development"))
    assert 'id="graphiql-missing"' in html and "python -m api.graphiql" in html
    assert "<script src=" not in html


def _tarball(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_tarball_that_does_not_match_the_registry_integrity_is_refused(
        tmp_path: Path) -> None:
    tampered = _tarball({member: b"alert('not graphiql')"
                         for member in graphiql.PACKAGES[0].files.values()})
    with pytest.raises(graphiql.IntegrityError, match="registry published"):
        graphiql.fetch(tmp_path, download=lambda url: tampered)
    assert not any(tmp_path.iterdir())


@pytest.fixture
def served(make_app: AppFactory) -> Iterator[str]:
    with live_server(make_app(RAPPORT_ENV="development")) as url:
        yield url


def test_graphiql_renders_and_runs_a_query_offline(served: str) -> None:
    if graphiql.missing_assets():
        pytest.fail("GraphiQL assets are not installed: `make install` fetches them")
    blocked: list[str] = []
    own_host = urlsplit(served).netloc

    def only_this_server(route: Any) -> None:
        if urlsplit(route.request.url).netloc == own_host:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    query = "{ interactionKinds { name } }"
    with chromium_page() as page:
        page.route("**/*", only_this_server)
        page.goto(f"{served}/graphql?query={quote(query)}")
        page.wait_for_selector(".graphiql-container", timeout=30_000)
        page.click(".graphiql-execute-button")
        page.wait_for_function(
            "document.querySelector('.graphiql-response') && "
            "document.querySelector('.graphiql-response').innerText.includes('purchase')",
            timeout=30_000)
        response_text = page.inner_text(".graphiql-response")
    assert '"interactionKinds"' in response_text
    assert blocked == []
