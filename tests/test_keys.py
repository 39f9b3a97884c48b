"""th keys: local identity creation, 0600 keys, passphrases, import, clear errors."""

from __future__ import annotations

import os
import stat

import pytest

from provenance import keys
from synth.errors import UserError


@pytest.fixture()
def th_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(keys.PASSPHRASE_ENV, raising=False)
    return tmp_path / "home"


def test_init_creates_private_keys_0600(th_home):
    root = keys.create_identity()
    assert root == th_home / "keys" / "root.pem"
    for name in ("signer.key", "root.key"):
        assert stat.S_IMODE((th_home / "keys" / name).stat().st_mode) == 0o600
    info = keys.show()
    assert "th local signer" in info.subject and info.root_path == root
    assert info.not_after.year - info.not_after.today().year >= 20  # long validity: no timestamp authority
    ident = keys.load_identity()
    assert b"BEGIN CERTIFICATE" in ident.chain_pem and b"PRIVATE KEY" in ident.key_pem


def test_init_refuses_to_replace_without_force(th_home):
    keys.create_identity()
    with pytest.raises(UserError, match="--force"):
        keys.create_identity()
    keys.create_identity(force=True)


def test_missing_key_is_a_clear_error(th_home):
    keys.create_identity()
    (th_home / "keys" / "signer.key").unlink()
    with pytest.raises(UserError, match="missing"):
        keys.load_identity()


def test_world_readable_key_is_refused(th_home):
    keys.create_identity()
    os.chmod(th_home / "keys" / "signer.key", 0o644)
    with pytest.raises(UserError, match="0644"):
        keys.load_identity()


def test_passphrase_protected_key(th_home, monkeypatch):
    keys.create_identity(passphrase="correct horse")
    assert b"ENCRYPTED" in (th_home / "keys" / "signer.key").read_bytes()
    with pytest.raises(UserError, match="passphrase"):
        keys.load_identity()
    monkeypatch.setenv(keys.PASSPHRASE_ENV, "wrong")
    with pytest.raises(UserError, match="wrong passphrase"):
        keys.load_identity()
    monkeypatch.setenv(keys.PASSPHRASE_ENV, "correct horse")
    assert keys.load_identity().key_pem


def test_import_own_chain(th_home, tmp_path, monkeypatch):
    monkeypatch.setenv("TH_HOME", str(tmp_path / "elsewhere"))
    keys.create_identity(name="my own signer")
    src = tmp_path / "elsewhere" / "keys"
    chain = tmp_path / "chain.pem"
    chain.write_bytes((src / "signer.pem").read_bytes() + (src / "root.pem").read_bytes())
    monkeypatch.setenv("TH_HOME", str(th_home))
    keys.import_identity(chain, src / "signer.key")
    assert "my own signer" in keys.show().subject
    assert stat.S_IMODE((th_home / "keys" / "signer.key").stat().st_mode) == 0o600
    assert keys.local_root() is not None
    with pytest.raises(UserError, match="does not match"):
        keys.import_identity(src / "root.pem", src / "signer.key", force=True)


def test_cli_keys_show_without_identity_exits_2(th_home, capsys, monkeypatch):
    from thcli.app import main

    monkeypatch.setattr("sys.argv", ["th", "keys", "show"])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "th keys init" in err[0]
