"""The `th` command line: a thin Typer layer over the synth, provenance and detect libraries.

Heavy libraries (torch, cv2, dlib, c2pa, timm) are imported inside command bodies so that
`th --help` stays instant. Every command module exposes plain functions registered here.
"""

from __future__ import annotations

import os
import sys

import typer

# On a shared CPU, OpenMP threads that spin-wait slow torch 10-30× (measured: docs/MODEL.md).
# Set before torch is imported by any command; an explicit user setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from thcli import animate, audio, detect, enroll, eval, faces, keys, meta_train, prepare, verify

app = typer.Typer(
    name="th",
    help="Few-shot neural talking heads (Zakharov et al. 2019) with provenance built in.\n\n"
    "Every generated frame is invisibly watermarked and every output file is C2PA-signed.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)

# --- command registration (one line per command or command group) ---
app.command("faces")(faces.faces)
app.command("prepare")(prepare.prepare)
app.command("meta-train")(meta_train.meta_train)
app.add_typer(keys.app, name="keys")
app.command("verify")(verify.verify)
app.command("enroll")(enroll.enroll)
app.command("animate")(animate.animate)
app.add_typer(detect.app, name="detect")
app.command("eval")(eval.eval_cmd)
app.add_typer(audio.app, name="audio")


def main() -> None:
    """Console entry point: user errors become one line on stderr and a non-zero exit.

    Usage errors (unknown command, missing argument) are Typer's own: usage text and exit 2.
    """
    from synth.errors import UserError

    try:
        app()
    except UserError as e:
        print(f"th: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("th: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
