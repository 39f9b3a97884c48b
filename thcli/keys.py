"""`th keys init | show | import`: the signing identity every th output is C2PA-signed with."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="Create, import or show the signing identity (local CA + ES256 signer).")

PassEnv = Annotated[str | None, typer.Option("--passphrase-env", metavar="VAR",
                                             help="Encrypt/decrypt the private key with the passphrase in $VAR.")]
Prompt = Annotated[bool, typer.Option("--passphrase", help="Prompt for a passphrase to encrypt the private key.")]


def _passphrase(env: str | None, prompt: bool, confirm: bool) -> str | None:
    from synth.errors import UserError

    if env:
        value = os.environ.get(env)
        if not value:
            raise UserError(f"--passphrase-env {env}: ${env} is not set or empty")
        return value
    if prompt:
        return typer.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm)
    return None


@app.command("init")
def init(
    name: Annotated[str, typer.Option(help="Common name of the signer certificate.")] = "th local signer",
    passphrase_env: PassEnv = None,
    passphrase: Prompt = False,
    force: Annotated[bool, typer.Option("--force", "-f", help="Replace an existing identity.")] = False,
) -> None:
    """Create a local root CA and a signer in $TH_HOME/keys (private keys 0600)."""
    from provenance import keys

    root = keys.create_identity(name=name, passphrase=_passphrase(passphrase_env, passphrase, True), force=force)
    typer.echo(f"created signing identity in {keys.keys_dir()}")
    typer.echo(f"share {root} so others can verify your files as Trusted (th verify --trust {root.name})")
    _print_show()


@app.command("import")
def import_(
    chain: Annotated[Path, typer.Argument(help="Certificate chain, PEM, leaf first (ES256 / P-256).")],
    key: Annotated[Path, typer.Argument(help="The leaf's private key, PEM.")],
    passphrase_env: PassEnv = None,
    passphrase: Prompt = False,
    force: Annotated[bool, typer.Option("--force", "-f", help="Replace an existing identity.")] = False,
) -> None:
    """Sign with your own certificate chain instead of the local CA."""
    from provenance import keys

    secret = _passphrase(passphrase_env, passphrase, False)
    keys.import_identity(chain, key, passphrase=secret, force=force)
    typer.echo(f"imported {chain} into {keys.keys_dir()}")
    _print_show()


@app.command("show")
def show() -> None:
    """Print the signer's subject, fingerprint, expiry and where the root to share lives."""
    _print_show()


def _print_show() -> None:
    from provenance import keys

    info = keys.show()
    typer.echo(f"subject:     {info.subject}")
    typer.echo(f"issuer:      {info.issuer}")
    typer.echo(f"sha256:      {info.fingerprint_sha256}")
    typer.echo(f"expires:     {info.not_after:%Y-%m-%d} (no timestamp authority: files signed with this "
               "certificate turn Invalid after this date)")
    typer.echo(f"private key: {info.key_path} ({'passphrase-protected' if info.encrypted else 'unencrypted'}, 0600)")
    typer.echo(f"chain:       {info.chain_path}")
    typer.echo(f"root:        {info.root_path if info.root_path else '(none: imported chain without its root)'}")
