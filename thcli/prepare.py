"""`th prepare VIDEOS OUT`: build meta-learning shards from a folder of talking-head clips."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def prepare(
    videos: Annotated[Path, typer.Argument(help="Folder of clips: VoxCeleb2 layout id/video/clip.mp4, or flat with a MANIFEST.tsv.")],
    out: Annotated[Path, typer.Argument(help="Output folder (shards/, index.json, report.json). Rerun to resume.")],
    frames: Annotated[int, typer.Option("--frames", "-n", help="Frames sampled per clip, spread over its length.")] = 32,
    size: Annotated[int, typer.Option(help="Side of the aligned square crops in pixels.")] = 256,
    workers: Annotated[int, typer.Option("--workers", "-j", help="Parallel worker processes.")] = 2,
    manifest: Annotated[Path | None, typer.Option(help="TSV with file/identity/license columns (default: MANIFEST.tsv in VIDEOS or its parent).")] = None,
    min_frames: Annotated[int, typer.Option(help="Skip clips with fewer usable frames than this (K+1 of meta-training).")] = 9,
    exclude_identity: Annotated[list[str] | None, typer.Option("--exclude-identity", help="Identity to leave out (repeatable, or @FILE with one per line).")] = None,
    license: Annotated[list[str] | None, typer.Option("--license", help="Keep only clips whose licence contains this (repeatable; non-commercial ones are dropped).")] = None,
    detector: Annotated[str, typer.Option(help="Face detector: hog (default), mmod (slow, robust) or fan (needs cached weights).")] = "hog",
) -> None:
    """Decode clips, detect faces and 68 landmarks, crop+align, and write training shards with an index."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from synth.errors import UserError
    from synth.train.prepare import PrepareConfig, discover, find_manifest
    from synth.train.prepare import prepare as run_prepare

    console = Console(stderr=True)
    if frames < 2 or size < 32 or workers < 1:
        raise UserError("--frames must be ≥ 2, --size ≥ 32 and --workers ≥ 1")
    excluded: set[str] = set()
    for item in exclude_identity or []:
        if item.startswith("@"):
            path = Path(item[1:])
            if not path.exists():
                raise UserError(f"{path}: no such file")
            excluded |= {ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")}
        else:
            excluded.add(item)
    manifest = manifest if manifest is not None else find_manifest(videos)
    if manifest is not None and not manifest.exists():
        raise UserError(f"{manifest}: no such file")
    cfg = PrepareConfig(size=size, frames_per_clip=frames, min_frames=min_frames, workers=workers,
                        detector=detector, exclude_identities=frozenset(excluded), licenses=frozenset(license or []))
    total = len(discover(videos, manifest))
    if manifest is not None:
        console.print(f"identities from {manifest}")
    with Progress(TextColumn("[bold]prepare"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console,
                  disable=not console.is_terminal) as progress:  # no bar in logs
        task = progress.add_task("", total=total)

        def tick(r: dict) -> None:
            progress.update(task, advance=1, description=r.get("key") or r.get("clip", ""))

        report = run_prepare(videos, out, cfg, manifest, on_progress=tick)
        progress.update(task, completed=total)
    console.print(f"{len(report.done)} clips prepared, {len(report.resumed)} already done, "
                  f"{len(report.skipped)} skipped, {total - len(report.done) - len(report.resumed) - len(report.skipped)} filtered out → {out}/index.json")
    if report.skipped:
        table = Table("skipped clip", "reason", title="Skipped clips")
        for s in report.skipped:
            table.add_row(s["clip"], s["reason"])
        console.print(table)
