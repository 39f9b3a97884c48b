"""How far can mouth distance fall on the held-out clips? Oracles that know what no audio model can.

    python scripts/audio_ceiling.py data/audio-prep runs/audio-eval/report.json

- still: the neutral face (no motion);
- energy: the energy → opening heuristic of `th audio eval` (fitted on the model's training clips);
- oracle opening: the *tracked* inner-lip opening of the clip itself, spread over the points along the
  heuristic's mean opening direction (a perfect 1-D "how open" predictor);
- oracle clip offset: the clip's own median mouth motion held still (the per-clip rest shape);
- both oracles: per-clip least squares of motion on [1, tracked opening].
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main() -> None:
    data, report = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
    from synth.audio.bundled import resolve_audio_model
    from synth.audio.dataset import load_clips
    from synth.audio.mouth import opening
    from synth.audio.train import model_info
    from synth.eval.audio_sync import EnergyHeuristic, clip_metrics

    info = model_info(resolve_audio_model(Path(report["model"]["path"])))
    heuristic = EnergyHeuristic.fit(load_clips(data, info["train_clips"]))
    rows: dict[str, list[float]] = {}
    for c in load_clips(data, [r["key"] for r in report["clips"]], corrected=False):
        op = c.opening - opening(c.neutral)
        x = np.stack([np.ones(len(c)), op], 1)
        coef = np.linalg.lstsq(x[c.valid], c.motion[c.valid].reshape(int(c.valid.sum()), -1), rcond=None)[0]
        preds = {
            "still": np.zeros_like(c.motion),
            "energy": heuristic.motion(c.rms_db),
            "oracle opening": op[:, None, None] * heuristic.direction[None],
            "oracle clip offset": np.repeat(np.median(c.motion[c.valid], 0)[None], len(c), 0),
            "both oracles": (x @ coef).reshape(c.motion.shape),
        }
        for k, p in preds.items():
            rows.setdefault(k, []).append(clip_metrics(c, p)["mouth_dist"])
    model = report["summary"]["model"]["mouth_dist_mean"]
    energy = float(np.mean(rows["energy"]))
    print("| predictor | mouth distance | vs energy |\n|---|---|---|")
    print(f"| model ({Path(report['model']['path']).name}) | {model:.4f} | {1 - model / energy:+.1%} |")
    for k, v in rows.items():
        print(f"| {k} | {np.mean(v):.4f} | {1 - np.mean(v) / energy:+.1%} |")


if __name__ == "__main__":
    main()
