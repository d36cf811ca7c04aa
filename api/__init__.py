"""Rapport's GraphQL API, and the helpers plugins use to contribute to it.

    from api import RapportMutation, node_type, scoped, ...

The names are imported on first use (``__getattr__`` below): ``rapport --help`` imports
``api.plugin`` (the API's entry point) and must not pay for graphene and the models.
Input fields a client did not send stay absent (``Undefined``): ``api.types`` sets that up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from graphql import Undefined

    from api.context import RequestContext
    from api.limits import ANALYSIS_COST, REPORT_COST, costly
    from api.loaders import ModelByIdLoader, RapportLoader
    from api.mutations import RapportMutation, global_id
    from api.pagination import Page, make_page, page_size
    from api.types import (
        AUTHENTICATED, CustomerType, Error, Money, connection, ctx, domain, error_type,
        load_related, node_type, scoped, structural,
    )

_EXPORTS: dict[str, str] = {
    "Undefined": "graphql",
    "RequestContext": "api.context",
    "ANALYSIS_COST": "api.limits", "REPORT_COST": "api.limits", "costly": "api.limits",
    "ModelByIdLoader": "api.loaders", "RapportLoader": "api.loaders",
    "RapportMutation": "api.mutations", "global_id": "api.mutations",
    "Page": "api.pagination", "make_page": "api.pagination", "page_size": "api.pagination",
    **dict.fromkeys(("AUTHENTICATED", "CustomerType", "Error", "Money", "connection", "ctx",
                     "domain", "error_type", "load_related", "node_type", "scoped",
                     "structural"), "api.types"),
}

__all__ = [
    "ANALYSIS_COST", "REPORT_COST", "costly",
    "AUTHENTICATED", "CustomerType", "Error", "ModelByIdLoader", "Money", "Page",
    "RapportLoader", "RapportMutation", "RequestContext", "connection", "ctx", "domain",
    "error_type", "global_id", "load_related", "make_page", "node_type", "page_size", "scoped",
    "structural",
]


def __getattr__(name: str) -> Any:
    try:
        module_name = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'api' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
