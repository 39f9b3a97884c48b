"""`th eval CLIPS -o REPORT/`: the benchmark protocol (self-reenactment, baselines, cross-identity)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from thcli.enroll import DEFAULT_STEPS


def _identities(spec: str | None) -> set[str] | None:
    """``a,b,c`` or ``@FILE`` (one identity a line, ``#`` comments) → a set, or None for all."""
    from synth.errors import UserError

    if spec is None:
        return None
    if spec.startswith("@"):
        path = Path(spec[1:])
        if not path.exists():
            raise UserError(f"{path}: no such identities file")
        lines = [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
        return {ln for ln in lines if ln}
    return {s.strip() for s in spec.split(",") if s.strip()}


def eval_cmd(
    clips: Annotated[Path, typer.Argument(help="A folder of videos (identities from its MANIFEST.tsv or the id/video/clip layout) or a manifest TSV.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Report folder (report.json, report.md, plot, strips).")],
    shots: Annotated[str, typer.Option(help="Comma-separated K values (source frames per clip).")] = "1,8",
    steps: Annotated[int, typer.Option(help="Fine-tuning steps for th-FT (th-FF is the 0-step case).")] = DEFAULT_STEPS,
    frames: Annotated[int, typer.Option(help="Driven frames per clip (consecutive pairs spread over the clip).")] = 32,
    model: Annotated[Path | None, typer.Option(help="Model under test (default: the bundled model).")] = None,
    compare: Annotated[list[str] | None, typer.Option(
        metavar="LABEL=MODEL", help="Also fine-tune and score another model on the same frames, as row "
        "'LABEL th-FT' (repeatable), e.g. 2019=runs/old.safetensors.")] = None,
    identities: Annotated[str | None, typer.Option(help="Only these identities: a,b,c or @FILE (e.g. @models/dev_identities.txt).")] = None,
    per_identity: Annotated[int | None, typer.Option(help="At most this many clips per identity.")] = None,
    cross: Annotated[bool, typer.Option("--cross", help="Also drive each avatar with another identity (relative vs absolute).")] = False,
    id_loss: Annotated[float, typer.Option(help="> 0: also a 'th-FT+id' row, fine-tuned with the dlib-ResNet identity/perceptual term at this weight.")] = 0.0,
    allow_train_identities: Annotated[bool, typer.Option("--allow-train-identities", help="Evaluate identities the model trained on (numbers are then optimistic).")] = False,
    seed: Annotated[int, typer.Option(help="Seed for fine-tuning and bootstrap.")] = 0,
    device: Annotated[str, typer.Option(help="cpu | cuda | mps | auto")] = "cpu",
    threads: Annotated[int | None, typer.Option(help="Torch threads (default: all cores or TH_THREADS).")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing report.")] = False,
) -> None:
    """Self-reenactment on held-out clips: SSIM, PSNR, CSIM, landmark error and flicker for the static
    and warp baselines and th feed-forward / fine-tuned, at each K; optional cross-identity test."""
    import json
    import shlex
    import sys
    import time

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from synth.avatar.bundled import model_identity, resolve_model
    from synth.errors import UserError
    from synth.eval import protocol as ev
    from synth.media.atomic import atomic_path, atomic_write_bytes, check_writable

    console = Console(stderr=True)
    try:
        ks = tuple(sorted({int(s) for s in shots.split(",") if s.strip()}))
    except ValueError as e:
        raise UserError(f"--shots {shots!r}: give comma-separated integers, e.g. 1,8") from e
    if not ks or ks[0] < 1:
        raise UserError("--shots needs values ≥ 1")
    if steps < 0 or frames < 2:
        raise UserError("--steps must be ≥ 0 and --frames ≥ 2")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder")
    for name in ("report.json", "report.md", "plot.png", *(p.name for p in out.glob("strip_*.png"))):
        check_writable(out / name, force)  # refuse before hours of work, not after
    model_path = resolve_model(model)
    comparisons = []
    for spec in compare or []:
        label, sep, path = spec.partition("=")
        if not sep or not label or not Path(path).is_file():
            raise UserError(f"--compare {spec!r}: give LABEL=MODEL_FILE with an existing model file")
        comparisons.append((label, Path(path)))
    jobs = ev.collect_clips(clips, _identities(identities), per_identity)
    warning = ev.check_identities(jobs, model_path, allow_train_identities)
    if warning:
        print(f"th: warning: {warning}", file=sys.stderr)
    from provenance.manifest import GenerationFacts  # heavy imports after the cheap checks
    from provenance.write import write_image
    from synth.avatar.model import TalkingHeadModel
    from synth.device import resolve_device, set_threads

    set_threads(threads)
    net = TalkingHeadModel.load(model_path, resolve_device(device))
    others = [TalkingHeadModel.load(path, resolve_device(device)) for _, path in comparisons]
    cfg = ev.EvalConfig(shots=ks, steps=steps, frames=frames, seed=seed, cross=cross,
                        compare=tuple(label for label, _ in comparisons), id_loss=id_loss)
    t0 = time.perf_counter()
    with Progress(TextColumn("[bold]eval"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console) as progress:
        task = progress.add_task("", total=1.0)

        def tick(desc: str, frac: float) -> None:
            progress.update(task, completed=frac, description=desc)
            if not console.is_terminal and " step " not in desc:  # plain lines in logs
                print(f"eval {frac:4.0%} {time.perf_counter() - t0:6.0f} s  {desc}", file=sys.stderr, flush=True)

        result = ev.evaluate(net, jobs, cfg, tick, compare=others)
    model_id, model_sha = model_identity(model_path)
    result.config = {"model": str(model_path), "model_id": model_id, "model_sha256": model_sha,
                     "command": shlex.join(["th", *sys.argv[1:]]), "shots": list(ks), "steps": steps,
                     "frames": frames, "seed": seed, "cross": cross, "image_size": net.image_size,
                     "compare": {label: {"model": str(p), "sha256": model_identity(p)[1]} for label, p in comparisons},
                     "th_version": GenerationFacts.current().th_version, "seconds": round(time.perf_counter() - t0, 1)}
    result.warnings = [warning] if warning else []
    report = ev.to_report(result)
    out.mkdir(parents=True, exist_ok=True)
    facts = GenerationFacts(GenerationFacts.current().th_version, model_id, model_sha, None, None, None)
    for key, by_k in result.strips.items():
        for k, strip in by_k.items():
            write_image(strip, out / f"strip_{key}_k{k}.png", facts, force=force)
    with atomic_path(out / "plot.png", force=force) as tmp:
        ev.bar_plot(report, tmp)
    atomic_write_bytes(out / "report.md", ev.report_markdown(report).encode(), force=force)
    atomic_write_bytes(out / "report.json", json.dumps(report, indent=1).encode(), force=force)
    for s in result.skipped:
        print(f"th: skipped {s['clip']}: {s['reason']}", file=sys.stderr)
    print(ev.report_markdown(report))
    print(f"{len(result.clips)} clip(s) in {result.config['seconds']:.0f} s → {out}/report.md")
