"""docs/configuration.md is generated from the settings model: every setting described, the file current."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from typer.testing import CliRunner

from rfr.core.settings import Settings
from rfr.tools import configdoc

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _leaf_env_names(model: type[BaseModel], prefix: str) -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            names += _leaf_env_names(field.annotation, f"{prefix}{name.upper()}__")
        else:
            names.append(prefix + name.upper())
    return names


def test_every_setting_and_group_is_described() -> None:
    assert configdoc.missing_descriptions() == [], "give each field a description= and each group a docstring"


def test_the_configuration_doc_is_current() -> None:
    expected = configdoc.render()
    actual = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    if actual != expected:
        diff = "".join(difflib.unified_diff(actual.splitlines(True), expected.splitlines(True),
                                            "docs/configuration.md", "generated", n=0))
        pytest.fail(f"docs/configuration.md is stale: run `{configdoc.REGENERATE}` (or `make docs`)\n{diff[:4000]}")


def test_the_doc_lists_every_environment_variable_once() -> None:
    text = configdoc.render()
    names = _leaf_env_names(Settings, "RFR_")
    assert len(names) > 50
    for name in names:
        assert text.count(f"| `{name}` |") == 1, name


def test_the_doc_is_the_same_on_every_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "someone"))
    first = configdoc.render()
    monkeypatch.setenv("HOME", str(tmp_path / "someone-else"))
    assert configdoc.render() == first
    assert str(tmp_path) not in first
    assert "| `RFR_MODEL_DIR` | path | `~/.cache/rfr` |" in first


class _Group(BaseModel):
    """A group for the tests."""

    password: SecretStr = Field(default=SecretStr("hunter2"), description="A secret with a default.")
    token: SecretStr | None = Field(default=None, description="A secret without one.")
    mode: Literal["a", "b"] = Field(default="a", description="One of two | with a pipe.")
    ratio: float = Field(default=0.5, ge=0.0, lt=1.0, description="A fraction.")
    names: list[str] = Field(default_factory=lambda: ["x"], min_length=1, description="Names.")
    undocumented: int = 3


class _Settings(BaseSettings):
    """Top level for the tests."""

    model_config = SettingsConfigDict(env_prefix="T_", env_nested_delimiter="__")

    home: Path = Field(default_factory=lambda: Path.home() / "data", description="Under the home directory.")
    verbose: bool = Field(default=False, description="A flag; see <placeholder>.")
    group: _Group = _Group()


def test_a_field_without_a_description_is_reported() -> None:
    assert configdoc.missing_descriptions(_Settings) == ["T_GROUP__UNDOCUMENTED"]


def test_rows_show_type_default_and_allowed_values_and_hide_secrets() -> None:
    text = configdoc.render(_Settings)
    assert "hunter2" not in text
    assert "| `T_GROUP__PASSWORD` | secret string | *hidden* |" in text
    assert "| `T_GROUP__TOKEN` | secret string, optional | *unset* |" in text
    assert "| `T_GROUP__MODE` | string | `a` | `a`, `b` | One of two \\| with a pipe. |" in text
    assert "| `T_GROUP__RATIO` | number | `0.5` | `>= 0.0 and < 1.0` | A fraction. |" in text
    assert '| `T_GROUP__NAMES` | JSON list of strings | `["x"]` | length >= 1 | Names. |' in text
    assert "| `T_HOME` | path | `~/data` |" in text
    assert "| `T_VERBOSE` | boolean | `false` | `true`, `false` | A flag; see &lt;placeholder>. |" in text
    assert "## `group`: `T_GROUP__*`\n\nA group for the tests.\n" in text


def test_the_command_writes_the_file_and_checks_it(tmp_path: Path) -> None:
    out = tmp_path / "configuration.md"
    runner = CliRunner()
    stale = runner.invoke(configdoc.app, ["config", "docs", "--check", "--out", str(out)])
    assert stale.exit_code == configdoc.EXIT_STALE and "missing or stale" in stale.output
    wrote = runner.invoke(configdoc.app, ["config", "docs", "--out", str(out)])
    assert wrote.exit_code == 0 and out.read_text(encoding="utf-8") == configdoc.render()
    current = runner.invoke(configdoc.app, ["config", "docs", "--check", "--out", str(out)])
    assert current.exit_code == 0 and "is current" in current.output
    out.write_text(out.read_text(encoding="utf-8").replace("RFR_MODEL_DIR", "RFR_MODELS_DIR"), encoding="utf-8")
    assert runner.invoke(configdoc.app, ["config", "docs", "--check", "--out", str(out)]).exit_code == 1
