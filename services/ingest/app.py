"""The HTTP channel (FastAPI): upload stills with an API key, then follow each submission's status.

``POST /v1/submissions`` (multipart/form-data): one or more ``images`` parts with the same ``store_id``,
``camera_id``, ``captured_at`` (ISO 8601 with a UTC offset) and optional ``case_ref``, ``incident_id`` /
``incident_stills`` (several stills of one incident, fused into one probe: with an ``incident_id`` alone the
request's images are the incident) and ``investigative`` (search gated faces too); the retailer is the
one the ``X-API-Key`` belongs to. Every image is validated before any is accepted: if one is rejected the
answer is its 4xx (413 too large, 415 unsupported format, 422 corrupt, truncated or missing metadata) and
none of the request's images is processed; otherwise 202 with a submission id per image, after the frame
events were acknowledged by the broker. An image already received is reported as ``duplicate`` and not
processed again. ``GET /v1/submissions/{id}`` answers only for the key's own retailer (404 otherwise) and
never names a candidate. OpenAPI at ``/openapi.json``, interactive docs at ``/docs``.
"""


import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader

from rfr import __version__
from rfr.core.kafka import DeliveryFailed, Output
from rfr.core.reasons import Reason
from rfr.core.schemas import Channel, SubmissionMeta, submission_id
from services.ingest.accept import Accepted, Ingestor, RawMeta, Rejected, build_meta
from services.ingest.auth import API_KEY_HEADER, ApiKeyRegistry
from services.ingest.http_models import (
    BodyLimit,
    ErrorBody,
    ErrorResponse,
    StatusResponse,
    SubmissionItem,
    SubmitResponse,
    error,
    http_status,
)
from services.ingest.publish import Sender
from services.ingest.store import Claim, State, StoreUnavailable

logger = logging.getLogger(__name__)

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text} for code, text in (
        (401, "Missing or unknown API key"), (413, "Image or request too large"),
        (415, "Not a supported still (JPEG, PNG, WebP, BMP, TIFF, HEIC), by content"),
        (422, "Corrupt, truncated or missing metadata"),
        (503, "The broker did not acknowledge; retry"))
}


_IMAGES = "One or more stills: JPEG, PNG, WebP, BMP, TIFF or HEIC, recognised by content (not name or declared type)."
_INCIDENT_ID = ("The incident the images are frames of: their faces are fused into one probe, searched once, giving "
                "one candidate list that names the stills. Without incident_stills, the images of this request are "
                "the whole incident.")
_INCIDENT_STILLS = ("How many stills the incident has in all (1-64), when they come in several requests; with no "
                    "incident_id the case_ref is the incident.")
_INVESTIGATIVE = ("true: an investigative search: faces the quality gate stops are searched too, and their "
                  "candidate lists are marked low-quality. Default false.")


@dataclass
class HttpContext:
    ingestor: Ingestor
    keys: ApiKeyRegistry
    publisher: Sender
    max_files: int
    max_request_bytes: int
    channel: Channel = Channel.HTTP


def _read(upload: UploadFile, limit: int) -> bytes:
    upload.file.seek(0)
    return upload.file.read(limit + 1)


def _install_error_handlers(app: FastAPI) -> None:
    """Validation errors and store outages in the same body as rejections (``detail.reason``)."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            body = ErrorBody(reason=Reason.UNSUPPORTED_MEDIA_TYPE, message="send multipart/form-data")
            return JSONResponse({"detail": body.model_dump(mode="json")}, status_code=415)
        errs = exc.errors()
        missing = [str(e["loc"][-1]) for e in errs if e.get("type") == "missing"]
        reason = Reason.MISSING_METADATA if missing else Reason.INVALID_METADATA
        text = "missing " + ", ".join(missing) if missing else "; ".join(str(e.get("msg")) for e in errs)[:500]
        body = ErrorBody(reason=reason, message=text)
        return JSONResponse({"detail": body.model_dump(mode="json")}, status_code=422)

    @app.exception_handler(StoreUnavailable)
    async def store_down(_request: Request, exc: StoreUnavailable) -> JSONResponse:
        logger.error("submission store unavailable: %s", exc)
        body = ErrorBody(reason=Reason.UNAVAILABLE, message="submission store unavailable; retry later")
        return JSONResponse({"detail": body.model_dump(mode="json")}, status_code=503)


def create_app(ctx: HttpContext) -> FastAPI:
    app = FastAPI(title="RFR ingest", version=__version__, summary="Submit CCTV stills for review.")
    app.add_middleware(BodyLimit, max_bytes=ctx.max_request_bytes)
    key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="The retailer's API key.")

    def retailer(key: Annotated[str | None, Security(key_header)] = None) -> str:
        found = ctx.keys.retailer_for(key)
        if found is None:
            exc = error(Reason.UNAUTHORIZED, "missing or unknown API key", status=401)
            exc.headers = {"WWW-Authenticate": "ApiKey"}
            raise exc
        return found

    _install_error_handlers(app)

    @app.post("/v1/submissions", status_code=202, response_model=SubmitResponse, responses=_ERRORS)
    def submit(
        retailer_id: Annotated[str, Depends(retailer)],
        images: Annotated[list[UploadFile], File(description=_IMAGES)],
        store_id: Annotated[str, Form()],
        camera_id: Annotated[str, Form()],
        captured_at: Annotated[str, Form(description="ISO 8601 with a UTC offset, e.g. 2024-05-01T13:45:00Z")],
        case_ref: Annotated[str | None, Form()] = None,
        incident_id: Annotated[str | None, Form(description=_INCIDENT_ID)] = None,
        incident_stills: Annotated[str | None, Form(description=_INCIDENT_STILLS)] = None,
        investigative: Annotated[str | None, Form(description=_INVESTIGATIVE)] = None,
    ) -> SubmitResponse:
        """Submit stills with the same metadata; returns a submission id per image."""
        if len(images) > ctx.max_files:
            raise error(Reason.TOO_MANY_FILES, f"{len(images)} images; at most {ctx.max_files} per request")
        if incident_id and not incident_stills:  # the request's images are the incident
            incident_stills = str(len(images))
        raw = RawMeta(retailer_id, store_id, camera_id, captured_at, case_ref, incident_id, incident_stills,
                      investigative)
        return _submit(ctx, raw, images)

    @app.get("/v1/submissions/{submission_id}", response_model=StatusResponse, responses=_ERRORS)
    def status(submission_id: str, retailer_id: Annotated[str, Depends(retailer)]) -> StatusResponse:
        """A submission's status. Another retailer's submission is reported as not found."""
        st = ctx.ingestor.store.status(submission_id)
        if st is None or st.record.retailer_id != retailer_id:
            raise error("not_found", "no such submission for this API key", status=404)
        return StatusResponse.of(st)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


@dataclass
class _Batch:
    """What one POST's images came to."""

    items: list[SubmissionItem]
    accepted: list[tuple[int, Accepted]]
    rejected: list[tuple[int, str | None, Rejected]]


def _one(ctx: HttpContext, batch: _Batch, meta: SubmissionMeta | Rejected, retailer_id: str, source: str,
         index: int, upload: UploadFile) -> SubmissionItem:
    """Validate one image of a request; record it in ``batch``; return its item."""
    limit = ctx.ingestor.limits.max_bytes
    data = _read(upload, limit)
    ctx.ingestor.received(ctx.channel, len(data))
    sid = None if len(data) > limit else submission_id(retailer_id, data)
    item = SubmissionItem(index=index, filename=upload.filename, submission_id=sid, status="received")
    seen = ctx.ingestor.store.get(sid) if sid else None
    try:
        if isinstance(meta, Rejected):
            raise meta
        if (seen is not None and seen.state == State.RECEIVED) or any(
                a.submission_id == sid for _, a in batch.accepted):
            ctx.ingestor.count(ctx.channel, "duplicate")
            size = {"width": seen.width, "height": seen.height} if seen else {}
            return item.model_copy(update={"status": "duplicate", **size})
        acc = ctx.ingestor.accept(sid or "", meta, data, f"{source}:{index}")
    except Rejected as exc:
        batch.rejected.append((index, sid, exc))
        return item.model_copy(update={"status": "rejected", "reason": exc.reason, "detail": exc.detail})
    except OSError as exc:  # the blob store
        logger.exception("blob store unavailable")
        raise error("unavailable", "storage unavailable; retry later", status=503) from exc
    batch.accepted.append((index, acc))
    return item.model_copy(update={"width": acc.decoded.width, "height": acc.decoded.height})


def _submit(ctx: HttpContext, raw: RawMeta, uploads: Sequence[UploadFile]) -> SubmitResponse:
    source = f"http:{uuid.uuid4().hex}"
    meta: SubmissionMeta | Rejected
    try:
        meta = build_meta(raw, ctx.channel)
    except Rejected as exc:
        meta = exc
    batch = _Batch([], [], [])
    for i, upload in enumerate(uploads):
        batch.items.append(_one(ctx, batch, meta, raw.retailer_id or "", source, i, upload))
    if batch.rejected:
        raise _rejection(ctx, raw, source, batch)
    return SubmitResponse(submissions=_publish(ctx, batch))


def _rejection(ctx: HttpContext, raw: RawMeta, source: str, batch: _Batch) -> Exception:
    outputs: list[Output] = []
    for i, sid, exc in batch.rejected:
        if sid is None:  # too large to read whole: no id to record it under
            ctx.ingestor.metrics.rejections.labels(exc.reason).inc()
            ctx.ingestor.count(ctx.channel, "rejected")
        else:
            outputs += ctx.ingestor.reject(sid, raw, ctx.channel, f"{source}:{i}", exc)
    try:
        ctx.publisher.send(outputs, wait=False)
    except Exception:
        logger.exception("could not publish %d rejection outcome(s)", len(outputs))
    items = [it if it.status in ("rejected", "duplicate") else it.model_copy(update={"status": "not_processed"})
             for it in batch.items]
    first = batch.rejected[0][2]
    message = f"{len(batch.rejected)} of {len(items)} image(s) rejected, none processed; first: {first}"
    return error(first.reason, message[:1000], items, status=http_status(first.reason))


def _publish(ctx: HttpContext, batch: _Batch) -> list[SubmissionItem]:
    try:
        ctx.publisher.send([out for _, acc in batch.accepted for out in acc.outputs])
    except DeliveryFailed as exc:
        logger.error("submission not acknowledged by the broker: %s", exc)
        raise error("unavailable", "the broker did not acknowledge; retry later", status=503) from exc
    items = list(batch.items)
    for i, acc in batch.accepted:
        claim = ctx.ingestor.store.claim(acc.record)
        ctx.ingestor.count(ctx.channel, "duplicate" if claim == Claim.DUPLICATE else "accepted")
        if claim == Claim.DUPLICATE:  # the same still arrived meanwhile on another request
            items[i] = items[i].model_copy(update={"status": "duplicate"})
    return items
