"""Bounds on the work a document may ask for, checked before the standard validation rules.

A document is refused with QUERY_TOO_COMPLEX when it is nested deeper than the depth limit
or costs more than the cost limit (docs/graphql.md, "Limits and the cost model"). The
analysis is linear in the document: each fragment is summarised once, as a cost that is
linear in the number of times its parent is returned, and a spread reuses the summary. It
runs before graphql-core's own rules, so a document built to make them slow (thousands
of fields sharing one response name, fragments spreading fragments) is refused before they
start; what remains for them is bounded by the parser's token limit and by
``OVERLAP_BUDGET``.

The cost of a selection, for each value the field returns (times the sizes of the lists
it sits in):

- every field costs ``FIELD_COST``, ``__typename`` and introspection fields included;
- a list of objects multiplies what is selected inside it by its size: ``first`` for a
  connection's ``edges``/``nodes`` and for a list field taking ``first`` (a variable
  counts as ``MAX_PAGE_SIZE``, an absent argument as its default), the schema's average
  for introspection lists (types, fields, arguments...), ``DEFAULT_PAGE_SIZE`` otherwise;
- a field marked with ``costly(field, cost)`` (reports, aggregates, analyses) costs
  ``cost`` more, for each value: such fields are computed once per parent.

Database work a DataLoader batches is charged once per selection, not per parent value:

- every connection field (a page query) costs ``PAGE_QUERY_COST``;
- ``totalCount`` costs ``COUNT_COST`` (a COUNT): aliases are separate selections and each
  pays its COUNT;
- a ``search`` given to a field's arguments (at any depth of an input object, or through a
  variable whose input type could hold one) costs ``SEARCH_COST`` for the page query and
  again for each ``totalCount``: a substring match cannot use an index (on a field that is
  not a connection, a report over a segment, it costs that for each value);
- a mutation field costs ``MUTATION_COST`` (a transaction, hooks, audit).

What only the data shows is charged while the request runs (``CostMeter``): a customer
filter costs what ``core.services.segments.filter_cost`` says (a saved segment what its
stored filter holds, the segments it names included) beyond the searches counted above,
for each scan it filters; past the limit, that field is refused with QUERY_TOO_COMPLEX
before its work is done.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field as dataclass_field
from typing import Any, NamedTuple, TypeVar

import graphene
from graphene.utils.str_converters import to_camel_case
from graphql import (
    DocumentNode, FieldNode, FragmentDefinitionNode, FragmentSpreadNode, GraphQLEnumType,
    GraphQLError, GraphQLInputObjectType, GraphQLInterfaceType, GraphQLList, GraphQLNamedType,
    GraphQLObjectType, GraphQLSchema, GraphQLUnionType, InlineFragmentNode, IntValueNode,
    ListValueNode, NullValueNode, ObjectValueNode, OperationDefinitionNode,
    SelectionSetNode, ValueNode, VariableNode, get_named_type, get_nullable_type,
    is_list_type,
)
from graphql.validation.rules import overlapping_fields_can_be_merged

from api.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from core.services.segments import SEARCH_COST

FIELD_COST = 1
PAGE_QUERY_COST = 10
COUNT_COST = 1_000
MUTATION_COST = 100
#: A declared cost for reports and aggregates computed by the database (GROUP BY over a
#: period or a segment), for ``costly(field, REPORT_COST)``.
REPORT_COST = 1_000
#: For analyses computed in Python from rows loaded for the request (survey analysis).
ANALYSIS_COST = 10_000

#: Lexical tokens (comments included) a document may have: graphql-core parses about
#: 5 microseconds a token, every later step is linear in the tokens except graphql-core's
#: overlapping-fields rule (quadratic in repeated fields, bounded by its own budget).
#: Ten times GraphiQL's introspection query (about 400); bench_adversarial measures the
#: refusals at this size.
MAX_TOKENS = 4_000
#: Characters a document may have (whitespace and long strings lex fast, not for free):
#: large values belong in variables.
MAX_DOCUMENT_CHARS = 100_000
#: Items a list may hold, in a variable or a literal (filters, ids, batches).
MAX_LIST_ITEMS = 1_000
#: Selections one selection set may hold (fields, aliases, fragments): real documents use
#: tens; thousands of aliases of one field are a flood that graphql-core's
#: overlapping-fields rule compares pair by pair, refused here before it runs.
MAX_SELECTIONS = 500
#: Work graphql-core's OverlappingFieldsCanBeMergedRule may spend comparing fields before it
#: aborts the validation (its default, 500,000, is about 300 ms here). Realistic documents
#: spend a few dozen units (two fragments repeating fields: 37); GraphiQL's introspection
#: query spends none.
OVERLAP_BUDGET = 20_000

INTROSPECTION_MODES = ("on", "off", "scope")
SCHEMA_READ = "schema:read"

F = TypeVar("F", bound=graphene.Field)


def costly(field: F, cost: int) -> F:
    """Declare that selecting ``field`` costs ``cost`` more than a plain field, for each
    value it returns (a report, an aggregate, an analysis computed per parent)."""
    if cost < 0:
        raise ValueError("A cost is zero or more.")
    field.rapport_cost = cost  # type: ignore[attr-defined]
    return field


def declared_costs(graphene_schema: graphene.Schema) -> dict[tuple[str, str], int]:
    """``(type name, field name) -> cost`` of the fields marked with ``costly``."""
    camel = getattr(graphene_schema, "auto_camelcase", True)
    costs: dict[tuple[str, str], int] = {}
    for name, named in graphene_schema.graphql_schema.type_map.items():
        graphene_type = getattr(named, "graphene_type", None)
        meta = getattr(graphene_type, "_meta", None)
        for attname, value in (getattr(meta, "fields", None) or {}).items():
            cost = getattr(value, "rapport_cost", None)
            if cost:
                field_name = getattr(value, "name", None) or (
                    to_camel_case(attname) if camel else attname)
                costs[(name, field_name)] = int(cost)
    return costs


def _average(total: int, count: int) -> float:
    return total / count if count else 0.0


def introspection_sizes(schema: GraphQLSchema) -> dict[tuple[str, str], float]:
    """The size counted for each introspection list: the schema's own average, so that
    ``__schema { types { fields { args } } }`` costs what the answer holds."""
    # A type's list is null where it does not apply (an enum's fields), so each average
    # is over every type: ``types { fields }`` then costs the schema's number of fields.
    types = list(schema.type_map.values())
    with_fields = [t for t in types if isinstance(t, (GraphQLObjectType, GraphQLInterfaceType))]
    fields = [f for t in with_fields for f in t.fields.values()]
    inputs = [t for t in types if isinstance(t, GraphQLInputObjectType)]
    enums = [t for t in types if isinstance(t, GraphQLEnumType)]
    abstract = [t for t in types if isinstance(t, (GraphQLInterfaceType, GraphQLUnionType))]
    directives = list(schema.directives)
    return {
        ("__Schema", "types"): len(types),
        ("__Schema", "directives"): len(directives),
        ("__Type", "fields"): _average(len(fields), len(types)),
        ("__Type", "interfaces"): _average(
            sum(len(getattr(t, "interfaces", ())) for t in with_fields), len(types)),
        ("__Type", "possibleTypes"): _average(
            sum(len(schema.get_possible_types(t)) for t in abstract), len(types)),
        ("__Type", "enumValues"): _average(sum(len(t.values) for t in enums), len(types)),
        ("__Type", "inputFields"): _average(sum(len(t.fields) for t in inputs), len(types)),
        ("__Field", "args"): _average(sum(len(f.args) for f in fields), len(fields)),
        ("__Directive", "args"): _average(sum(len(d.args) for d in directives),
                                          len(directives)),
    }


def _wrappers(type_: Any) -> int:
    count = 0
    while hasattr(type_, "of_type"):
        type_, count = type_.of_type, count + 1
    return count


def max_wrapping(schema: GraphQLSchema) -> int:
    most = 0
    for named in schema.type_map.values():
        for field in (getattr(named, "fields", None) or {}).values():
            most = max(most, _wrappers(field.type),
                       *(_wrappers(a.type) for a in getattr(field, "args", {}).values()))
    return most


@dataclass(frozen=True)
class CostTables:
    """What the analysis needs to know of a schema beyond its types."""

    declared: Mapping[tuple[str, str], int] = dataclass_field(default_factory=dict)
    list_sizes: Mapping[tuple[str, str], float] = dataclass_field(default_factory=dict)
    #: Most wrappers (non-null, list) around a type in the schema: ``ofType`` nested
    #: deeper than this is null.
    max_wrapping: int = 3

    @classmethod
    def of(cls, graphene_schema: graphene.Schema) -> CostTables:
        schema = graphene_schema.graphql_schema
        return cls(declared_costs(graphene_schema), introspection_sizes(schema),
                   max_wrapping(schema))


class Measure(NamedTuple):
    """A selection set's depth and cost: ``per_value * n + fixed`` when its parent returns
    ``n`` values; ``per_page_item`` is the part inside a connection's edges (times ``first``)."""

    depth: int = 0
    per_value: float = 0  # fractional where a list size is an average (introspection)
    per_page_item: float = 0
    fixed: float = 0
    counts: int = 0  # totalCount selections at this level (of a connection)


#: Costs saturate here: far over any limit, and small enough that averages (floats) and
#: exponential fan-outs stay finite numbers.
MAX_COUNTED_COST = 10**15


def _capped(depth: int, per_value: float, per_page_item: float, fixed: float,
            counts: int = 0) -> Measure:
    return Measure(depth, min(per_value, MAX_COUNTED_COST),
                   min(per_page_item, MAX_COUNTED_COST), min(fixed, MAX_COUNTED_COST),
                   min(counts, MAX_COUNTED_COST))


class OperationMeasure(NamedTuple):
    operation: OperationDefinitionNode
    depth: int
    cost: int


def _is_connection(named: GraphQLNamedType | None) -> bool:
    return named is not None and named.name.endswith("Connection")


class _Analysis:
    def __init__(self, schema: GraphQLSchema, document: DocumentNode, tables: CostTables):
        self.schema = schema
        self.tables = tables
        self.fragments = {d.name.value: d for d in document.definitions
                          if isinstance(d, FragmentDefinitionNode)}
        self.summaries: dict[str, Measure] = {}
        #: Found on the way (every field and argument of the document is walked once).
        self.long_list: ListValueNode | None = None
        self.wide: SelectionSetNode | None = None
        self.introspection: FieldNode | None = None
        self._summarise_fragments()

    def _summarise_fragments(self) -> None:
        """Summarise every fragment after the fragments it spreads (an explicit stack, so
        a chain of thousands of fragments needs no recursion). A spread closing a cycle
        counts nothing here: cycles are reported by the standard rules."""
        direct = {name: _spreads(fragment.selection_set)
                  for name, fragment in self.fragments.items()}
        for root in self.fragments:
            if root in self.summaries:
                continue
            stack = [(root, iter(direct[root]))]
            on_stack = {root}
            while stack:
                name, pending = stack[-1]
                for spread in pending:
                    if (spread in self.fragments and spread not in self.summaries
                            and spread not in on_stack):
                        stack.append((spread, iter(direct[spread])))
                        on_stack.add(spread)
                        break
                else:
                    stack.pop()
                    on_stack.discard(name)
                    fragment = self.fragments[name]
                    target = self.schema.get_type(fragment.type_condition.name.value)
                    self.summaries[name] = self.selection_set(fragment.selection_set, target)

    def selection_set(self, node: SelectionSetNode | None, parent: GraphQLNamedType | None,
                      wrapping: int = 0) -> Measure:
        if node is None or parent is None:
            return Measure()
        if len(node.selections) > MAX_SELECTIONS and self.wide is None:
            self.wide = node
        in_connection = _is_connection(parent)
        depth = counts = 0
        per_value = per_page_item = fixed = 0.0
        for selection in node.selections:
            if isinstance(selection, FieldNode):
                m = self.field(selection, parent, in_connection, wrapping)
            elif isinstance(selection, InlineFragmentNode):
                target = (self.schema.get_type(selection.type_condition.name.value)
                          if selection.type_condition else parent)
                m = self.selection_set(selection.selection_set, target, wrapping)
            elif isinstance(selection, FragmentSpreadNode):
                m = self.summaries.get(selection.name.value, Measure())
            else:  # pragma: no cover - the parser makes no other selection
                continue
            depth = max(depth, m.depth)
            per_value += m.per_value
            per_page_item += m.per_page_item
            fixed += m.fixed
            counts += m.counts
        return _capped(depth, per_value, per_page_item, fixed, counts)

    def field(self, node: FieldNode, parent: GraphQLNamedType, in_connection: bool,
              wrapping: int) -> Measure:
        name = node.name.value
        if name == "__typename":
            return Measure(1, FIELD_COST, 0, 0)
        wrapping = wrapping + 1 if name == "ofType" and parent.name == "__Type" else 0
        if wrapping > self.tables.max_wrapping:
            return Measure(1, FIELD_COST, 0, 0)  # always null: no type is wrapped deeper
        if name in ("__schema", "__type") and self.introspection is None:
            self.introspection = node
        if name == "__schema" and parent is self.schema.query_type:
            definition_type: Any = self.schema.get_type("__Schema")
            args: dict[str, Any] = {}
        elif name == "__type" and parent is self.schema.query_type:
            definition_type = self.schema.get_type("__Type")
            args = {}
        else:
            fields = getattr(parent, "fields", None) or {}
            definition = fields.get(name)
            if definition is None:
                return Measure()  # unknown fields are reported by the standard rules
            definition_type, args = definition.type, definition.args
        child = get_named_type(definition_type)
        own: float = FIELD_COST + self.tables.declared.get((parent.name, name), 0)
        fixed: float = MUTATION_COST if parent is self.schema.mutation_type else 0
        inner = self.selection_set(node.selection_set, child, wrapping=wrapping)
        searches, long_list = _arguments(node, args)
        self.long_list = self.long_list or long_list
        if _is_connection(child):
            # One page query and one COUNT per totalCount, each scanning if it searches.
            page = _page_size(node, args)
            fixed += PAGE_QUERY_COST + (1 + inner.counts) * searches * SEARCH_COST
            per_child = inner.per_value + inner.per_page_item * page
        else:
            own += searches * SEARCH_COST  # a report or analysis over a searched segment
            if (is_list_type(get_nullable_type(definition_type)) and node.selection_set
                    and not in_connection):
                per_child = inner.per_value * self._list_size(parent.name, name, node, args)
            else:
                per_child = inner.per_value
        if name == "totalCount" and in_connection:
            return _capped(1, own, 0, fixed + COUNT_COST, counts=1)
        if in_connection and is_list_type(get_nullable_type(definition_type)):
            return _capped(1 + inner.depth, own, per_child, fixed + inner.fixed)
        return _capped(1 + inner.depth, own + per_child, 0, fixed + inner.fixed)

    def _list_size(self, parent: str, name: str, node: FieldNode, args: Mapping[str, Any]
                   ) -> float:
        size = self.tables.list_sizes.get((parent, name))
        if size is not None:
            return size
        if "first" in args:
            return _page_size(node, args)
        return DEFAULT_PAGE_SIZE


def _spreads(node: SelectionSetNode | None) -> list[str]:
    """Names of the fragments spread anywhere inside ``node`` (not through other fragments)."""
    names: list[str] = []
    stack = [node] if node is not None else []
    while stack:
        current = stack.pop()
        for selection in current.selections:
            if isinstance(selection, FragmentSpreadNode):
                names.append(selection.name.value)
            elif selection.selection_set is not None:
                stack.append(selection.selection_set)
    return names


def _page_size(node: FieldNode, args: Mapping[str, Any]) -> int:
    for argument in node.arguments or ():
        if argument.name.value == "first":
            if isinstance(argument.value, IntValueNode):
                return min(MAX_PAGE_SIZE, max(0, int(argument.value.value)))
            if isinstance(argument.value, VariableNode):
                return MAX_PAGE_SIZE
            if isinstance(argument.value, NullValueNode):
                return DEFAULT_PAGE_SIZE
    definition = args.get("first")
    default = getattr(definition, "default_value", None)
    if isinstance(default, int) and not isinstance(default, bool):
        return min(MAX_PAGE_SIZE, max(0, default))
    return DEFAULT_PAGE_SIZE


def _could_search(input_type: Any) -> bool:
    named = get_named_type(input_type)
    return isinstance(named, GraphQLInputObjectType) and "search" in named.fields


def _arguments(node: FieldNode, args: Mapping[str, Any]) -> tuple[int, ListValueNode | None]:
    """How many ``search`` values the field's arguments may carry (0 or more), and a list
    longer than ``MAX_LIST_ITEMS`` among them."""
    found, long_list = 0, None
    for argument in node.arguments or ():
        definition = args.get(argument.name.value)
        stack: list[tuple[ValueNode, Any]] = [(argument.value, getattr(definition, "type",
                                                                        None))]
        while stack:
            value, value_type = stack.pop()
            if isinstance(value, VariableNode):
                found += _could_search(value_type)
            elif isinstance(value, ObjectValueNode):
                named = get_named_type(value_type) if value_type is not None else None
                fields = named.fields if isinstance(named, GraphQLInputObjectType) else {}
                for item in value.fields:
                    if item.name.value == "search":
                        found += not isinstance(item.value, NullValueNode)
                    else:
                        item_type = getattr(fields.get(item.name.value), "type", None)
                        stack.append((item.value, item_type))
            elif isinstance(value, ListValueNode):
                if len(value.values) > MAX_LIST_ITEMS:
                    long_list = long_list or value
                item_type = get_nullable_type(value_type) if value_type is not None else None
                of_type = item_type.of_type if isinstance(item_type, GraphQLList) else None
                stack.extend((v, of_type) for v in value.values)
    return found, long_list


def argument_searches(node: FieldNode, args: Mapping[str, Any]) -> int:
    """The ``search`` values the analysis counted in a field's arguments (``args``: the
    field definition's), each charged ``SEARCH_COST`` per scan."""
    return _arguments(node, args)[0]


class CostMeter:
    """The cost a request's resolvers charge for what only the data shows (a saved
    segment's stored filter), on top of its document's: a charge that would take the
    total past ``max_cost`` raises QUERY_TOO_COMPLEX before the work it pays for.

    ``document_cost`` is measured on the first charge only (most requests make none).
    """

    def __init__(self, max_cost: int | None = None,
                 document_cost: Callable[[], int] = lambda: 0):
        self.max_cost = max_cost
        self._measure = document_cost
        self._document: int | None = None
        #: What the resolvers charged so far (refused charges excluded).
        self.charged = 0

    @property
    def document_cost(self) -> int:
        if self._document is None:
            self._document = self._measure()
        return self._document

    @property
    def total(self) -> int:
        return self.document_cost + self.charged

    def charge(self, amount: int, what: str) -> None:
        if amount <= 0:
            return
        total = self.document_cost + self.charged + amount
        if self.max_cost is not None and total > self.max_cost:
            raise GraphQLError(
                f"{what} costs {amount} more than the document shows (a saved segment's "
                f"filter holds a search); the query would cost {total}, the limit is "
                f"{self.max_cost}. Ask for fewer counts or pages over it (the cost model: "
                f"docs/graphql.md).",
                extensions={"code": "QUERY_TOO_COMPLEX", "cost": total,
                            "maxCost": self.max_cost})
        self.charged += amount


class Analysis(NamedTuple):
    operations: list[OperationMeasure]
    long_list: ListValueNode | None
    introspection: FieldNode | None
    #: A selection set over ``MAX_SELECTIONS``, if any.
    wide: SelectionSetNode | None = None


def analyse(schema: GraphQLSchema, document: DocumentNode, tables: CostTables) -> Analysis:
    """Depth and cost of each operation of ``document``, a literal list over
    ``MAX_LIST_ITEMS`` and an introspection field if any, in time linear in the document."""
    analysis = _Analysis(schema, document, tables)
    operations = []
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        root = schema.get_root_type(definition.operation)
        m = analysis.selection_set(definition.selection_set, root)
        cost = min(MAX_COUNTED_COST, math.ceil(m.per_value + m.fixed))
        operations.append(OperationMeasure(definition, m.depth, cost))
    return Analysis(operations, analysis.long_list, analysis.introspection, analysis.wide)


def measure(schema: GraphQLSchema, document: DocumentNode, tables: CostTables
            ) -> list[OperationMeasure]:
    """Depth and cost of each operation of ``document``."""
    return analyse(schema, document, tables).operations


def limit_errors(analysis: Analysis, max_depth: int, max_cost: int) -> list[GraphQLError]:
    """QUERY_TOO_COMPLEX errors for operations over the depth or cost limit, or for a
    selection set wider than ``MAX_SELECTIONS``."""
    errors = []
    if analysis.wide is not None:
        errors.append(GraphQLError(
            f"A selection set holds {len(analysis.wide.selections):,} selections; the limit "
            f"is {MAX_SELECTIONS:,}.", analysis.wide,
            extensions={"code": "QUERY_TOO_COMPLEX", "maxSelections": MAX_SELECTIONS}))
    for operation, depth, cost in analysis.operations:
        extensions = {"code": "QUERY_TOO_COMPLEX", "depth": depth, "cost": cost,
                      "maxDepth": max_depth, "maxCost": max_cost}
        if depth > max_depth:
            errors.append(GraphQLError(
                f"The query is nested {depth} levels deep; the limit is {max_depth}.",
                operation, extensions=extensions))
        elif cost > max_cost:
            at_least = "at least " if cost >= MAX_COUNTED_COST else ""
            errors.append(GraphQLError(
                f"The query costs {at_least}{cost}; the limit is {max_cost}. Ask for smaller "
                f"pages (first), fewer nested connections, counts or reports (the cost "
                f"model: docs/graphql.md).", operation, extensions=extensions))
    return errors


def list_too_long_message(where: str) -> str:
    return (f"{where} holds a list of more than {MAX_LIST_ITEMS:,} items; send at most "
            f"{MAX_LIST_ITEMS:,} per request.")


def input_errors(analysis: Analysis, introspection_allowed: bool, forbidden: bool
                 ) -> list[GraphQLError]:
    """A literal list over ``MAX_LIST_ITEMS`` (BAD_USER_INPUT), or introspection the caller
    may not use: GRAPHQL_VALIDATION_FAILED when it is off, FORBIDDEN when only keys with
    ``schema:read`` may use it."""
    if analysis.long_list is not None:
        return [GraphQLError(list_too_long_message("The document"), analysis.long_list,
                             extensions={"code": "BAD_USER_INPUT"})]
    field = analysis.introspection
    if field is not None and not introspection_allowed:
        if forbidden:
            return [GraphQLError(
                f"Introspection ({field.name.value}) needs the {SCHEMA_READ} scope, which "
                f"this API key lacks.", field, extensions={"code": "FORBIDDEN"})]
        return [GraphQLError(
            "Introspection is disabled on this server (RAPPORT_GRAPHQL_INTROSPECTION); the "
            "schema is published as schema.graphql.", field,
            extensions={"code": "GRAPHQL_VALIDATION_FAILED"})]
    return []


def oversized_list(value: Any) -> bool:
    """Whether a JSON value holds a list of more than ``MAX_LIST_ITEMS`` items (iterative;
    the nesting depth is bounded before this runs)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            if len(item) > MAX_LIST_ITEMS:
                return True
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return False


def bound_overlap_validation() -> None:
    """Lower graphql-core's budget for comparing overlapping fields (its documented knob,
    read when the rule starts), so a hostile document aborts its validation in
    milliseconds rather than a third of a second."""
    overlapping_fields_can_be_merged.MAX_COMPLEXITY_BUDGET = OVERLAP_BUDGET
