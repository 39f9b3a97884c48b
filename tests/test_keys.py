"""th keys: local identity creation, 0600 keys, passphrases, import, clear errors."""

from __future__ import annotations

import os
import stat

import pytest

from provenance import keys
from provenance.manifest import GenerationFacts
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


# --- the CLI: success paths and bad chains --------------------------------------------------------------

def _cert(subject_key, issuer_key, subject: str, issuer: str, days: float = 365, ca: bool = False):
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)
    start = now - dt.timedelta(days=2) if days > 0 else now - dt.timedelta(days=30)
    name = lambda cn: x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])  # noqa: E731
    usage = dict(digital_signature=not ca, content_commitment=False, key_encipherment=False, data_encipherment=False,
                 key_agreement=False, key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False)
    b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
         .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(start).not_valid_after(now + dt.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
         .add_extension(x509.KeyUsage(**usage), critical=True))
    # what C2PA asks of a signing certificate (as `th keys init` makes it): key identifiers, and an EKU
    b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()), critical=False)
    if subject != issuer:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    if not ca:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem(*objs) -> bytes:
    from cryptography.hazmat.primitives import serialization

    out = b""
    for o in objs:
        if hasattr(o, "public_bytes") and hasattr(o, "subject"):
            out += o.public_bytes(serialization.Encoding.PEM)
        else:
            out += o.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())
    return out


def test_cli_init_show_and_a_signed_output(th_home, th):
    from provenance.verify import verify_file
    from provenance.write import write_image

    r = th("keys", "init", "--name", "Ada Example")
    assert r.returncode == 0, r.stderr
    assert f"created signing identity in {th_home / 'keys'}" in r.stdout and "CN=Ada Example" in r.stdout
    assert f"root:        {th_home / 'keys' / 'root.pem'}" in r.stdout
    show = th("keys", "show")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    leaf = x509.load_pem_x509_certificates((th_home / "keys" / "signer.pem").read_bytes())[0]
    assert show.returncode == 0 and leaf.fingerprint(hashes.SHA256()).hex(":") in show.stdout
    assert "unencrypted, 0600" in show.stdout
    again = th("keys", "init")
    assert again.returncode == 2 and "--force" in again.stderr and again.stderr.count("\n") == 1
    import numpy as np

    write_image(np.full((64, 64, 3), 120, np.uint8), th_home.parent / "o.png", GenerationFacts.current())
    assert verify_file(th_home.parent / "o.png").c2pa.claims["signature"]["common_name"] == "Ada Example"


def test_cli_init_with_a_passphrase(th_home, th, monkeypatch):
    r = th("keys", "init", "--passphrase-env", "MY_PASS", env={"MY_PASS": "s3cret words"})
    assert r.returncode == 0 and "passphrase-protected" in r.stdout, r.stderr
    monkeypatch.setenv(keys.PASSPHRASE_ENV, "s3cret words")
    assert keys.load_identity().key_pem
    r = th("keys", "init", "--force", "--passphrase-env", "UNSET_VAR_XYZ")
    assert r.returncode == 2 and "UNSET_VAR_XYZ" in r.stderr


def test_cli_import_own_chain_then_sign_with_it(th_home, tmp_path, th):
    from cryptography.hazmat.primitives.asymmetric import ec

    from provenance.verify import verify_file
    from provenance.write import write_image

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert(ca_key, ca_key, "My Org CA", "My Org CA", ca=True)
    leaf = _cert(leaf_key, ca_key, "My Org signer", "My Org CA")
    (tmp_path / "chain.pem").write_bytes(_pem(leaf, ca))
    (tmp_path / "leaf.key").write_bytes(_pem(leaf_key))
    r = th("keys", "import", tmp_path / "chain.pem", tmp_path / "leaf.key")
    assert r.returncode == 0, r.stderr
    assert "imported" in r.stdout and "CN=My Org signer" in r.stdout and "CN=My Org CA" in r.stdout
    import numpy as np

    dest = tmp_path / "o.png"
    write_image(np.full((64, 64, 3), 90, np.uint8), dest, GenerationFacts.current())
    (tmp_path / "ca.pem").write_bytes(_pem(ca))
    rep = verify_file(dest, trust=[tmp_path / "ca.pem"])
    assert rep.c2pa.state == "Trusted" and rep.verdict == "signed"


@pytest.mark.parametrize("case, words", [
    ("not pem", "not a PEM certificate chain"),
    ("key of another leaf", "does not match the first certificate"),
    ("root first", "does not match the first certificate"),
    ("issuer missing from the middle", "is not issued by certificate 2"),
    ("expired leaf", "expired on"),
    ("self-signed leaf", "C2PA refuses to sign"),
])
def test_cli_import_refuses_bad_chains(th_home, tmp_path, th, case, words):
    from cryptography.hazmat.primitives.asymmetric import ec

    keys.create_identity(name="kept")
    before = (th_home / "keys" / "signer.pem").read_bytes()
    new = lambda: ec.generate_private_key(ec.SECP256R1())  # noqa: E731
    ca_key, mid_key, leaf_key, other_key = new(), new(), new(), new()
    ca = _cert(ca_key, ca_key, "CA", "CA", ca=True)
    leaf = _cert(leaf_key, ca_key, "signer", "CA")
    key = leaf_key
    chain = {
        "not pem": b"this is not a certificate\n",
        "key of another leaf": _pem(_cert(other_key, ca_key, "someone else", "CA"), ca),
        "root first": _pem(ca, leaf),
        "issuer missing from the middle": _pem(_cert(leaf_key, mid_key, "signer", "Intermediate"), ca),
        "expired leaf": _pem(_cert(leaf_key, ca_key, "signer", "CA", days=-1), ca),
        "self-signed leaf": _pem(_cert(leaf_key, leaf_key, "signer", "signer")),
    }[case]
    (tmp_path / "chain.pem").write_bytes(chain)
    (tmp_path / "leaf.key").write_bytes(_pem(key))
    r = th("keys", "import", tmp_path / "chain.pem", tmp_path / "leaf.key", "--force")
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("th: error:") and words in lines[0], r.stderr
    assert (th_home / "keys" / "signer.pem").read_bytes() == before  # the old identity is untouched
