"""GraphiQL served from this machine, never from a CDN.

The page's JavaScript and CSS are the published npm packages (GraphiQL 3's UMD build with
React 18's UMD files: GraphiQL 5 and React 19 no longer ship UMD builds), fetched once from
the npm registry at install time (``make install`` runs ``python -m api.graphiql``), checked
against the registry's published sha512 integrity, and kept outside the repository in the
virtual environment. So GraphiQL works on a machine or network without internet access,
and nothing built by another project is committed here. Node is not needed.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from flask import Blueprint, Response, abort, send_from_directory

REGISTRY = "https://registry.npmjs.org"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    #: ``dist.integrity`` of the version as the npm registry publishes it.
    integrity: str
    #: file name served -> member of the package tarball
    files: dict[str, str]

    @property
    def tarball_url(self) -> str:
        return f"{REGISTRY}/{self.name}/-/{self.name}-{self.version}.tgz"


PACKAGES = (
    Package("graphiql", "3.8.3",
            "sha512-cuPDYtXVKV86Pu5PHBX642Odi/uVEE2y1Jxq5rGO/Qy1G2lRp7ZZ7a/T30RzxhuLSWo9zUbzq0P3"
            "U49//H0Ugw==",
            {"graphiql.min.js": "package/graphiql.min.js",
             "graphiql.min.css": "package/graphiql.min.css"}),
    Package("react", "18.3.1",
            "sha512-wS+hAgJShR0KhEvPJArfuPVN1+Hz1t0Y6n5jLrGQbkb4urgPE/0Rve+1kMB1v/oWgHgm4WIcV+i7"
            "F2pTVj+2iQ==",
            {"react.production.min.js": "package/umd/react.production.min.js"}),
    Package("react-dom", "18.3.1",
            "sha512-5m4nQKp+rZRb09LNH59GM4BxTh9251/ylbKIbpe7TpGxfJ+9kv6BLkLBXIjjspbgbnIBNqlI23tR"
            "nTWT0snUIw==",
            {"react-dom.production.min.js": "package/umd/react-dom.production.min.js"}),
)
ASSET_NAMES = frozenset(name for package in PACKAGES for name in package.files)


def assets_dir() -> Path:
    """Where the assets live: ``RAPPORT_GRAPHIQL_ASSETS`` or the environment's share folder
    (the versions are part of the path, so an upgrade never serves a stale mix)."""
    configured = os.environ.get("RAPPORT_GRAPHIQL_ASSETS")
    if configured:
        return Path(configured)
    versions = "-".join(f"{p.name}{p.version}" for p in PACKAGES)
    return Path(sys.prefix) / "share" / "rapport" / versions


def missing_assets(folder: Path | None = None) -> list[str]:
    where = folder or assets_dir()
    return sorted(name for name in ASSET_NAMES if not (where / name).is_file())


class IntegrityError(RuntimeError):
    """A downloaded tarball does not match the integrity the registry published."""


def _verify(package: Package, data: bytes) -> None:
    algorithm, _, expected = package.integrity.partition("-")
    digest = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if digest != expected:
        raise IntegrityError(f"{package.name}@{package.version}: the tarball's {algorithm} "
                             f"is {digest}, the registry published {expected}.")


def _download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - fixed https URL
        return response.read()  # type: ignore[no-any-return]


def fetch(folder: Path | None = None, download: object = None) -> Path:
    """Fetch the missing assets into ``folder`` (default ``assets_dir()``); idempotent."""
    where = folder or assets_dir()
    get = download or _download
    where.mkdir(parents=True, exist_ok=True)
    for package in PACKAGES:
        if all((where / name).is_file() for name in package.files):
            continue
        data = get(package.tarball_url)  # type: ignore[operator]
        _verify(package, data)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for name, member in package.files.items():
                extracted = archive.extractfile(member)
                if extracted is None:
                    raise IntegrityError(f"{package.name}@{package.version} has no {member}.")
                partial = where / f".{name}.partial"
                partial.write_bytes(extracted.read())
                partial.replace(where / name)  # a reader never sees half a file
    return where


blueprint = Blueprint("graphiql_assets", __name__)


@blueprint.route("/graphiql/assets/<name>")
def asset(name: str) -> Response:
    if name not in ASSET_NAMES:
        abort(404)
    return send_from_directory(assets_dir(), name, max_age=7 * 24 * 3600)


@blueprint.app_template_global("graphiql_missing_assets")
def _missing_for_template() -> list[str]:
    return missing_assets()


def main() -> None:
    where = fetch()
    print(f"GraphiQL assets in {where}")


if __name__ == "__main__":
    main()
