"""Bundle an audio model from `th audio train` with its card: synth/assets/th-audio-default.{safetensors,card.json}
and models/AUDIO_MODEL_CARD.md (training clips with licence and sync decision, what was left out and why,
the held-out evaluation, the commands).

    python scripts/make_audio_card.py RUN --data DATA --eval REPORT_DIR
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "synth" / "assets"
MODEL_ID = "th-audio-default-v1"
LICENSES = ("MIT", "Apache", "CC BY", "CC0")
PREPARE_CMD = "th audio prepare ../shared/data/clips data/audio-prep"
TRAIN_CMD = ("th audio train data/audio-prep runs/audio --license MIT --license Apache --license 'CC BY' "
             "--license CC0 --exclude-identity @models/dev_identities.txt")
EVAL_CMD = "th audio eval data/audio-prep -o runs/audio-eval --identities @models/dev_identities.txt"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--eval", type=Path, required=True, help="folder with report.json from `th audio eval`")
    ap.add_argument("--steps-note", default="", help="how the run was invoked, if not in one go")
    args = ap.parse_args()

    from synth.audio.train import load_model, model_info

    model_path = args.run / "audio-model.safetensors"
    info = model_info(model_path)
    net = load_model(model_path)
    cfg = json.loads((args.run / "config.json").read_text())
    index = json.loads((args.data / "index.json").read_text())
    report = json.loads((args.eval / "report.json").read_text())
    clips = {c["key"]: c for c in index["clips"]}
    offsets = index.get("offsets", {})
    manifest = ROOT.parent / "shared" / "data" / "MANIFEST.tsv"

    dest = ASSETS / "th-audio-default.safetensors"
    shutil.copyfile(model_path, dest)
    train_rows = [{"key": k, "identity": clips[k]["identity"], "license": clips[k]["license"],
                   "seconds": clips[k]["seconds"], "sync": offsets.get(k, {}).get("decision"),
                   "lag": offsets.get(k, {}).get("lag")} for k in info["train_clips"]]
    permissive = [c for c in index["clips"] if any(a.lower() in c["license"].lower() for a in LICENSES)
                  and "NC" not in c["license"] and c["identity"] not in info["excluded_identities"]]
    dropped = [{"key": c["key"], "identity": c["identity"], "license": c["license"], "seconds": c["seconds"],
                "reason": f"audio does not follow the mouth (best r {offsets[c['key']]['corr']:.2f} at lag "
                          f"{offsets[c['key']]['lag']:+d})"}
               for c in permissive if offsets.get(c["key"], {}).get("decision") == "drop"]
    card = {
        "id": MODEL_ID, "file": dest.name, "sha256": sha256(dest), "bytes": dest.stat().st_size,
        "parameters": sum(p.numel() for p in net.parameters()), "model_config": cfg["model"],
        "train_config": cfg["train"], "steps": info["steps"], "train_seconds": info["train_seconds"],
        "train_identities": info["train_identities"], "train_clips": train_rows,
        "licenses": info["licenses"], "license_filter": info["license_filter"],
        "held_out_identities": info["excluded_identities"], "dropped_clips": dropped,
        "skipped_clips": index["skipped"], "data_index_sha256": sha256(args.data / "index.json"),
        "manifest_sha256": sha256(manifest) if manifest.exists() else None,
        "commands": {"prepare": PREPARE_CMD, "train": TRAIN_CMD, "eval": EVAL_CMD,
                     "bundle": f"python scripts/make_audio_card.py {args.run} --data {args.data} --eval {args.eval}"},
        "eval": report["summary"], "eval_clips": [r["key"] for r in report["clips"]],
    }
    (ASSETS / "th-audio-default.card.json").write_text(json.dumps(card, indent=1) + "\n")

    s = report["summary"]
    corrected = [r for r in train_rows if r["sync"] == "correct"]
    shifts = ", ".join(f"{r['key']} {r['lag']:+d}" for r in corrected)
    silent = [x for x in index["skipped"] if "silent" in x["reason"]]
    lines = [
        f"# Model card: {MODEL_ID}",
        "",
        f"The bundled audio-to-landmark model of th (`synth/assets/{dest.name}`, {card['bytes'] / 1e6:.1f} MB, "
        f"safetensors, fp32, {card['parameters']:,} parameters): speech → per-frame motion of the 17 jaw and "
        "20 mouth landmarks at 25 fps, relative to a neutral face, pose-free and in face-scale units "
        "(`synth/audio/mouth.py`). `th animate AVATAR speech.wav` uses it.",
        "",
        "| field | value |",
        "|---|---|",
        "| network | 8 log-mel frames (80 bins, 80 ms) per video frame → linear embed → "
        f"{len(cfg['model']['dilations'])} dilated residual 1-D convolutions (±{net.config.context} frames of context, "
        f"past and future) → one-way GRU ({cfg['model']['gru']}) → 74 outputs; streamed in blocks with exact results |",
        f"| training | {info['steps']} steps, batch {cfg['train']['batch']} × {cfg['train']['window']} frames, AdamW lr "
        f"{cfg['train']['lr']:g} cosine, EMA {cfg['train']['ema']}; loss = mean L2 per point + velocity; augmentation: gain "
        f"±{cfg['train']['gain_db']:g} dB, noise, mel-bin shift ±{cfg['train']['mel_shift']}, speed ±{cfg['train']['speed']:.0%}, "
        "frequency masks, inserted silence with a still mouth |",
        f"| training data | {len(train_rows)} clips of {len(info['train_identities'])} identities, {info['train_seconds']:.0f} s; "
        f"licences {', '.join(info['licenses'])} only (`--license MIT --license Apache --license 'CC BY' --license CC0`: "
        "the same filter as the bundled generator, non-commercial licences dropped) |",
        f"| audio/video sync | {len(corrected)} of the training clips shifted by their estimated offset "
        f"({shifts} frames); {len(dropped)} permissive clips dropped "
        "because their audio does not follow the mouth (below) |",
        f"| held out | the dev identities of `models/dev_identities.txt` ({', '.join(info['excluded_identities'])}); "
        f"evaluated on their {len(report['clips'])} clips with sound |",
        f"| sha256 | `{card['sha256']}` |",
        f"| prepared index sha256 | `{card['data_index_sha256']}` |",
        "",
        "## Held-out evaluation (`th audio eval`)",
        "",
        "| method | mouth distance ↓ (95 % CI) | opening r, median ↑ (95 % CI) |",
        "|---|---|---|",
    ]
    for m in report["methods"]:
        x = s[m]
        corr = (f"{x['open_corr_median']:.3f} [{x['open_corr_median_ci'][0]:.3f}, {x['open_corr_median_ci'][1]:.3f}]"
                if "open_corr_median" in x else "—")
        lines.append(f"| {m} | {x['mouth_dist_mean']:.4f} [{x['mouth_dist_ci'][0]:.4f}, {x['mouth_dist_ci'][1]:.4f}] | {corr} |")
    lines += ["", "Per clip and with the gains over each baseline: [docs/AUDIO.md](../docs/AUDIO.md).", "",
              "## Reproduce", "", "```bash", PREPARE_CMD, TRAIN_CMD + f" --steps {info['steps']}",
              "th audio eval data/audio-prep -o runs/audio-eval --model runs/audio/audio-model.safetensors",
              card["commands"]["bundle"], "```", ""]
    if args.steps_note:
        lines += [args.steps_note, ""]
    lines += ["## Training clips", "", "| clip | identity | licence | s | sync |", "|---|---|---|---|---|"]
    for r in train_rows:
        sync = f"shifted {r['lag']:+d}" if r["sync"] == "correct" else "in sync"
        lines.append(f"| {r['key']} | {r['identity']} | {r['license']} | {r['seconds']:.1f} | {sync} |")
    lines += ["", "## Left out", "", "| clip | reason |", "|---|---|"]
    for d in dropped:
        lines.append(f"| {d['key']} | {d['reason']} |")
    for x in index["skipped"]:
        if "no audio stream" not in x["reason"]:
            lines.append(f"| {x['key']} | {x['reason']} |")
    lines += [f"| {sum('no audio stream' in x['reason'] for x in index['skipped'])} clips | no audio stream |", "",
              f"{len(silent)} clips have a silent audio track (digital silence or < 15 % of frames above -45 dBFS).", "",
              "## Limits", "",
              "Trained on ~6 minutes of speech from 30-odd people: it opens and closes the mouth in time with the "
              "syllables (correlation above) but its shapes are averages — it does not form visemes (rounded vs "
              "spread lips) reliably, and its amplitude is smaller than real speech. Where the audio stays below "
              "-60 dBFS the mouth is held at rest by rule (`synth/audio/infer.py`), not by the network. Head motion "
              "and blinks are procedural, not driven by the audio.", ""]
    (ROOT / "models" / "AUDIO_MODEL_CARD.md").write_text("\n".join(lines))
    print(f"→ {dest}, {ASSETS / 'th-audio-default.card.json'}, models/AUDIO_MODEL_CARD.md")


if __name__ == "__main__":
    main()
