"""Saved segments: create, update, delete.

Plain functions: validated data in, rows out, one transaction each, every change audited
with its event through ``core.changes.record``. A segment's filter arrives validated
(``validate_filter``, or ``api.queries.customer_filter_spec`` from GraphQL); it is stored
as JSON (``filter_document``) and validated again whenever it is used.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, fields, validate
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from core import context
from core.changes import Event, record
from core.db import db, utcnow
from core.errors import ErrorCode, UserError
from core.ids import global_id
from core.schemas import InputSchema
from core.services import load, not_found, transaction
from core.services.segments import filter_document

from plugins.segments.filters import SegmentRef
from plugins.segments.models import NAME_KEY_LENGTH, Segment

#: A segment that would contain itself (through the segments its filter names).
CYCLE = "CYCLE"
#: Filter fields a saved segment may not hold: e-mail and phone are encrypted at rest,
#: and a stored filter is not.
PERSONAL_FIELDS = ("email", "phone")


#: A name is shown in lists and error messages: it needs more than blanks.
_NAME = [validate.Length(1, 200), validate.Regexp(r"(?s).*\S", error="Name the segment.")]


class CreateSegmentSchema(InputSchema):
    name = fields.String(required=True, validate=_NAME)
    description = fields.String(allow_none=True, validate=validate.Length(max=1000))


class UpdateSegmentSchema(InputSchema):
    id = fields.Integer(required=True)
    name = fields.String(validate=_NAME)
    description = fields.String(allow_none=True, validate=validate.Length(max=1000))


class IdSchema(Schema):
    id = fields.Integer(required=True)


def _audit(operation: str, segment: Segment, event: str,
           changes: Mapping[str, Any] | None = None) -> None:
    gid = global_id("Segment", segment.id)
    record(operation, [gid], changes, events=[Event(event, gid, {
        "segmentId": gid, "name": segment.name})])


def _segment(segment_id: int, *, lock: bool = False) -> Segment:
    found = db.session.get(Segment, segment_id, with_for_update=lock or None)
    if found is None:
        raise not_found("segment", global_id("Segment", segment_id))
    return found


def _stored_filter(spec: Mapping[str, Any]) -> dict[str, Any]:
    personal = [key for key in PERSONAL_FIELDS if spec.get(key) is not None]
    if personal:
        raise UserError.single(
            f"A saved segment cannot filter on {' or '.join(personal)}: they are encrypted "
            f"at rest and a segment's filter is not. Filter on them in customers(filter:).",
            ErrorCode.NOT_ALLOWED, f"filter.{personal[0]}")
    return filter_document(spec)


def name_key(name: str) -> str:
    """A segment name as uniqueness compares it: Unicode case-folded after NFKC, so the
    comparison is the same on every database (SQLite's ``lower`` folds ASCII only)."""
    return unicodedata.normalize("NFKC", name).casefold()


def _name_taken(name: str) -> UserError:
    return UserError.single(f"A segment named {name!r} exists already.", ErrorCode.UNIQUE,
                            "name")


def _unique_name(name: str, segment_id: int | None = None) -> None:
    if len(name_key(name)) > NAME_KEY_LENGTH:
        raise UserError.single(
            f"This name grows past {NAME_KEY_LENGTH} characters once case-folded (ligatures "
            f"and compatibility characters expand): use a shorter name.", ErrorCode.INVALID,
            "name")
    clash = select(Segment.id).where(Segment.name_key == name_key(name))
    if segment_id is not None:
        clash = clash.where(Segment.id != segment_id)
    if db.session.scalar(clash) is not None:
        raise _name_taken(name)


def _flush_name(name: str) -> None:
    """Flush, turning a name taken by a concurrent save (the unique key) into UNIQUE."""
    try:
        with db.session.begin_nested():
            db.session.flush()
    except IntegrityError:
        raise _name_taken(name) from None


def create_segment(raw: Mapping[str, Any], spec: Mapping[str, Any]) -> Segment:
    """Save ``spec`` (a validated filter) under ``raw``'s name and description."""
    data = load(CreateSegmentSchema(), raw)
    stored = _stored_filter(spec)
    with transaction():
        _unique_name(data["name"])
        now = utcnow()
        segment = Segment(name=data["name"], name_key=name_key(data["name"]),
                          description=data.get("description"),
                          filter=stored, created_by=context.current().actor.to_json(),
                          created_at=now, updated_at=now)
        db.session.add(segment)
        _flush_name(data["name"])
        _audit("createSegment", segment, "segment.created",
               {"name": [None, segment.name], "filter": [None, stored]})
    return segment


def update_segment(raw: Mapping[str, Any], spec: Mapping[str, Any] | None) -> Segment:
    """Rename, describe or refilter a segment; a filter that would make the segment
    contain itself (through the segments it names) is a ``CYCLE`` error."""
    data = load(UpdateSegmentSchema(), raw)
    with transaction():
        segment = _segment(data["id"], lock=True)
        changes: dict[str, list[Any]] = {}
        if "name" in data and data["name"] != segment.name:
            _unique_name(data["name"], segment.id)
            changes["name"] = [segment.name, data["name"]]
            segment.name = data["name"]
            segment.name_key = name_key(data["name"])
            _flush_name(data["name"])
        if "description" in data and data["description"] != segment.description:
            changes["description"] = [segment.description, data["description"]]
            segment.description = data["description"]
        if spec is not None:
            ref = spec.get("segment")
            if isinstance(ref, SegmentRef) and segment.id in set(ref.named()):
                raise UserError.single(
                    f"Segment {ref.name!r} contains this segment already (directly or "
                    f"through the segments it names): a segment cannot contain itself.",
                    CYCLE, "filter.segment")
            stored = _stored_filter(spec)
            if stored != segment.filter:
                changes["filter"] = [segment.filter, stored]
                segment.filter = stored
        segment.updated_at = utcnow()
        _audit("updateSegment", segment, "segment.updated", changes or None)
    return segment


def delete_segment(raw: Mapping[str, Any]) -> int:
    """Delete a segment no other segment names (``CONFLICT`` otherwise)."""
    data = load(IdSchema(), raw)
    with transaction():
        segment = _segment(data["id"], lock=True)
        gid = global_id("Segment", segment.id)
        users = db.session.scalars(select(Segment.name).where(
            Segment.filter["segment"].as_string() == gid).order_by(Segment.name)).all()
        if users:
            raise UserError.single(
                f"Segment(s) {', '.join(map(repr, users))} name this segment in their "
                f"filter: change them first.", ErrorCode.CONFLICT, "id")
        _audit("deleteSegment", segment, "segment.deleted",
               {"name": [segment.name, None], "filter": [segment.filter, None]})
        db.session.delete(segment)
    return int(data["id"])

