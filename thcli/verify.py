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
    max_frames: Annotated[int, typer.Option(help="Frames read for the watermark vote.")] = 250,
) -> None:
    """Was it made by th, is its provenance intact? Exit 0 signed, 3 stripped, 4 tampered,
    5 no evidence, 6 likely synthetic (the most severe over all files); 2 on usage errors."""
    import json

    from detect import verify_evidence
    from provenance.verify import verify_file, worst

    reports = [verify_file(f, trust=trust or [], max_frames=max_frames, detector=verify_evidence) for f in files]
    if json_out:
        data = [r.to_dict() for r in reports]
        typer.echo(json.dumps(data[0] if len(data) == 1 else data, indent=2, default=str))
    else:
        _table(reports)
    raise typer.Exit(reports[0].exit_code if len(reports) == 1 else
                     next(r.exit_code for r in reports if r.verdict == worst([x.verdict for x in reports])))


def _table(reports: list) -> None:
    from rich.console import Console
    from rich.table import Table

    from provenance.verify import VERDICT_TEXT

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
    console = Console()
    console.print(table)
    for r in reports:
        console.print(f"{r.path.name}: {VERDICT_TEXT[r.verdict]}")
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
