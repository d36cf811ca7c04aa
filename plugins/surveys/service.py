"""Survey operations: define, open, close, submit a response; merge, erase, export.
Plain functions, one transaction each: the GraphQL mutations and the CLI call them.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from core import changes as audit
from core.app import rapport
from core.db import db, utcnow
from core.errors import ErrorCode, FieldError, UserError, camel
from core.ids import global_id, shown_id
from core.models import Customer, CustomerStatus
from core.schemas import FUTURE_TOLERANCE
from core.services import load, not_found, transaction

from plugins.surveys.answers import check_answers, specs
from plugins.surveys.errors import SurveyErrorCode
from plugins.surveys.models import Question, Response, Scale, Survey, SurveyState
from plugins.surveys.schemas import ResponseSchema, SurveyDefinitionSchema


def new_token() -> str:
    return secrets.token_urlsafe(24)


def _survey(survey_id: int, *, lock: bool = False, field: str = "id") -> Survey:
    stmt = select(Survey).where(Survey.id == survey_id)
    found = db.session.scalar(stmt.with_for_update() if lock else stmt)
    if found is None:
        raise not_found("survey", survey_id, field, type_name="Survey")
    return found


def questions_of(survey_ids: Sequence[int]) -> dict[int, list[Question]]:
    found: dict[int, list[Question]] = defaultdict(list)
    for question in db.session.scalars(select(Question).where(
            Question.survey_id.in_(survey_ids)).order_by(Question.survey_id, Question.position)):
        found[question.survey_id].append(question)
    return found


def scales_of(survey_ids: Sequence[int]) -> dict[int, list[Scale]]:
    found: dict[int, list[Scale]] = defaultdict(list)
    for scale in db.session.scalars(select(Scale).where(Scale.survey_id.in_(survey_ids))
                                    .order_by(Scale.survey_id, Scale.id)):
        found[scale.survey_id].append(scale)
    return found


def _replace_structure(survey: Survey, data: Mapping[str, Any]) -> None:
    db.session.execute(delete(Question).where(Question.survey_id == survey.id))
    db.session.execute(delete(Scale).where(Scale.survey_id == survey.id))
    for position, q in enumerate(data.get("questions") or []):
        db.session.add(Question(
            survey_id=survey.id, key=q["key"], position=position, text=q["text"],
            type=q["type"], required=q["required"], scale_min=q.get("scale_min"),
            scale_max=q.get("scale_max"),
            labels={str(label["value"]): label["label"] for label in q.get("labels") or []},
            options=[{"key": o["key"], "label": o["label"]} for o in q.get("options") or []]))
    for scale in data.get("scales") or []:
        db.session.add(Scale(survey_id=survey.id, name=scale["name"], items=[
            {"key": item["key"], "reverse": item["reverse"]} for item in scale["items"]]))


def create_survey(raw: Mapping[str, Any]) -> Survey:
    """A DRAFT survey with its questions and scales."""
    data = load(SurveyDefinitionSchema(), raw)
    now = utcnow()
    with transaction():
        survey = Survey(title=data["title"], description=data.get("description"),
                        anonymous=data["anonymous"], state=SurveyState.DRAFT,
                        collection_token=new_token() if data["anonymous"] else None,
                        overall_question_key=data.get("overall_question_key"),
                        created_at=now, updated_at=now)
        db.session.add(survey)
        db.session.flush()
        _replace_structure(survey, data)
    return survey


_STRUCTURE = ("questions", "scales", "anonymous", "overall_question_key")


def update_survey(survey_id: int, raw: Mapping[str, Any]) -> Survey:
    """Change title and description at any time; questions, scales, anonymity and the
    overall question only while DRAFT (questions and scales given replace the old ones)."""
    with transaction():
        survey = _survey(survey_id, lock=True)
        current = {"title": survey.title, "description": survey.description,
                   "anonymous": survey.anonymous,
                   "overall_question_key": survey.overall_question_key}
        structural = [k for k in _STRUCTURE if k in raw]
        if structural and survey.state is not SurveyState.DRAFT:
            raise UserError.single(
                f"The survey is {survey.state.value}: its questions, scales and anonymity "
                f"can only change while it is a draft.", SurveyErrorCode.WRONG_STATE,
                camel(structural[0]))
        if "questions" in raw or "overall_question_key" in raw or "scales" in raw:
            if "questions" not in raw:
                existing = questions_of([survey.id])[survey.id]
                current["questions"] = [_question_input(q) for q in existing]
            if "scales" not in raw:
                current["scales"] = [{"name": s.name, "items": s.items}
                                     for s in scales_of([survey.id])[survey.id]]
        data = load(SurveyDefinitionSchema(), {**current, **raw})
        survey.title = data["title"]
        survey.description = data.get("description")
        survey.overall_question_key = data.get("overall_question_key")
        if data["anonymous"] != survey.anonymous:
            survey.anonymous = data["anonymous"]
            survey.collection_token = new_token() if data["anonymous"] else None
        if "questions" in raw or "scales" in raw or "overall_question_key" in raw:
            _replace_structure(survey, data)
        survey.updated_at = utcnow()
    return survey


def _question_input(q: Question) -> dict[str, Any]:
    out: dict[str, Any] = {"key": q.key, "text": q.text, "type": q.type.value,
                           "required": q.required}
    if q.scale_min is not None:
        out |= {"scale_min": q.scale_min, "scale_max": q.scale_max}
    if q.labels:
        out["labels"] = [{"value": int(v), "label": t} for v, t in q.labels.items()]
    if q.options:
        out["options"] = q.options
    return out


def _move(survey_id: int, target: SurveyState) -> Survey:
    """DRAFT -> OPEN (with at least one question) or OPEN -> CLOSED."""
    source = SurveyState.DRAFT if target is SurveyState.OPEN else SurveyState.OPEN
    verb = "opened" if target is SurveyState.OPEN else "closed"
    with transaction():
        survey = _survey(survey_id, lock=True)
        if survey.state is not source:
            raise UserError.single(f"Only a {source.value} survey can be {verb}; this one is "
                                   f"{survey.state.value}.", SurveyErrorCode.WRONG_STATE, "id")
        if target is SurveyState.OPEN and not questions_of([survey.id])[survey.id]:
            raise UserError.single("Add at least one question before opening the survey.",
                                   SurveyErrorCode.WRONG_STATE, "id")
        survey.state = target
        survey.updated_at = utcnow()
        if target is SurveyState.OPEN:
            survey.opened_at = survey.updated_at
        else:
            survey.closed_at = survey.updated_at
    return survey


def open_survey(survey_id: int) -> Survey:
    return _move(survey_id, SurveyState.OPEN)


def close_survey(survey_id: int) -> Survey:
    return _move(survey_id, SurveyState.CLOSED)


def _answer_path(index: int | None, key: str, part: str) -> str:
    return "answers" if index is None else f"answers.{index}.{part}"


def submit_response(raw: Mapping[str, Any], *, now: dt.datetime | None = None) -> Response:
    """Record one response, every answer checked; fires ``rapport_survey_response_recorded``
    in the transaction. With ``source`` + ``externalId`` a re-submission returns the stored
    response and writes nothing."""
    data = load(ResponseSchema(), raw)
    now = now or utcnow()
    with transaction():
        survey = _survey(data["survey_id"], field="surveyId")
        errors: list[FieldError] = []
        customer_id = data.get("customer_id")
        if survey.anonymous:
            token = data.get("token") or ""
            if not hmac.compare_digest(token.encode(), (survey.collection_token or "").encode()):
                # Without the token the caller learns nothing of the survey: not its state,
                # not its questions (the answer checks would name keys and options).
                raise UserError.single("An anonymous survey needs its collection token.",
                                       SurveyErrorCode.ANONYMITY, "token")
        if survey.state is not SurveyState.OPEN:
            raise UserError.single(f"The survey is {survey.state.value}; responses are taken "
                                   f"only while it is open.", SurveyErrorCode.WRONG_STATE,
                                   "surveyId")
        if survey.anonymous:
            if customer_id is not None:
                errors.append(FieldError("An anonymous survey never records who answered: "
                                         "do not name a customer.", SurveyErrorCode.ANONYMITY,
                                         "customerId"))
        elif customer_id is None:
            errors.append(FieldError("Name the customer who answered.", ErrorCode.REQUIRED,
                                     "customerId"))
        else:
            customer = db.session.get(Customer, customer_id)
            if customer is None:
                errors.append(FieldError(f"No customer with id "
                                         f"{shown_id('Customer', customer_id)}.",
                                         ErrorCode.NOT_FOUND, "customerId"))
            elif customer.status == CustomerStatus.ERASED:
                errors.append(FieldError("The customer is erased.",
                                         SurveyErrorCode.CUSTOMER_ERASED, "customerId"))
        submitted_at = data.get("submitted_at") or now
        if submitted_at > now + FUTURE_TOLERANCE:
            errors.append(FieldError("A response cannot be submitted in the future.",
                                     ErrorCode.INVALID, "submittedAt"))
        questions = specs(questions_of([survey.id])[survey.id])
        answers, problems = check_answers(
            questions, [(a["key"], a["value"]) for a in data["answers"]], _answer_path)
        errors.extend(problems)
        if errors:
            raise UserError(errors)
        if data.get("source") is not None:
            existing = _stored(survey.id, data["source"], data["external_id"])
            if existing is not None:
                return _resubmitted(existing, survey, customer_id)
        response = Response(
            survey_id=survey.id, anonymous=survey.anonymous,
            customer_id=None if survey.anonymous else customer_id, submitted_at=submitted_at,
            recorded_at=now, source=data.get("source"), external_id=data.get("external_id"),
            numbers=answers.numbers, choices=answers.choices, texts=answers.texts)
        if data.get("source") is None or db.session.get_bind().dialect.name != "postgresql":
            db.session.add(response)  # SQLite serialises writers: no race to lose
            db.session.flush()
        else:
            try:
                with db.session.begin_nested():
                    db.session.add(response)
                    db.session.flush()
            except IntegrityError:
                # A concurrent identical submission committed first: this one is a re-send.
                raced = _stored(survey.id, data["source"], data["external_id"])
                if raced is None:
                    raise
                return _resubmitted(raced, survey, customer_id)
        rapport().hook.rapport_survey_response_recorded(response=response)
        gid = global_id("SurveyResponse", response.id)
        survey_gid = global_id("Survey", survey.id)
        customer = None if response.customer_id is None else global_id(
            "Customer", response.customer_id)
        audit.record(None, [gid, survey_gid, *([customer] if customer else [])], None, [
            audit.Event("survey.response.submitted", gid, {
                "responseId": gid, "surveyId": survey_gid, "customerId": customer,
                "submittedAt": response.submitted_at})])
    return response


def _stored(survey_id: int, source: str | None, external_id: str | None) -> Response | None:
    if source is None:
        return None
    return db.session.scalar(select(Response).where(
        Response.survey_id == survey_id, Response.source == source,
        Response.external_id == external_id))


def _resubmitted(existing: Response, survey: Survey, customer_id: int | None) -> Response:
    """The stored response of a re-sent submission; a key already used for another
    customer's response is a conflict (returning it would show that response)."""
    if not survey.anonymous and existing.customer_id != customer_id:
        raise UserError.single("This source and externalId name another customer's "
                               "response.", ErrorCode.CONFLICT, "externalId")
    return existing


# --- Customer lifecycle hooks ------------------------------------------------------------


def merge_responses(survivor_id: int, merged_ids: Sequence[int]) -> None:
    """Re-key the merged customers' responses to the survivor (answers unchanged)."""
    db.session.execute(update(Response).where(Response.customer_id.in_(merged_ids))
                       .values(customer_id=survivor_id))


def erase_personal_data(customer_id: int) -> dict[str, Any] | None:
    """Free-text answers go (they may name the person); numbers and choices stay with the
    anonymous tombstone customer, so every statistic is unchanged."""
    result = db.session.execute(update(Response).where(Response.customer_id == customer_id)
                                .values(texts={}))
    count = result.rowcount  # type: ignore[attr-defined]
    return {"responses_anonymised": count} if count else None


def export_section(customer_id: int) -> dict[str, Any] | None:
    rows = db.session.execute(select(Response, Survey.title).join(
        Survey, Survey.id == Response.survey_id).where(Response.customer_id == customer_id)
        .order_by(Response.submitted_at, Response.id)).all()
    if not rows:
        return None
    return {"surveyResponses": [{
        "id": global_id("SurveyResponse", r.id), "surveyId": global_id("Survey", r.survey_id),
        "survey": title, "submittedAt": r.submitted_at.isoformat(), "source": r.source,
        "externalId": r.external_id,
        "answers": {**r.numbers, **r.choices, **r.texts}} for r, title in rows]}
