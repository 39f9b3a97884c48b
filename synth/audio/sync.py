"""Audio/video offset of each prepared clip, estimated from the data itself (no SyncNet here).

A linear (ridge) map from log-mel context to mouth opening is fitted on every *other* identity
(leave-one-identity-out) and run on the clip; the lag at which its prediction correlates best with
the tracked opening is the clip's offset. Two passes: the second fit uses the corrected clips. A clip
is then kept as it is, corrected (shifted by its lag), or dropped when its audio does not follow the
mouth at any lag (dubbed, music, a voice off camera) or the best lag is at the edge of the ±MAX_LAG
search (no peak: the offset is unknown).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synth.audio.dataset import ClipData

MAX_LAG = 8  # frames (±320 ms at 25 fps)
POOL = 8  # mel frames per pooled block
BLOCKS = 5  # pooled blocks, centred on the frame: ±200 ms of context


@dataclass(frozen=True)
class SyncRule:
    min_corr: float = 0.2  # below: the audio does not follow the mouth → drop
    min_shift: int = 2  # |lag| below this is within the estimate's precision → keep as is
    min_gain: float = 0.05  # correct only if the best lag beats lag 0 by this much
    ridge: float = 30.0


def ridge_features(clip: ClipData) -> np.ndarray:
    """(T, BLOCKS·80) pooled, per-clip mean-normalised log-mel around each frame."""
    t = len(clip)
    mel = clip.mel[: 4 * t] - clip.mel[: 4 * t].mean(0)
    half = BLOCKS * POOL // 2
    padded = np.concatenate([np.zeros((half, mel.shape[1]), np.float32), mel,
                             np.zeros((half + 4 * t - len(mel) + POOL, mel.shape[1]), np.float32)])
    centres = 4 * np.arange(t) + half
    feats = [padded[centres[:, None] - half + b * POOL + np.arange(POOL)[None]].mean(1) for b in range(BLOCKS)]
    return np.concatenate(feats, axis=1)


def _zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-9)


def lag_curve(a: np.ndarray, b: np.ndarray, max_lag: int = MAX_LAG) -> np.ndarray:
    """Pearson r of a[t] with b[t + lag] for lag = -max_lag … max_lag."""
    n = len(a)
    out = np.full(2 * max_lag + 1, np.nan)
    for i, lag in enumerate(range(-max_lag, max_lag + 1)):
        x = a[max(0, -lag):n - max(0, lag)]
        y = b[max(0, lag):n - max(0, -lag)]
        if len(x) >= 10 and x.std() > 1e-9 and y.std() > 1e-9:
            out[i] = np.corrcoef(x, y)[0, 1]
    return out


def estimate_offsets(clips: list[ClipData], rule: SyncRule = SyncRule(), passes: int = 2) -> dict[str, dict]:
    """Per clip key: {"lag", "corr", "corr_at_0", "decision" (keep|correct|drop), "curve"}.

    ``lag`` > 0 means the audio runs late (the sound of video frame t is at t + lag).
    """
    feats = {c.key: ridge_features(c) for c in clips}
    ident = {c.key: c.meta.get("identity", c.key) for c in clips}
    lags = {c.key: 0 for c in clips}
    result: dict[str, dict] = {}
    for _ in range(passes):
        use = [c for c in clips if result.get(c.key, {}).get("decision") != "drop"]
        xs, ys, ids = [], [], []
        for c in use:
            s = c.shifted(lags[c.key]) if lags[c.key] else c
            f = feats[c.key] if not lags[c.key] else ridge_features(s)
            xs.append(f[s.valid])
            ys.append(_zscore(s.opening)[s.valid])
            ids.append(np.full(int(s.valid.sum()), ident[c.key], dtype=object))
        x_all, y_all, id_all = np.concatenate(xs), np.concatenate(ys), np.concatenate(ids)
        mu, sd = x_all.mean(0), x_all.std(0) + 1e-6
        xn = (x_all - mu) / sd
        gram, rhs = xn.T @ xn, xn.T @ y_all
        new = {}
        for c in clips:
            out = id_all == ident[c.key]  # leave the clip's identity out of the fit
            g = gram - xn[out].T @ xn[out] + rule.ridge * len(xn) / 1000 * np.eye(len(gram))
            w = np.linalg.solve(g, rhs - xn[out].T @ y_all[out])
            pred = ((feats[c.key] - mu) / sd) @ w
            curve = lag_curve(np.where(c.valid, c.opening, c.opening[c.valid].mean()), pred)
            best = int(np.nanargmax(curve))
            lag, r, r0 = best - MAX_LAG, float(curve[best]), float(curve[MAX_LAG])
            if r < rule.min_corr or abs(lag) == MAX_LAG:  # no peak inside the search range: no evidence of sync
                decision = "drop"
            elif abs(lag) >= rule.min_shift and r - r0 >= rule.min_gain:
                decision = "correct"
            else:
                decision = "keep"
            new[c.key] = {"lag": lag, "corr": round(r, 3), "corr_at_0": round(r0, 3), "decision": decision,
                          "correct": decision == "correct", "curve": [round(float(v), 3) for v in curve]}
        result = new
        lags = {k: (v["lag"] if v["correct"] else 0) for k, v in result.items()}
    return result
