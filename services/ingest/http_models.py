"""Request-independent pieces of the HTTP channel: response bodies, reason -> status code, the body limit."""

from __future__ import annotations

from datetime import datetime

from fastapi import HTTPException
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rfr.core.reasons import Reason
from services.ingest.store import SubmissionStatus

HTTP_STATUS: dict[str, int] = {
    Reason.TOO_LARGE_BYTES: 413,
    Reason.TOO_MANY_PIXELS: 413,
    Reason.TOO_MANY_FILES: 413,
    Reason.UNSUPPORTED_FORMAT: 415,
    Reason.UNSUPPORTED_MEDIA_TYPE: 415,
    Reason.EMPTY: 422,
    Reason.CORRUPT: 422,
    Reason.TRUNCATED: 422,
    Reason.ZERO_SIZE: 422,
    Reason.MISSING_METADATA: 422,
    Reason.INVALID_METADATA: 422,
}


def http_status(reason: str) -> int:
    return HTTP_STATUS.get(reason, 422)


class SubmissionItem(BaseModel):
    index: int = Field(description="Position of the image in the request.")
    filename: str | None = None
    submission_id: str | None = Field(None, description="Absent only when the image was too large to read.")
    status: str = Field(description="received, duplicate (already received: not processed again), rejected, "
                                    "or not_processed (another image of the request was rejected).")
    width: int | None = None
    height: int | None = None
    reason: str | None = None
    detail: str | None = None


class SubmitResponse(BaseModel):
    submissions: list[SubmissionItem]


class ErrorBody(BaseModel):
    reason: str
    message: str
    submissions: list[SubmissionItem] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    detail: ErrorBody


class StatusResponse(BaseModel):
    """A submission's progress. It never names a candidate: candidate lists go only to reviewers."""

    submission_id: str
    status: str = Field(description="received, rejected, faces_found, no_face, passed_for_review, "
                                    "no_candidate or failed.")
    reason: str | None = Field(None, description="Why it was rejected.")
    detail: str | None = None
    final: bool = Field(False, description="True once nothing more will happen to this still (rfr.core.progress).")
    faces: int | None = Field(None, description="Faces passed on for search, once detection ran.")
    faces_passed_for_review: int = 0
    faces_no_candidate: int = 0
    faces_failed: int = Field(0, description="Faces whose search failed (each has a dead letter).")
    decode_scale: int | None = Field(None, description="The still was decoded at 1/decode_scale of its size "
                                                       "(a large JPEG), so face sizes refer to that.")
    decode_warnings: list[str] = Field(default_factory=list, description="What was accepted although unusual, "
                                                                         "e.g. jpeg_missing_eoi.")
    faces_dropped: dict[str, int] = Field(
        default_factory=dict,
        description="Faces detected but not searched, by reason: the quality gate's, and over_max_faces.",
    )
    channel: str
    store_id: str | None = None
    camera_id: str | None = None
    captured_at: datetime | None = None
    case_ref: str | None = None
    received_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, st: SubmissionStatus) -> StatusResponse:
        r = st.record
        p = st.progress
        return cls(submission_id=r.submission_id, status=st.status, reason=r.reason, detail=r.detail,
                   final=p.final, faces=p.faces, faces_passed_for_review=p.faces_passed_for_review,
                   faces_no_candidate=p.faces_no_candidate, faces_failed=p.faces_failed,
                   faces_dropped=p.faces_dropped, decode_scale=r.decode_scale,
                   decode_warnings=r.decode_warnings.split(",") if r.decode_warnings else [],
                   channel=r.channel, store_id=r.store_id,
                   camera_id=r.camera_id, captured_at=r.captured_at, case_ref=r.case_ref,
                   received_at=r.received_at, updated_at=st.updated_at)


def error(reason: str, message: str, items: list[SubmissionItem] | None = None,
          status: int | None = None) -> HTTPException:
    body = ErrorBody(reason=reason, message=message, submissions=items or [])
    return HTTPException(status or http_status(reason), detail=body.model_dump(mode="json"))


class BodyLimit:
    """ASGI middleware: refuse a POST body larger than ``max_bytes`` (declared or streamed) with 413."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise error(Reason.TOO_LARGE_BYTES, f"request body over {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)

    async def _refuse(self, send: Send) -> None:
        body = ErrorResponse(detail=ErrorBody(reason=Reason.TOO_LARGE_BYTES,
                                              message=f"request body over {self.max_bytes} bytes"))
        payload = body.model_dump_json().encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
