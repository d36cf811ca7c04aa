"""Core's job kinds: file imports of customers and interactions.

The file is an uploaded one (``file``: the id ``POST /files`` returned) or, for
administrators and the CLI, a path on the server (``path``). The rejects file, when a row
was rejected, is the job's output ``<entity>.rejects.csv``.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from core.errors import ErrorCode, UserError
from core.importers import (
    DEFAULT_BATCH_SIZE, Entity, FileFormat, ImportFileError, open_import,
)
from core.jobs import JobKind, Progress


class ImportParameters(Schema):
    file = fields.String(load_default=None, metadata={"description": "id of an uploaded file"})
    path = fields.String(load_default=None,
                         metadata={"description": "a file on the server (administrators)"})
    format = fields.String(load_default=None,
                           validate=validate.OneOf([f.value for f in FileFormat]))
    batch_size = fields.Integer(data_key="batchSize", load_default=DEFAULT_BATCH_SIZE,
                                validate=validate.Range(1, 10_000))
    encoding = fields.String(load_default="utf-8", validate=validate.Length(1, 40))
    declare_attributes = fields.Boolean(
        data_key="declareAttributes", load_default=False, metadata={"description": (
            "customers: declare the file's undeclared attribute columns first, with types "
            "inferred from their values (reported in the result)")})

    @validates_schema
    def one_source(self, data: dict[str, Any], **kwargs: Any) -> None:
        if (data.get("file") is None) == (data.get("path") is None):
            raise ValidationError("Give either file (an uploaded file's id) or path.", "file")


def import_file(entity: Entity, parameters: dict[str, Any], progress: Progress
                ) -> dict[str, Any]:
    """Import a CSV / JSON Lines file (core.importers); the rejects file is an output."""
    rejects_name = f"{entity}.rejects.csv"
    declared: list[dict[str, Any]] = []
    try:
        with progress.input_file(parameters) as source:
            if parameters.get("declare_attributes") and entity == "customers":
                declared = _declare_from_file(source, parameters)
        with progress.input_file(parameters) as source, open_import(
                entity, source, file_format=parameters.get("format"),
                encoding=parameters["encoding"],
                rejects_path=progress.output_path(rejects_name)) as job:
            advance = progress.counter(job.size, "{done} of {total} bytes read")
            report = job.run(parameters["batch_size"], on_progress=advance)
    except ImportFileError as exc:
        raise UserError.single(str(exc), ErrorCode.INVALID,
                               "file" if parameters.get("file") else "path") from None
    if not report.rejected:
        progress.drop_output(rejects_name)
    result: dict[str, Any] = {"imported": report.imported, "skipped": report.skipped,
                              "rejected": report.rejected}
    if parameters.get("declare_attributes"):
        result["declaredAttributes"] = declared
    return result


def _declare_from_file(source: Any, parameters: dict[str, Any]) -> list[dict[str, Any]]:
    """Declare the undeclared attribute columns of a customer file (types inferred). When
    customers already hold values of a column that its inferred type cannot hold, nothing
    is declared and nothing imported: the error names the column, how many values and a
    customer (``core.attributes.stored_misfits``)."""
    from core.attribute_inference import infer_attributes
    from core.attributes import declared_attributes, stored_misfits
    from core.errors import FieldError
    from core.models import AttributeType, CustomerAttributeDefinition
    from core.services.staff import define_customer_attribute

    found = infer_attributes(source, file_format=parameters.get("format"),
                             encoding=parameters["encoding"],
                             declared=set(declared_attributes()))
    misfits: list[FieldError] = []
    for declaration in found:
        misfit = stored_misfits(CustomerAttributeDefinition(
            key=declaration["key"], type=AttributeType(declaration["type"]),
            label=declaration["label"], categories=declaration.get("categories")))
        if misfit is not None:
            misfits.append(FieldError(misfit.message, misfit.code, "declareAttributes"))
    if misfits:
        raise UserError(misfits)
    for declaration in found:
        define_customer_attribute(declaration)
    return found


def _importer(entity: Entity) -> Any:
    return lambda parameters, progress: import_file(entity, parameters, progress)


CORE_JOB_KINDS = [
    JobKind("core.import_customers", ImportParameters, "customers", _importer("customers"),
            "Import customers from a CSV or JSON Lines file (rapport import customers)."),
    JobKind("core.import_interactions", ImportParameters, "interactions",
            _importer("interactions"),
            "Import interactions from a CSV or JSON Lines file (rapport import "
            "interactions)."),
]
