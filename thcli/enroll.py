"""`th enroll PHOTO... -o NAME.avatar`: few-shot enrollment of one person."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DEFAULT_STEPS = 40


def enroll(
    photos: Annotated[list[Path], typer.Argument(help="1..K photos (or a painting) of one person.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Avatar file to write (NAME.avatar).")],
    steps: Annotated[int, typer.Option(help="Fine-tuning steps on the shots; 0 = the paper's feed-forward mode.")] = DEFAULT_STEPS,
    consent: Annotated[str | None, typer.Option(help="Consent statement recorded in the avatar and in every output's manifest.")] = None,
    name: Annotated[str | None, typer.Option(help="Display name (default: the output's file name).")] = None,
    model: Annotated[Path | None, typer.Option(help="Base model file (default: the bundled model).")] = None,
    face_index: Annotated[int | None, typer.Option(help="Which face in each photo when there are several (0 = largest).")] = None,
    preview: Annotated[Path | None, typer.Option(help="Preview grid PNG (default: OUT with .preview.png).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for fine-tuning.")] = 0,
    device: Annotated[str, typer.Option(help="cpu | cuda | mps | auto")] = "cpu",
    threads: Annotated[int | None, typer.Option(help="Torch threads (default: all cores or TH_THREADS).")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing outputs.")] = False,
) -> None:
    """Enroll a person from 1..K photos: person vector, AdaIN init, fine-tuning; writes an avatar + preview."""
    import sys
    import time

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from provenance.manifest import GenerationFacts
    from provenance.write import load_signer, write_image
    from synth.avatar.bundled import model_identity, resolve_model
    from synth.avatar.enroll import enroll as run_enroll
    from synth.avatar.enroll import load_shots, preview_grid
    from synth.avatar.model import TalkingHeadModel
    from synth.device import resolve_device, set_threads
    from synth.errors import UserError
    from synth.media.atomic import atomic_path, check_writable

    console = Console(stderr=True)
    if out.suffix != ".avatar":
        raise UserError(f"{out}: the avatar file must end in .avatar")
    if steps < 0:
        raise UserError("--steps must be ≥ 0")
    preview = preview or out.with_suffix(".preview.png")
    check_writable(out, force)
    check_writable(preview, force)
    identity = load_signer()  # the preview is signed: a key that cannot sign fails now, before any work
    set_threads(threads)
    dev = resolve_device(device)
    model_path = resolve_model(model)
    t0 = time.perf_counter()
    net = TalkingHeadModel.load(model_path, dev)
    shots = load_shots(photos, net.image_size, face_index)
    for note in shots.notes:
        print(f"th: {note}", file=sys.stderr)
    if consent is None:
        print("th: no --consent given; the avatar records 'not stated'", file=sys.stderr)
    with Progress(TextColumn("[bold]enroll"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console,
                  disable=steps == 0 or not console.is_terminal) as progress:  # no bar in logs
        task = progress.add_task("", total=steps)

        def tick(step: int, losses: dict[str, float]) -> None:
            shown = " ".join(f"{k}={v:.3f}" for k, v in losses.items() if k in ("g_total", "l1", "d_hinge", "loss_g", "loss_d"))
            progress.update(task, completed=step, description=shown or "")

        avatar = run_enroll(net, model_path, shots, steps, name or out.stem, consent or "not stated", seed, tick)
    model_id, model_sha = model_identity(model_path)
    facts = GenerationFacts.current()
    facts = GenerationFacts(facts.th_version, model_id, model_sha, avatar.avatar_id, avatar.meta["consent"], None)
    # Both files or neither: the avatar is written first but published last, after the signed preview.
    published: list[Path] = []
    try:
        with atomic_path(out, force=force) as tmp:
            avatar.write_to(tmp)
            published.append(write_image(preview_grid(net, avatar, shots), preview, facts, force=force,
                                         identity=identity).path)
    except BaseException:
        for p in published:  # the avatar could not be published: take its preview back
            p.unlink(missing_ok=True)
        raise
    dt = time.perf_counter() - t0
    print(f"enrolled {avatar.meta['name']} from {len(photos)} shot(s), {steps} steps, {dt:.1f} s → {out} (preview {preview})")
