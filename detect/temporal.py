"""The detector's temporal stage: how a face's fine texture carries over from one frame to the next.

A camera adds fresh noise to every frame and light changes on skin from frame to frame; a talking-head
generator that animates one photo (th, and the warp- and flow-based tools) re-renders the same texture, so
after the motion is compensated, consecutive frames of its output agree in their fine detail far more than a
real video's do — through H.264 and the re-uploader's chain too (docs/DETECTOR.md has the measurements).

Per *pair* of consecutive frames (t, t+1) of a file:

1. the 150 px face chip (dlib's geometry, ``synth.faces.chip``) of both frames, cut with frame t's landmarks,
   brought to one effective resolution (``SIDE`` px and back) so a sharp 512 px source and a 256 px one are not
   told apart by their sharpness alone;
2. ``pair_features``: 24 statistics — high-pass energy, its correlation between t and t+1 without and with
   motion compensation (dense optical flow, OpenCV's DIS), the residual left after compensation, the flow's
   size, the 2× down/up-sampling residual (NPR, CVPR 2024), colour spread — in the face centre and the chip
   border, and the same texture statistics for the mouth and the eyes (what speech moves most, and what a
   generator re-renders from one photo: teeth, lids);
3. with the timm CNN's logit on frame t's canonical crop, that makes 25 columns per pair. A *window* of a file
   (``WINDOW_PAIRS`` pairs spread over ``WINDOW_FRAMES`` frames) is summarised by each column's median and its
   spread over the window (``window_vector``), and a small head (``Head``: standardisation, then logistic
   regression or one hidden ReLU layer; stored in the detector's metadata) gives the window's fake probability.
   Which columns a head reads is its own (``Head.columns``): the bundled one's are in its card.

The file score is the median over its windows (``detect.score``). numpy and OpenCV only (torch to fit a head).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

CHIP = 150  # dlib's chip side (synth.faces.chip), padding 0.25
SIDE = 100  # effective resolution every chip is brought to
PIXEL_FEATURES = ("centre_hp_energy", "centre_hp_corr", "centre_hp_change", "border_hp_energy", "border_hp_corr",
                  "border_hp_change", "centre_npr", "border_npr", "centre_saturation", "centre_saturation_spread",
                  "centre_luma_spread")
FLOW_FEATURES = ("centre_mc_corr", "centre_mc_hp_change", "centre_mc_change", "ring_mc_corr", "ring_mc_hp_change",
                 "ring_mc_change", "centre_flow", "ring_flow")
PART_FEATURES = ("mouth_hp_energy", "mouth_mc_corr", "mouth_mc_hp_change", "eyes_hp_energy", "eyes_mc_corr")
FEATURES = PIXEL_FEATURES + FLOW_FEATURES + PART_FEATURES


def _regions() -> tuple[np.ndarray, ...]:
    yy, xx = np.mgrid[:CHIP, :CHIP]
    centre = (abs(yy - 80) < 40) & (abs(xx - 75) < 40)  # eyes to chin
    border = (yy < 15) | (yy >= CHIP - 15) | (xx < 15) | (xx >= CHIP - 15)  # hair, background, neck
    inner = np.zeros_like(centre)
    inner[8:-8, 8:-8] = True
    mouth = (yy >= 92) & (yy < 126) & (xx >= 46) & (xx < 104)  # the 20 mouth landmarks fall in y 97-119, x 52-97
    eyes = (yy >= 34) & (yy < 58) & (xx >= 32) & (xx < 118)  # the 12 eye landmarks: y 43-49, x 38-111
    return centre, border, border & inner, mouth, eyes  # ring: the border without the strip a warp cannot fill


def equalise(chips: np.ndarray, side: int = SIDE) -> np.ndarray:
    """Chips (N,150,150,3) down to ``side`` px (area) and back up (bilinear)."""
    import cv2

    if not len(chips):
        return chips
    return np.stack([cv2.resize(cv2.resize(c, (side, side), interpolation=cv2.INTER_AREA), (CHIP, CHIP),
                                interpolation=cv2.INTER_LINEAR) for c in chips])


def _high_pass(gray: np.ndarray) -> np.ndarray:
    import cv2

    return gray - cv2.GaussianBlur(gray, (0, 0), 1.0)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 1e-3 and b.std() > 1e-3 else 0.0


def _log(v: float, eps: float = 1e-3) -> float:
    return float(np.log(v + eps))


def pair_features(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``FEATURES`` of each pair of equalised chips: a, b (N,150,150,3) uint8 (frames t and t+1) → (N,24)."""
    import cv2

    centre, border, ring, mouth, eyes = _regions()
    yy, xx = np.mgrid[:CHIP, :CHIP].astype(np.float32)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    out = np.zeros((len(a), len(FEATURES)), np.float32)
    for i, (x, y) in enumerate(zip(a, b)):
        ga, gb = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.cvtColor(y, cv2.COLOR_RGB2GRAY)
        ha, hb = _high_pass(ga.astype(np.float32)), _high_pass(gb.astype(np.float32))
        f = []
        for m in (centre, border):
            f += [_log(ha[m].var()), _corr(ha[m], hb[m]), _log(np.abs(ha[m] - hb[m]).mean())]
        g = x.astype(np.float32)
        npr = g - cv2.resize(cv2.resize(g, (CHIP // 2, CHIP // 2), interpolation=cv2.INTER_AREA), (CHIP, CHIP),
                             interpolation=cv2.INTER_NEAREST)
        f += [_log(np.abs(npr[centre]).mean()), _log(np.abs(npr[border]).mean())]
        sat = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)[..., 1].astype(np.float32)
        f += [sat[centre].mean() / 255, sat[centre].std() / 255, g[centre].std() / 255]
        flow = dis.calc(ga, gb, None)
        warped = cv2.remap(gb.astype(np.float32), xx + flow[..., 0], yy + flow[..., 1], cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        hw = _high_pass(warped)
        for m in (centre, ring):
            f += [_corr(ha[m], hw[m]), _log(np.abs(ha[m] - hw[m]).mean()),
                  _log(np.abs(ga.astype(np.float32)[m] - warped[m]).mean())]
        mag = np.hypot(flow[..., 0], flow[..., 1])
        f += [_log(float(np.median(mag[centre])), 1e-2), _log(float(np.median(mag[ring])), 1e-2)]
        # the parts that move most in speech: a generator's teeth and eyes re-rendered from one photo
        f += [_log(ha[mouth].var()), _corr(ha[mouth], hw[mouth]), _log(np.abs(ha[mouth] - hw[mouth]).mean()),
              _log(ha[eyes].var()), _corr(ha[eyes], hw[eyes])]
        out[i] = f
    return np.nan_to_num(out)


COLUMNS = FEATURES + ("cnn_logit",)  # per pair: the statistics and the timm CNN's logit on frame t's crop
WINDOW_FRAMES = 100  # a window: 4 s at 25 fps, the length of the files the head was fitted on
WINDOW_PAIRS = 16  # pairs (t, t+1) per window, t spread evenly
MIN_PAIRS = 4  # pairs with a face a window needs to be scored


def window_pairs(start: int, span: int) -> list[int]:
    """Frames t of a window's pairs (t, t+1): ``WINDOW_PAIRS`` spread evenly over ``span`` frames from ``start``."""
    return sorted(set((start + np.linspace(0, max(span - 2, 0), WINDOW_PAIRS)).round().astype(int).tolist()))


def columns(pairs: np.ndarray, cnn_logit: np.ndarray, names: tuple[str, ...] = COLUMNS) -> np.ndarray:
    """Per pair, the named columns: ``pair_features`` output and the CNN logit → (N, len(names)) float64."""
    cols = {n: pairs[:, i].astype(np.float64) for i, n in enumerate(FEATURES)}
    cols["cnn_logit"] = np.asarray(cnn_logit, np.float64)
    return np.stack([cols[n] for n in names], 1) if len(pairs) else np.zeros((0, len(names)))


def window_vector(per_pair: np.ndarray) -> np.ndarray:
    """A window's input to the head: per column the median over its pairs, then the spread (std) over them —
    how a file's statistics hold still over time is itself evidence (a still photo set in motion)."""
    return np.r_[np.median(per_pair, 0), per_pair.std(0)]


@dataclass(frozen=True)
class Head:
    """The window classifier on a window's standardised ``window_vector`` x = (v − mean) / std: logistic,
    p = σ(x · weight + bias), or with one hidden layer of ``len(hidden)`` ReLU units,
    p = σ(relu(hidden · x + hidden_bias) · weight + bias).

    ``columns`` names the per-pair columns (entries of ``COLUMNS``); ``mean`` and ``std`` have 2 · len(columns)
    entries (the medians, then the spreads), and so has ``weight`` (logistic) or each row of ``hidden``."""

    columns: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weight: tuple[float, ...]
    bias: float
    hidden: tuple[tuple[float, ...], ...] = ()
    hidden_bias: tuple[float, ...] = ()

    def probability(self, per_pair: np.ndarray) -> float:
        """Fake probability of one window from its pairs' columns (N, len(columns)), N ≥ 1."""
        return self.window_probability(window_vector(np.asarray(per_pair, np.float64)))

    def window_probability(self, v: np.ndarray) -> float:
        """Fake probability of one ``window_vector``."""
        x = (v - np.array(self.mean)) / np.array(self.std)
        if self.hidden:
            x = np.maximum(np.array(self.hidden) @ x + np.array(self.hidden_bias), 0.0)
        z = float(x @ np.array(self.weight)) + self.bias
        return float(1.0 / (1.0 + np.exp(-z)))

    def to_dict(self) -> dict:
        d = asdict(self)
        if not self.hidden:  # a logistic head is stored as before the hidden layer existed
            del d["hidden"], d["hidden_bias"]
        return d

    @staticmethod
    def from_dict(d: dict) -> Head:
        unknown = set(d["columns"]) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown temporal columns {sorted(unknown)}")
        n = 2 * len(d["columns"])
        hidden = tuple(tuple(float(v) for v in row) for row in d.get("hidden", ()))
        hidden_bias = tuple(float(v) for v in d.get("hidden_bias", ()))
        if not len(d["mean"]) == len(d["std"]) == n:
            raise ValueError(f"temporal head needs {n} means and stds")
        if len(hidden_bias) != len(hidden) or any(len(row) != n for row in hidden):
            raise ValueError(f"temporal head's hidden layer needs rows of {n} weights and one bias per row")
        if len(d["weight"]) != (len(hidden) or n):
            raise ValueError(f"temporal head needs {len(hidden) or n} output weights")
        return Head(tuple(d["columns"]), tuple(d["mean"]), tuple(d["std"]), tuple(d["weight"]), float(d["bias"]),
                    hidden, hidden_bias)


def fit_head(windows: np.ndarray, y: np.ndarray, names: tuple[str, ...], l2: float, hidden: int = 0,
             seed: int = 0) -> Head:
    """A head fitted on window vectors (N, 2·len(names)), both classes weighted equally, L2 ``l2`` on every weight
    (torch LBFGS, float64): logistic regression, or with ``hidden`` ReLU units (initialised from ``seed``)."""
    import torch

    x = np.asarray(windows, np.float64)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xt = torch.from_numpy((x - mu) / sd)
    yt = torch.from_numpy(np.asarray(y, np.float64))
    g = torch.Generator().manual_seed(seed)
    n = x.shape[1]
    w1 = (torch.randn(hidden, n, generator=g, dtype=torch.float64) / np.sqrt(n)).requires_grad_()
    b1 = torch.zeros(hidden, dtype=torch.float64, requires_grad=True)
    w = (torch.randn(hidden, generator=g, dtype=torch.float64) / np.sqrt(hidden) if hidden
         else torch.zeros(n, dtype=torch.float64)).requires_grad_()
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    params = [w1, b1, w, b] if hidden else [w, b]
    pos = float(np.mean(y))
    weights = torch.from_numpy(np.where(np.asarray(y) > 0, 0.5 / pos, 0.5 / (1 - pos)))
    opt = torch.optim.LBFGS(params, max_iter=500, line_search_fn="strong_wolfe")

    def logits():
        return (torch.relu(xt @ w1.T + b1) if hidden else xt) @ w + b

    def closure():
        opt.zero_grad()
        penalty = (w * w).sum() + ((w1 * w1).sum() if hidden else 0.0)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits(), yt, weight=weights) + l2 * penalty
        loss.backward()
        return loss

    opt.step(closure)
    rows = tuple(tuple(r) for r in w1.detach().numpy().tolist()) if hidden else ()
    return Head(tuple(names), tuple(mu.tolist()), tuple(sd.tolist()), tuple(w.detach().numpy().tolist()),
                float(b.detach()), rows, tuple(b1.detach().numpy().tolist()) if hidden else ())
