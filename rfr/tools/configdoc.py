"""`rfr config docs`: docs/configuration.md, generated from the settings model (rfr/core/settings.py).

    python -m rfr.tools.configdoc            # (re)write docs/configuration.md (or `make docs`, `rfr config docs`)
    python -m rfr.tools.configdoc --check    # exit 1 when the file is stale or a setting has no description

Every environment variable, grouped by settings group with the group's docstring: its type, default, allowed
values (Literal choices, ge/gt/le/lt bounds, patterns, lengths) and description. The output is the same on every
machine: a default under the home directory is written ``~/...``, a secret's default is never shown.
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import typer
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from rfr.core.settings import Settings
from rfr.core.settings_errors import allowed_values

DOC_PATH = Path("docs/configuration.md")
REGENERATE = "python -m rfr.tools.configdoc"
EXIT_STALE = 1

app = typer.Typer(add_completion=False, help="Configuration: the RFR_* settings.")
config_app = typer.Typer(no_args_is_help=True, help="The RFR_* settings and their documentation.")
app.add_typer(config_app, name="config")

_SCALAR_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path",
                 SecretStr: "secret string"}


@dataclass(frozen=True)
class Row:
    """One environment variable as the document shows it (every cell already Markdown)."""

    env: str
    type: str
    default: str
    allowed: str
    description: str


@dataclass(frozen=True)
class Section:
    """One settings group: its dotted name (``""`` for the top level), env prefix, docstring and variables."""

    name: str
    prefix: str
    doc: str
    rows: tuple[Row, ...]


def _is_group(field: FieldInfo) -> bool:
    return isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)


def _walk(model: type[BaseModel], name: str, prefix: str, delimiter: str) -> Iterator[tuple[str, str, type[BaseModel]]]:
    """``(dotted name, env prefix, model)`` of ``model`` and of every group below it, depth first."""
    yield name, prefix, model
    for field_name, field in model.model_fields.items():
        if _is_group(field):
            group: type[BaseModel] = field.annotation  # type: ignore[assignment]
            dotted = f"{name}.{field_name}" if name else field_name
            yield from _walk(group, dotted, f"{prefix}{field_name.upper()}{delimiter}", delimiter)


def _sections_of(model: type[BaseSettings]) -> Iterator[tuple[str, str, type[BaseModel]]]:
    config = model.model_config
    return _walk(model, "", str(config.get("env_prefix") or ""), str(config.get("env_nested_delimiter") or "__"))


def missing_descriptions(model: type[BaseSettings] = Settings) -> list[str]:
    """Env names of the settings without a description, and ``group <name>`` for a group without a docstring."""
    missing = []
    for name, prefix, group in _sections_of(model):
        if not (group.__doc__ or "").strip():
            missing.append(f"group {name or group.__name__}")
        missing += [prefix + f.upper() for f, info in group.model_fields.items()
                    if not _is_group(info) and not (info.description or "").strip()]
    return missing


def sections(model: type[BaseSettings] = Settings) -> list[Section]:
    """Every settings group of ``model`` (the top level first) with its variables, in declaration order."""
    out = []
    for name, prefix, group in _sections_of(model):
        rows = tuple(_row(prefix + f.upper(), info) for f, info in group.model_fields.items() if not _is_group(info))
        if rows:
            out.append(Section(name, prefix, _oneline(group.__doc__ or ""), rows))
    return out


def _row(env: str, field: FieldInfo) -> Row:
    return Row(f"`{env}`", type_name(field.annotation), default_text(field), allowed_text(field),
               _cell(field.description or ""))


def type_name(annotation: Any) -> str:
    """How the value is written in the environment: ``integer``, ``path, optional``, ``JSON list of strings``..."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        base = type_name(inner[0]) if len(inner) == 1 else " or ".join(map(type_name, inner))
        return f"{base}, optional" if len(inner) < len(get_args(annotation)) else base
    if origin is Annotated:
        return type_name(get_args(annotation)[0])
    if origin is Literal:
        return " or ".join(sorted({_SCALAR_TYPES.get(type(a), type(a).__name__) for a in get_args(annotation)}))
    if origin in (list, tuple, set, frozenset):
        args = [a for a in get_args(annotation) if a is not Ellipsis]
        return f"JSON list of {type_name(args[0])}s" if args else "JSON list"
    if origin is dict:
        return "JSON object"
    return _SCALAR_TYPES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or any(_is_secret(a) for a in get_args(annotation))


def default_text(field: FieldInfo) -> str:
    """The default as the document shows it: a code span of the env value, *unset*, *empty*, or *hidden* for a
    secret; a path under the home directory as ``~/...`` so the document is the same on every machine."""
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "*unset*"
    if _is_secret(field.annotation) or isinstance(value, SecretStr):
        return "*hidden*"
    if isinstance(value, Path):
        text = _home_relative(value)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, list | tuple | set | frozenset | dict):
        text = json.dumps(value if isinstance(value, dict) else list(value))
    else:
        text = str(value)
    return f"`{text}`" if text else "*empty*"


def _home_relative(path: Path) -> str:
    home = Path.home()
    if path == home or home in path.parents:
        return str(Path("~") / path.relative_to(home))
    return str(path)


def allowed_text(field: FieldInfo) -> str:
    """Literal choices or number bounds (:func:`rfr.core.settings_errors.allowed_values`), plus booleans, string
    patterns and length limits."""
    parts = [", ".join(f"`{v}`" for v in allowed_values(field).split(", "))] if allowed_values(field) else []
    if field.annotation is bool:
        parts.append("`true`, `false`")
    for meta in field.metadata:
        if getattr(meta, "pattern", None) is not None:
            parts.append(f"matches `{meta.pattern}`")
        if getattr(meta, "min_length", None) is not None:
            parts.append(f"length >= {meta.min_length}")
        if getattr(meta, "max_length", None) is not None:
            parts.append(f"length <= {meta.max_length}")
    return _cell("; ".join(parts))


def _oneline(text: str) -> str:
    return " ".join(text.split())


def _cell(text: str) -> str:
    """``text`` safe in a Markdown table cell: one line, pipes escaped, ``<`` escaped outside code spans."""
    pieces = _oneline(text).replace("|", "\\|").split("`")
    for i in range(0, len(pieces), 2):
        pieces[i] = pieces[i].replace("<", "&lt;")
    return "`".join(pieces)


def render(model: type[BaseSettings] = Settings) -> str:
    """The whole of docs/configuration.md for ``model``."""
    config = model.model_config
    prefix = str(config.get("env_prefix") or "")
    delimiter = str(config.get("env_nested_delimiter") or "__")
    lines = [
        "# Configuration",
        "",
        f"<!-- Generated from {model.__module__.replace('.', '/')}.py by `{REGENERATE}` (or `make docs`). "
        "Do not edit by hand. -->",
        "",
        f"Every setting is an environment variable: `{prefix}`, then the group and `{delimiter}` for a grouped "
        f"setting, then the field, in any case (`{prefix}GROUP{delimiter}FIELD`). There is no settings file. "
        "Lists are JSON (`'[\"a\", \"b\"]'`), booleans `true` or `false`; *unset* means no value (the "
        "description says what is used instead). Relative paths are relative to the working directory; `~` is "
        f"the home directory of the user running the process. An invalid value, or an unknown `{prefix}"
        f"GROUP{delimiter}...` name, stops any command or service with one line naming the variable, what it "
        "allows and a hint, and exit status 2.",
        "",
        f"This file is generated from the settings model; after changing it, run `{REGENERATE}` (or `make docs`, "
        "or `rfr config docs`). `tests/unit/test_configuration_doc.py` fails when this file is stale.",
    ]
    for section in sections(model):
        title = f"`{section.name}`: `{section.prefix}*`" if section.name else f"Top level: `{section.prefix}*`"
        lines += ["", f"## {title}", ""]
        if section.doc:
            lines += [_cell(section.doc), ""]
        lines += ["| Variable | Type | Default | Allowed | Description |", "|---|---|---|---|---|"]
        lines += [f"| {r.env} | {r.type} | {r.default} | {r.allowed} | {r.description} |" for r in section.rows]
    return "\n".join(lines) + "\n"


def stale(path: Path = DOC_PATH, model: type[BaseSettings] = Settings) -> bool:
    """Whether ``path`` differs from what :func:`render` gives now (or does not exist)."""
    try:
        return path.read_text(encoding="utf-8") != render(model)
    except FileNotFoundError:
        return True


@config_app.command("docs")
def docs(
    check: Annotated[bool, typer.Option("--check", help="Write nothing; exit 1 when the file is stale or a "
                                                        "setting has no description.")] = False,
    out: Annotated[Path, typer.Option(help="The Markdown file (run from the repository root).")] = DOC_PATH,
) -> None:
    """Write docs/configuration.md from the settings model (every RFR_* variable), or check that it is current."""
    missing = missing_descriptions()
    if missing:
        typer.echo("settings without a description (rfr/core/settings.py): " + ", ".join(missing), err=True)
        raise typer.Exit(EXIT_STALE)
    if check:
        if stale(out):
            typer.echo(f"{out} is missing or stale: regenerate it with `{REGENERATE}` (or `make docs`)", err=True)
            raise typer.Exit(EXIT_STALE)
        typer.echo(f"{out} is current")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(), encoding="utf-8")
    typer.echo(f"wrote {out} ({sum(len(s.rows) for s in sections())} settings)")


def main() -> None:
    typer.run(docs)


if __name__ == "__main__":
    main()
