"""Export a meta-training run as the bundled default model and write its model card.

    .venv/bin/python scripts/make_model_card.py runs/warp256 --data data/prep-train

Writes synth/assets/th-cpu-default.safetensors (+ .card.json), models/MODEL_CARD.md and
docs/images/default_model_samples.png (the run's last sample grid: landmarks | real | generated).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CARD_ID = "th-cpu-default-v2"
PREPARE_CMD = ("th prepare ../shared/data/clips data/prep-train -j 1 --frames 64 --license MIT --license Apache "
               "--license 'CC BY' --license CC0 --license BSL --exclude-identity @models/dev_identities.txt")
TRAIN_CMD = "th meta-train data/prep-train runs/warp256 --preset cpu --steps {steps}"
AS_RUN = ("one invocation, `--steps 20000 --threads 1 --time-budget 95`, stopped by its time budget at step {steps} "
          "on a CPU shared with five other jobs (0.6-1.8 images/s); training is deterministic from (seed, rank, step), "
          "so `--steps {steps}` reproduces it up to float reduction order; rerunning the command resumes it")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def loss_curve(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars from the run's TensorBoard logs, averaged over windows of 10 % of the run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, dict[int, float]] = {}
    for ev in sorted((run / "tb").glob("events.*")):
        acc = EventAccumulator(str(ev), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            for e in acc.Scalars(tag):
                series.setdefault(tag, {})[e.step] = e.value
    out = {}
    for tag, pts in series.items():
        steps = sorted(pts)
        if not steps:
            continue
        n = len(steps)
        windows = []
        for k in range(10):
            chunk = steps[k * n // 10:(k + 1) * n // 10] or steps[-1:]
            windows.append((chunk[-1], sum(pts[s] for s in chunk) / len(chunk)))
        out[tag] = windows
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--wall-minutes", type=float, default=None, help="training wall time, if not derivable")
    args = ap.parse_args()

    from synth.avatar.model import export_model
    from synth.train.checkpoint import list_checkpoints, read_metadata

    ckpt = list_checkpoints(args.run)[-1]
    meta = read_metadata(ckpt)
    step = int(meta["step"])
    assets = ROOT / "synth" / "assets"
    assets.mkdir(exist_ok=True)
    out = assets / "th-cpu-default.safetensors"
    digest = export_model(ckpt, out, force=True)
    Path(str(out) + ".sha256").unlink(missing_ok=True)
    index = json.loads((args.data / "index.json").read_text())
    train_ids = sorted({c["identity"] for c in index["clips"]})
    dev_ids = [ln.strip() for ln in (ROOT / "models" / "dev_identities.txt").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")]
    assert not set(train_ids) & set(dev_ids), "dev identities leaked into training"
    tb = sorted((args.run / "tb").glob("events.*"))
    wall = args.wall_minutes
    if wall is None:
        first = min(p.stat().st_mtime for p in tb) if tb else ckpt.stat().st_mtime
        wall = (ckpt.stat().st_mtime - first) / 60
    curve = loss_curve(args.run)
    final = {tag: round(v[-1][1], 4) for tag, v in curve.items()}
    samples = sorted((args.run / "samples").glob("*.png"))
    img_dir = ROOT / "docs" / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    if samples:
        shutil.copy(samples[-1], img_dir / "default_model_samples.png")
    card = {
        "id": CARD_ID,
        "file": out.name,
        "sha256": digest,
        "bytes": out.stat().st_size,
        "preset": json.loads(meta["config"])["preset"],
        "config": json.loads(meta["config"]),
        "steps": step,
        "wall_minutes": round(wall, 1),
        "hardware": "2 CPU cores (shared with development work), fp32, 1 torch thread",
        "data_manifest_sha256": sha256(SHARED / "MANIFEST.tsv") if (SHARED / "MANIFEST.tsv").exists() else None,
        "prepared_index_sha256": sha256(args.data / "index.json"),
        "prepare_command": PREPARE_CMD,
        "train_command": TRAIN_CMD.format(steps=step),
        "as_run": AS_RUN.format(steps=step),
        "export_command": "python scripts/make_model_card.py runs/warp256 --data data/prep-train",
        "train_clips": [c["clip"] for c in index["clips"]],
        "train_identities": train_ids,
        "dev_identities": dev_ids,
        "final_losses_last10pct": final,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (assets / "th-cpu-default.card.json").write_text(json.dumps(card, indent=1) + "\n")
    rows = "\n".join(f"| {tag} | " + " | ".join(f"{v:.3f}" for _, v in pts[::3]) + f" | {pts[-1][1]:.3f} |"
                     for tag, pts in sorted(curve.items()))
    steps_hdr = " | ".join(str(s) for s, _ in next(iter(curve.values()))[::3]) if curve else ""
    md = f"""# Model card: {CARD_ID}

The bundled default model of th (`synth/assets/{out.name}`, {out.stat().st_size / 1e6:.1f} MB, safetensors, fp32).

| field | value |
|---|---|
| method | Zakharov et al. 2019 meta-learning (E, AdaIN G with projection P, projection D), no VGG losses; warp-guided generator `{card['config']['net']['generator']}` (the K shots warped to the target landmarks, the AdaIN network paints Δ and a blend mask) |
| preset | `{card['preset']}` ({card['config']['net']['image_size']} px, G widths {card['config']['net']['g_widths']}, N={card['config']['net']['emb_dim']}, K={card['config']['train']['k_shot']}) |
| steps | {step} (batch {card['config']['train']['batch']}) |
| wall time | {card['wall_minutes']} min on 2 shared CPU cores |
| sha256 | `{digest}` |
| data manifest sha256 | `{card['data_manifest_sha256']}` (`../shared/data/MANIFEST.tsv`) |
| prepared index sha256 | `{card['prepared_index_sha256']}` |
| training data | {len(card['train_clips'])} clips of {len(train_ids)} identities, licences MIT / Apache-2.0 / CC BY / CC0 / BSL only (non-commercial and unlicensed clips are left out: the weights are redistributed) |
| held out (dev set for `th eval`) | {', '.join(dev_ids)} |

## Reproduce

```bash
{PREPARE_CMD}
{TRAIN_CMD.format(steps=step)}
python scripts/make_model_card.py runs/warp256 --data data/prep-train
```

As run: {AS_RUN.format(steps=step)}. Rerunning the training command resumes from the last checkpoint.

## Loss curve (window means over tenths of the run; last column = final tenth)

| loss | {steps_hdr} | final |
|---|{'---|' * (len(steps_hdr.split('|')) + 1) if curve else ''}
{rows}

## Samples (landmarks | real | first shot warped | generated), {samples[-1].stem if samples else "none"}

![samples](../docs/images/default_model_samples.png)

## Limits

Trained for {card['wall_minutes']} minutes on a heavily shared CPU ({step} steps): the warp carries the person's
pixels, the network mostly learned to fill an opening mouth and to blend shots; large head turns (what a warp
cannot reveal) stay weak. `th enroll --steps N` fine-tunes on the person's photos.
Training identities: {', '.join(train_ids)}.
"""
    (ROOT / "models" / "MODEL_CARD.md").write_text(md)
    print(f"exported {out} ({out.stat().st_size / 1e6:.1f} MB, step {step}) sha256 {digest}")


if __name__ == "__main__":
    main()
