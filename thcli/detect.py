"""`th detect FILE...` scores videos/images with the bundled detector; `th detect train OUT_DIR` trains one."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup


class _ScoreByDefault(TyperGroup):
    """`th detect FILE...` means `th detect score FILE...`: anything that is not a sub-command is a file."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["score", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_ScoreByDefault, no_args_is_help=True,
                  help="Detect synthetic talking heads: `th detect FILE...` scores, `th detect train` trains.")


@app.command("score")
def score(
    files: Annotated[list[Path], typer.Argument(help="Videos or images to score.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (per-window or per-frame scores and the aggregate).")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", metavar="OUT.png", help="Write score over time as a PNG.")] = None,
    weights: Annotated[Path | None, typer.Option(help="Detector weights (default: the bundled ones).")] = None,
    max_frames: Annotated[int, typer.Option(help=(
        "Frames examined per file: a video is scored in windows of 16 frame pairs (up to max-frames/16 windows, "
        "spread evenly), an image or a detector without the temporal stage frame by frame."))] = 64,
    threads: Annotated[int | None, typer.Option(help="Threads: the network (ONNX Runtime or torch) and a video's windows, scored side by side (default TH_THREADS or all cores).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite --plot if it exists.")] = False,
) -> None:
    """Fake probability per window (videos: the temporal stage) or frame (images) and one score per file (median);
    exit 0 = none flagged, 1 = some flagged."""
    import json

    from detect.model import Detector, load_scorer
    from detect.score import plot_scores, score_file
    from synth.device import set_threads
    from synth.errors import UserError
    from synth.media import video
    from synth.media.atomic import check_writable

    if plot is not None:
        if plot.suffix.lower() != ".png":
            raise UserError(f"--plot {plot}: must end in .png")
        check_writable(plot, force)
    if max_frames < 1:
        raise UserError("--max-frames must be ≥ 1")
    for f in files:  # fail on bad inputs before the (slow) model load
        if not f.exists():
            raise UserError(f"{f}: no such file")
        if f.is_dir():
            raise UserError(f"{f}: is a directory, expected a video or an image")
        if not video.is_image_path(f):
            video.probe(f)
    if threads is not None:
        os.environ["TH_THREADS"] = str(threads)  # ONNX Runtime's threads (load_scorer)
    det = load_scorer(weights)
    if isinstance(det, Detector):  # no ONNX Runtime here: torch scores
        set_threads(threads)
    results = [score_file(f, det, max_frames=max_frames) for f in files]
    if json_out:
        data = [r.to_dict() for r in results]
        typer.echo(json.dumps(data[0] if len(data) == 1 else data, indent=2))
    else:
        for r in results:
            verdict = ("no face found" if r.score is None else
                       "LIKELY SYNTHETIC" if r.synthetic else "not flagged")
            shown = "-" if r.score is None else f"{r.score:.3f}"
            typer.echo(f"{r.path}: score {shown} (threshold {r.threshold:.3f}, {r.faces}/{len(r.frame_scores)} "
                       f"{r.unit}s with a face) → {verdict}")
    if plot is not None:
        plot_scores(results, plot, force=force)
        typer.echo(f"plot → {plot}", err=True)
    raise typer.Exit(1 if any(r.synthetic for r in results) else 0)


@app.command("train")
def train(
    out_dir: Annotated[Path, typer.Argument(help="Folder for th-detector.safetensors + .card.json (and the data cache).")],
    real: Annotated[Path, typer.Option(help="Prepared real clips (`th prepare` output).")] = Path("data/prep-all"),
    model: Annotated[list[Path] | None, typer.Option(
        help="Generator model/checkpoint for the fakes (repeatable; default: bundled model + runs/cpu checkpoints).")] = None,
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 500,
    batch: Annotated[int, typer.Option(help="Batch size (half real, half fake).")] = 32,
    arch: Annotated[str, typer.Option(help="timm architecture (created with pretrained=False).")] = "mobilenetv3_small_100",
    input_size: Annotated[int, typer.Option(help="Crop side in pixels.")] = 128,
    test_identities: Annotated[Path | None, typer.Option(
        help="Identities held out for the test split, one a line (default: models/dev_identities.txt if present).")] = None,
    fake_frames: Annotated[int, typer.Option(help="Generated frames per clip.")] = 16,
    finetune_every: Annotated[int, typer.Option(help="Fine-tune the avatar of every N-th clip (else feed-forward).")] = 4,
    ae_steps: Annotated[int, typer.Option(help="Fitting steps of each pseudo-fake autoencoder (up-sampling traces).")] = 250,
    exclude_family: Annotated[list[str] | None, typer.Option(
        help="Fake family to leave out of training (repeatable: gen, blend, warp, sbi, ae): leave-one-family-out.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for splits, data and training.")] = 0,
    ckpt_every: Annotated[int, typer.Option(help="Save the training state every N steps (a rerun resumes).")] = 50,
    threads: Annotated[int | None, typer.Option(help="torch threads (default TH_THREADS or all cores).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite existing weights/card in OUT_DIR.")] = False,
) -> None:
    """Build real + generated face crops, train the detector, calibrate at 1 % FPR, write weights + card.

    Killed or interrupted, the same command again reuses the generated data and resumes the training."""
    import json

    from detect.train import TrainConfig, default_generators
    from detect.train import train as run_train
    from synth.device import set_threads
    from synth.errors import UserError

    gens = [Path(m) for m in model] if model else default_generators()
    ids_file = test_identities or (Path("models/dev_identities.txt") if Path("models/dev_identities.txt").is_file() else None)
    test_ids: tuple[str, ...] = ()
    if ids_file is not None:
        if not ids_file.is_file():
            raise UserError(f"--test-identities {ids_file}: no such file")
        test_ids = tuple(x.strip() for x in ids_file.read_text().splitlines() if x.strip() and not x.startswith("#"))
    if steps < 1 or batch < 2 or ckpt_every < 1 or finetune_every < 1 or ae_steps < 1:
        raise UserError("--steps, --ckpt-every, --finetune-every and --ae-steps must be ≥ 1 and --batch ≥ 2")
    families = ("gen", "blend", "warp", "sbi", "ae")
    for f in exclude_family or []:
        if f not in families:
            raise UserError(f"--exclude-family {f}: not one of {', '.join(families)}")
    n = set_threads(threads)
    cfg = TrainConfig(prepared=str(real), models=tuple(str(g) for g in gens), arch=arch, input_size=input_size,
                      steps=steps, batch=batch, seed=seed, test_identities=test_ids, fake_frames=fake_frames,
                      ckpt_every=ckpt_every, finetune_every=finetune_every, ae_steps=ae_steps,
                      exclude_families=tuple(exclude_family or ()))
    command = shlex.join(["th", "detect", "train", *sys.argv[sys.argv.index("train") + 1:]]) \
        if "train" in sys.argv else "th detect train"
    card = run_train(out_dir, cfg, command, force=force, log=lambda m: print(f"th detect: {m}", file=sys.stderr, flush=True))
    print(f"th detect: {n} thread(s); wrote {out_dir / card['weights']} (sha256 {card['sha256'][:12]}…)", file=sys.stderr)
    typer.echo(json.dumps(card["metrics"], indent=2))
