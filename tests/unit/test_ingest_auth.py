"""API keys: hashed entries, one retailer per key, reloading the keys file, key creation."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rfr.tools.submit import app
from services.ingest.auth import ApiKeyConfigError, ApiKeyRegistry, add_key, hash_key, new_key, parse_entries


def test_entries_map_hashes_to_retailers() -> None:
    a, b = new_key(), new_key()
    assert a != b and a.startswith("rfr_") and len(a) > 40
    text = f"shop-1:{hash_key(a)}, # a comment\nshop-2:{hash_key(b).upper()}\n\n"
    assert parse_entries(text, "t") == {hash_key(a): "shop-1", hash_key(b): "shop-2"}


@pytest.mark.parametrize("text", ["shop-1", "shop 1:" + "0" * 64, "shop:" + "0" * 63, ":" + "0" * 64])
def test_malformed_entries_are_refused(text: str) -> None:
    with pytest.raises(ApiKeyConfigError):
        parse_entries(text, "t")


def test_one_key_cannot_belong_to_two_retailers(tmp_path: Path) -> None:
    digest = hash_key("k")
    with pytest.raises(ApiKeyConfigError):
        parse_entries(f"a:{digest},b:{digest}", "t")
    keys = tmp_path / "keys"
    keys.write_text(f"b:{digest}\n")
    with pytest.raises(ApiKeyConfigError):
        ApiKeyRegistry(f"a:{digest}", keys)


def test_registry_resolves_and_reloads_the_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    inline = new_key()
    reg = ApiKeyRegistry(f"env-shop:{hash_key(inline)}", keys)
    assert reg.retailer_for(inline) == "env-shop"
    assert reg.retailer_for(None) is None and reg.retailer_for("") is None and reg.retailer_for("nope") is None
    secret = add_key(keys, "file-shop")
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert secret not in keys.read_text() and hash_key(secret) in keys.read_text()
    assert reg.retailer_for(secret) == "file-shop"  # picked up without a restart
    assert reg.retailer_for(inline) == "env-shop"


def test_cli_creates_a_key_and_prints_it_once(tmp_path: Path) -> None:
    keys = tmp_path / "k" / "keys.txt"
    result = CliRunner().invoke(app, ["api-keys", "create", "shop-9", "--file", str(keys)])
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip().splitlines()[-1]
    assert ApiKeyRegistry("", keys).retailer_for(secret) == "shop-9"
    bad = CliRunner().invoke(app, ["api-keys", "create", "bad id!", "--file", str(keys)])
    assert bad.exit_code == 2
