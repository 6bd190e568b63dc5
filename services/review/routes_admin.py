"""Oversight and administration routes of the review API: the audit log, retention, users, tokens, and the final
decisions a case system reads.

``GET /v1/audit`` queries the log (auditor, administrator, supervisor); ``GET /v1/audit/export`` streams it as JSON
lines (auditor; the export itself is audited first). ``GET /v1/decisions`` is the one route a case system's token
opens: final decisions, as published on ``rfr.decisions.v1``; a read that returns any is audited as an export.
"""

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from rfr.review.audit import AuditAction, canonical_json
from rfr.review.users import Principal
from services.review.api_models import (
    AuditEntryOut,
    DecisionsOut,
    PrincipalOut,
    RetentionOut,
    TokenIn,
    TokenOut,
    UserIn,
)
from services.review.auth import (
    ADMINISTRATORS,
    AUDIT_EXPORTERS,
    AUDIT_READERS,
    DECISION_READERS,
    RETENTION_READERS,
    Guards,
)
from services.review.bounds import MAX_INT, UtcTime
from services.review.context import ApiContext

Since = Annotated[UtcTime | None, Query(description="From this time (inclusive), with a UTC offset (1970..9999)")]
Until = Annotated[UtcTime | None, Query(description="Up to this time (exclusive), with a UTC offset (1970..9999)")]


def admin_routes(ctx: ApiContext, guards: Guards) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.get("/audit", tags=["audit"])
    def audit(
        _: Annotated[Principal, guards(AUDIT_READERS)], since: Since = None, until: Until = None,
        actor: str | None = None, action: AuditAction | None = None,
        case_id: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100, offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
    ) -> list[AuditEntryOut]:
        """Audit entries matching every filter given, newest first."""
        rows = ctx.audit.query(actor=actor, action=action, case_id=case_id, since=since, until=until, limit=limit,
                               offset=offset)
        return [AuditEntryOut.model_validate(row) for row in rows]

    @router.get("/audit/export", tags=["audit"], response_class=StreamingResponse,
                responses={200: {"content": {"application/x-ndjson": {}}, "description": "JSON lines"}})
    def export(principal: Annotated[Principal, guards(AUDIT_EXPORTERS)], since: Since = None, until: Until = None,
               reason: Annotated[str, Query(max_length=256, description="Why the log is exported")] = ""
               ) -> StreamingResponse:
        """The log as JSON lines in seq order (each line one entry, re-verifiable offline); audited."""
        ctx.audit.append_now(principal.name, principal.role, AuditAction.EXPORT, reason=reason, details={
            "what": "audit_log", "since": since, "until": until})

        def lines() -> Iterator[bytes]:
            for entry in ctx.audit.export(since, until):
                yield canonical_json(entry).encode() + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson", headers={
            "Cache-Control": "no-store", "Content-Disposition": 'attachment; filename="rfr-audit.jsonl"'})

    @router.get("/retention", tags=["retention"])
    def retention(_: Annotated[Principal, guards(RETENTION_READERS)]) -> RetentionOut:
        """The retention policy, the service's schedule, the last pass's report and what is due."""
        return ctx.retention()

    @router.post("/users", status_code=201, tags=["administration"])
    def create_user(body: UserIn, principal: Annotated[Principal, guards(ADMINISTRATORS)]) -> PrincipalOut:
        """Create a user with a role (audited)."""
        made = ctx.users.create_user(body.name, body.role, body.password, by=principal, reason=body.reason)
        return PrincipalOut(name=made.name, role=made.role)

    @router.post("/tokens", status_code=201, tags=["administration"])
    def create_token(body: TokenIn, principal: Annotated[Principal, guards(ADMINISTRATORS)]) -> TokenOut:
        """Create an API token for a case system (role case_system only; it expires in ``expires_in_days``); the
        token is shown only in this answer."""
        token = ctx.users.create_token(body.name, body.role, by=principal, reason=body.reason,
                                       expires_in_days=body.expires_in_days)
        info = ctx.users.token_info(token)
        assert info is not None, "the token was just stored"
        return TokenOut(token=token, name=info.name, role=info.role, expires_at=info.expires_at)

    @router.get("/decisions", tags=["decisions"])
    def decisions(principal: Annotated[Principal, guards(DECISION_READERS)],
                  after: Annotated[int, Query(ge=0, le=MAX_INT, description="next_after of the previous page")] = 0,
                  limit: Annotated[int, Query(ge=1, le=500)] = 100) -> DecisionsOut:
        """Final decisions (lead / no_lead) oldest first, as published on rfr.decisions.v1."""
        page = ctx.decisions(after, limit)
        if page:
            ctx.audit.append_now(principal.name, principal.role, AuditAction.EXPORT, details={
                "what": "decisions", "after": after, "count": len(page), "last": page[-1][0]})
        return DecisionsOut(decisions=[event for _, event in page],
                            next_after=page[-1][0] if page else after)

    return router
