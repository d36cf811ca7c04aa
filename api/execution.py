"""Execution: graphql-core's executor with shortcuts for the common field shapes.

A large result (100 customers x 5 interactions: about 3,600 fields) is mostly scalars read
from an attribute by graphene's default resolver, plus object fields such as an edge's
``node``. graphql-core spends about 5 microseconds on each field (a ``Path``, a
``GraphQLResolveInfo``, argument coercion, two levels of ``complete_value``, several
awaitable checks). ``RapportExecutionContext`` runs these shapes directly:

- a scalar/enum field with graphene's default resolver: read the attribute (or dict key),
  serialize it with the field's own type;
- a scalar/enum field with its own resolver: call it as graphql-core does (same info,
  same coerced arguments), serialize the value;
- an object field: call its resolver and go straight to ``complete_object_value``.

Every other case is handed to graphql-core's own code with the value already resolved:
``None`` on a non-null field, exceptions, awaitables, values a scalar refuses; list,
interface and union fields, ``__typename`` and introspection run through
``execute_field`` unchanged, and so does everything when middleware is set. Resolver
errors are located and handled by graphql-core's ``located_error``/``handle_field_error``
with the same path, so data and errors are the same as without the shortcuts.

A list of an object type (a connection's ``edges``) resolved as a ``list`` goes item by
item straight to the object's fields, and graphene's ``GlobalID`` over the default resolver
(every ``id``) is computed without a ``GraphQLResolveInfo``.

``DocumentPlan`` is the compiled plan of a cached, validated document (api/view.py keeps
a ``PlanCache`` with each cached document): the collected fields of each selection (through
fragments and @skip/@include), the plan of each field (definition, resolver shape,
serializer) and its literal arguments, worked out on first use and reused by every later
request; @skip/@include on variables make one variant per combination of their values.
Authorization needs nothing at run time beyond what graphql-core does: validation refused
the document otherwise, and interfaces and unions (``node(id:)``) are resolved, and checked,
by graphql-core's own ``complete_abstract_value``. tests/api/test_compiled_execution.py
compares data and errors with graphql-core's executor on many shapes.

``run`` runs a coroutine on a fresh event loop per request, as ``asyncio.run`` does, minus
the SIGINT handler ``asyncio.run`` installs on the main thread: restoring it formats the
``repr`` of the finished task, which includes the whole result (about 1 ms for a
3,600-field response, twice per request).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import functools
import threading
import types
from collections.abc import Coroutine
from decimal import Decimal
from typing import Any, NamedTuple, TypeVar

from graphene.relay.node import GlobalID
from graphene.types.resolver import attr_resolver, dict_or_attr_resolver, dict_resolver
from graphql import (
    DirectiveNode, DocumentNode, ExecutionContext, FieldNode, GraphQLField, GraphQLLeafType,
    GraphQLObjectType, GraphQLResolveInfo, OperationDefinitionNode, Undefined, VariableNode,
    Visitor, is_leaf_type, is_list_type, is_non_null_type, is_object_type, located_error,
    visit,
)
from graphql.execution.collect_fields import collect_sub_fields
from graphql.execution.values import get_argument_values
from graphql.pyutils import Path
from graphql.pyutils import is_awaitable as _graphql_is_awaitable

T = TypeVar("T")

#: Types whose instances are never awaitable: checked before graphql-core's slower test.
_PLAIN_TYPES = frozenset({str, int, float, bool, type(None), dict, list, tuple, Decimal,
                          dt.datetime, dt.date})
_ATTRIBUTE_RESOLVERS = (dict_or_attr_resolver, attr_resolver, dict_resolver)
#: Types whose instances may be awaitable depending on the instance.
_ASYNC_TYPES = (types.CoroutineType, types.GeneratorType)


#: Further classes found never to be awaitable (no ``__await__``, not a coroutine or
#: generator type): the rows, pages and edges resolvers return. Bounded.
_NEVER_AWAITABLE: set[type] = set()
_MAX_NEVER_AWAITABLE = 1024


def is_awaitable(value: Any) -> bool:
    """graphql-core's ``is_awaitable`` with a shortcut for plain values and for classes
    already seen that cannot make awaitable instances."""
    cls = type(value)
    if cls in _PLAIN_TYPES or cls in _NEVER_AWAITABLE:
        return False
    if _graphql_is_awaitable(value):
        return True
    if (not hasattr(cls, "__await__") and not issubclass(cls, _ASYNC_TYPES)
            and "__await__" not in getattr(value, "__dict__", ())
            and len(_NEVER_AWAITABLE) < _MAX_NEVER_AWAITABLE):
        _NEVER_AWAITABLE.add(cls)
    return False


class _Leaf(NamedTuple):
    """How to run a scalar field: ``attname`` set means graphene's default resolver."""

    field_def: GraphQLField
    leaf: GraphQLLeafType
    non_null: bool
    attname: str | None = None
    default: Any = None
    from_dict: bool | None = None  # None: dict or attribute, as graphene's default resolver
    #: graphene's ``GlobalID`` over the default resolver: (Node class, type name or None)
    global_id: tuple[Any, str | None] | None = None


class _Object(NamedTuple):
    """A field of an object type (not a list, not an interface or union)."""

    field_def: GraphQLField
    object_type: GraphQLObjectType
    non_null: bool


class _ObjectList(NamedTuple):
    """A list of an object type (``[Edge!]!``, ``[Customer]``): no nested lists, no
    interfaces or unions."""

    field_def: GraphQLField
    object_type: GraphQLObjectType
    item_type: Any  # the list's own item type (the object type, maybe non-null)


def _uses_variables(node: FieldNode) -> bool:
    """Whether any argument of ``node`` refers to a variable (at any depth)."""
    stack: list[Any] = [argument.value for argument in node.arguments]
    while stack:
        value = stack.pop()
        if isinstance(value, VariableNode):
            return True
        stack.extend(getattr(value, "values", ()) or ())  # list values
        stack.extend(f.value for f in getattr(value, "fields", ()) or ())  # object values
    return False


def _field_plan(field_def: GraphQLField | None) -> _Leaf | _Object | _ObjectList | None:
    """How ``execute_fields`` runs a field; None: through graphql-core's ``execute_field``."""
    if field_def is None or field_def.resolve is None:
        return None
    field_type = field_def.type
    non_null = is_non_null_type(field_type)
    named = field_type.of_type if non_null else field_type  # type: ignore[union-attr]
    if is_object_type(named):
        return _Object(field_def, named, non_null)
    if is_list_type(named):
        item_type = named.of_type  # type: ignore[union-attr]
        item = item_type.of_type if is_non_null_type(item_type) else item_type
        if is_object_type(item):
            return _ObjectList(field_def, item, item_type)
        return None
    if not is_leaf_type(named):
        return None
    resolve = field_def.resolve
    global_id = None
    if (not field_def.args and isinstance(resolve, functools.partial)
            and resolve.func is GlobalID.id_resolver and len(resolve.args) == 2
            and set(resolve.keywords) <= {"parent_type_name"}):
        # id_resolver(parent_resolver, node, root, info, parent_type_name): the node's
        # global id of what the default resolver reads (which does not use ``info``).
        global_id = (resolve.args[1], resolve.keywords.get("parent_type_name"))
        resolve = resolve.args[0]
    if (not field_def.args and isinstance(resolve, functools.partial)
            and resolve.func in _ATTRIBUTE_RESOLVERS and len(resolve.args) == 2
            and not resolve.keywords):
        from_dict = {dict_or_attr_resolver: None, attr_resolver: False,
                     dict_resolver: True}[resolve.func]
        attname, default = resolve.args
        return _Leaf(field_def, named, non_null, attname, default, from_dict, global_id)
    return _Leaf(field_def, named, non_null)


_Plan = list[tuple[str, list[FieldNode], "_Leaf | _Object | _ObjectList | None"]]

#: Argument values that can be shared between requests (a resolver cannot change them).
_IMMUTABLE = frozenset({str, int, float, bool, type(None), Decimal})
#: A document whose @skip/@include variables take more distinct values than this runs
#: the further combinations without keeping their plans.
MAX_VARIANTS = 8
#: Memory of one plan variant per character of the document (measured: 55 to 60 once
#: every selection has run), for the document cache's bound.
PLAN_BYTES_PER_CHAR = 64


class _Variant:
    """What execution works out for one combination of @skip/@include variable values:
    the collected fields of each selection, the plan of each field, literal arguments."""

    __slots__ = ("root_fields", "subfields", "plans", "arguments")

    def __init__(self) -> None:
        self.root_fields: dict[str, list[FieldNode]] | None = None
        #: (type, ids of the field nodes) -> collected sub-fields (the nodes are kept
        #: alive by the cached document, so their ids are not reused).
        self.subfields: dict[tuple[Any, ...], dict[str, list[FieldNode]]] = {}
        #: id(collected fields) -> (those fields, their plan)
        self.plans: dict[int, tuple[dict[str, list[FieldNode]], _Plan]] = {}
        #: (id(field definition), id(field node)) -> coerced literal arguments, or None
        #: when they depend on variables or hold mutable values (computed per request).
        self.arguments: dict[tuple[int, int], tuple[GraphQLField, dict[str, Any]] | None] = {}


class _DirectiveVariables(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def enter_directive(self, node: DirectiveNode, *args: Any) -> None:
        if node.name.value in ("skip", "include"):
            for argument in node.arguments:
                if isinstance(argument.value, VariableNode):
                    self.names.add(argument.value.name.value)


class DocumentPlan:
    """The compiled execution plan of one validated document: per selection and field,
    the generic work of graphql-core's executor (collecting fields through fragments and
    @skip/@include, looking up field definitions, choosing how a field is resolved and
    serialized, coercing literal arguments) done on first use and kept for every later
    request of the same document, operation and caller scopes (the view's cache holds
    it with the validated document). Directives that depend on variables make one
    variant per combination of their values (at most ``MAX_VARIANTS``).
    """

    def __init__(self, directive_variables: tuple[str, ...]):
        self.directive_variables = directive_variables
        self._variants: dict[tuple[Any, ...], _Variant] = {}
        self._lock = threading.Lock()
        self.context_class: type[RapportExecutionContext] = type(
            "PlannedExecutionContext", (RapportExecutionContext,), {"document_plan": self})

    def variant(self, variable_values: dict[str, Any]) -> _Variant:
        key = tuple(variable_values.get(name) for name in self.directive_variables)
        found = self._variants.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._variants.get(key)
            if found is None:
                found = _Variant()
                if len(self._variants) < MAX_VARIANTS:
                    self._variants[key] = found
        return found


class PlanCache:
    """Plans of a cached document, one per operation name."""

    def __init__(self, document: DocumentNode):
        self.document = document
        finder = _DirectiveVariables()
        visit(document, finder)
        #: The variables @skip/@include depend on: the plans' variants are keyed by them.
        self.directive_variables = tuple(sorted(finder.names))
        self._plans: dict[str | None, DocumentPlan] = {}

    def plan(self, operation_name: str | None) -> DocumentPlan:
        found = self._plans.get(operation_name)
        if found is None:
            found = DocumentPlan(self.directive_variables)
            if operation_name is None or any(
                    isinstance(d, OperationDefinitionNode) and d.name is not None
                    and d.name.value == operation_name for d in self.document.definitions):
                found = self._plans.setdefault(operation_name, found)
        return found

    def estimated_bytes(self, chars: int) -> int:
        """What the plans may hold at most for a document of ``chars`` characters: one
        variant per combination of its directive variables (true, false or null), up to
        ``MAX_VARIANTS``; the operations of a document share its selections."""
        variables = len(self.directive_variables)
        return PLAN_BYTES_PER_CHAR * chars * min(3 ** min(variables, 4), MAX_VARIANTS)

    def context_class(self, operation_name: str | None) -> type[RapportExecutionContext]:
        """The execution context class that runs this document with its plan."""
        return self.plan(operation_name).context_class


class RapportExecutionContext(ExecutionContext):
    """graphql-core's ``ExecutionContext`` with the shortcuts described in the module.

    Also: when a single field of an object is awaitable, it is awaited directly rather
    than through ``asyncio.gather`` (one task less per object; DataLoader batching is
    unchanged, as the enclosing list still gathers its items).
    """

    #: Set on the class a ``DocumentPlan`` makes: the plan kept across requests. Without
    #: one, the same plan is built for this request only.
    document_plan: DocumentPlan | None = None

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        plan = self.document_plan
        self._variant = plan.variant(self.variable_values) if plan is not None else _Variant()
        # id(fields) -> (fields, plan); ``fields`` is kept so its id is not reused.
        self._plans = self._variant.plans

    def _plan(self, parent_type: GraphQLObjectType, fields: dict[str, list[FieldNode]]
              ) -> _Plan:
        cached = self._plans.get(id(fields))
        if cached is not None and cached[0] is fields:
            return cached[1]
        plan = [(name, nodes, _field_plan(parent_type.fields.get(nodes[0].name.value)))
                for name, nodes in fields.items()]
        kept = self._plans.setdefault(id(fields), (fields, plan))
        return kept[1] if kept[0] is fields else plan

    def execute_operation(self, operation: OperationDefinitionNode, root_value: Any) -> Any:
        """graphql-core's, with the root fields collected once per plan."""
        variant = self._variant
        if variant.root_fields is None or operation is not self.operation:
            return super().execute_operation(operation, root_value)
        root_type = self.schema.get_root_type(operation.operation)
        return (self.execute_fields_serially if operation.operation.value == "mutation"
                else self.execute_fields)(root_type, root_value, None, variant.root_fields)

    def execute_fields_serially(self, parent_type: GraphQLObjectType, source_value: Any,
                                path: Path | None, fields: dict[str, list[FieldNode]]) -> Any:
        self._keep_root(fields)
        return super().execute_fields_serially(parent_type, source_value, path, fields)

    def _keep_root(self, fields: dict[str, list[FieldNode]]) -> None:
        if (self._variant.root_fields is None
                and self.schema.get_root_type(self.operation.operation) is not None):
            self._variant.root_fields = fields

    def collect_subfields(self, return_type: GraphQLObjectType, field_nodes: list[FieldNode]
                          ) -> dict[str, list[FieldNode]]:
        """graphql-core's, cached in the plan rather than per request."""
        cache = self._variant.subfields
        key = ((return_type, id(field_nodes[0])) if len(field_nodes) == 1
               else (return_type, *map(id, field_nodes)))
        found = cache.get(key)
        if found is None:  # another thread may have collected it meanwhile: keep one
            found = cache.setdefault(key, collect_sub_fields(
                self.schema, self.fragments, self.variable_values, return_type, field_nodes))
        return found

    def _arguments(self, field_def: GraphQLField, node: FieldNode) -> dict[str, Any]:
        """The field's coerced arguments; literal ones (no variable, immutable values) are
        coerced once per plan. A fresh dict each time: resolvers may change it."""
        key = (id(field_def), id(node))
        arguments = self._variant.arguments
        cached = arguments.get(key, Undefined)
        if cached is not None and cached is not Undefined and cached[0] is field_def:
            return dict(cached[1])
        values = get_argument_values(field_def, node, self.variable_values)
        if cached is Undefined:
            shareable = (not _uses_variables(node)
                         and all(type(v) in _IMMUTABLE or isinstance(v, enum.Enum)
                                 for v in values.values()))
            arguments[key] = (field_def, dict(values)) if shareable else None
        return values

    def execute_fields(self, parent_type: GraphQLObjectType, source_value: Any,
                       path: Path | None, fields: dict[str, list[FieldNode]]) -> Any:
        if path is None:
            self._keep_root(fields)
        if self.middleware_manager is not None:
            return super().execute_fields(parent_type, source_value, path, fields)
        results: dict[str, Any] = {}
        awaitable_fields: list[str] = []
        check_awaitable = self.is_awaitable
        source_is_dict = isinstance(source_value, dict)
        for response_name, field_nodes, leaf in self._plan(parent_type, fields):
            if type(leaf) is _Object:
                result = self._execute_object_field(parent_type, source_value, field_nodes,
                                                    Path(path, response_name,
                                                         parent_type.name), leaf)
            elif type(leaf) is _ObjectList:
                result = self._execute_object_list_field(
                    parent_type, source_value, field_nodes,
                    Path(path, response_name, parent_type.name), leaf)
            elif leaf is None or (leaf.from_dict is not None
                                  and leaf.from_dict != source_is_dict):
                result = self.execute_field(parent_type, source_value, field_nodes,
                                            Path(path, response_name, parent_type.name))
            else:
                field_path = info = None
                try:
                    if leaf.attname is not None:
                        value = (source_value.get(leaf.attname, leaf.default)
                                 if source_is_dict
                                 else getattr(source_value, leaf.attname, leaf.default))
                        if leaf.global_id is not None:
                            node, type_name = leaf.global_id
                            value = node.to_global_id(type_name or parent_type.name, value)
                    else:
                        field_path = Path(path, response_name, parent_type.name)
                        info = self.build_resolve_info(leaf.field_def, field_nodes,
                                                       parent_type, field_path)
                        args = self._arguments(leaf.field_def, field_nodes[0]
                                               ) if leaf.field_def.args else {}
                        value = leaf.field_def.resolve(  # type: ignore[misc]
                            source_value, info, **args)
                except Exception as raw_error:  # noqa: BLE001 - shaped as graphql-core does
                    field_path = field_path or Path(path, response_name, parent_type.name)
                    error = located_error(raw_error, field_nodes, field_path.as_list())
                    self.handle_field_error(error, leaf.field_def.type, field_path)
                    results[response_name] = None
                    continue
                if value is None or value is Undefined:
                    if not leaf.non_null:
                        results[response_name] = None
                        continue
                elif not isinstance(value, Exception) and not check_awaitable(value):
                    try:
                        serialized = leaf.leaf.serialize(value)
                    except Exception:  # noqa: BLE001 - graphql-core reports it below
                        serialized = None
                    if serialized is not None and serialized is not Undefined:
                        results[response_name] = serialized
                        continue
                # Anything unusual: graphql-core completes (or rejects) the value read.
                field_path = field_path or Path(path, response_name, parent_type.name)
                result = self._complete_resolved(parent_type, leaf.field_def, field_nodes,
                                                 field_path, info, value)
            if result is not Undefined:
                results[response_name] = result
                if check_awaitable(result):
                    awaitable_fields.append(response_name)
        if not awaitable_fields:
            return results
        if len(awaitable_fields) == 1:
            name = awaitable_fields[0]

            async def get_result() -> dict[str, Any]:
                results[name] = await results[name]
                return results

            return get_result()

        async def get_results() -> dict[str, Any]:
            values = await asyncio.gather(*(results[name] for name in awaitable_fields))
            results.update(zip(awaitable_fields, values))
            return results

        return get_results()

    def _execute_object_field(self, parent_type: GraphQLObjectType, source: Any,
                              field_nodes: list[FieldNode], path: Path, plan: _Object) -> Any:
        """graphql-core's ``execute_field`` for a field of an object type, minus the generic
        dispatch of ``complete_value`` when the resolver returns an object at once."""
        field_def = plan.field_def
        info = self.build_resolve_info(field_def, field_nodes, parent_type, path)
        try:
            args = self._arguments(field_def, field_nodes[0]) if field_def.args else {}
            value = field_def.resolve(source, info, **args)  # type: ignore[misc]
        except Exception as raw_error:  # noqa: BLE001 - shaped as graphql-core does
            error = located_error(raw_error, field_nodes, path.as_list())
            self.handle_field_error(error, field_def.type, path)
            return None
        if (value is None or value is Undefined) and not plan.non_null:
            return None
        if (value is None or value is Undefined or isinstance(value, Exception)
                or self.is_awaitable(value)):
            return self._complete_resolved(parent_type, field_def, field_nodes, path, info,
                                           value)
        return_type = field_def.type
        object_type = plan.object_type
        is_type_of = object_type.is_type_of
        try:
            if is_type_of is None or is_type_of(value, info) is True:
                completed = self.execute_fields(object_type, value, path,
                                                self.collect_subfields(object_type,
                                                                       field_nodes))
            else:  # refused, or an awaitable answer: graphql-core's own completion
                completed = self.complete_object_value(object_type, field_nodes, info, path,
                                                       value)
        except Exception as raw_error:  # noqa: BLE001 - shaped as graphql-core does
            error = located_error(raw_error, field_nodes, path.as_list())
            self.handle_field_error(error, return_type, path)
            return None
        if self.is_awaitable(completed):
            async def await_completed() -> Any:
                try:
                    return await completed
                except Exception as raw_error:
                    error = located_error(raw_error, field_nodes, path.as_list())
                    self.handle_field_error(error, return_type, path)
                    return None

            return await_completed()
        return completed

    def _execute_object_list_field(self, parent_type: GraphQLObjectType, source: Any,
                                   field_nodes: list[FieldNode], path: Path,
                                   plan: _ObjectList) -> Any:
        """graphql-core's ``execute_field`` + ``complete_list_value`` for a list of objects
        resolved at once as a ``list``: each item goes straight to the object's fields.
        Anything else (None, an awaitable, another iterable, an awaitable item) is handed
        to graphql-core's completion with the value already resolved."""
        field_def = plan.field_def
        return_type = field_def.type
        info = self.build_resolve_info(field_def, field_nodes, parent_type, path)
        try:
            args = self._arguments(field_def, field_nodes[0]) if field_def.args else {}
            value = field_def.resolve(source, info, **args)  # type: ignore[misc]
        except Exception as raw_error:  # noqa: BLE001 - shaped as graphql-core does
            error = located_error(raw_error, field_nodes, path.as_list())
            self.handle_field_error(error, return_type, path)
            return None
        check_awaitable = self.is_awaitable
        if type(value) is not list or any(check_awaitable(item) for item in value):
            return self._complete_resolved(parent_type, field_def, field_nodes, path, info,
                                           value)
        object_type = plan.object_type
        item_type = plan.item_type
        is_type_of = object_type.is_type_of
        sub_fields = self.collect_subfields(object_type, field_nodes)
        completed: list[Any] = []
        awaitable_indices: list[int] = []
        try:
            for index, item in enumerate(value):
                item_path = path.add_key(index, None)
                try:
                    if item is not None and (is_type_of is None
                                             or is_type_of(item, info) is True):
                        completed_item = self.execute_fields(object_type, item, item_path,
                                                             sub_fields)
                    else:  # null items, a failing or awaitable is_type_of: graphql-core's
                        completed_item = self.complete_value(item_type, field_nodes, info,
                                                             item_path, item)
                    if check_awaitable(completed_item):
                        completed_item = self._await_item(completed_item, field_nodes,
                                                          item_type, item_path)
                        awaitable_indices.append(index)
                except Exception as raw_error:  # noqa: BLE001 - as complete_list_value
                    error = located_error(raw_error, field_nodes, item_path.as_list())
                    self.handle_field_error(error, item_type, item_path)
                    completed_item = None
                completed.append(completed_item)
        except Exception as raw_error:  # noqa: BLE001 - a non-null item failed
            error = located_error(raw_error, field_nodes, path.as_list())
            self.handle_field_error(error, return_type, path)
            return None
        if not awaitable_indices:
            return completed

        async def get_completed_results() -> Any:
            try:
                for index, result in zip(awaitable_indices, await asyncio.gather(
                        *(completed[index] for index in awaitable_indices))):
                    completed[index] = result
                return completed
            except Exception as raw_error:
                error = located_error(raw_error, field_nodes, path.as_list())
                self.handle_field_error(error, return_type, path)
                return None

        return get_completed_results()

    async def _await_item(self, completed: Any, field_nodes: list[FieldNode], item_type: Any,
                          item_path: Path) -> Any:
        try:
            return await completed
        except Exception as raw_error:
            error = located_error(raw_error, field_nodes, item_path.as_list())
            self.handle_field_error(error, item_type, item_path)
            return None

    def _complete_resolved(self, parent_type: GraphQLObjectType, field_def: GraphQLField,
                           field_nodes: list[FieldNode], path: Path,
                           info: GraphQLResolveInfo | None, value: Any) -> Any:
        """The rest of graphql-core's ``execute_field`` once the resolver returned ``value``."""
        return_type = field_def.type
        if info is None:
            info = self.build_resolve_info(field_def, field_nodes, parent_type, path)
        try:
            if self.is_awaitable(value):
                async def await_result() -> Any:
                    try:
                        completed = self.complete_value(return_type, field_nodes, info, path,
                                                        await value)
                        if self.is_awaitable(completed):
                            return await completed
                        return completed
                    except Exception as raw_error:
                        error = located_error(raw_error, field_nodes, path.as_list())
                        self.handle_field_error(error, return_type, path)
                        return None

                return await_result()
            return self.complete_value(return_type, field_nodes, info, path, value)
        except Exception as raw_error:
            error = located_error(raw_error, field_nodes, path.as_list())
            self.handle_field_error(error, return_type, path)
            return None


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on a new event loop (what ``asyncio.run`` does, minus signals)."""
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coroutine)
    finally:
        try:
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
