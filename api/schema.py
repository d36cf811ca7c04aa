"""Compose one GraphQL schema from core's fields and every enabled plugin's contributions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import graphene
import pluggy
from graphene import relay
from graphene.types.unmountedtype import UnmountedType
from graphene.utils.str_converters import to_camel_case
from graphql import GraphQLSchema, print_schema

from api.audit import audit_query_fields
from api.authorization import domain, guard_abstract_types, type_domains
from api.jobs import JOB_MUTATIONS, job_query_fields
from api.mutations import CORE_MUTATIONS, RapportMutation
from api.queries import build_filter_input, core_query_fields, filter_input_of
from api.types import AlertType, CustomerBase, Interaction, _customer_type, node_type
from core.models import Customer
from core.plugins import call_each
from core.services.segments import collect_filter_fields


class SchemaError(RuntimeError):
    """A contribution is invalid (name clash, missing scope or domain); raised at start-up."""


@dataclass
class RapportSchema:
    graphene_schema: graphene.Schema
    #: (type name, field name) -> scope the caller needs to select the field
    field_scopes: dict[tuple[str, str], str]
    #: object type name -> its domain, or STRUCTURAL (api/authorization.py)
    type_domains: dict[str, str]

    @property
    def graphql_schema(self) -> GraphQLSchema:
        return self.graphene_schema.graphql_schema

    def sdl(self) -> str:
        return print_schema(self.graphql_schema) + "\n"


#: Core fields that lead from one domain into another need that domain's scope too (on
#: top of the read scope of the type they return: InteractionConnection is structural, so
#: without this its totalCount would be readable with customers:read).
CROSS_DOMAIN_SCOPES = {
    ("Customer", "interactions"): "interactions:read",
    ("Customer", "owner"): "agents:read",
    ("Interaction", "customer"): "customers:read",
    ("Interaction", "agent"): "agents:read",
    ("Alert", "customer"): "customers:read",
    ("Alert", "acknowledgedBy"): "agents:read",
}


def _collect(kind: str, core: dict[str, Any], contributions: list[tuple[str, Any]],
             reserved: set[str] = frozenset()  # type: ignore[assignment]
             ) -> dict[str, Any]:
    merged = dict(core)
    owner = {name: "core" for name in [*core, *reserved]}
    for plugin, entries in contributions:
        for name, value in (entries or {}).items():
            if name in owner:
                raise SchemaError(f"{kind} {name!r} of plugin {plugin!r} clashes with the one "
                                  f"of {owner[name]!r}; rename it (prefix it with the plugin).")
            owner[name] = plugin
            merged[name] = value
    return merged


def _scope_of(kind: str, name: str, value: Any) -> str:
    scope = getattr(value, "scope", None) if isinstance(value, type) else getattr(
        value, "rapport_scope", None)
    if not scope:
        raise SchemaError(f"{kind} {name!r} names no scope: wrap it with api.scoped(field, "
                          f"'<domain>:read') or set the mutation's scope attribute.")
    return str(scope)


def build_schema(pm: pluggy.PluginManager) -> RapportSchema:
    with filter_input_of(build_filter_input(collect_filter_fields(pm))):
        return _build_schema(pm)


def _build_schema(pm: pluggy.PluginManager) -> RapportSchema:
    hook = pm.hook
    query = _collect("Query field", {**core_query_fields(), **job_query_fields(),
                                     **audit_query_fields()},
                     call_each(hook.rapport_graphql_query_fields))
    mutations: dict[str, type[RapportMutation]] = _collect(
        "Mutation", {**CORE_MUTATIONS, **JOB_MUTATIONS},
        call_each(hook.rapport_graphql_mutations))
    customer_fields = _collect(
        "Customer field", {}, call_each(hook.rapport_graphql_customer_fields),
        reserved={to_camel_case(name) for name, value in vars(CustomerBase).items()
                  if isinstance(value, (graphene.Field, UnmountedType))} | {"id"})
    extra_types = [t for types in hook.rapport_graphql_types() for t in (types or [])]

    scopes: dict[tuple[str, str], str] = {}
    for name, field in query.items():
        scopes[("Query", name)] = _scope_of("Query field", name, field)
    for name, mutation in mutations.items():
        if not (isinstance(mutation, type) and issubclass(mutation, RapportMutation)):
            raise SchemaError(f"Mutation {name!r} must subclass api.RapportMutation.")
        scopes[("Mutation", name)] = _scope_of("Mutation", name, mutation)
    for name, field in customer_fields.items():
        scopes[("Customer", name)] = _scope_of("Customer field", name, field)
    scopes.update(CROSS_DOMAIN_SCOPES)

    customer = domain("customers")(node_type(Customer)(type("Customer", (CustomerBase,), {
        "Meta": type("Meta", (), {"interfaces": (relay.Node,),
                                  "description": "A customer and everything plugins add."}),
        **customer_fields,
    })))
    token = _customer_type.set(customer)
    try:
        query_type = type("Query", (graphene.ObjectType,), dict(query))
        mutation_type = type("Mutation", (graphene.ObjectType,),
                             {name: m.Field() for name, m in mutations.items()})
        schema = graphene.Schema(query=query_type, mutation=mutation_type,
                                 types=[customer, Interaction, AlertType, *extra_types])
        schema.graphql_schema.type_map  # noqa: B018 - resolve lazy types while Customer is set
    finally:
        _customer_type.reset(token)
    domains, undeclared = type_domains(schema.graphql_schema)
    if undeclared:
        raise SchemaError(
            f"GraphQL type(s) {', '.join(undeclared)} declare no domain: decorate each with "
            f"@api.domain('<domain>') (reading it then needs '<domain>:read'), or build it "
            f"with api.connection()/api.error_type() or mark a value type @api.structural "
            f"(docs/writing_a_plugin.md).")
    guard_abstract_types(schema.graphql_schema, domains)
    return RapportSchema(schema, {**_type_field_scopes(schema.graphql_schema), **scopes},
                         domains)


def _type_field_scopes(graphql_schema: GraphQLSchema) -> dict[tuple[str, str], str]:
    """Fields of any (plugin) type marked with ``api.scoped``: a field leading into another
    domain (a count or connection of customers on a segment) needs that scope too."""
    found: dict[tuple[str, str], str] = {}
    for name, graphql_type in graphql_schema.type_map.items():
        graphene_type = getattr(graphql_type, "graphene_type", None)
        meta = getattr(graphene_type, "_meta", None)
        for attr, field in (getattr(meta, "fields", None) or {}).items():
            scope = getattr(field, "rapport_scope", None)
            if scope:
                found[(name, getattr(field, "name", None) or to_camel_case(attr))] = scope
    return found
