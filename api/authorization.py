"""Authorization by type: every object type belongs to a domain, and reading any field of
it needs that domain's read scope, wherever the type is reached.

Declaring: ``@domain("loyalty")`` on a type (plugins: the domain of the scopes they
register). Structural types (connections, edges, ``PageInfo``, mutation payloads,
``XError`` types, value types such as ``Money``) hold nothing of their own: they take the
domain of the field that returns them and are marked by the helpers that make them
(``connection()``, ``error_type()``, ``RapportMutation``) or, for a value type, with
``@structural``. Building the schema fails for an object type with neither.

Enforcing happens in two places that share the table of type domains built with the schema:

- ``authorization_rule``, a validation rule: for every selected field, the read scope of
  its parent type's effective domain (a structural type inherits the requirement of the
  field that returned it, along the walk, through fragments) plus the field's own scope
  (``field_scopes``: root fields, plugins' ``Customer`` fields, mutations). A violation
  refuses the whole document (403 FORBIDDEN). Each fragment is analysed once per
  inherited requirement, so the work is linear in the document.
- ``guard_abstract_types``: what only execution knows (the concrete type behind
  ``node(id:)`` or another interface or union field) is checked when the type is
  resolved, by the executor in use: the field becomes null with a FORBIDDEN error at its
  path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from graphene import relay
from graphql import (
    SKIP, ASTValidationRule, FieldNode, FragmentDefinitionNode, FragmentSpreadNode,
    GraphQLError, GraphQLInterfaceType, GraphQLNamedType, GraphQLObjectType, GraphQLSchema,
    GraphQLUnionType, InlineFragmentNode, OperationDefinitionNode, SelectionSetNode,
    ValidationContext, default_type_resolver, get_named_type,
)
from graphql.pyutils import is_awaitable

from core.auth import Principal

#: Scope of fields any authenticated caller may use (``node``, ``plugins``...).
AUTHENTICATED = "authenticated"
#: The domain value of types that take the domain of the field returning them.
STRUCTURAL = "structural"

_DOMAIN_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
T = TypeVar("T", bound=type)


def domain(name: str) -> Callable[[T], T]:
    """Class decorator: the type belongs to domain ``name``; reading it needs
    ``<name>:read`` on every path (root field, ``node``, nested field, payload)."""
    if not _DOMAIN_NAME.match(name) or name in (STRUCTURAL, AUTHENTICATED):
        raise ValueError(f"{name!r} is not a domain name (lowercase, as in '{name}:read').")

    def declare(cls: T) -> T:
        cls.rapport_domain = name  # type: ignore[attr-defined]
        return cls

    return declare


def structural(cls: T) -> T:
    """Class decorator for a value type (``Money``) with no data of a domain of its own:
    it takes the domain of the field that returns it."""
    cls.rapport_domain = STRUCTURAL  # type: ignore[attr-defined]
    return cls


def declared_domain(graphene_type: Any) -> str | None:
    """The domain a graphene class declares itself (never one inherited from a base
    class: a subclass is a new type and declares its own)."""
    if graphene_type is relay.PageInfo:
        return STRUCTURAL
    if not isinstance(graphene_type, type):
        return None
    value = vars(graphene_type).get("rapport_domain")
    return value if isinstance(value, str) else None


def read_scope(domain_name: str) -> str:
    return f"{domain_name}:read"


def type_domains(schema: GraphQLSchema) -> tuple[dict[str, str], list[str]]:
    """``({object type name: domain or STRUCTURAL}, [names of types declaring neither])``
    for every object type of ``schema`` except the roots and introspection."""
    roots = {t.name for t in (schema.query_type, schema.mutation_type,
                              schema.subscription_type) if t is not None}
    domains: dict[str, str] = {}
    undeclared: list[str] = []
    for name, graphql_type in schema.type_map.items():
        if (not isinstance(graphql_type, GraphQLObjectType) or name.startswith("__")
                or name in roots):
            continue
        declared = declared_domain(getattr(graphql_type, "graphene_type", None))
        if declared is None:
            undeclared.append(name)
        else:
            domains[name] = declared
    return domains, sorted(undeclared)


def may_read(principal: Principal, type_name: str, domains: Mapping[str, str]) -> bool:
    """Whether ``principal`` may read a value whose concrete type is ``type_name``. A
    structural type was reached through a field whose requirement was already checked; a
    type missing from the table is for ``admin`` only."""
    found = domains.get(type_name)
    if found == STRUCTURAL:
        return True
    return principal.allows(read_scope(found) if found else "admin")


def node_scope(graphene_type: Any) -> str:
    """The scope ``node(id:)`` needs to return a value of this (Node) type."""
    declared = declared_domain(graphene_type)
    return read_scope(declared) if declared and declared != STRUCTURAL else "admin"


def forbidden_type(type_name: str, domains: Mapping[str, str]) -> GraphQLError:
    found = domains.get(type_name)
    scope = read_scope(found) if found and found != STRUCTURAL else "admin"
    return GraphQLError(f"Reading a {type_name} needs the {scope} scope, which this API key "
                        f"lacks.", extensions={"code": "FORBIDDEN"})


# --- At run time: the concrete type behind an interface or union -------------------------


def guard_abstract_types(schema: GraphQLSchema, domains: Mapping[str, str]) -> None:
    """Wrap the type resolver of every interface and union so a value of a domain the
    caller may not read is refused where it is resolved (graphql-core and any executor
    that resolves abstract types through the schema)."""
    for name, graphql_type in schema.type_map.items():
        if isinstance(graphql_type, (GraphQLInterfaceType, GraphQLUnionType)) \
                and not name.startswith("__"):
            graphql_type.resolve_type = _guarded(graphql_type.resolve_type, domains)


def _guarded(original: Callable[..., Any] | None, domains: Mapping[str, str]
             ) -> Callable[..., Any]:
    resolve = original or default_type_resolver

    def check(type_name: Any, info: Any) -> Any:
        if isinstance(type_name, str):
            # No caller known (a context without a principal): nothing is readable.
            principal = getattr(info.context, "principal", None)
            if principal is None or not may_read(principal, type_name, domains):
                raise forbidden_type(type_name, domains)
        return type_name

    def resolve_type(value: Any, info: Any, abstract_type: Any) -> Any:
        resolved = resolve(value, info, abstract_type)
        if is_awaitable(resolved):
            async def checked() -> Any:
                return check(await resolved, info)

            return checked()
        return check(resolved, info)

    return resolve_type


# --- At validation: every field of the document ------------------------------------------


def authorization_rule(principal: Principal, field_scopes: Mapping[tuple[str, str], str],
                       domains: Mapping[str, str]) -> type[ASTValidationRule]:
    """Reject a document selecting a field whose scope, or whose parent type's read scope,
    the caller lacks (FORBIDDEN)."""

    def allowed(scope: str | None) -> bool:
        return scope is None or scope == AUTHENTICATED or principal.allows(scope)

    class AuthorizationRule(ASTValidationRule):
        def __init__(self, context: ValidationContext):
            super().__init__(context)
            schema = context.schema
            self.roots = {t.name for t in (schema.query_type, schema.mutation_type,
                                           schema.subscription_type) if t is not None}
            self.fragments = {d.name.value: d for d in context.document.definitions
                              if isinstance(d, FragmentDefinitionNode)}
            #: (fragment name, inherited requirement): each analysed once per document.
            self.analysed: set[tuple[str, str | None]] = set()
            self.reported: set[tuple[str, str, str]] = set()

        def enter_operation_definition(self, node: OperationDefinitionNode, *args: Any
                                       ) -> Any:
            root = self.context.schema.get_root_type(node.operation)
            if root is not None:
                self._walk(node.selection_set, root)
            return SKIP

        def enter_fragment_definition(self, node: FragmentDefinitionNode, *args: Any) -> Any:
            return SKIP  # analysed where it is spread, with the requirement it inherits there

        def _effective(self, parent: GraphQLNamedType, inherited: str | None) -> str | None:
            """The scope reading a field of ``parent`` needs, reached with ``inherited``."""
            if parent.name in self.roots:
                return None
            if not isinstance(parent, GraphQLObjectType):
                return inherited  # interfaces and unions: the concrete type is checked at run time
            found = domains.get(parent.name)
            if found is None:
                return "admin"
            return inherited if found == STRUCTURAL else read_scope(found)

        def _need(self, scope: str | None, parent: str, field: str, node: FieldNode) -> None:
            if scope is None or allowed(scope) or (parent, field, scope) in self.reported:
                return
            self.reported.add((parent, field, scope))
            self.report_error(GraphQLError(
                f"Selecting {parent}.{field} needs the {scope} scope, which this API key "
                f"lacks.", node, extensions={"code": "FORBIDDEN"}))

        def _walk(self, selection_set: SelectionSetNode, root: GraphQLNamedType) -> None:
            # An explicit stack: a deeply nested document must not exhaust Python's.
            schema = self.context.schema
            stack: list[tuple[SelectionSetNode, GraphQLNamedType, str | None]] = [
                (selection_set, root, None)]
            while stack:
                selections, parent, inherited = stack.pop()
                effective = self._effective(parent, inherited)
                for selection in selections.selections:
                    if isinstance(selection, FieldNode):
                        name = selection.name.value
                        if name == "__typename":
                            self._need(effective, parent.name, name, selection)
                            continue
                        fields = getattr(parent, "fields", None) or {}
                        if name.startswith("__") or name not in fields:
                            continue  # introspection (api/limits.py); unknown: reported elsewhere
                        self._need(effective, parent.name, name, selection)
                        scope = field_scopes.get((parent.name, name))
                        self._need(scope, parent.name, name, selection)
                        if selection.selection_set is not None:
                            stack.append((selection.selection_set,
                                          get_named_type(fields[name].type), scope or effective))
                    elif isinstance(selection, InlineFragmentNode):
                        target = (schema.get_type(selection.type_condition.name.value)
                                  if selection.type_condition else parent)
                        if target is not None:
                            stack.append((selection.selection_set, target, effective))
                    elif isinstance(selection, FragmentSpreadNode):
                        name = selection.name.value
                        fragment = self.fragments.get(name)
                        key = (name, effective)
                        if fragment is None or key in self.analysed:
                            continue
                        self.analysed.add(key)
                        target = schema.get_type(fragment.type_condition.name.value)
                        if target is not None:
                            stack.append((fragment.selection_set, target, effective))

    return AuthorizationRule
