"""`th audio eval`: audio-driven mouth motion against the tracked real mouth, on held-out clips.

For each clip with audio, every method predicts the mouth-space motion of the jaw and mouth from
the audio alone (or from nothing): the audio model (through the same streamed, gated path as
``th animate``), the built-in ``talk`` motion, an audio-energy → mouth-opening heuristic fitted on the
training clips, and the still neutral face. Compared with the clip's tracked landmarks:

- mouth distance: mean over frames and the 20 mouth points of the L2 distance between predicted and
  real positions, in face-scale units (``synth.audio.mouth``), at lag 0;
- opening correlation: Pearson r between the predicted and real inner-lip opening over time, at the
  best lag within ±``max_lag`` frames (the lag is reported; > 0 = prediction late).

Means over clips come with 95 % bootstrap intervals (resampling clips), as do the relative gains of
the model over each baseline (paired).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synth.audio.dataset import ClipData
from synth.audio.mouth import JAW, MOUTH, N_MOVING, apply_mouth_motion, opening
from synth.audio.train import lagged_corr

METHODS = ("model", "energy", "talk", "still")
ENERGY_FLOOR_DB = 30.0  # the heuristic's dynamic range below the clip's loud (95th percentile) frames


@dataclass(frozen=True)
class EnergyHeuristic:
    """opening change ≈ gain · loudness, spread over the points along the mean opening direction."""

    gain: float
    direction: np.ndarray  # (37, 2) mouth-space motion per unit of opening change

    @staticmethod
    def loudness(rms_db: np.ndarray) -> np.ndarray:
        """0 (silent) … 1 (as loud as the clip's 95th percentile), per frame."""
        top = np.percentile(rms_db, 95)
        return np.clip((rms_db - (top - ENERGY_FLOOR_DB)) / ENERGY_FLOOR_DB, 0.0, 1.0)

    @classmethod
    def fit(cls, clips: list[ClipData]) -> EnergyHeuristic:
        """Least squares on training clips: the gain from loudness to opening change, and the direction."""
        x, y, mots = [], [], []
        for c in clips:
            base = opening(c.neutral)
            x.append(cls.loudness(c.rms_db)[c.valid])
            y.append((c.opening - base)[c.valid])
            mots.append(c.motion[c.valid])
        xa, ya, ma = np.concatenate(x), np.concatenate(y), np.concatenate(mots)
        gain = float(xa @ ya / max(xa @ xa, 1e-9))
        direction = np.tensordot(ya, ma, axes=1) / max(float(ya @ ya), 1e-9)
        return cls(gain, direction.astype(np.float32))

    def motion(self, rms_db: np.ndarray) -> np.ndarray:
        return (self.gain * self.loudness(rms_db))[:, None, None] * self.direction[None]


def talk_motion(neutral: np.ndarray, n: int, fps: float = 25.0) -> np.ndarray:
    """The built-in `talk` motion of the neutral face, as mouth-space motion (n, 37, 2)."""
    from synth.audio.mouth import MOVING
    from synth.avatar.motion import builtin_motion

    faces = builtin_motion("talk", neutral, fps=fps, seconds=n / fps)[:n]
    return faces[:, MOVING] - neutral[MOVING][None]


def clip_metrics(clip: ClipData, motion: np.ndarray, max_lag: int = 4) -> dict:
    """Mouth distance (lag 0) and best-lag opening correlation of one method's motion on one clip."""
    n = min(len(clip), len(motion))
    pred, real, v = motion[:n], clip.motion[:n], clip.valid[:n]
    dist = np.linalg.norm(pred[:, len(JAW):] - real[:, len(JAW):], axis=-1).mean(-1)
    op_pred = opening(apply_mouth_motion(clip.neutral, pred))
    op_real = np.where(v, clip.opening[:n], clip.opening[:n][v].mean())
    r, lag = lagged_corr(op_real, op_pred, max_lag)
    return {"mouth_dist": float(dist[v].mean()), "open_corr": r if np.isfinite(r) else None, "lag": lag,
            "open_std_ratio": float(op_pred.std() / max(op_real.std(), 1e-9))}


def bootstrap(values: np.ndarray, stat=np.mean, n: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of ``stat`` over clips resampled with replacement."""
    rng = np.random.default_rng(seed)
    v = np.asarray(values, np.float64)
    idx = rng.integers(0, len(v), (n, len(v)))
    stats = np.array([stat(v[i]) for i in idx]) if stat is not np.mean else v[idx].mean(1)
    return float(np.nanpercentile(stats, 2.5)), float(np.nanpercentile(stats, 97.5))


def summarise(rows: list[dict], seed: int = 0) -> dict:
    """Per method: mean mouth distance and median correlation with intervals; paired gains of the model."""
    out: dict = {}
    for m in METHODS:
        d = np.array([r[m]["mouth_dist"] for r in rows])
        c = np.array([np.nan if r[m]["open_corr"] is None else r[m]["open_corr"] for r in rows], np.float64)
        out[m] = {"mouth_dist_mean": float(d.mean()), "mouth_dist_ci": bootstrap(d, seed=seed)}
        if np.isfinite(c).any():  # a still mouth has no opening to correlate
            out[m].update({"open_corr_median": float(np.nanmedian(c)),
                           "open_corr_median_ci": bootstrap(c, np.nanmedian, seed=seed),
                           "open_corr_mean": float(np.nanmean(c)),
                           "lag_median": float(np.median([r[m]["lag"] for r in rows]))})
    dm = np.array([r["model"]["mouth_dist"] for r in rows])
    for m in METHODS[1:]:
        db = np.array([r[m]["mouth_dist"] for r in rows])
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(rows), (10_000, len(rows)))
        gains = 1 - dm[idx].mean(1) / db[idx].mean(1)
        out["model"][f"dist_gain_vs_{m}"] = float(1 - dm.mean() / db.mean())
        out["model"][f"dist_gain_vs_{m}_ci"] = (float(np.percentile(gains, 2.5)), float(np.percentile(gains, 97.5)))
    return out


def evaluate(clips: list[ClipData], model, heuristic: EnergyHeuristic, max_lag: int = 4, seed: int = 0) -> dict:
    """Every method on every clip (``clip.meta['path']`` is read for the model's audio path)."""
    from synth.audio.infer import audio_motion

    rows = []
    for c in clips:
        preds = {
            "model": audio_motion(model, c.meta["path"]),
            "energy": heuristic.motion(c.rms_db),
            "talk": talk_motion(c.neutral, len(c)),
            "still": np.zeros((len(c), N_MOVING, 2), np.float32),
        }
        row = {"key": c.key, "identity": c.meta.get("identity"), "frames": len(c), "license": c.meta.get("license")}
        row.update({m: clip_metrics(c, p, max_lag) for m, p in preds.items()})
        rows.append(row)
    return {"clips": rows, "summary": summarise(rows, seed), "max_lag": max_lag, "methods": list(METHODS),
            "mouth_points": [int(i) for i in MOUTH]}


def markdown_report(report: dict) -> str:
    """Per-clip and summary tables (markdown)."""
    s = report["summary"]
    lines = [f"# Audio → mouth on held-out identities ({len(report['clips'])} clips)", "",
             f"Mouth distance: mean L2 over the 20 mouth points, face-scale units, lag 0 (↓). Opening r: Pearson "
             f"correlation of the inner-lip opening with the tracked one, best lag within ±{report['max_lag']} "
             f"frames (↑; lag > 0 = prediction late). 95 % bootstrap intervals over clips.", "",
             "| method | mouth distance ↓ | opening r, median ↑ | opening r, mean | median lag |", "|---|---|---|---|---|"]
    for m in report["methods"]:
        x = s[m]
        corr = (f"{x['open_corr_median']:.3f} [{x['open_corr_median_ci'][0]:.3f}, {x['open_corr_median_ci'][1]:.3f}] | "
                f"{x['open_corr_mean']:.3f} | {x['lag_median']:+.0f}") if "open_corr_median" in x else "— | — | —"
        lines.append(f"| {m} | {x['mouth_dist_mean']:.4f} [{x['mouth_dist_ci'][0]:.4f}, {x['mouth_dist_ci'][1]:.4f}] | {corr} |")
    lines += ["", "Model's mouth-distance gain (1 − model / baseline, paired bootstrap interval):", ""]
    for m in report["methods"][1:]:
        g, ci = s["model"][f"dist_gain_vs_{m}"], s["model"][f"dist_gain_vs_{m}_ci"]
        lines.append(f"- vs {m}: {g:+.1%} [{ci[0]:+.1%}, {ci[1]:+.1%}]")
    lines += ["", "| clip | identity | frames | " + " | ".join(f"{m} dist / r (lag)" for m in report["methods"]) + " |",
              "|---|---|---|" + "---|" * len(report["methods"])]
    for r in report["clips"]:
        cells = [f"{r[m]['mouth_dist']:.4f} / " + (f"{r[m]['open_corr']:.2f} ({r[m]['lag']:+d})"
                 if r[m]["open_corr"] is not None else "—") for m in report["methods"]]
        lines.append(f"| {r['key']} | {r['identity']} | {r['frames']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
