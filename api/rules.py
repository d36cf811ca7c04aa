"""Validation rules run on every document before execution: scopes, depth, cost."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graphql import (
    ASTValidationRule, FieldNode, FragmentSpreadNode, GraphQLError, InlineFragmentNode,
    IntValueNode, OperationDefinitionNode, SelectionSetNode, ValidationContext, VariableNode,
    get_named_type,
)

from api.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from api.types import AUTHENTICATED
from core.auth import Principal


def scope_rule(principal: Principal, field_scopes: Mapping[tuple[str, str], str]
               ) -> type[ASTValidationRule]:
    """Reject a document that selects a field whose scope the caller lacks (FORBIDDEN)."""

    class ScopeRule(ASTValidationRule):
        def enter_field(self, node: FieldNode, *args: Any) -> None:
            parent = self.context.get_parent_type()
            if parent is None:
                return
            scope = field_scopes.get((parent.name, node.name.value))
            if scope and scope != AUTHENTICATED and not principal.allows(scope):
                self.report_error(GraphQLError(
                    f"Selecting {parent.name}.{node.name.value} needs the {scope} scope, "
                    f"which this API key lacks.", node, extensions={"code": "FORBIDDEN"}))

    return ScopeRule


def limits_rule(max_depth: int, max_cost: int) -> type[ASTValidationRule]:
    """Reject documents nested deeper than ``max_depth`` or costing more than ``max_cost``.

    Cost: every field counts 1, multiplied by the page sizes (``first``) of the connections
    it sits in; a ``first`` given by a variable counts as the maximum page size, an absent
    one as the default. Introspection fields are free.
    """

    class LimitsRule(ASTValidationRule):
        def __init__(self, context: ValidationContext):
            super().__init__(context)
            self.fragments = {f.name.value: f for f in context.document.definitions
                              if f.kind == "fragment_definition"}

        def _walk(self, selection_set: SelectionSetNode | None, parent: Any, depth: int,
                  multiplier: int, seen: frozenset[str]) -> tuple[int, int]:
            if selection_set is None:
                return depth - 1, 0
            schema = self.context.schema
            deepest, cost = depth, 0
            for selection in selection_set.selections:
                if isinstance(selection, FieldNode):
                    name = selection.name.value
                    fields = getattr(parent, "fields", None) or {}
                    if name.startswith("__") or name not in fields:
                        continue  # introspection is free; unknown fields are reported elsewhere
                    child = get_named_type(fields[name].type)
                    factor = multiplier
                    if child.name.endswith("Connection"):
                        factor *= self._page_size(selection)
                    d, c = self._walk(selection.selection_set, child, depth + 1, factor, seen)
                    deepest, cost = max(deepest, d), cost + multiplier + c
                elif isinstance(selection, InlineFragmentNode):
                    target = schema.get_type(selection.type_condition.name.value) \
                        if selection.type_condition else parent
                    d, c = self._walk(selection.selection_set, target, depth, multiplier, seen)
                    deepest, cost = max(deepest, d), cost + c
                elif isinstance(selection, FragmentSpreadNode):
                    fragment_name = selection.name.value
                    fragment = self.fragments.get(fragment_name)
                    if fragment is None or fragment_name in seen:
                        continue  # reported by the standard rules
                    target = schema.get_type(fragment.type_condition.name.value)
                    d, c = self._walk(fragment.selection_set, target, depth, multiplier,
                                      seen | {fragment_name})
                    deepest, cost = max(deepest, d), cost + c
            return deepest, cost

        @staticmethod
        def _page_size(node: FieldNode) -> int:
            for argument in node.arguments or ():
                if argument.name.value == "first":
                    if isinstance(argument.value, IntValueNode):
                        return max(1, int(argument.value.value))
                    if isinstance(argument.value, VariableNode):
                        return MAX_PAGE_SIZE
            return DEFAULT_PAGE_SIZE

        def enter_operation_definition(self, node: OperationDefinitionNode, *args: Any) -> None:
            root = self.context.schema.get_root_type(node.operation)
            depth, cost = self._walk(node.selection_set, root, 1, 1, frozenset())
            if depth > max_depth:
                self.report_error(GraphQLError(
                    f"The query is nested {depth} levels deep; the limit is {max_depth}.",
                    node, extensions={"code": "QUERY_TOO_COMPLEX"}))
            elif cost > max_cost:
                self.report_error(GraphQLError(
                    f"The query could return about {cost} fields; the limit is {max_cost}. "
                    f"Ask for smaller pages (first) or fewer nested connections.",
                    node, extensions={"code": "QUERY_TOO_COMPLEX"}))

    return LimitsRule
