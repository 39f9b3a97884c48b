"""`th verify FILE...`: C2PA state, watermark, detector and one verdict per file; exit code by verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def verify(
    files: Annotated[list[Path], typer.Argument(help="Videos (mp4, ...) or images (png, jpg).")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the stable JSON report (docs/PROVENANCE.md).")] = False,
    trust: Annotated[list[Path] | None, typer.Option("--trust", metavar="ROOT.pem",
                                                     help="Also trust this root certificate (repeatable).")] = None,
    require_trusted: Annotated[bool, typer.Option(
        "--require-trusted", help="Trust only the roots given with --trust (not this machine's own local root): "
                                  "exit 0 only for files signed by a signer you named.")] = False,
    max_frames: Annotated[int, typer.Option(help="Frames read for the watermark vote.")] = 250,
) -> None:
    """Was it made by th, is its provenance intact? Exit 0 signed (trusted signer), 7 signed by an
    untrusted signer, 8 signed but no watermark in the pixels, 3 stripped, 4 tampered, 5 no evidence,
    6 likely synthetic, 2 unreadable or usage error (several files: the most severe)."""
    import json
    import sys

    from detect import verify_evidence
    from provenance.verify import EXIT_CODES, trust_anchors, verify_file, worst
    from synth.errors import UserError

    if require_trusted and not trust:
        raise UserError("--require-trusted needs the roots you trust: pass --trust ROOT.pem (repeatable)")
    anchors = trust_anchors(trust or [], local=not require_trusted)  # a bad --trust file stops the run here
    reports, errors = [], {}
    for f in files:
        try:
            reports.append(verify_file(f, max_frames=max_frames, detector=verify_evidence, anchors=anchors))
        except UserError as e:  # one unreadable file is reported; the others are still verified
            errors[f] = str(e)
            print(f"th: error: {e}", file=sys.stderr)
    if not reports:  # nothing could be read: the error lines above are the whole answer
        raise typer.Exit(EXIT_CODES["unreadable"])
    if json_out:
        data = [r.to_dict() for r in reports] + [
            {"file": str(f), "verdict": "unreadable", "verdict_text": msg, "exit_code": EXIT_CODES["unreadable"]}
            for f, msg in errors.items()]
        typer.echo(json.dumps(data[0] if len(data) == 1 else data, indent=2, default=str))
    else:
        _table(reports, errors)
    verdicts = [r.verdict for r in reports] + ["unreadable"] * len(errors)
    raise typer.Exit(EXIT_CODES[worst(verdicts)])


def _table(reports: list, errors: dict[Path, str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="th verify")
    for col in ("file", "C2PA", "watermark", "matches", "detector", "verdict"):
        table.add_column(col)
    for r in reports:
        d = r.to_dict()
        w = d["watermark"]
        mark = f"{w['payload']} (z={w['sync_z']})" if w["found"] else f"not found (z={w['sync_z']})"
        matches = {True: "yes", False: "NO", None: "-"}[w["matches_manifest"]]
        det = "-" if d["detector"] is None else str(d["detector"].get("score"))
        table.add_row(r.path.name, d["c2pa"]["state"], mark, matches, det, f"[bold]{r.verdict}[/bold]")
    for f in errors:
        table.add_row(f.name, "-", "-", "-", "-", "[bold]unreadable[/bold]")
    console = Console()
    console.print(table)
    for r in reports:
        console.print(f"{r.path.name}: {r.verdict_text}")
        claims = r.c2pa.claims or {}
        facts = claims.get("th") or {}
        if claims:
            source = str(claims.get("digital_source_type") or "-").rsplit("/", 1)[-1]
            signer = (claims.get("signature") or {}).get("common_name") or "-"
            console.print(f"  source type: {source}; signed by: {signer}")
        if facts:
            def short(v: object) -> str:
                return "-" if v is None else (str(v)[:16] + "…" if len(str(v)) > 20 else str(v))

            console.print(f"  th {facts.get('th_version')}, model {facts.get('model_card_id')} "
                          f"({short(facts.get('model_sha256'))}), avatar {short(facts.get('avatar_id'))}, "
                          f"driver {short(facts.get('driver_sha256'))}")
            console.print(f"  consent: {facts.get('consent_statement') or '-'}")
        for e in r.c2pa.errors[:5]:
            console.print(f"  c2pa: {e}")
    for f, msg in errors.items():
        console.print(f"{f.name}: unreadable ({msg})")
