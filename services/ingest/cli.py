"""``rfr submit`` and ``rfr api-keys create``: the command-line submission channel and key management.

``rfr submit PATH...`` uploads files (folders are walked for .jpg/.jpeg/.png/.webp/.bmp) to the ingest HTTP
channel, one request per file, with a progress bar, and prints one line per file:
``<submission id>  <status>  <path>``. It goes over HTTP (not straight to Kafka) so that the API key
decides the retailer, a bad file is reported at once with its reason, and the CLI needs no broker access.
The key comes from ``--api-key`` or ``RFR_API_KEY``; the URL defaults to
``http://<settings.ingest.http_host>:<settings.ingest.http_port>``. Exit code 0 when every file was
received (or was a duplicate), 1 when any was rejected or failed, 2 when the service refused the key or
could not be reached.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from tqdm import tqdm  # type: ignore[import-untyped]

from rfr.settings import load_settings
from services.ingest.auth import API_KEY_HEADER, ApiKeyConfigError, add_key, keys_file

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})

app = typer.Typer(add_completion=False, help="Submit stills to the ingest service.")
keys_app = typer.Typer(no_args_is_help=True, help="API keys of the ingest HTTP channel.")
app.add_typer(keys_app, name="api-keys")


class ServiceRefused(RuntimeError):
    """The ingest service refused the API key or could not be reached: stop, retrying other files won't help."""


@dataclass(frozen=True)
class FileResult:
    path: Path
    submission_id: str | None
    status: str  # received, duplicate, rejected, failed
    reason: str | None = None


def collect_files(paths: Iterable[Path]) -> list[Path]:
    """Files as given, plus the image files under each folder (sorted, recursive)."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(path)
    return out


def _captured_at(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat()


def post_file(client: httpx.Client, path: Path, fields: dict[str, str]) -> FileResult:
    """Upload one file; the form fields are store_id, camera_id, captured_at (default: mtime), case_ref."""
    form = {"captured_at": _captured_at(path)} | fields
    try:
        with path.open("rb") as fh:
            resp = client.post("/v1/submissions", data=form, files={"images": (path.name, fh)})
    except httpx.TransportError as exc:
        raise ServiceRefused(f"ingest not reachable at {client.base_url} ({exc}); is it running?") from exc
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


def submit_files(client: httpx.Client, files: list[Path], fields: dict[str, str],
                 progress: bool = True) -> list[FileResult]:
    results = []
    for path in tqdm(files, unit="image", disable=not progress, file=sys.stderr):
        res = post_file(client, path, fields)
        suffix = f" ({res.reason})" if res.reason else ""
        tqdm.write(f"{res.submission_id or '-'}  {res.status}{suffix}  {path}", file=sys.stdout)
        results.append(res)
    return results


@app.command("submit")
def submit(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    store_id: Annotated[str, typer.Option("--store", help="Store id.")],
    camera_id: Annotated[str, typer.Option("--camera", help="Camera id.")],
    captured_at: Annotated[str | None, typer.Option(
        "--captured-at", help="ISO 8601 with a UTC offset; default: each file's modification time.")] = None,
    case_ref: Annotated[str | None, typer.Option("--case-ref", help="Investigation reference.")] = None,
    api_key: Annotated[str, typer.Option(envvar="RFR_API_KEY", help="The retailer's API key.")] = "",
    url: Annotated[str | None, typer.Option(help="Ingest HTTP base URL (default from settings).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Submit stills (files or folders) to the ingest service; print a submission id per file."""
    if not api_key:
        typer.echo("an API key is needed: --api-key or RFR_API_KEY", err=True)
        raise typer.Exit(2)
    ingest = load_settings().ingest
    base = url or f"http://{ingest.http_host}:{ingest.http_port}"
    fields = {"store_id": store_id, "camera_id": camera_id}
    fields |= {"captured_at": captured_at} if captured_at else {}
    fields |= {"case_ref": case_ref} if case_ref else {}
    try:
        files = collect_files(paths)
        with httpx.Client(base_url=base, headers={API_KEY_HEADER: api_key}, timeout=120.0) as client:
            results = submit_files(client, files, fields, progress)
    except (FileNotFoundError, ServiceRefused) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    bad = [r for r in results if r.status not in ("received", "duplicate")]
    typer.echo(f"{len(results) - len(bad)} of {len(results)} file(s) received", err=True)
    if bad:
        raise typer.Exit(1)


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
