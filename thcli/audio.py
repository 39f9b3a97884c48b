"""`th audio prepare|train|eval`: the audio-to-landmark model's data, training and evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from thcli.eval import _identities

app = typer.Typer(no_args_is_help=True, help="The audio-to-landmark model behind `th animate AVATAR speech.wav`.")


@app.command("prepare")
def prepare(
    videos: Annotated[Path, typer.Argument(help="Folder of clips (flat with a MANIFEST.tsv, or id/video/clip.mp4).")],
    out: Annotated[Path, typer.Argument(help="Data folder: tracks/ (cache), clips/*.npz, index.json. Rerun to resume.")],
    manifest: Annotated[Path | None, typer.Option(help="TSV with file/identity/license columns (default: MANIFEST.tsv in VIDEOS or its parent).")] = None,
    exclude_identity: Annotated[str | None, typer.Option("--exclude-identity", help="Identities to leave out: a,b,c or @FILE.")] = None,
) -> None:
    """Track every clip with audio (cached), check its audio (silent track, too short, faceless) and
    estimate its audio/video offset; the index records what is kept, corrected or dropped and why."""
    import json

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from synth.audio.dataset import AudioPrepConfig, load_clips
    from synth.audio.dataset import prepare as run_prepare
    from synth.audio.sync import estimate_offsets
    from synth.errors import UserError
    from synth.media.atomic import atomic_write_bytes
    from synth.train.prepare import discover, find_manifest

    console = Console(stderr=True)
    manifest = manifest if manifest is not None else find_manifest(videos)
    if manifest is not None and not manifest.exists():
        raise UserError(f"{manifest}: no such file")
    cfg = AudioPrepConfig(exclude_identities=frozenset(_identities(exclude_identity) or ()))
    total = len(discover(videos, manifest))
    with Progress(TextColumn("[bold]audio prepare"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console) as progress:
        task = progress.add_task("", total=total)
        index = run_prepare(videos, out, cfg, manifest,
                            on_progress=lambda r: progress.update(task, advance=1, description=r["key"]))
    clips = load_clips(out, corrected=False) if index["clips"] else []
    index["offsets"] = estimate_offsets(clips) if len(clips) >= 3 else {}
    atomic_write_bytes(out / "index.json", json.dumps(index, indent=1).encode(), force=True)
    table = Table("clip", "identity", "s", "decision", "lag (frames)", "r at lag", "r at 0", title="Audio/video sync")
    for c in index["clips"]:
        o = index["offsets"].get(c["key"], {})
        table.add_row(c["key"], c["identity"], f"{c['seconds']:.1f}", o.get("decision", "?"), str(o.get("lag", "")),
                      str(o.get("corr", "")), str(o.get("corr_at_0", "")))
    console.print(table)
    if index["skipped"]:
        sk = Table("clip", "reason", title="Skipped clips")
        for s in index["skipped"]:
            sk.add_row(s["key"], s["reason"])
        console.print(sk)
    dec = [o["decision"] for o in index["offsets"].values()]
    console.print(f"{len(index['clips'])} clips prepared ({sum(c['seconds'] for c in index['clips']):.0f} s): "
                  f"{dec.count('keep')} in sync, {dec.count('correct')} corrected, {dec.count('drop')} dropped "
                  f"(audio does not follow the mouth); {len(index['skipped'])} skipped → {out}/index.json")


@app.command("train")
def train(
    data: Annotated[Path, typer.Argument(help="Data folder from `th audio prepare`.")],
    run: Annotated[Path, typer.Argument(help="Run folder: config.json, checkpoints/, log.jsonl, audio-model.safetensors.")],
    preset: Annotated[str, typer.Option(help="default | tiny")] = "default",
    steps: Annotated[int | None, typer.Option(help="Total steps to reach.")] = None,
    license: Annotated[list[str] | None, typer.Option("--license", help="Keep only clips whose licence contains this (repeatable; non-commercial ones are dropped).")] = None,
    exclude_identity: Annotated[str | None, typer.Option("--exclude-identity", help="Identities held out: a,b,c or @FILE (e.g. @models/dev_identities.txt).")] = None,
    val_identities: Annotated[str | None, typer.Option(help="Training identities kept for validation only: a,b,c or @FILE.")] = None,
    seed: Annotated[int, typer.Option(help="Seed (batches, augmentation and dropout follow from seed and step).")] = 0,
    threads: Annotated[int | None, typer.Option(help="Torch threads (default: all cores or TH_THREADS).")] = None,
    time_budget: Annotated[float | None, typer.Option(help="Stop and checkpoint after this many minutes (rerun to continue).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and the clip split, then exit.")] = False,
) -> None:
    """Train the audio-to-landmark network; rerunning the same command resumes from RUN's last checkpoint."""
    import json
    import sys
    from dataclasses import asdict, replace

    from synth.audio.dataset import load_clips, load_index
    from synth.audio.model import PRESETS
    from synth.audio.train import AudioTrainConfig
    from synth.audio.train import train as run_train
    from synth.device import set_threads
    from synth.errors import UserError
    from synth.train.prepare import license_ok

    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    model_cfg = PRESETS[preset]
    cfg = AudioTrainConfig(seed=seed) if steps is None else AudioTrainConfig(seed=seed, steps=steps)
    if preset == "tiny":
        cfg = replace(cfg, batch=4, window=32, checkpoint_every=min(cfg.checkpoint_every, cfg.steps),
                      eval_every=min(cfg.eval_every, cfg.steps))
    index = load_index(data)
    excluded = _identities(exclude_identity) or set()
    val_ids = _identities(val_identities) or set()
    offsets = index.get("offsets", {})
    chosen, left_out = [], []
    for c in index["clips"]:
        why = ("identity held out" if c["identity"] in excluded else
               "licence" if not license_ok(c.get("license", ""), frozenset(license or [])) else
               "audio does not follow the mouth" if offsets.get(c["key"], {}).get("decision") == "drop" else None)
        (left_out if why else chosen).append({**c, "why": why} if why else c)
    train_keys = [c["key"] for c in chosen if c["identity"] not in val_ids]
    val_keys = [c["key"] for c in chosen if c["identity"] in val_ids]
    info = {"data": str(data), "train_clips": train_keys, "val_clips": val_keys,
            "train_identities": sorted({c["identity"] for c in chosen if c["identity"] not in val_ids}),
            "licenses": sorted({c.get("license", "") for c in chosen}), "license_filter": sorted(license or []),
            "excluded_identities": sorted(excluded),
            "corrected": {k: offsets[k]["lag"] for k in train_keys + val_keys if offsets.get(k, {}).get("correct")},
            "train_seconds": round(sum(c["seconds"] for c in chosen if c["key"] in train_keys), 1)}
    if dry_run:
        typer.echo(json.dumps({"model": asdict(model_cfg), "train": asdict(cfg), **info}, indent=1))
        return
    set_threads(threads)
    clips = {c.key: c for c in load_clips(data, train_keys + val_keys)}
    print(f"th: training on {len(train_keys)} clips ({info['train_seconds']} s, {len(info['train_identities'])} "
          f"identities), validating on {len(val_keys)}; {len(left_out)} left out", file=sys.stderr)

    def log(rec: dict) -> None:
        print(" ".join(f"{k}={v}" for k, v in rec.items()), file=sys.stderr)

    out = run_train(run, [clips[k] for k in train_keys], [clips[k] for k in val_keys], cfg, model_cfg, info, log,
                    time_budget_s=time_budget * 60 if time_budget is not None else None)
    print(f"→ {out}" if out is not None else f"stopped at the time budget; rerun the same command to continue ({run})")


@app.command("eval")
def eval_cmd(
    data: Annotated[Path, typer.Argument(help="Data folder from `th audio prepare` (the held-out clips must be in it).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Report folder (report.json, report.md).")],
    model: Annotated[Path | None, typer.Option(help="Audio model under test (default: the bundled one).")] = None,
    identities: Annotated[str, typer.Option(help="Evaluate these identities: a,b,c or @FILE.")] = "@models/dev_identities.txt",
    max_lag: Annotated[int, typer.Option(help="Opening correlation: best lag within ± this many frames.")] = 4,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    threads: Annotated[int | None, typer.Option(help="Torch threads.")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing report.")] = False,
) -> None:
    """Audio model vs the built-in `talk` motion, an audio-energy heuristic and a still mouth, on
    held-out identities: mouth landmark distance and mouth-opening correlation, per clip and mean."""
    import json
    import shlex
    import sys

    from synth.audio.bundled import resolve_audio_model
    from synth.audio.dataset import load_clips, load_index
    from synth.audio.train import load_model, model_info
    from synth.device import set_threads
    from synth.errors import UserError
    from synth.eval.audio_sync import EnergyHeuristic, evaluate, markdown_report
    from synth.media.atomic import atomic_write_bytes, check_writable

    check_writable(out / "report.json", force)
    set_threads(threads)
    path = resolve_audio_model(model)
    info = model_info(path)
    ids = _identities(identities) or set()
    leaked = ids & set(info.get("train_identities", []))
    if leaked:
        raise UserError(f"the model trained on {', '.join(sorted(leaked))}: not held out")
    index = load_index(data)
    keys = [c["key"] for c in index["clips"] if c["identity"] in ids]
    if not keys:
        raise UserError(f"{data}: no prepared clip of the identities {identities}")
    heuristic_keys = [k for k in info.get("train_clips", []) if any(c["key"] == k for c in index["clips"])]
    if not heuristic_keys:
        raise UserError(f"{data}: none of the model's training clips is here to fit the energy heuristic")
    clips = load_clips(data, keys, corrected=False)  # held-out clips as recorded: nothing fitted to them
    report = evaluate(clips, load_model(path), EnergyHeuristic.fit(load_clips(data, heuristic_keys)), max_lag, seed)
    report["model"] = {"path": str(path), **{k: info.get(k) for k in ("steps", "train_seconds", "license_filter")}}
    report["command"] = "th " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report["sync"] = {c.key: index.get("offsets", {}).get(c.key, {}) for c in clips}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "report.json", json.dumps(report, indent=1).encode(), force=True)
    md = markdown_report(report)
    atomic_write_bytes(out / "report.md", md.encode(), force=True)
    typer.echo(md)
