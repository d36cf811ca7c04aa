"""GraphQL contribution hooks. The schema is composed from these at app creation.

Every field and mutation a plugin contributes names the scope it needs: wrap fields with
``api.scoped(field, "loyalty:read")`` and give mutations a ``scope`` class attribute (see
``api.RapportMutation``). Every type declares its domain with ``@api.domain("loyalty")``:
reading it then needs ``loyalty:read`` wherever it is reached (api/authorization.py). A
field without a scope, a type without a domain and a name clash fail start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.hookspecs import hookspec

if TYPE_CHECKING:
    import graphene

    from api.mutations import RapportMutation


@hookspec
def rapport_graphql_types() -> list[type[graphene.ObjectType]] | None:
    """Return extra GraphQL types to include even when no field refers to them directly
    (for example a type implementing ``Node`` that is only reached through ``node(id)``)."""


@hookspec
def rapport_graphql_query_fields() -> dict[str, graphene.Field] | None:
    """Return root query fields, ``{"loyaltyProgram": scoped(graphene.Field(...), scope)}``.

    Names are camelCase as clients see them. Resolvers receive ``info.context`` (an
    ``api.context.RequestContext``: ``principal``, ``loader()``).
    """


@hookspec
def rapport_graphql_mutations() -> dict[str, type[RapportMutation]] | None:
    """Return mutations, ``{"redeemPoints": RedeemPoints}``; each a ``RapportMutation``."""


@hookspec
def rapport_graphql_customer_fields() -> dict[str, graphene.Field] | None:
    """Return fields to add to the ``Customer`` type, ``{"loyalty": scoped(Field(...), s)}``.

    The resolver's ``root`` is the core ``Customer`` model. Serve relations through a
    DataLoader (``info.context.loader(MyLoader)``) so a page of customers costs one query.
    Refer to the Customer type from your own types with ``api.CustomerType`` (a lazy
    reference: the Customer type is built per schema with every plugin's fields).
    """
