"""``rfr submit`` and ``rfr api-keys create``: the command-line submission channel and key management.

``rfr submit PATH...`` uploads files to the ingest HTTP channel, one request per file, with a progress bar.
``--incident ID``: the images found are the stills of one incident (their faces are fused into one probe and
searched once; the incident announces how many images were found). ``--investigative``: faces the quality gate
stops are searched too, their candidate lists marked low-quality.
Folders are walked recursively and every file in them is accounted for: whether a file is an image is decided by
its content (:mod:`rfr.core.image_files`: the first bytes name a format the decoder takes), never by its name; hidden
files, links and the rest follow the rules in that module's doc. One line per file on stdout::

    <submission id>  <status>[ (<reason>[: <detail>])]  <path>

with status ``received``, ``duplicate`` (already submitted, or the same file reached twice: ``-`` as id),
``skipped`` (never sent: ``unsupported_format: a GIF image (starts 47 49 46 ...)``, ``hidden: hidden file``,
``empty``, ``broken_symlink``, ...), ``rejected`` (the service refused the bytes, with its reason) or ``failed``
(the service failed; submit again). Then one summary line on stderr::

    <n> file(s): <r> received, <d> duplicate, <s> skipped[ (<reason> <count>, ...)], <j> rejected, <f> failed

It goes over HTTP (not straight to Kafka) so that the API key decides the retailer, a bad file is reported at
once with its reason, and the CLI needs no broker access. The key comes from ``--api-key`` or ``RFR_API_KEY``;
the URL defaults to ``http://<settings.ingest.http_host>:<settings.ingest.http_port>``.

Exit code: 0 when every file was received (or was a duplicate); 1 when any was skipped or rejected (0 with
``--allow-partial`` as long as at least one file was received), when any failed (whatever the option), or when
no file was found at all; 2 when the service refused the key or could not be reached, or a path does not exist.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from tqdm import tqdm  # type: ignore[import-untyped]

from rfr.core.image_files import FoundFile, SkipReason, scan
from rfr.core.settings import load_settings
from services.ingest.auth import API_KEY_HEADER, ApiKeyConfigError, add_key, keys_file

app = typer.Typer(add_completion=False, help="Submit stills to the ingest service.")
keys_app = typer.Typer(no_args_is_help=True, help="API keys of the ingest HTTP channel.")
app.add_typer(keys_app, name="api-keys")


class ServiceRefused(RuntimeError):
    """The ingest service refused the API key or could not be reached: stop, retrying other files won't help."""


@dataclass(frozen=True)
class FileResult:
    path: Path
    submission_id: str | None
    status: str  # received, duplicate, skipped, rejected, failed
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("received", "duplicate")


def collect_files(paths: Iterable[Path]) -> list[Path]:
    """Every distinct file: those given, and every file under each folder given (recursive, name order).

    Images and non-images alike (see :func:`rfr.core.image_files.scan`; a file reached twice is listed once).
    Raises ``FileNotFoundError`` for a path that does not exist.
    """
    return [f.path for f in scan(paths) if f.reason is not SkipReason.SAME_FILE]


def _not_sent(found: FoundFile) -> FileResult:
    """The result of an entry that is not uploaded: a second copy of a file (duplicate), or a skip."""
    status = "duplicate" if found.reason is SkipReason.SAME_FILE else "skipped"
    reason = found.reason.value if found.reason is not None else "unknown"
    return FileResult(found.path, None, status, f"{reason}: {found.detail}" if found.detail else reason)


def _captured_at(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat()


def post_file(client: httpx.Client, path: Path, fields: dict[str, str]) -> FileResult:
    """Upload one file; the form fields are store_id, camera_id, captured_at (default: mtime), case_ref."""
    try:
        form = {"captured_at": _captured_at(path)} | fields
        with path.open("rb") as fh:
            resp = client.post("/v1/submissions", data=form, files={"images": (path.name, fh)})
    except httpx.TransportError as exc:
        raise ServiceRefused(f"ingest not reachable at {client.base_url} ({exc}); is it running?") from exc
    except OSError as exc:  # gone or unreadable since the folder was scanned
        return FileResult(path, None, "skipped", f"{SkipReason.UNREADABLE.value}: {exc.strerror or exc}")
    body: dict[str, Any] = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
    if resp.status_code == 401:
        raise ServiceRefused("the API key was refused (401)")
    if resp.status_code == 202:
        item = body["submissions"][0]
        return FileResult(path, item.get("submission_id"), str(item["status"]))
    raw_detail = body.get("detail")
    detail: dict[str, Any] = raw_detail if isinstance(raw_detail, dict) else {}
    items = detail.get("submissions") or [{}]
    status = "rejected" if 400 <= resp.status_code < 500 else "failed"
    reason = str(detail.get("reason") or f"http_{resp.status_code}")
    return FileResult(path, items[0].get("submission_id"), status, reason)


def submit_files(client: httpx.Client, found: Sequence[FoundFile], fields: dict[str, str],
                 progress: bool = True) -> list[FileResult]:
    """Upload each image found, in order; one line per entry (images and skipped entries) on stdout."""
    results = []
    with tqdm(total=sum(f.is_image for f in found), unit="image", disable=not progress, file=sys.stderr) as bar:
        for f in found:
            if f.is_image:
                res = post_file(client, f.path, fields)
                bar.update(1)
            else:
                res = _not_sent(f)
            suffix = f" ({res.reason})" if res.reason else ""
            tqdm.write(f"{res.submission_id or '-'}  {res.status}{suffix}  {f.path}", file=sys.stdout)
            results.append(res)
    return results


def summary_line(results: Sequence[FileResult]) -> str:
    """``<n> file(s): <r> received, <d> duplicate, <s> skipped (<reason> <count>, ...), <j> rejected, <f> failed``."""
    counts = {s: sum(r.status == s for r in results) for s in ("received", "duplicate", "skipped", "rejected",
                                                                "failed")}
    reasons: dict[str, int] = {}
    for r in results:
        if r.status == "skipped":
            key = (r.reason or "unknown").split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
    by_reason = " (" + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) + ")" if reasons else ""
    parts = [f"{n} {s}" + (by_reason if s == "skipped" else "") for s, n in counts.items()]
    return f"{len(results)} file(s): " + ", ".join(parts)


def exit_code(results: Sequence[FileResult], allow_partial: bool) -> int:
    """0, or 1 when the run is incomplete (see the module doc); skips and rejections pass with ``allow_partial``."""
    if not any(r.ok for r in results) or any(r.status == "failed" for r in results):
        return 1
    if all(r.ok for r in results) or allow_partial:
        return 0
    return 1


def _why_not_zero(results: Sequence[FileResult], paths: Sequence[Path]) -> str:
    if not results:
        return "error: no file found under " + ", ".join(map(str, paths))
    if any(r.status == "failed" for r in results):
        return "error: the service failed on some files; submit them again (duplicates are dropped)"
    if not any(r.ok for r in results):
        return "error: no file was received"
    return "not every file was received; --allow-partial accepts skipped and rejected files"


@app.command("submit")
def submit(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    store_id: Annotated[str, typer.Option("--store", help="Store id.")],
    camera_id: Annotated[str, typer.Option("--camera", help="Camera id.")],
    captured_at: Annotated[str | None, typer.Option(
        "--captured-at", help="ISO 8601 with a UTC offset; default: each file's modification time.")] = None,
    case_ref: Annotated[str | None, typer.Option("--case-ref", help="Investigation reference.")] = None,
    incident: Annotated[str | None, typer.Option(
        "--incident", help="Incident id: the stills given are frames of one incident, fused into one probe and "
                           "searched once (one candidate list naming them).")] = None,
    investigative: Annotated[bool, typer.Option(
        "--investigative", help="Search faces the quality gate stops too; their candidate lists are marked "
                                "low-quality.")] = False,
    api_key: Annotated[str, typer.Option(envvar="RFR_API_KEY", help="The retailer's API key.")] = "",
    url: Annotated[str | None, typer.Option(help="Ingest HTTP base URL (default from settings).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    allow_partial: Annotated[bool, typer.Option(
        "--allow-partial", help="Exit 0 even if some files were skipped (not an image by content, hidden, ...) or "
                                "rejected by the service, as long as one was received.")] = False,
) -> None:
    """Submit stills (files or folders) to the ingest service; print a line per file, then a summary.

    Folders are walked; which files are stills is decided by their content, not their name.

    Exit 0 when every file was received, else 1 (see --allow-partial); 2 for a refused key or no service.
    """
    if not api_key:
        typer.echo("an API key is needed: --api-key or RFR_API_KEY", err=True)
        raise typer.Exit(2)
    ingest = load_settings().ingest
    base = url or f"http://{ingest.http_host}:{ingest.http_port}"
    fields = {"store_id": store_id, "camera_id": camera_id}
    fields |= {"captured_at": captured_at} if captured_at else {}
    fields |= {"case_ref": case_ref} if case_ref else {}
    fields |= {"investigative": "true"} if investigative else {}
    try:
        found = scan(paths)
        if incident:  # every image found is a still of the incident, one request each
            fields |= {"incident_id": incident, "incident_stills": str(sum(f.is_image for f in found))}
        with httpx.Client(base_url=base, headers={API_KEY_HEADER: api_key}, timeout=120.0) as client:
            results = submit_files(client, found, fields, progress)
    except (FileNotFoundError, ServiceRefused) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(summary_line(results), err=True)
    code = exit_code(results, allow_partial)
    if code:
        typer.echo(_why_not_zero(results, paths), err=True)
        raise typer.Exit(code)


@keys_app.command("create")
def create_key(
    retailer_id: Annotated[str, typer.Argument(help="The retailer the key will belong to.")],
    file: Annotated[Path | None, typer.Option(
        help="Keys file (default: settings.ingest.api_keys_file, else <stack state dir>/api-keys).")] = None,
) -> None:
    """Create an API key: print the secret once and store only its sha256 in the keys file."""
    target = file or keys_file(load_settings())
    try:
        secret = add_key(target, retailer_id)
    except ApiKeyConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"key hash for {retailer_id} appended to {target}; the running service picks it up", err=True)
    typer.echo("the key (shown only now; store it safely):", err=True)
    typer.echo(secret)


if __name__ == "__main__":
    app()
