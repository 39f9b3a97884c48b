"""The signing identity: a local CA + an ES256 signer, or the user's own certificate chain.

Files live in ``$TH_HOME/keys`` (default ``$XDG_CONFIG_HOME/th`` or ``~/.config/th``):

* ``root.pem``   the local root certificate: share it so others can verify your files as Trusted
* ``root.key``   its private key (0600; only used to issue the signer)
* ``signer.pem`` the signer certificate chain (leaf first), handed to C2PA
* ``signer.key`` the signer's private key (0600), optionally passphrase-encrypted

No timestamp authority is reachable offline, so a signed file turns Invalid when the signer
certificate expires: certificates are issued for ``SIGNER_YEARS`` years.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from synth.errors import UserError
from synth.media.workdir import th_home

ROOT_YEARS = 30
SIGNER_YEARS = 25
PASSPHRASE_ENV = "TH_KEY_PASSPHRASE"  # read by the write path when signer.key is encrypted


@dataclass(frozen=True)
class Identity:
    """What the C2PA signer needs: the chain (PEM, leaf first) and the decrypted private key (PEM)."""

    chain_pem: bytes
    key_pem: bytes
    root_path: Path | None  # the trust anchor to share (None for an imported chain without root)


@dataclass(frozen=True)
class IdentityInfo:
    """What ``th keys show`` prints."""

    subject: str
    issuer: str
    fingerprint_sha256: str
    not_after: dt.datetime
    key_path: Path
    chain_path: Path
    root_path: Path | None
    encrypted: bool


def keys_dir() -> Path:
    return th_home() / "keys"


def _paths() -> dict[str, Path]:
    d = keys_dir()
    return {name: d / name for name in ("root.pem", "root.key", "signer.pem", "signer.key")}


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the start (no window where it is readable by others)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _encryption(passphrase: str | None):
    from cryptography.hazmat.primitives import serialization

    if passphrase:
        return serialization.BestAvailableEncryption(passphrase.encode())
    return serialization.NoEncryption()


def _key_pem(key, passphrase: str | None) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             _encryption(passphrase))


def create_identity(name: str = "th local signer", passphrase: str | None = None, force: bool = False) -> Path:
    """Create a local root CA (P-256, CA:TRUE pathlen 0) and an ES256 signer it issues.

    Returns the root certificate path. Refuses to replace an existing identity unless ``force``.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    paths = _paths()
    if paths["signer.key"].exists() and not force:
        raise UserError(f"a signing identity already exists in {keys_dir()}; pass --force to replace it")
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} root CA"),
                           x509.NameAttribute(NameOID.ORGANIZATION_NAME, "th (local)")])
    root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name).issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=365 * ROOT_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(root_ski, critical=False)
        .sign(root_key, hashes.SHA256())
    )
    signer_key = ec.generate_private_key(ec.SECP256R1())
    signer_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "th (local)")])
    signer = (
        x509.CertificateBuilder()
        .subject_name(signer_name).issuer_name(root_name)
        .public_key(signer_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=365 * SIGNER_YEARS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(signer_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    _write_private(paths["root.key"], _key_pem(root_key, passphrase))
    _write_private(paths["signer.key"], _key_pem(signer_key, passphrase))
    _write_public(paths["signer.pem"], signer.public_bytes(pem))
    _write_public(paths["root.pem"], root.public_bytes(pem))
    return paths["root.pem"]


def import_identity(chain_path: Path, key_path: Path, passphrase: str | None = None, force: bool = False) -> Path:
    """Adopt the user's own chain (PEM, leaf first) and its private key; the key must match the leaf."""
    from cryptography import x509

    paths = _paths()
    if paths["signer.key"].exists() and not force:
        raise UserError(f"a signing identity already exists in {keys_dir()}; pass --force to replace it")
    try:
        certs = x509.load_pem_x509_certificates(Path(chain_path).read_bytes())
    except (OSError, ValueError) as e:
        raise UserError(f"{chain_path}: not a PEM certificate chain ({e})") from e
    key = _load_key_file(Path(key_path), passphrase, check_mode=False)
    if certs[0].public_key().public_numbers() != key.public_key().public_numbers():
        raise UserError(f"{key_path} does not match the first certificate of {chain_path}")
    _check_links(certs, chain_path)
    from cryptography.hazmat.primitives import serialization

    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs if c.issuer != c.subject)
    roots = [c for c in certs if c.issuer == c.subject]
    from provenance.manifest import probe_signer

    plain = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    try:  # C2PA has its own rules for signing certificates: find out now, not at the first output
        probe_signer(Identity(chain or certs[0].public_bytes(serialization.Encoding.PEM), plain, None))
    except UserError as e:
        detail = " ".join(str(e.__cause__.__cause__ or e).split()) if e.__cause__ else str(e)
        raise UserError(f"{chain_path}: C2PA refuses to sign with this certificate chain ({detail}); it needs a "
                        "leaf issued by a CA (not self-signed) with digitalSignature key usage, an extended key "
                        "usage such as emailProtection, and subject/authority key identifiers") from e
    for p in (paths["root.pem"], paths["root.key"]):
        p.unlink(missing_ok=True)
    _write_private(paths["signer.key"], _key_pem(key, passphrase))
    _write_public(paths["signer.pem"], chain or certs[0].public_bytes(serialization.Encoding.PEM))
    if roots:
        _write_public(paths["root.pem"], roots[-1].public_bytes(serialization.Encoding.PEM))
        return paths["root.pem"]
    return paths["signer.pem"]


def _check_links(certs: list, chain_path: Path) -> None:
    """Each certificate is issued (and signed) by the next one, and none has expired."""
    now = dt.datetime.now(dt.timezone.utc)
    for i, cert in enumerate(certs):
        if cert.not_valid_after_utc < now:
            raise UserError(f"{chain_path}: certificate {i + 1} ({cert.subject.rfc4514_string()}) expired on "
                            f"{cert.not_valid_after_utc:%Y-%m-%d}")
        if i + 1 < len(certs):
            try:
                cert.verify_directly_issued_by(certs[i + 1])
            except (ValueError, TypeError) as e:
                raise UserError(f"{chain_path}: certificate {i + 1} is not issued by certificate {i + 2} "
                                "(a chain is leaf first, each certificate followed by its issuer)") from e
            except Exception as e:  # cryptography's InvalidSignature
                raise UserError(f"{chain_path}: certificate {i + 1}'s signature does not verify with "
                                f"certificate {i + 2}'s key") from e


def _check_mode(path: Path) -> None:
    if not path.exists():
        raise UserError(f"signing key {path} is missing; run `th keys init` (or `th keys import`)")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise UserError(f"signing key {path} has mode {mode:04o}, readable by others; run `chmod 600 {path}` "
                        "(`th keys show` describes the identity)")


def _load_key_file(path: Path, passphrase: str | None, check_mode: bool = True):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if check_mode:
        _check_mode(path)
    elif not path.exists():
        raise UserError(f"{path}: no such key file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"signing key {path} cannot be read ({e.strerror}); fix it, or make a new identity "
                        "with `th keys init --force`") from e
    try:
        key = serialization.load_pem_private_key(data, password=passphrase.encode() if passphrase else None)
    except TypeError as e:
        if passphrase:
            raise UserError(f"{path}: the key is not encrypted but a passphrase was given") from e
        raise UserError(f"{path} is passphrase-protected: set ${PASSPHRASE_ENV} (or `th keys ... "
                        "--passphrase-env VAR`)") from e
    except ValueError as e:
        raise UserError(f"{path}: cannot read the private key (wrong passphrase, or not a PEM key); "
                        f"check ${PASSPHRASE_ENV}, or make a new identity with `th keys init --force`") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise UserError(f"{path}: th signs with ES256 and needs a P-256 EC key (see `th keys import`)")
    return key


def _load_chain(path: Path, key) -> bytes:
    """The signer chain (PEM, leaf first), checked: parses, matches ``key``, not expired."""
    from cryptography import x509

    try:
        data = path.read_bytes()
        certs = x509.load_pem_x509_certificates(data)
    except (OSError, ValueError) as e:
        raise UserError(f"signer certificate chain {path} is damaged ({e}); run `th keys init --force` "
                        "or `th keys import`") from e
    leaf = certs[0]
    if leaf.public_key().public_numbers() != key.public_key().public_numbers():
        raise UserError(f"signer certificate {path} does not belong to the signing key; run `th keys init "
                        "--force` or `th keys import` the matching pair")
    if leaf.not_valid_after_utc < dt.datetime.now(dt.timezone.utc):
        raise UserError(f"signer certificate {path} expired on {leaf.not_valid_after_utc:%Y-%m-%d}; run "
                        "`th keys init --force` or `th keys import` a valid one")
    return data


def has_identity() -> bool:
    return _paths()["signer.key"].exists() or _paths()["signer.pem"].exists()


def load_identity(passphrase: str | None = None) -> Identity:
    """Load the identity for signing (key decrypted with ``passphrase`` or $TH_KEY_PASSPHRASE)."""
    from cryptography.hazmat.primitives import serialization

    paths = _paths()
    if passphrase is None:
        passphrase = os.environ.get(PASSPHRASE_ENV) or None
    key = _load_key_file(paths["signer.key"], passphrase)
    if not paths["signer.pem"].exists():
        raise UserError(f"signer certificate {paths['signer.pem']} is missing; run `th keys init --force`")
    chain = _load_chain(paths["signer.pem"], key)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    root = paths["root.pem"] if paths["root.pem"].exists() else None
    return Identity(chain_pem=chain, key_pem=key_pem, root_path=root)


def ensure_identity() -> Identity:
    """The identity the write path signs with: created (unencrypted) on first use — by one process only
    when several start at once (they wait on a lock in the keys folder, then all load the same one)."""
    import fcntl

    if has_identity():
        return load_identity()
    d = keys_dir()
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(d / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise UserError(f"cannot create a signing identity in {d} ({e.strerror}); set $TH_HOME to a writable "
                        "folder or run `th keys import`") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not has_identity():
            create_identity()
    finally:
        os.close(fd)
    return load_identity()


def local_root() -> Path | None:
    """This machine's trust anchor, trusted by default by ``th verify``."""
    p = _paths()["root.pem"]
    return p if p.exists() else None


def show() -> IdentityInfo:
    """Describe the current signer: subject, issuer, fingerprint, expiry and the root to share."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    paths = _paths()
    if not paths["signer.pem"].exists():
        raise UserError(f"no signing identity in {keys_dir()}; run `th keys init`")
    _check_mode(paths["signer.key"])
    try:
        leaf = x509.load_pem_x509_certificates(paths["signer.pem"].read_bytes())[0]
        encrypted = b"ENCRYPTED" in paths["signer.key"].read_bytes()
    except (OSError, ValueError) as e:
        raise UserError(f"the signing identity in {keys_dir()} is damaged ({e}); run `th keys init --force` "
                        "or `th keys import`") from e
    return IdentityInfo(
        subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
        fingerprint_sha256=leaf.fingerprint(hashes.SHA256()).hex(":"),
        not_after=leaf.not_valid_after_utc,
        key_path=paths["signer.key"],
        chain_path=paths["signer.pem"],
        root_path=paths["root.pem"] if paths["root.pem"].exists() else None,
        encrypted=encrypted,
    )
