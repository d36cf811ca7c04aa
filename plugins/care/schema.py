"""GraphQL of tasks: ``tasks``, ``task``, ``Customer.tasks``, the task mutations, and the
at-risk follow-ups summary ``careFollowUps``; all in the ``tasks`` domain. Rules are in
``rule_schema``, incidents in ``incident_schema``.
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

import graphene
from graphene import relay
from sqlalchemy import case, func, select

from api import (
    CustomerType, RapportMutation, connection, ctx, domain, error_type, global_id,
    load_related, node_type, page_size, scoped,
)
from api.limits import REPORT_COST, costly
from api.loaders import AgentByIdLoader, CustomerByIdLoader
from api.mutations import plain
from api.pagination import bad_input
from api.types import Agent, decode_global_id
from core.app import rapport
from core.dates import end_of_day, start_of_day
from core.db import db
from core.errors import UserError
from core.ids import global_id as encode_id

from plugins.care import service
from plugins.care.loaders import (
    DUE_FIRST, TaskByIdLoader, TaskCountByCustomerLoader, TasksByCustomerLoader,
)
from plugins.care.models import (
    FollowUp, FollowUpStatus, Task, TaskKind, TaskSource, TaskStatus,
)

TASKS_READ, TASKS_WRITE = "tasks:read", "tasks:write"

TaskError = error_type("Task", service.TASK_ERROR_CODES)
TaskKindEnum = graphene.Enum.from_enum(TaskKind, name="TaskKind")
TaskStatusEnum = graphene.Enum.from_enum(TaskStatus, name="TaskStatus")
TaskSourceEnum = graphene.Enum.from_enum(TaskSource, name="TaskSource")


# --- Types ------------------------------------------------------------------------------------


@domain("tasks")
@node_type(Task)
class TaskNode(graphene.ObjectType):
    """Something a staff member should do, for a customer or not."""

    class Meta:
        name = "Task"
        interfaces = (relay.Node,)

    customer = graphene.Field(CustomerType)
    assignee = graphene.Field(Agent)
    kind = graphene.Field(TaskKindEnum, required=True)
    title = graphene.String(required=True)
    due_on = graphene.Date(required=True)
    status = graphene.Field(TaskStatusEnum, required=True)
    outcome = graphene.String(description="What came of it (a follow-up: returned or lost).")
    source = graphene.Field(TaskSourceEnum, required=True)
    rule_id = graphene.ID(description="The rule that made it (read it with rules:read).")
    created_at = graphene.DateTime(required=True)
    updated_at = graphene.DateTime(required=True)
    closed_at = graphene.DateTime()

    @classmethod
    def get_node(cls, info: Any, id: str) -> Any:
        return ctx(info).loader(TaskByIdLoader).load(int(id))

    @staticmethod
    def resolve_customer(root: Task, info: Any) -> Any:
        return load_related(info, CustomerByIdLoader, root.customer_id)

    @staticmethod
    def resolve_assignee(root: Task, info: Any) -> Any:
        return load_related(info, AgentByIdLoader, root.assignee_id)

    @staticmethod
    def resolve_rule_id(root: Task, info: Any) -> str | None:
        return None if root.rule_id is None else encode_id("Rule", root.rule_id)


@domain("tasks")
class CareFollowUpSummary(graphene.ObjectType):
    """An owner's at-risk follow-ups opened in the period: still open, returned, lost,
    merged (closed when its customer was merged into one with another open follow-up)."""

    owner = graphene.Field(Agent, description="Null: customers without an owner.")
    opened = graphene.Int(required=True)
    open = graphene.Int(required=True)
    returned = graphene.Int(required=True)
    lost = graphene.Int(required=True)
    merged = graphene.Int(required=True, description="Closed by a merge of customers: the "
                                                     "surviving customer's follow-up goes on.")

    @staticmethod
    def resolve_owner(root: Any, info: Any) -> Any:
        return load_related(info, AgentByIdLoader, root.owner_id)


TaskConnection = connection(TaskNode, "Task")


# --- Queries ----------------------------------------------------------------------------------


class TaskFilter(graphene.InputObjectType):
    assignee = graphene.ID(description="An Agent id.")
    status = graphene.List(graphene.NonNull(TaskStatusEnum))
    customer = graphene.ID(description="A Customer id.")
    due_before = graphene.Date(description="Due before this day.")


def _decode(value: str, type_name: str, field: str) -> int:
    try:
        return decode_global_id(value, type_name)  # type: ignore[no-any-return]
    except ValueError as exc:
        raise bad_input(f"{field}: {exc}") from None


def _task_filter(raw: dict[str, Any] | None) -> dict[str, Any]:
    data = plain(raw or {})
    found: dict[str, Any] = {}
    if data.get("assignee") is not None:
        found["assignee_id"] = _decode(data["assignee"], "Agent", "filter.assignee")
    if data.get("customer") is not None:
        found["customer_id"] = _decode(data["customer"], "Customer", "filter.customer")
    if data.get("status"):
        found["status"] = data["status"]
    if data.get("due_before") is not None:
        found["due_before"] = data["due_before"].isoformat()
    return found


def resolve_tasks(root: Any, info: Any, first: int | None = None, after: str | None = None,
                  filter: dict[str, Any] | None = None) -> Any:
    page_size(first)  # a bad size is reported before a bad filter
    try:
        query = service.tasks_query(_task_filter(filter))
    except UserError as exc:
        raise bad_input("; ".join(f"filter.{e.field}: {e.message}" for e in exc.errors)
                        ) from None
    return DUE_FIRST.query_page(query, first, after)


async def resolve_customer_tasks(root: Any, info: Any, first: int | None = None,
                                 after: str | None = None) -> Any:
    size = page_size(first)
    rows = await ctx(info).loader(TasksByCustomerLoader, limit=size + 1,
                                  after=DUE_FIRST.decode(after)).load(root.id)
    count = ctx(info).loader(TaskCountByCustomerLoader)
    return DUE_FIRST.page(rows, size, after, lambda: count.load(root.id))


def resolve_task(root: Any, info: Any, id: str) -> Any:
    return ctx(info).loader(TaskByIdLoader).load(_decode(id, "Task", "id"))


def resolve_care_follow_ups(root: Any, info: Any, from_: dt.date | None = None,
                            to: dt.date | None = None) -> list[Any]:
    tz = rapport().settings.tz
    query = select(
        FollowUp.owner_id, func.count().label("opened"),
        *(func.sum(case((FollowUp.status == s, 1), else_=0)).label(s.value)
          for s in FollowUpStatus)).group_by(FollowUp.owner_id)
    try:
        if from_ is not None:
            query = query.where(FollowUp.opened_at >= start_of_day(from_, tz, "from"))
        if to is not None:
            query = query.where(FollowUp.opened_at < end_of_day(to, tz, "to"))
    except UserError as exc:
        raise bad_input("; ".join(e.message for e in exc.errors)) from None
    rows = db.session.execute(query.order_by(FollowUp.owner_id)).all()
    return [SimpleNamespace(owner_id=r.owner_id, opened=r.opened, open=r.open or 0,
                            returned=r.returned or 0, lost=r.lost or 0,
                            merged=r.merged or 0) for r in rows]


# --- Task mutations ---------------------------------------------------------------------------


class CreateTaskInput(graphene.InputObjectType):
    customer_id = graphene.ID()
    assignee_id = graphene.ID(description="Default: the customer's owner.")
    kind = TaskKindEnum(required=True)
    title = graphene.String(required=True)
    due_on = graphene.Date(required=True)


class UpdateTaskInput(graphene.InputObjectType):
    id = graphene.ID(required=True)
    assignee_id = graphene.ID()
    kind = TaskKindEnum()
    title = graphene.String()
    due_on = graphene.Date()


class CloseTaskInput(graphene.InputObjectType):
    id = graphene.ID(required=True)
    outcome = graphene.String(description="What came of it.")


class CompleteTaskInput(CloseTaskInput):
    pass


class CancelTaskInput(CloseTaskInput):
    pass


def _dates(input: dict[str, Any]) -> dict[str, Any]:
    if isinstance(input.get("due_on"), dt.date):
        input["due_on"] = input["due_on"].isoformat()
    return input


class CreateTask(RapportMutation):
    class Arguments:
        input = CreateTaskInput(required=True)

    task = graphene.Field(TaskNode)
    scope = TASKS_WRITE
    error_type = TaskError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> CreateTask:
        input["customer_id"] = global_id(input, "customer_id", "Customer", required=False)
        input["assignee_id"] = global_id(input, "assignee_id", "Agent", required=False)
        return cls(task=service.create_task(_dates(input)))


class UpdateTask(RapportMutation):
    class Arguments:
        input = UpdateTaskInput(required=True)

    task = graphene.Field(TaskNode)
    scope = TASKS_WRITE
    error_type = TaskError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> UpdateTask:
        input["id"] = global_id(input, "id", "Task")
        if "assignee_id" in input:
            input["assignee_id"] = global_id(input, "assignee_id", "Agent")
        return cls(task=service.update_task(_dates(input)))


class CompleteTask(RapportMutation):
    """Mark an open task done, with what came of it."""

    class Arguments:
        input = CompleteTaskInput(required=True)

    task = graphene.Field(TaskNode)
    scope = TASKS_WRITE
    error_type = TaskError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> CompleteTask:
        input["id"] = global_id(input, "id", "Task")
        return cls(task=service.close_task(input, TaskStatus.DONE))


class CancelTask(RapportMutation):
    class Arguments:
        input = CancelTaskInput(required=True)

    task = graphene.Field(TaskNode)
    scope = TASKS_WRITE
    error_type = TaskError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> CancelTask:
        input["id"] = global_id(input, "id", "Task")
        return cls(task=service.close_task(input, TaskStatus.CANCELLED))


# --- What the plugin contributes --------------------------------------------------------------


def customer_fields() -> dict[str, graphene.Field]:
    return {"tasks": scoped(graphene.Field(
        TaskConnection, required=True, first=graphene.Int(description="At most 100."),
        after=graphene.String(), resolver=resolve_customer_tasks,
        description="The customer's tasks, by due date."), TASKS_READ)}


def query_fields() -> dict[str, graphene.Field]:
    return {
        "tasks": scoped(graphene.Field(
            TaskConnection, required=True, first=graphene.Int(), after=graphene.String(),
            filter=TaskFilter(), resolver=resolve_tasks,
            description="Tasks by due date (then id), in keyset pages of at most 100."),
            TASKS_READ),
        "task": scoped(graphene.Field(TaskNode, id=graphene.ID(required=True),
                                      resolver=resolve_task), TASKS_READ),
        "careFollowUps": costly(scoped(graphene.Field(
            graphene.List(graphene.NonNull(CareFollowUpSummary)), required=True,
            args={"from_": graphene.Date(name="from"), "to": graphene.Date()},
            resolver=resolve_care_follow_ups, description=(
                "At-risk follow-ups opened from..to (whole days, RAPPORT_TIMEZONE; default "
                "all) per owner: how many are open, returned, lost.")), TASKS_READ),
            REPORT_COST),
    }


MUTATIONS: dict[str, type[RapportMutation]] = {
    "createTask": CreateTask, "updateTask": UpdateTask, "completeTask": CompleteTask,
    "cancelTask": CancelTask,
}

NODE_TYPES = [TaskNode]
