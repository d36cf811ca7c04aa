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

``run`` runs a coroutine on a fresh event loop per request, as ``asyncio.run`` does, minus
the SIGINT handler ``asyncio.run`` installs on the main thread: restoring it formats the
``repr`` of the finished task, which includes the whole result (about 1 ms for a
3,600-field response, twice per request).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from collections.abc import Coroutine
from decimal import Decimal
from typing import Any, NamedTuple, TypeVar

from graphene.types.resolver import attr_resolver, dict_or_attr_resolver, dict_resolver
from graphql import (
    ExecutionContext, FieldNode, GraphQLField, GraphQLLeafType, GraphQLObjectType,
    GraphQLResolveInfo, Undefined, is_leaf_type, is_non_null_type, is_object_type,
    located_error,
)
from graphql.execution.values import get_argument_values
from graphql.pyutils import Path
from graphql.pyutils import is_awaitable as _graphql_is_awaitable

T = TypeVar("T")

#: Types whose instances are never awaitable: checked before graphql-core's slower test.
_PLAIN_TYPES = frozenset({str, int, float, bool, type(None), dict, list, tuple, Decimal,
                          dt.datetime, dt.date})
_ATTRIBUTE_RESOLVERS = (dict_or_attr_resolver, attr_resolver, dict_resolver)


def is_awaitable(value: Any) -> bool:
    """graphql-core's ``is_awaitable`` with a shortcut for plain values."""
    return type(value) not in _PLAIN_TYPES and _graphql_is_awaitable(value)


class _Leaf(NamedTuple):
    """How to run a scalar field: ``attname`` set means graphene's default resolver."""

    field_def: GraphQLField
    leaf: GraphQLLeafType
    non_null: bool
    attname: str | None = None
    default: Any = None
    from_dict: bool | None = None  # None: dict or attribute, as graphene's default resolver


class _Object(NamedTuple):
    """A field of an object type (not a list, not an interface or union)."""

    field_def: GraphQLField
    object_type: GraphQLObjectType


def _field_plan(field_def: GraphQLField | None) -> _Leaf | _Object | None:
    """How ``execute_fields`` runs a field; None: through graphql-core's ``execute_field``."""
    if field_def is None or field_def.resolve is None:
        return None
    field_type = field_def.type
    non_null = is_non_null_type(field_type)
    named = field_type.of_type if non_null else field_type  # type: ignore[union-attr]
    if is_object_type(named):
        return _Object(field_def, named)
    if not is_leaf_type(named):
        return None
    resolve = field_def.resolve
    if (not field_def.args and isinstance(resolve, functools.partial)
            and resolve.func in _ATTRIBUTE_RESOLVERS and len(resolve.args) == 2
            and not resolve.keywords):
        from_dict = {dict_or_attr_resolver: None, attr_resolver: False,
                     dict_resolver: True}[resolve.func]
        attname, default = resolve.args
        return _Leaf(field_def, named, non_null, attname, default, from_dict)
    return _Leaf(field_def, named, non_null)


_Plan = list[tuple[str, list[FieldNode], "_Leaf | _Object | None"]]


class RapportExecutionContext(ExecutionContext):
    """graphql-core's ``ExecutionContext`` with the shortcuts described in the module.

    Also: when a single field of an object is awaitable, it is awaited directly rather
    than through ``asyncio.gather`` (one task less per object; DataLoader batching is
    unchanged, as the enclosing list still gathers its items).
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # id(fields) -> (fields, plan); ``fields`` is kept so its id is not reused.
        self._plans: dict[int, tuple[dict[str, list[FieldNode]], _Plan]] = {}

    def _plan(self, parent_type: GraphQLObjectType, fields: dict[str, list[FieldNode]]
              ) -> _Plan:
        cached = self._plans.get(id(fields))
        if cached is not None and cached[0] is fields:
            return cached[1]
        plan = [(name, nodes, _field_plan(parent_type.fields.get(nodes[0].name.value)))
                for name, nodes in fields.items()]
        self._plans[id(fields)] = (fields, plan)
        return plan

    def execute_fields(self, parent_type: GraphQLObjectType, source_value: Any,
                       path: Path | None, fields: dict[str, list[FieldNode]]) -> Any:
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
                    else:
                        field_path = Path(path, response_name, parent_type.name)
                        info = self.build_resolve_info(leaf.field_def, field_nodes,
                                                       parent_type, field_path)
                        args = get_argument_values(leaf.field_def, field_nodes[0],
                                                   self.variable_values
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
            args = get_argument_values(field_def, field_nodes[0], self.variable_values
                                       ) if field_def.args else {}
            value = field_def.resolve(source, info, **args)  # type: ignore[misc]
        except Exception as raw_error:  # noqa: BLE001 - shaped as graphql-core does
            error = located_error(raw_error, field_nodes, path.as_list())
            self.handle_field_error(error, field_def.type, path)
            return None
        if (value is None or value is Undefined or isinstance(value, Exception)
                or self.is_awaitable(value)):
            return self._complete_resolved(parent_type, field_def, field_nodes, path, info,
                                           value)
        return_type = field_def.type
        try:
            completed = self.complete_object_value(plan.object_type, field_nodes, info, path,
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
