"""Rapport's GraphQL API, and the helpers plugins use to contribute to it."""

from graphql import Undefined
from graphene.types.inputobjecttype import set_input_object_type_default_value

from api.context import RequestContext
from api.limits import ANALYSIS_COST, REPORT_COST, costly
from api.loaders import ModelByIdLoader, RapportLoader
from api.mutations import RapportMutation, global_id
from api.pagination import Page, make_page, page_size
from api.types import (
    AUTHENTICATED, CustomerType, Error, Money, connection, ctx, domain, error_type, load_related,
    node_type, scoped, structural,
)

# Input fields a client did not send stay absent (Undefined), so "set to null" and
# "leave unchanged" differ in updates.
set_input_object_type_default_value(Undefined)

__all__ = [
    "ANALYSIS_COST", "REPORT_COST", "costly",
    "AUTHENTICATED", "CustomerType", "Error", "ModelByIdLoader", "Money", "Page",
    "RapportLoader", "RapportMutation", "RequestContext", "connection", "ctx", "domain",
    "error_type", "global_id", "load_related", "make_page", "node_type", "page_size", "scoped",
    "structural",
]
