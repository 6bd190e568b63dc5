"""Settings errors in words a person acts on: each invalid ``RFR_*`` variable on one line, with what it allows (a
Literal's choices, a number's bounds) and the field's description as the hint; a misspelt name gets a suggestion.
:func:`rfr.core.settings.load_settings` raises :class:`SettingsError` with this text; ``rfr.tools.configdoc``
renders the same allowed values into docs/configuration.md.
"""

from __future__ import annotations

import difflib
from typing import Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo


class SettingsError(ValueError):
    """The environment holds an invalid setting; the message names each variable, what it allows and a hint."""


def describe_errors(exc: ValidationError, model: type[BaseModel]) -> str:
    """One line per invalid variable of ``model`` (the settings root):
    ``RFR_MATCH__THRESHOLD=60: Input should be less than or equal to 1 (allowed: >= -1.0 and <= 1.0). <description>``.
    """
    lines = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        name = "RFR_" + "__".join(loc).upper()
        field = _field(model, loc)
        if err["type"] == "extra_forbidden":
            lines.append(f"{name}: no such setting{_did_you_mean(model, loc)}")
            continue
        if not loc:  # a rule across settings: its message names the variables
            lines.append(str(err["msg"]).removeprefix("Value error, "))
            continue
        value = f"={err['input']!s:.60}" if isinstance(err.get("input"), str | int | float) else ""
        allowed = f" (allowed: {allowed_values(field)})" if field is not None and allowed_values(field) else ""
        hint = f" {field.description}" if field is not None and field.description else ""
        lines.append(f"{name}{value}: {err['msg']}{allowed}.{hint}")
    return "\n".join(lines)


def _field(root: type[BaseModel], loc: list[str]) -> FieldInfo | None:
    model = root
    info: FieldInfo | None = None
    for part in loc:
        info = model.model_fields.get(part)
        if info is None:
            return None
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            model = info.annotation
    return info


def allowed_values(field: FieldInfo) -> str:
    """The choices of a Literal, or the bounds of a number (``>= -1.0 and <= 1.0``); empty when unconstrained."""
    if get_origin(field.annotation) is Literal:
        return ", ".join(map(str, get_args(field.annotation)))
    bounds = []
    for meta in field.metadata:
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if getattr(meta, attr, None) is not None:
                bounds.append(f"{sign} {getattr(meta, attr)}")
    return " and ".join(bounds)


# Settings renamed in a release: the old variable gets the new name as its hint ("group.old" -> new field).
RENAMED = {"detect.gate_min_blur": "gate_min_sharpness", "match.galleries": "watch_lists"}


def _did_you_mean(root: type[BaseModel], loc: list[str]) -> str:
    renamed = RENAMED.get(".".join(loc))
    if renamed is not None:
        return f"; it was renamed RFR_{'__'.join([*loc[:-1], renamed]).upper()}"
    parent = _field(root, loc[:-1]) if len(loc) > 1 else None
    names = list(parent.annotation.model_fields) if parent is not None and isinstance(parent.annotation, type) \
        and issubclass(parent.annotation, BaseModel) else list(root.model_fields)
    close = difflib.get_close_matches(loc[-1], names, n=1)
    return f"; did you mean RFR_{'__'.join([*loc[:-1], close[0]]).upper()}?" if close else ""
