"""Authorization by type, edge by edge, over the whole schema.

Every (type, field) edge of the schema with every built-in plugin and the example plugin is
turned into a document that reaches the type and selects the field; the document is sent
with keys that hold one read scope (plus what the path to the type needs) and must be
refused (403 FORBIDDEN at validation) exactly when the field leads into a domain the key
cannot read, and accepted otherwise. The expected domains come from the tables below,
written by hand: the test never reads the ``@domain`` annotations it checks.

``node(id:)`` edges are decided at run time: a Node type of another domain gives
``null`` with a FORBIDDEN error at the path, whichever executor runs the document.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import graphene
import pytest
from flask import Flask
from graphene import relay
from graphql import (
    GraphQLEnumType, GraphQLInputObjectType, GraphQLInputType, GraphQLInterfaceType,
    GraphQLList, GraphQLNonNull, GraphQLObjectType, GraphQLScalarType, Undefined,
    get_named_type, is_leaf_type,
)

import api
from api.schema import SchemaError
from core import hookimpl
from core.auth import Principal
from core.plugins import builtin_plugin_names
from tests.conftest import AppFactory, GraphQL, admin_token

pytest.importorskip("rapport_referrals", reason="pip install -e examples/rapport-referrals")

#: The domain of every type that has one (read by hand from each type's meaning).
TYPE_DOMAINS: dict[str, str] = {
    # core
    "Customer": "customers", "ExternalId": "customers", "DuplicateGroup": "customers",
    "CustomerAttributeDefinition": "customers",
    "Interaction": "interactions",
    "Agent": "agents",
    "Alert": "alerts",
    "AuditEntry": "audit",
    "Job": "jobs", "JobKind": "jobs", "Schedule": "jobs",
    # loyalty
    "LoyaltyAccount": "loyalty", "LoyaltyEarnRule": "loyalty", "LoyaltyLedgerEntry": "loyalty",
    "LoyaltyMonthFlows": "loyalty", "LoyaltyProgram": "loyalty",
    "LoyaltyPurchaseBehaviour": "loyalty", "LoyaltyReport": "loyalty",
    "LoyaltyReward": "loyalty", "LoyaltyTier": "loyalty", "LoyaltyTierChange": "loyalty",
    "LoyaltyTierMembers": "loyalty",
    # complaints
    "Complaint": "complaints", "ComplaintSla": "complaints", "ComplaintStats": "complaints",
    "ComplaintStatsGroup": "complaints", "ComplaintTimelineEntry": "complaints",
    "ComplaintTransitionOption": "complaints", "ComplaintVocabularyItem": "complaints",
    # churn
    "BgnbdParameters": "churn", "ChurnClassifierInfo": "churn", "ChurnCohort": "churn",
    "ChurnCount": "churn", "ChurnFactor": "churn", "ChurnModel": "churn",
    "ChurnRecord": "churn", "ChurnReport": "churn", "ChurnReportMonth": "churn",
    "ChurnWarning": "churn", "CustomerChurn": "churn", "GammaGammaParameters": "churn",
    "SbgParameters": "churn", "ChurnModelValidation": "churn",
    "ValidationByFrequency": "churn", "ValidationTrackingPoint": "churn",
    "WinbackAttempt": "churn", "WinbackCampaign": "churn", "WinbackOutcomeCounts": "churn",
    "WinbackStats": "churn", "WinbackStrategyStats": "churn",
    "ChurnByOwnerReport": "churn", "ChurnGroupMonth": "churn", "ChurnOwnerMonth": "churn",
    "ChurnOwnerFigures": "churn", "ChurnTeamFigures": "churn", "ChurnMonthBottom": "churn",
    # surveys
    "Survey": "surveys", "SurveyAlphaIfDeleted": "surveys", "SurveyAnalysis": "surveys",
    "SurveyAnalysisRule": "surveys", "SurveyAnswer": "surveys",
    "SurveyChoiceStatistics": "surveys", "SurveyClusterProfile": "surveys",
    "SurveyClusterTag": "surveys", "SurveyClusters": "surveys",
    "SurveyCorrelations": "surveys", "SurveyCsat": "surveys", "SurveyCsatPart": "surveys",
    "SurveyDescriptive": "surveys", "SurveyDriver": "surveys", "SurveyDrivers": "surveys",
    "SurveyFactors": "surveys", "SurveyFrequency": "surveys", "SurveyItemAdequacy": "surveys",
    "SurveyItemStatistics": "surveys", "SurveyNps": "surveys", "SurveyNpsPart": "surveys",
    "SurveyOption": "surveys", "SurveyOptionCount": "surveys", "SurveyQuestion": "surveys",
    "SurveyReliability": "surveys", "SurveyResponse": "surveys", "SurveyScale": "surveys",
    "SurveyScaleItem": "surveys", "SurveyScaleLabel": "surveys",
    "SurveyScaleReliability": "surveys", "SurveySilhouette": "surveys",
    "LoyaltyMatrix": "surveys", "LoyaltyMatrixQuadrant": "surveys",
    # webhooks
    "Webhook": "webhooks", "WebhookAttempt": "webhooks", "WebhookDelivery": "webhooks",
    # segments
    "Segment": "segments", "CustomerValueTier": "segments",
    # care
    "Task": "tasks", "CareFollowUpSummary": "tasks",
    "Rule": "rules", "RuleRun": "rules", "RuleCondition": "rules", "RuleActionStep": "rules",
    "RuleActionInfo": "rules", "RuleTriggerInfo": "rules",
    "Incident": "incidents", "IncidentTimelineEntry": "incidents",
    # the example plugin
    "Referral": "referrals", "TopReferrer": "referrals",
}

#: Types that take the domain of the field returning them; mutation payloads (the types
#: of Mutation fields) are structural too.
STRUCTURAL = {
    "PageInfo", "Money", "PluginInfo", "InteractionKind", "JobFailure", "JobFile", "ReportLink",
    "OwnerAssignment",
    *(f"{n}{suffix}" for n in (
        "Agent", "Alert", "AuditEntry", "ChurnWarning", "Complaint", "Customer",
        "Interaction", "Job", "LoyaltyLedgerEntry", "Schedule", "Segment", "Survey",
        "SurveyResponse", "Webhook", "WebhookDelivery", "WinbackCampaign",
        "Task", "Rule", "RuleRun", "Incident")
        for suffix in ("Connection", "Edge")),
    *(f"{n}Error" for n in ("Agent", "Alert", "Churn", "Complaint", "Customer",
                            "Interaction", "Job", "Loyalty", "Referral", "Survey",
                            "Webhook", "Segment", "Task", "Rule",
                            "Incident")),
}

#: Root query fields: the domain whose read scope each needs (None: any key).
ROOT_DOMAINS: dict[str, str | None] = {
    "node": None, "interactionKinds": None, "plugins": None,
    "customers": "customers", "customer": "customers", "customerByExternalId": "customers",
    "customerDuplicates": "customers", "customerAttributes": "customers",
    "alerts": "alerts", "agents": "agents", "auditEntries": "audit",
    "job": "jobs", "jobs": "jobs", "jobKinds": "jobs", "schedules": "jobs",
    "webhooks": "webhooks", "webhookDeliveries": "webhooks",
    "segments": "segments", "segment": "segments",
    "tasks": "tasks", "task": "tasks", "careFollowUps": "tasks",
    "rules": "rules", "ruleRuns": "rules", "ruleActions": "rules", "ruleTriggers": "rules",
    "incidents": "incidents", "incident": "incidents",
    "surveys": "surveys", "survey": "surveys", "loyaltyMatrix": "surveys",
    "topReferrers": "referrals",
    "loyaltyProgram": "loyalty", "loyaltyReport": "loyalty",
    "complaints": "complaints", "complaint": "complaints", "complaintTypes": "complaints",
    "complaintChannels": "complaints", "complaintStats": "complaints",
    "churnReport": "churn", "winbackCampaigns": "churn", "churnModel": "churn",
    "churnWarnings": "churn", "winbackStats": "churn", "churnReportLink": "churn",
    "churnByOwner": "churn",
}

#: Fields of one domain's type that belong to another domain (a plugin's Customer field,
#: a core field crossing into interactions or staff).
FIELD_DOMAINS: dict[tuple[str, str], str] = {
    ("Customer", "interactions"): "interactions", ("Customer", "owner"): "agents",
    ("Customer", "surveyResponses"): "surveys", ("Customer", "referrals"): "referrals",
    ("Customer", "loyalty"): "loyalty", ("Customer", "complaints"): "complaints",
    ("Customer", "churnRecords"): "churn", ("Customer", "winbackAttempts"): "churn",
    ("Customer", "churn"): "churn", ("Customer", "valueTier"): "segments",
    ("Interaction", "customer"): "customers", ("Interaction", "agent"): "agents",
    ("Alert", "customer"): "customers", ("Alert", "acknowledgedBy"): "agents",
    ("Customer", "tasks"): "tasks", ("Task", "customer"): "customers",
    ("Task", "assignee"): "agents", ("CareFollowUpSummary", "owner"): "agents",
    ("Incident", "alert"): "alerts", ("Incident", "owner"): "agents",
    ("Segment", "customers"): "customers", ("Segment", "customerCount"): "customers",
    ("ChurnOwnerFigures", "owner"): "agents", ("ChurnTeamFigures", "team"): "agents",
}

DOMAINS = sorted(set(TYPE_DOMAINS.values()))
PLUGINS = [*builtin_plugin_names(), "referrals"]


@pytest.fixture(scope="module")
def full_app() -> Iterator[Flask]:
    """Every plugin, on an in-memory database: validation needs no rows."""
    from core import create_app

    app = create_app({"RAPPORT_ENV": "test", "RAPPORT_DATABASE_URL": "sqlite://",
                      "RAPPORT_PLUGINS": PLUGINS})
    with app.app_context():
        yield app


def _read(domain: str) -> str:
    return f"{domain}:read"


# --- Documents ---------------------------------------------------------------------------


def _literal(input_type: GraphQLInputType) -> str:
    """A valid literal of ``input_type`` (required input fields only)."""
    if isinstance(input_type, GraphQLNonNull):
        return _literal(input_type.of_type)
    if isinstance(input_type, GraphQLList):
        return f"[{_literal(input_type.of_type)}]"
    if isinstance(input_type, GraphQLEnumType):
        return next(iter(input_type.values))
    if isinstance(input_type, GraphQLInputObjectType):
        fields = [f"{name}: {_literal(field.type)}" for name, field in input_type.fields.items()
                  if isinstance(field.type, GraphQLNonNull) and field.default_value is Undefined]
        return "{" + ", ".join(fields) + "}"
    assert isinstance(input_type, GraphQLScalarType)
    return {"Int": "1", "Float": "1.5", "Boolean": "true", "Date": '"2026-01-05"',
            "DateTime": '"2026-01-05T10:00:00+00:00"', "Decimal": '"1.00"'}.get(
        input_type.name, '"x"')


def _call(name: str, field: Any) -> str:
    args = [f"{arg}: {_literal(a.type)}" for arg, a in field.args.items()
            if isinstance(a.type, GraphQLNonNull) and a.default_value is Undefined]
    return f"{name}({', '.join(args)})" if args else name


def _leaf(object_type: GraphQLObjectType) -> str:
    """A scalar field of the type (no required arguments), else ``__typename``."""
    for name, field in object_type.fields.items():
        if is_leaf_type(get_named_type(field.type)) and not any(
                isinstance(a.type, GraphQLNonNull) for a in field.args.values()):
            return name
    return "__typename"


@dataclass(frozen=True)
class Reach:
    """A way into a type: the document around it and the scopes that way needs."""

    opening: str
    closing: str
    scopes: frozenset[str]
    #: the scope reading the type's fields needs here (its domain's, or inherited)
    current: str | None


def _reaches(schema: Any) -> dict[str, Reach]:
    """For every object type, the way into it that needs the fewest scopes (root fields,
    ``node`` with a fragment, mutation payloads), walking fields outward."""
    query, mutation = schema.query_type, schema.mutation_type
    payloads = {get_named_type(f.type).name for f in mutation.fields.values()}
    found: dict[str, Reach] = {}
    order = itertools.count()
    heap: list[tuple[int, int, str, Reach]] = []

    def push(type_name: str, reach: Reach) -> None:
        heapq.heappush(heap, (len(reach.scopes), next(order), type_name, reach))

    def domain_scope(type_name: str, inherited: str | None) -> str | None:
        if type_name in TYPE_DOMAINS:
            return _read(TYPE_DOMAINS[type_name])
        assert type_name in STRUCTURAL or type_name in payloads, (
            f"{type_name} is in neither table of this test: decide its domain and add it")
        return inherited

    for name, field in query.fields.items():
        target = get_named_type(field.type)
        if name == "node" or not isinstance(target, GraphQLObjectType):
            continue
        assert name in ROOT_DOMAINS, f"root field {name} is not in ROOT_DOMAINS"
        root = ROOT_DOMAINS[name]
        current = domain_scope(target.name, _read(root) if root else None)
        needed = {s for s in (_read(root) if root else None, current) if s}
        push(target.name, Reach(f"query {{ {_call(name, field)} {{ ", " } }",
                                frozenset(needed), current))
    node = query.fields["node"]
    for type_name, graphql_type in schema.type_map.items():
        if isinstance(graphql_type, GraphQLObjectType) and any(
                i.name == "Node" for i in graphql_type.interfaces):
            scope = domain_scope(type_name, None)
            push(type_name, Reach(f"query {{ {_call('node', node)} {{ ... on {type_name} {{ ",
                                  " } } }", frozenset({scope} if scope else ()), scope))
    for name, field in mutation.fields.items():
        payload = get_named_type(field.type).name
        write = ROOT_WRITE_SCOPES[name]
        push(payload, Reach(f"mutation {{ {_call(name, field)} {{ ", " } }",
                            frozenset({write}), write))
    while heap:
        _, _, type_name, reach = heapq.heappop(heap)
        if type_name in found:
            continue
        found[type_name] = reach
        graphql_type = schema.type_map[type_name]
        for name, field in graphql_type.fields.items():
            target = get_named_type(field.type)
            if not isinstance(target, GraphQLObjectType) or target.name in found:
                continue
            crossing = FIELD_DOMAINS.get((type_name, name))
            inherited = _read(crossing) if crossing else reach.current
            current = domain_scope(target.name, inherited)
            needed = {s for s in (crossing and _read(crossing), current) if s}
            push(target.name, Reach(f"{reach.opening}{_call(name, field)} {{ ",
                                    f" }}{reach.closing}", reach.scopes | needed, current))
    return found


#: Mutations: the write scope each needs (its domain's, or a dedicated cross-domain one).
ROOT_WRITE_SCOPES: dict[str, str] = {
    "createCustomer": "customers:write", "updateCustomer": "customers:write",
    "defineCustomerAttribute": "customers:write", "mergeCustomers": "customers:merge",
    "eraseCustomer": "customers:erase", "exportCustomer": "customers:export",
    "recordInteraction": "interactions:write", "recordInteractions": "interactions:write",
    "createAgent": "agents:write", "updateAgent": "agents:write",
    "reassignCustomers": "customers:reassign", "acknowledgeAlert": "alerts:write",
    "startJob": "jobs:write", "cancelJob": "jobs:write", "createSchedule": "jobs:write",
    "updateSchedule": "jobs:write", "deleteSchedule": "jobs:write",
    "createWebhook": "webhooks:write", "updateWebhook": "webhooks:write",
    "deleteWebhook": "webhooks:write", "rotateWebhookSecret": "webhooks:write",
    "pingWebhook": "webhooks:write", "redeliverWebhook": "webhooks:write",
    "createSegment": "segments:write", "updateSegment": "segments:write",
    "deleteSegment": "segments:write",
    "createTask": "tasks:write", "updateTask": "tasks:write", "completeTask": "tasks:write",
    "cancelTask": "tasks:write", "createRule": "rules:write", "updateRule": "rules:write",
    "deleteRule": "rules:write", "openIncident": "incidents:write",
    "advanceIncident": "incidents:write",
    "createSurvey": "surveys:write", "updateSurvey": "surveys:write",
    "openSurvey": "surveys:write", "closeSurvey": "surveys:write",
    "saveSurveyClusters": "surveys:write", "submitSurveyResponse": "surveys:respond",
    "recordReferral": "referrals:write",
    "createEarnRule": "loyalty:write", "updateEarnRule": "loyalty:write",
    "retireEarnRule": "loyalty:write", "createTier": "loyalty:write",
    "updateTier": "loyalty:write", "retireTier": "loyalty:write",
    "createReward": "loyalty:write", "updateReward": "loyalty:write",
    "retireReward": "loyalty:write", "redeemPoints": "loyalty:write",
    "redeemReward": "loyalty:write", "adjustPoints": "loyalty:write",
    "fileComplaint": "complaints:write", "transitionComplaint": "complaints:write",
    "assignComplaint": "complaints:write", "addComplaintNote": "complaints:write",
    "markCustomerChurned": "churn:write", "markCustomersChurned": "churn:write",
    "reactivateCustomer": "churn:write", "createWinbackCampaign": "churn:write",
    "recordWinbackAttempt": "churn:write", "resolveWinbackAttempt": "churn:write",
}


@dataclass(frozen=True)
class Edge:
    type_name: str
    field: str
    document: str
    #: scopes the path to the type needs besides the one reading the type itself
    base: frozenset[str]
    #: every scope selecting the field needs
    needed: frozenset[str]


def _edges(schema: Any) -> list[Edge]:
    reaches = _reaches(schema)
    edges = []
    for type_name, reach in sorted(reaches.items()):
        graphql_type = schema.type_map[type_name]
        for name, field in graphql_type.fields.items():
            target = get_named_type(field.type)
            if not isinstance(target, (GraphQLObjectType, GraphQLInterfaceType)):
                continue
            assert isinstance(target, GraphQLObjectType), (
                f"{type_name}.{name} returns an interface: add its run-time check here")
            crossing = FIELD_DOMAINS.get((type_name, name))
            inherited = _read(crossing) if crossing else reach.current
            current = (_read(TYPE_DOMAINS[target.name]) if target.name in TYPE_DOMAINS
                       else inherited)
            needed = reach.scopes | {s for s in (crossing and _read(crossing), current) if s}
            # The key keeps what the path needs except the type's own read scope, which
            # the single read scope under test replaces; a payload's write scope stays.
            own = reach.current if reach.current and reach.current.endswith(":read") else None
            base = reach.scopes - {own} if own else reach.scopes
            document = (f"{reach.opening}{_call(name, field)} {{ {_leaf(target)} }}"
                        f"{reach.closing}")
            edges.append(Edge(type_name, name, document, frozenset(base), frozenset(needed)))
    return edges


def test_the_tables_cover_every_type_of_the_schema(full_app: Flask) -> None:
    schema = full_app.extensions["rapport_graphql"].schema.graphql_schema
    objects = {name for name, t in schema.type_map.items()
               if isinstance(t, GraphQLObjectType) and not name.startswith("__")
               and name not in ("Query", "Mutation")}
    payloads = {get_named_type(f.type).name for f in schema.mutation_type.fields.values()}
    assert objects - set(TYPE_DOMAINS) - STRUCTURAL - payloads == set(), (
        "types missing from the tables of this test")
    assert set(schema.mutation_type.fields) == set(ROOT_WRITE_SCOPES)
    assert set(_reaches(schema)) == objects, "types no document reaches"


def test_every_edge_is_refused_to_a_key_of_another_domain(full_app: Flask) -> None:
    service = full_app.extensions["rapport_graphql"]
    edges = _edges(service.schema.graphql_schema)
    assert len(edges) > 200
    wrong: list[str] = []
    allowed_to: dict[tuple[str, str], set[str]] = {}
    for edge in edges:
        for domain in DOMAINS:
            scopes = edge.base | {_read(domain)}
            prepared = service.prepare(edge.document, Principal("walk", scopes))
            allowed = edge.needed <= scopes
            if allowed:
                allowed_to.setdefault((edge.type_name, edge.field), set()).add(domain)
            if allowed and prepared.status != 200:
                wrong.append(f"{sorted(scopes)} refused {edge.type_name}.{edge.field}: "
                             f"{[e.message for e in prepared.errors]}\n  {edge.document}")
            elif not allowed and (prepared.status != 403 or {
                    (e.extensions or {}).get("code") for e in prepared.errors} != {"FORBIDDEN"}):
                wrong.append(f"{sorted(scopes)} read {edge.type_name}.{edge.field} "
                             f"({prepared.status})\n  {edge.document}")
    assert not wrong, "\n".join(wrong[:20]) + f"\n... {len(wrong)} in all"
    # The probe's leaks are edges into another domain: the parent's key alone is refused.
    for parent, field, domain in LEAKS:
        assert domain not in allowed_to.get((parent, field), set()), (parent, field)
    within = sum(1 for domains in allowed_to.values() if len(domains) == 1)
    assert within > 150 and len(edges) - len(allowed_to) > 20, (within, len(allowed_to), len(edges))


#: Edges the security probe read across domains (issue 11), with the parent's domain.
LEAKS = [("Complaint", "customer", "complaints"), ("Complaint", "assignee", "complaints"),
         ("ComplaintTimelineEntry", "actor", "complaints"),
         ("Complaint", "interaction", "complaints"), ("ChurnRecord", "customer", "churn"),
         ("WinbackAttempt", "customer", "churn"), ("MarkCustomerChurned", "customer", "churn"),
         ("LoyaltyLedgerEntry", "interaction", "loyalty")]


def test_node_refuses_at_run_time_a_type_of_another_domain(make_app: AppFactory) -> None:
    app = make_app(enabled=PLUGINS)
    schema = app.extensions["rapport_graphql"].schema.graphql_schema
    nodes = sorted(name for name, t in schema.type_map.items()
                   if isinstance(t, GraphQLObjectType) and any(
                       i.name == "Node" for i in t.interfaces))
    assert {"Customer", "Complaint", "ChurnRecord", "WinbackAttempt",
            "LoyaltyLedgerEntry"} <= set(nodes)
    keys = {domain: GraphQL(app, admin_token(app, (_read(domain),))) for domain in DOMAINS}
    for type_name in nodes:
        node_id = relay.Node.to_global_id(type_name, 999_999_999)  # no such row: no data
        for domain, client in keys.items():
            body = client.raw("query($id: ID!) { node(id: $id) { id __typename } }",
                              {"id": node_id}).get_json()
            codes = [e["extensions"]["code"] for e in body.get("errors", [])]
            assert body["data"] == {"node": None}, (type_name, domain, body)
            if TYPE_DOMAINS[type_name] == domain:
                assert codes == [], (type_name, domain, body)
            else:
                assert codes == ["FORBIDDEN"], (type_name, domain, body)
                assert body["errors"][0]["path"] == ["node"]


# --- A plugin's new type -------------------------------------------------------------------


class Gift(graphene.ObjectType):
    """A partner's type that does not say which domain it belongs to."""

    sku = graphene.String()


@api.domain("gifts")
class Present(graphene.ObjectType):
    sku = graphene.String()


class GiftPlugin:
    name = "gifts"

    def __init__(self, gift_type: type[graphene.ObjectType]):
        self.gift_type = gift_type

    @hookimpl
    def rapport_register_scopes(self) -> list[tuple[str, str]]:
        return [("gifts:read", "Read gifts")]

    @hookimpl
    def rapport_graphql_query_fields(self) -> dict[str, graphene.Field]:
        return {"gifts": api.scoped(graphene.Field(
            graphene.List(self.gift_type), resolver=lambda root, info: [{"sku": "G1"}]),
            "gifts:read")}


def test_a_plugin_type_without_a_domain_fails_the_schema_build(make_app: AppFactory) -> None:
    with pytest.raises(SchemaError, match=r"Gift declare no domain.*@api\.domain"):
        make_app(plugins=(GiftPlugin(Gift),))
    app = make_app(plugins=(GiftPlugin(Present),))
    reader = GraphQL(app, admin_token(app, ("gifts:read",)))
    assert reader("{ gifts { sku } }") == {"gifts": [{"sku": "G1"}]}
    customers_only = GraphQL(app, admin_token(app, ("customers:read",)))
    assert customers_only.raw("{ gifts { sku } }").status_code == 403
