"""The AI assistant: spec sheets become proposed custom sensors (admin), anomalies get
root-cause reports (anyone who may see the machine). Any OpenAI-compatible model, or none:
every answer says which path produced it (``path``, ``model``) and, when a configured model
was not used, why (``note``).

``POST /api/admin/parse-sensor-file`` and ``POST /api/generate-report/{anomaly_id}`` keep the
prototype's paths working (``docs/manifest.md`` §2.2, §2.3); they answer what their
``/api/v1`` twins answer. A proposal is never applied by parsing: only
``POST /api/v1/assistant/spec-proposals/confirm``, with the sensors as the admin reviewed
them, creates custom sensors and thresholds.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from cloud.accounts import User
from cloud.api.deps import Db, Services
from cloud.api.errors import ApiError
from cloud.api.guards import Admin, AnyUser
from cloud.api.params import CustomSensorName, MachineId, RowId
from cloud.api.routers.sensors import _visible as visible_sensor
from cloud.api.schemas import (
    AssistantStatusOut,
    CustomSensorSpecOut,
    ReportOut,
    ReportVersionsOut,
    SpecDecisionOut,
    SpecProposalOut,
    SpecProposalsOut,
)
from cloud.assistant import facts as report_facts
from cloud.assistant import pdf, proposals, reports, spec_parse
from cloud.assistant.provider import ChatClient, ProviderConfig
from cloud.assistant.sources import read_source
from cloud.audit import store as audit_store
from cloud.audit.context import AuditCtx
from cloud.fielderror import FieldError, NotFoundError
from cloud.settings import CloudSettings
from cloud.store import custom_sensors as registry

router = APIRouter(tags=["assistant"])

# Form fields other than the file are small; the multipart envelope adds a little.
_FORM_OVERHEAD = 64 * 1024
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "the spec sheet: PDF (text layer), CSV, TXT or JSON",
                        }
                    },
                }
            }
        },
    }
}
# format=pdf answers the same status with a PDF instead of JSON.
_PDF_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}}}
}


def _client(settings: CloudSettings) -> ChatClient | None:
    config = ProviderConfig.from_settings(settings)
    return ChatClient(config) if config is not None else None


async def _read_upload(request: Request, limit: int) -> spec_parse.Upload:
    """The uploaded file, refused before it is parsed when the body is too large."""
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        raise ApiError(411, "file", "send the upload with a Content-Length")
    if int(length) > limit + _FORM_OVERHEAD:
        raise ApiError(413, "file", f"the upload is {length} bytes; at most {limit} are accepted")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise FieldError("file", "send the spec sheet as multipart/form-data with a 'file' part")
    try:
        form = await request.form(max_files=1, max_fields=8, max_part_size=_FORM_OVERHEAD)
    except StarletteHTTPException as exc:
        raise FieldError("file", f"malformed upload: {exc.detail}") from None
    try:
        item = form.get("file")
        if not isinstance(item, UploadFile):
            raise FieldError("file", "missing: a 'file' part holding the spec sheet")
        data = await item.read(limit + 1)
        if len(data) > limit:
            raise ApiError(413, "file", f"the file is larger than {limit} bytes")
        return spec_parse.Upload(item.filename or "upload", item.content_type, data)
    finally:
        await form.close()


async def _parse(request: Request, db: Db, services: Services, admin: User) -> dict[str, Any]:
    settings = services.settings
    upload = await _read_upload(request, settings.ai_max_upload_bytes)
    # pypdf is CPU work: off the event loop.
    doc = await run_in_threadpool(
        read_source, upload.filename, upload.media_type, upload.data, settings.ai_pdf_pages
    )
    sensors, how = await spec_parse.propose(doc, _client(settings), settings.ai_model_parsing)
    proposal = spec_parse.build_proposal(doc, sensors, how)
    return await db.run(spec_parse.store_proposal, upload, doc.kind, proposal, admin.username)


@router.get(
    "/api/v1/assistant/status",
    response_model=AssistantStatusOut,
    summary="Whether answers come from a model or the offline path",
)
async def assistant_status(services: Services, user: AnyUser) -> dict[str, Any]:
    settings = services.settings
    online = settings.ai_endpoint is not None
    return {
        "mode": "model" if online else "offline",
        "model_parsing": settings.ai_model_parsing if online else None,
        "model_reports": settings.ai_model_reports if online else None,
        "max_upload_bytes": settings.ai_max_upload_bytes,
    }


@router.post(
    "/api/v1/assistant/spec-sheets",
    response_model=SpecProposalOut,
    summary="Parse a spec sheet into proposed custom sensors, for review (admin)",
    openapi_extra=_UPLOAD_BODY,
)
async def parse_spec_sheet(
    request: Request, db: Db, services: Services, admin: Admin
) -> dict[str, Any]:
    return await _parse(request, db, services, admin)


@router.post(
    "/api/admin/parse-sensor-file",
    response_model=SpecProposalOut,
    summary="Parse a spec sheet (manifest path; admin)",
    openapi_extra=_UPLOAD_BODY,
)
async def legacy_parse_sensor_file(
    request: Request, db: Db, services: Services, admin: Admin
) -> dict[str, Any]:
    return await _parse(request, db, services, admin)


@router.get(
    "/api/v1/assistant/spec-proposals",
    response_model=SpecProposalsOut,
    summary="Recent spec-sheet proposals, newest first (admin)",
)
async def spec_proposals(
    db: Db,
    admin: Admin,
    status: Annotated[str | None, Query(pattern="^(pending|confirmed|discarded)$")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    return {"proposals": await db.run(spec_parse.list_proposals, status, limit)}


class ProposedSensorIn(BaseModel):
    """One sensor as the admin confirms it (edited in the review or as proposed)."""

    model_config = ConfigDict(extra="forbid")
    sensor_name: str | None = Field(default=None, max_length=64)
    min_range: float | None = Field(default=None, allow_inf_nan=False)
    max_range: float | None = Field(default=None, allow_inf_nan=False)
    unit: str | None = Field(default=None, max_length=32)
    low_threshold: float | None = Field(default=None, allow_inf_nan=False)
    high_threshold: float | None = Field(default=None, allow_inf_nan=False)
    category: str | None = Field(default=None, max_length=32)
    description: str | None = Field(default=None, max_length=1000)
    accuracy: str | None = Field(default=None, max_length=100)
    output_signal: str | None = Field(default=None, max_length=100)
    proposal_index: int | None = Field(
        default=None,
        ge=0,
        le=7,
        description="which proposed sensor this is (keeps its provenance when renamed)",
    )


class ConfirmIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    proposal_id: RowId
    machine_id: MachineId | None = Field(
        default=None, description="thresholds for this machine only; null: fleet-wide"
    )
    sensors: list[ProposedSensorIn] = Field(min_length=1, max_length=8)


class DiscardIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    proposal_id: RowId


@router.post(
    "/api/v1/assistant/spec-proposals/confirm",
    response_model=SpecDecisionOut,
    summary="Create the reviewed sensors and their thresholds (admin)",
)
async def confirm_spec_proposal(
    body: ConfirmIn, db: Db, admin: Admin, ctx: AuditCtx
) -> dict[str, Any]:
    sensors = [s.model_dump() for s in body.sensors]
    audit = ctx.entry(
        admin,
        "spec_proposal.confirm",
        f"spec_proposal:{body.proposal_id}",
        detail={"machine_id": body.machine_id, "sensors": sensors},
    )
    return await db.run(
        audit_store.wrap(audit, spec_parse.confirm_proposal),
        body.proposal_id,
        sensors,
        body.machine_id,
        admin.username,
    )


@router.post(
    "/api/v1/assistant/spec-proposals/discard",
    response_model=SpecDecisionOut,
    summary="Discard a proposal without applying anything (admin)",
)
async def discard_spec_proposal(
    body: DiscardIn, db: Db, admin: Admin, ctx: AuditCtx
) -> dict[str, Any]:
    audit = ctx.entry(admin, "spec_proposal.discard", f"spec_proposal:{body.proposal_id}")
    work = audit_store.wrap(audit, spec_parse.discard_proposal)
    return await db.run(work, body.proposal_id, admin.username)


@router.get(
    "/api/v1/custom-sensors/{name}/spec",
    response_model=CustomSensorSpecOut,
    summary="A custom sensor's confirmed spec: range, accuracy, output, sources",
)
async def custom_sensor_spec(name: CustomSensorName, db: Db, user: AnyUser) -> dict[str, Any]:
    sensor = await db.run(registry.get_custom_sensor, name)
    # Who may know of the sensor is the custom-sensor endpoints' rule.
    if sensor is None or not visible_sensor(sensor, user):
        raise NotFoundError("name", f"no custom sensor {name!r}")
    return await db.run(proposals.load_spec, name)


# -- reports --------------------------------------------------------------------------------


async def _generate(anomaly_id: int, db: Db, services: Services, user: User) -> dict[str, Any]:
    settings = services.settings
    facts = await db.run(report_facts.gather, anomaly_id, user.machines)
    written, how = await reports.write(facts, _client(settings), settings.ai_model_reports)
    report = reports.assemble(facts, written)
    return await db.run(reports.store, anomaly_id, facts, report, how, user.username)


async def _visible_anomaly(db: Db, user: User, anomaly_id: int) -> None:
    machine = await db.run(reports.anomaly_machine, anomaly_id)
    if machine is None or not user.may_see(machine):
        raise NotFoundError("anomaly_id", f"no anomaly {anomaly_id}")


@router.post(
    "/api/v1/anomalies/{anomaly_id}/reports",
    response_model=ReportOut,
    summary="Write a new version of the anomaly's root-cause report",
)
async def generate_report(
    anomaly_id: RowId, db: Db, services: Services, user: AnyUser
) -> dict[str, Any]:
    return await _generate(anomaly_id, db, services, user)


@router.post(
    "/api/generate-report/{anomaly_id}",
    response_model=ReportOut,
    summary="Write a root-cause report (manifest path)",
)
async def legacy_generate_report(
    anomaly_id: RowId, db: Db, services: Services, user: AnyUser
) -> dict[str, Any]:
    return await _generate(anomaly_id, db, services, user)


@router.get(
    "/api/v1/anomalies/{anomaly_id}/reports",
    response_model=ReportVersionsOut,
    responses=_PDF_RESPONSE,
    summary="The anomaly's report versions and one report (default: the newest); "
    "format=pdf: that report as PDF",
)
async def anomaly_reports(
    anomaly_id: RowId,
    db: Db,
    user: AnyUser,
    ctx: AuditCtx,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    output: Annotated[
        Literal["json", "pdf"], Query(alias="format", description="pdf: a download")
    ] = "json",
) -> Any:
    await _visible_anomaly(db, user, anomaly_id)
    if output == "pdf":
        audit = ctx.entry(
            user,
            "report.export_pdf",
            f"anomaly:{anomaly_id}",
            category="export",
            detail={"version": version},
        )
        # The export is recorded in the transaction that reads the report.
        load = audit_store.wrap(audit, reports.load, after=lambda _r: None)
        stored = await db.run(load, anomaly_id, version)
        body = await run_in_threadpool(pdf.render, stored)
        name = f"rig-alpha-anomaly-{anomaly_id}-report-v{stored['version']}.pdf"
        return Response(
            body,
            media_type="application/pdf",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    listed = await db.run(reports.versions, anomaly_id)
    # No report yet is an answer too (report null); a version that does not exist is a 404.
    report = await db.run(reports.load, anomaly_id, version) if listed or version else None
    return {"anomaly_id": anomaly_id, "versions": listed, "report": report}
