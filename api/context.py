"""Per-request context: the caller and the DataLoaders of this request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiodataloader import DataLoader

from api.limits import CostMeter
from core.auth import Principal

L = TypeVar("L", bound=DataLoader)


@dataclass
class RequestContext:
    principal: Principal
    _loaders: dict[tuple[Any, ...], DataLoader] = field(default_factory=dict)
    #: What resolvers work out once per request (e.g. whether a selection reads a field).
    memo: dict[Any, Any] = field(default_factory=dict)
    #: What resolvers charge beyond the document's cost (api/limits.py, ``CostMeter``).
    cost: CostMeter = field(default_factory=CostMeter)

    def loader(self, cls: type[L], **params: Any) -> L:
        """The request's instance of ``cls`` for these ``params`` (created on first use).

        Loaders are created inside the running event loop, once per request, so their
        cache never outlives the request. ``params`` (page size, filters) are passed to the
        loader's constructor and make a separate instance per distinct value.
        """
        key = (cls, *sorted(params.items()))
        instance = self._loaders.get(key)
        if instance is None:
            instance = cls(**params)
            self._loaders[key] = instance
        return instance  # type: ignore[return-value]
