"""Invisible watermark for th's generated frames that survives a re-uploader's chain: crop, shrink,
brighten and re-encode together (numpy + OpenCV only).

Design (details, measurements and the false-match calculation in docs/PROVENANCE.md):

* **Data in low-frequency luma.** Chroma at 4:2:0 keeps a quarter of the samples and x264 starves it at
  small sizes; luma low frequencies survive crop + ½ downscale + CRF 28 at 114 px. The frame (rescaled so
  its short side is ``REF`` px) is tiled by ``CELL``×``CELL`` px cells, each a 3×3 grid of smooth sin² bumps
  (``SUB`` px). A cell carries ``PATTERNS`` = 8 features: its projections on the 8 separable zero-mean
  patterns ``c_u ⊗ c_v`` (c₀ = [1 1 1], c₁ = [1 0 -1], c₂ = [1 -2 1] over the bumps; c₀ ⊗ c₀ left out).
  Zero mean makes every feature blind to a brightness offset; the detector searches a gain for contrast.
  Each feature is dither-modulation QIM'd (step ``STEP``) in every frame, so the strong, static host
  content of a talking head does not bias the vote; the cells repeat with a period of ``PERIOD`` = 192 px
  (< the 230 px left by a 90 % crop: every feature survives it) = ``N_FEATURES`` = 128 features.
* **Message** = 32-bit payload + CRC-24 (56 bits) → convolutional code K=9, rate 1/2 (128 coded bits, soft
  Viterbi), keyed scrambling and interleaving. Soft decisions ``cos(2π(feature − dither)/STEP)`` of every
  frame are summed per feature before decoding.
* **Sync: a luma template that breathes.** A keyed tile (``PERIOD`` px, energy on a ring of periods
  11-27 px) is added to video frames with amplitude ``SYNC_AMP · sin(2π t / SYNC_FRAMES)``. The detector
  takes the temporal Fourier component of the frames at that rate: the static host (a talking head's
  background, face, clothes) cancels exactly, the template does not, so a phase-only correlation finds
  scale (grid of scales) and shift (one FFT per scale) of a crop + resize even at 114 px. Stills carry no
  template: for them the bit-free lattice score (the doubled QIM phase) is searched on the single frame.
* **Decision**: the geometry is ranked by how well the summed soft decisions fit the nearest code word (no
  CRC involved); the CRC is checked on at most ``N_CRC_TESTS`` = 16 decodes per file (the untouched
  geometry, then the search's best by code fit); ``found`` = a valid CRC-24.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from provenance import ecc

REF = 256  # reference short side: geometry is expressed at this scale
KEY = 0x7468_776D_0003  # "thwm" v3: public, so every copy of th can verify
PAYLOAD_BITS = 32
CRC_BITS = 24
MESSAGE_BITS = PAYLOAD_BITS + CRC_BITS

# --- carrier (reference px) ---
SUB = 16  # side of one smooth bump
CELL = 3 * SUB  # a cell = 3×3 bumps
GRID = 4  # cells per side of the layout period
PERIOD = CELL * GRID  # 192
PATTERNS = 8  # zero-mean separable patterns per cell
N_FEATURES = GRID * GRID * PATTERNS  # 128
STEP = 4.0  # QIM step, in luma levels of the unit-RMS pattern coefficient
ALPHA = 0.9  # distortion compensation: move each feature ALPHA of the way to its lattice point
PSNR_FLOOR = 38.3  # per-frame guard: the mark is scaled down on the rare frame that would cost more

# --- sync (videos only) ---
SYNC_AMP = 1.6  # RMS of the sync tile at the crest of its temporal sine, luma levels
SYNC_FRAMES = 50  # period of the temporal sine, frames (2 s at 25 fps)
R_LO, R_HI = 7.0, 18.0  # sync ring, in bins of the PERIOD-px tile (periods 11-27 px)
HIGHPASS_SIGMA = 8.0  # px; the detector removes the local mean of the temporal component before folding

# --- detection ---
SCALES = tuple(float(s) for s in np.round(np.exp(np.arange(np.log(0.70), np.log(1.085), 0.016)), 4))
TOP_PEAKS = 3  # sync (or lattice) peaks at distinct scales refined by code fit
REFINE_FRAMES = 16  # frames (spread over the clip) used to refine candidate geometries
# Contrast gains tried at every candidate offset, 2 % apart: a feature of 40 luma levels read at a gain 4 % off
# moves by 1.6 levels, 0.4 of the QIM step (measured on chained files: the right gain is 0.93-1.0 and a
# coarser grid missed it)
GAINS = tuple(round(1.02**k, 4) for k in range(-12, 13))  # 0.788 ... 1.268
N_CRC_TESTS = 16  # distinct decoded words whose CRC is checked per file: the untouched geometry's + the
# search's best by code fit (false match ≤ 16 · 2⁻²⁴ = 9.5e-7 per file: the bound of docs/PROVENANCE.md)


@dataclass(frozen=True)
class WatermarkResult:
    """What the detector read: ``found`` only when the CRC agrees."""

    found: bool
    payload: str | None  # hex, PAYLOAD_BITS/4 digits, when found
    bit_accuracy: float  # share of coded bits whose summed soft decision agrees with the decoded code word
    sync_z: float  # z-score of the bit-free lattice score at the chosen geometry (≈ N(0,1) when unmarked)
    crc_ok: bool
    scale: float  # plane px per original px ÷ REF-normalisation (1.0 = no crop)
    shift: tuple[int, int]  # (dy, dx) of the original's origin in the rescaled plane, reference px
    frames: int  # frames accumulated


@dataclass(frozen=True)
class _Layout:
    dither: np.ndarray  # (N_FEATURES,) in [0, STEP)
    scramble: np.ndarray  # (N_FEATURES,) 0/1 keyed
    slot: np.ndarray  # (N_FEATURES,) coded-bit index carried by each feature (interleaver)
    sync_idx: tuple[np.ndarray, np.ndarray]  # rfft bins of the PERIOD-px sync tile on the ring
    sync_ref: np.ndarray  # their keyed unit phasors


N_CODED = ecc.RATE * (MESSAGE_BITS + ecc.TAIL)  # 128


@functools.lru_cache(maxsize=1)
def layout() -> _Layout:
    rng = np.random.default_rng(KEY)
    slots = np.concatenate([np.arange(N_CODED), np.arange(N_FEATURES - N_CODED)])  # spare features repeat
    dither = rng.uniform(0.0, STEP, N_FEATURES)
    scramble = rng.integers(0, 2, N_FEATURES).astype(np.uint8)
    slot = slots[rng.permutation(N_FEATURES)]
    u = np.fft.fftfreq(PERIOD, 1.0 / PERIOD)[:, None]
    v = np.arange(PERIOD // 2 + 1)[None, :]
    r = np.hypot(u, v)
    rows, cols = np.nonzero((r >= R_LO) & (r <= R_HI) & (v > 0))  # v == 0 is self-conjugate: skip it
    return _Layout(dither, scramble, slot, (rows, cols), np.exp(1j * rng.uniform(0.0, 2 * np.pi, rows.size)))


@functools.lru_cache(maxsize=1)
def _axes() -> np.ndarray:
    """(3, CELL) 1-D factors of the patterns: c_u over the 3 bumps, unit mean square."""
    t = (np.arange(SUB) + 0.5) / SUB
    bump = np.sin(np.pi * t) ** 2
    c = np.array([[1, 1, 1], [1, 0, -1], [1, -2, 1]], dtype=np.float64)
    a = np.stack([np.concatenate([ci * bump for ci in row]) for row in c])
    return (a / np.sqrt((a**2).mean(axis=1, keepdims=True))).astype(np.float32)


PAIRS = tuple((u, v) for u in range(3) for v in range(3) if u or v)  # pattern k = c_u ⊗ c_v


# --- message coding ---------------------------------------------------------------------------


def checksum(bits: np.ndarray) -> np.ndarray:
    """CRC-24 of the payload bits (CRC_BITS bits, MSB first)."""
    return ecc.crc24(bits)


def payload_to_bits(payload: str | int) -> np.ndarray:
    """A payload as PAYLOAD_BITS bits, MSB first (accepts an int or a hex string)."""
    value = int(payload, 16) if isinstance(payload, str) else int(payload)
    if not 0 <= value < 2**PAYLOAD_BITS:
        raise ValueError(f"payload must fit in {PAYLOAD_BITS} bits")
    return np.array([(value >> (PAYLOAD_BITS - 1 - i)) & 1 for i in range(PAYLOAD_BITS)], dtype=np.uint8)


def bits_to_payload(bits: np.ndarray) -> str:
    """PAYLOAD_BITS bits (MSB first) as a fixed-width lower-case hex string."""
    value = 0
    for b in bits[:PAYLOAD_BITS]:
        value = (value << 1) | int(b)
    return f"{value:0{PAYLOAD_BITS // 4}x}"


def new_payload() -> str:
    """A fresh random payload for one output file (hex)."""
    import secrets

    return f"{secrets.randbits(PAYLOAD_BITS):0{PAYLOAD_BITS // 4}x}"


def _message(payload_bits: np.ndarray) -> np.ndarray:
    bits = np.asarray(payload_bits, dtype=np.uint8).reshape(-1)
    if bits.size != PAYLOAD_BITS:
        raise ValueError(f"payload must be {PAYLOAD_BITS} bits, got {bits.size}")
    return np.concatenate([bits, checksum(bits)])


@functools.lru_cache(maxsize=8)
def _feature_bits(message_key: bytes) -> np.ndarray:
    """The bit (0/1) each of the N_FEATURES features carries: coded, interleaved, scrambled."""
    lay = layout()
    coded = ecc.conv_encode(np.frombuffer(message_key, dtype=np.uint8))
    return coded[lay.slot] ^ lay.scramble


def feature_bits(payload_bits: np.ndarray) -> np.ndarray:
    """Public for the benchmark: feature bits for a payload."""
    return _feature_bits(_message(payload_bits).tobytes())


# --- features ---------------------------------------------------------------------------------


def _ref_shape(height: int, width: int) -> tuple[int, int]:
    scale = REF / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of an RGB uint8 frame at the reference scale (float32)."""
    import cv2

    y = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    h, w = y.shape
    rh, rw = _ref_shape(h, w)
    if (rh, rw) == (h, w):
        return y
    return cv2.resize(y, (rw, rh), interpolation=cv2.INTER_AREA if rh < h else cv2.INTER_LINEAR)


def _cell_features(patches: np.ndarray) -> np.ndarray:
    """(n, CELL, CELL) patches → (n, PATTERNS) pattern coefficients (patterns have unit mean square)."""
    a = _axes()
    f = np.einsum("ui,nij,vj->nuv", a, patches, a, optimize=True) / (CELL * CELL)
    return np.stack([f[:, u, v] for u, v in PAIRS], axis=1)


def _cell_pattern(coef: np.ndarray) -> np.ndarray:
    """(..., PATTERNS) coefficients → (..., CELL, CELL) sum of the patterns they weight."""
    a = _axes()
    m = np.zeros(coef.shape[:-1] + (3, 3), dtype=np.float32)
    for k, (u, v) in enumerate(PAIRS):
        m[..., u, v] = coef[..., k]
    return np.einsum("...uv,ui,vj->...ij", m, a, a, optimize=True)


def _qim_delta(f: np.ndarray, k: np.ndarray, fbits: np.ndarray) -> np.ndarray:
    """Change of each feature that moves it ALPHA of the way to its bit's lattice point."""
    offset = layout().dither[k] + fbits[k] * (STEP / 2.0)
    target = STEP * np.round((f - offset) / STEP) + offset
    return ALPHA * (target - f)


def _grid_index(ny: int, nx: int) -> np.ndarray:
    """(ny, nx, PATTERNS) feature index of the cells of an unshifted frame."""
    cy, cx = np.arange(ny) % GRID, np.arange(nx) % GRID
    return ((cy[:, None] * GRID + cx[None, :]) * PATTERNS)[:, :, None] + np.arange(PATTERNS)


# --- embedding --------------------------------------------------------------------------------


def _mark_plane(y: np.ndarray, fbits: np.ndarray) -> np.ndarray:
    """Luma change (reference scale) that puts every whole cell's features on their bits' lattices."""
    h, w = y.shape
    ny, nx = h // CELL, w // CELL
    out = np.zeros_like(y)
    if ny == 0 or nx == 0:
        return out
    cells = y[: ny * CELL, : nx * CELL].reshape(ny, CELL, nx, CELL).transpose(0, 2, 1, 3)
    f = _cell_features(cells.reshape(-1, CELL, CELL)).reshape(ny, nx, PATTERNS)
    d = _qim_delta(f, _grid_index(ny, nx), fbits)
    out[: ny * CELL, : nx * CELL] = _cell_pattern(d).transpose(0, 2, 1, 3).reshape(ny * CELL, nx * CELL)
    return out


@functools.lru_cache(maxsize=1)
def _sync_tile() -> np.ndarray:
    """The PERIOD×PERIOD px sync tile: keyed phases on the ring, unit RMS."""
    lay = layout()
    spec = np.zeros((PERIOD, PERIOD // 2 + 1), dtype=np.complex128)
    spec[lay.sync_idx] = lay.sync_ref
    tile = np.fft.irfft2(spec, s=(PERIOD, PERIOD))
    return (tile / tile.std()).astype(np.float32)


def _sync_plane(shape: tuple[int, int], frame_index: int) -> np.ndarray:
    """The sync template of frame ``frame_index`` at the reference scale (tiled from the origin)."""
    h, w = shape
    a = SYNC_AMP * np.sin(2.0 * np.pi * frame_index / SYNC_FRAMES)
    return np.float32(a) * np.tile(_sync_tile(), (-(-h // PERIOD), -(-w // PERIOD)))[:h, :w]


def embed(rgb: np.ndarray, payload_bits: np.ndarray, frame_index: int | None = None) -> np.ndarray:
    """Return ``rgb`` (uint8 H×W×3) with the mark for ``payload_bits`` (PAYLOAD_BITS of 0/1) added.

    ``frame_index`` (the frame's position in its video, from 0) adds the breathing sync template; a still
    is marked without it. The mark changes luma only: the same value is added to R, G and B (BT.601
    weights sum to 1), so the sync is part of the host the QIM data sees."""
    import cv2

    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 H×W×3, got {rgb.dtype} {rgb.shape}")
    fbits = _feature_bits(_message(payload_bits).tobytes())
    h, w = rgb.shape[:2]
    y = _luma(rgb)
    delta = np.zeros_like(y)
    if frame_index is not None:
        delta += _sync_plane(y.shape, frame_index)
    delta += _mark_plane(y + delta, fbits)
    if delta.shape != (h, w):
        delta = cv2.resize(delta, (w, h), interpolation=cv2.INTER_LINEAR)
    delta3 = cv2.merge([delta, delta, delta])
    out = cv2.add(rgb, delta3, dtype=cv2.CV_8U)  # rounds and saturates
    mse = cv2.norm(out, rgb, cv2.NORM_L2SQR) / out.size
    limit = 255.0**2 / 10 ** (PSNR_FLOOR / 10)
    if mse > limit:  # rare (saturated or busy frames): scale the whole mark down
        out = cv2.add(rgb, delta3 * np.float32(np.sqrt(limit / mse) * 0.97), dtype=cv2.CV_8U)
    return out


# --- detection: per-frame features at one geometry --------------------------------------------


def _rescaled(plane: np.ndarray, scale: float) -> np.ndarray:
    """The plane resized by ``scale``: original content back at reference scale (a crop is then a shift)."""
    import cv2

    plane = plane.astype(np.float32, copy=False)
    if scale == 1.0:
        return plane
    h, w = plane.shape
    return cv2.resize(plane, (max(1, round(w * scale)), max(1, round(h * scale))),
                      interpolation=cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR)


def _anchors(shape: tuple[int, int], off: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-left corners (ys, xs) of every whole cell in a rescaled plane where original coordinate u sits
    at u - off, and the cells' feature indices (n, PATTERNS)."""

    def axis(n: int, o: int):
        i = np.arange(-(-o // CELL), (o + n - CELL) // CELL + 1)
        return i * CELL - o, i % GRID

    ys, cy = axis(shape[0], off[0])
    xs, cx = axis(shape[1], off[1])
    k = ((cy[:, None] * GRID + cx[None, :]) * PATTERNS).reshape(-1, 1) + np.arange(PATTERNS)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return yy.ravel(), xx.ravel(), k


def _features_at(plane: np.ndarray, off: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(features (n, PATTERNS), feature index (n, PATTERNS)) of the whole cells of a rescaled plane,
    leaving out clipped cells: where more than CLIPPED_SHARE of the pixels sit at black or white (a bright
    background pushed to 255 by a brightness change) the mark is gone, and the cell's features would
    vote the same wrong bit in every frame."""
    from numpy.lib.stride_tricks import sliding_window_view

    ys, xs, k = _anchors(plane.shape, off)
    if ys.size == 0:
        return np.zeros((0, PATTERNS), np.float32), k
    patches = sliding_window_view(plane, (CELL, CELL))[ys, xs]
    clipped = ((patches >= 250) | (patches <= 4)).mean(axis=(1, 2)) > CLIPPED_SHARE
    if clipped.any():
        patches, k = patches[~clipped], k[~clipped]
    return _cell_features(patches), k


CLIPPED_SHARE = 0.25


def _soft(f: np.ndarray, k: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """Per-feature soft QIM decisions (positive = bit 0), averaged over repeated cells."""
    s = np.cos(2.0 * np.pi * (f / gain - layout().dither[k]) / STEP)
    count = np.maximum(np.bincount(k.ravel(), minlength=N_FEATURES), 1)
    return np.bincount(k.ravel(), weights=s.ravel(), minlength=N_FEATURES) / count


def _frame_features(planes: list[np.ndarray], scale: float, off: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [_features_at(_rescaled(p, scale), off) for p in planes]


def _soft_sum(feats: list[tuple[np.ndarray, np.ndarray]], gain: float = 1.0) -> np.ndarray:
    """Σ over frames of the per-feature soft decisions."""
    total = np.zeros(N_FEATURES)
    for f, k in feats:
        if f.size:
            total += _soft(f, k, gain)
    return total


class Accumulator:
    """Keeps each frame's reference-scale luma (float16) and, for the sync, the temporal Fourier component
    of the frames at the template's rate (with the temporal mean removed: a static host cancels)."""

    def __init__(self) -> None:
        self.planes: list[np.ndarray] = []
        self.sum: np.ndarray | None = None  # Σ y
        self.cs: np.ndarray | None = None  # Σ y·cos θ, Σ y·sin θ  (2, H, W)
        self.w = np.zeros(2)  # Σ cos θ, Σ sin θ
        self.frames = 0
        self.native = 0  # short side of the frames as read, px

    def add(self, rgb: np.ndarray) -> None:
        self.native = min(rgb.shape[:2])
        y = _luma(rgb)
        theta = 2.0 * np.pi * self.frames / SYNC_FRAMES
        c, s = np.cos(theta), np.sin(theta)
        if self.sum is None:
            self.sum = y.astype(np.float64)
            self.cs = np.stack([y * c, y * s]).astype(np.float64)
        elif y.shape == self.sum.shape:
            self.sum += y
            self.cs[0] += y * c
            self.cs[1] += y * s
        else:
            raise ValueError("all frames of one detection must share a size")
        self.w += (c, s)
        self.planes.append(y.astype(np.float16))
        self.frames += 1

    def mean(self) -> np.ndarray:
        assert self.sum is not None
        return (self.sum / self.frames).astype(np.float32)

    def motion(self) -> float:
        """Mean absolute deviation of the frames from their temporal mean (luma levels, ≤ 16 frames)."""
        mean = self.mean()
        step = max(1, self.frames // 16)
        return float(np.mean([np.abs(p.astype(np.float32) - mean).mean() for p in self.planes[::step]]))

    def temporal(self) -> np.ndarray:
        """(2, H, W) cosine and sine components at the sync rate, static part removed, high-passed."""
        import cv2

        assert self.sum is not None and self.cs is not None
        mean = self.sum / self.frames
        out = np.empty(self.cs.shape, np.float32)
        for i in range(2):
            x = (self.cs[i] - mean * self.w[i]).astype(np.float32)
            out[i] = x - cv2.GaussianBlur(x, (0, 0), HIGHPASS_SIGMA)
        return out


# --- detection: the breathing sync (videos) ---------------------------------------------------


def _fold_spectrum(img: np.ndarray, scale: float) -> np.ndarray:
    """rfft2 of the image rescaled by ``scale`` and folded (mean modulo PERIOD) onto one tile."""
    img = _rescaled(img, scale)
    h, w = img.shape
    nh, nw = -(-h // PERIOD), -(-w // PERIOD)
    pad = np.zeros((nh * PERIOD, nw * PERIOD), dtype=np.float32)
    pad[:h, :w] = img
    ones = np.zeros_like(pad)
    ones[:h, :w] = 1.0
    tile = pad.reshape(nh, PERIOD, nw, PERIOD).sum(axis=(0, 2))
    count = ones.reshape(nh, PERIOD, nw, PERIOD).sum(axis=(0, 2))
    return np.fft.rfft2(tile / np.maximum(count, 1.0))


def _sync_corr(spec: np.ndarray) -> np.ndarray:
    """Phase-only correlation of a folded spectrum with the sync tile, as z-scores for every cyclic shift
    (≈ N(0, 1) each on content without the template)."""
    lay = layout()
    x = spec[lay.sync_idx]
    z_spec = np.zeros((PERIOD, PERIOD // 2 + 1), dtype=np.complex128)
    z_spec[lay.sync_idx] = x / np.maximum(np.abs(x), 1e-12) * np.conj(lay.sync_ref)
    # irfft2 gives (2/N²) Σ Re(.) over the half plane; each unit term has variance 1/2 under the null
    corr = np.fft.irfft2(z_spec, s=(PERIOD, PERIOD)) * (PERIOD * PERIOD / 2.0)
    return corr / np.sqrt(lay.sync_ref.size / 2.0)


def _sync_score(xt: np.ndarray, scale: float) -> tuple[float, tuple[int, int]]:
    """Best (score, data offset) at one scale: the template's temporal phase is unknown, so the cosine
    and sine components are correlated separately and combined as a magnitude (Rayleigh under the null)."""
    c = _sync_corr(_fold_spectrum(xt[0], scale))
    s = _sync_corr(_fold_spectrum(xt[1], scale))
    r = np.hypot(c, s)
    k = int(np.argmax(r))
    dy, dx = k // PERIOD, k % PERIOD
    return float(r.flat[k]), ((-dy) % PERIOD, (-dx) % PERIOD)


def _sync_peaks(acc: Accumulator) -> list[tuple[float, float, tuple[int, int]]]:
    """The TOP_PEAKS best sync peaks (score, scale, offset) at distinct scales (≥ 3 % apart), each refined
    to a fraction of a grid step (scores at ±0.25 % steps, parabola through the best three)."""
    xt = acc.temporal()
    scored = sorted(((*_sync_score(xt, s), s) for s in (1.0, *SCALES)), key=lambda t: -t[0])
    out: list = []
    for _, _, s0 in scored:
        if any(abs(np.log(s0 / o[1])) < 0.03 for o in out):
            continue
        ks = np.arange(-3, 4)
        local = [_sync_score(xt, float(s0 * (1 + 0.0025 * k))) for k in ks]
        r = np.array([t[0] for t in local])
        i = int(np.clip(np.argmax(r), 1, len(ks) - 2))
        den = r[i - 1] - 2 * r[i] + r[i + 1]
        k = ks[i] + (0.5 * (r[i - 1] - r[i + 1]) / den if den < 0 else 0.0)
        best = int(np.argmax(r))
        out.append((float(r[best]), float(s0 * (1 + 0.0025 * k)), local[best][1]))
        if len(out) == TOP_PEAKS:
            break
    return out


# --- detection: the bit-free lattice score (stills) -------------------------------------------


# --- detection: the bit-free lattice score over all shifts ------------------------------------


@functools.lru_cache(maxsize=4)
def _lattice_kernels(factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Flipped FFTs of the keyed doubled-phase kernels (PATTERNS, P, P) and of the cell grid (P, P),
    P = PERIOD/factor: what ``_lattice_scores`` multiplies the folded phasors' FFTs with."""
    from scipy import fft

    p, c = PERIOD // factor, CELL // factor
    d = layout().dither.reshape(GRID, GRID, PATTERNS)
    kern = np.zeros((PATTERNS, p, p), dtype=np.complex64)
    kern[:, ::c, ::c] = np.exp(-4j * np.pi * d / STEP).transpose(2, 0, 1)
    grid = np.zeros((p, p), dtype=np.float32)
    grid[::c, ::c] = 1.0
    # r(o) = Σ_t a(t) b(t + o) = IFFT(FFT(a)(-ω) · FFT(b)(ω)); with b's spectrum flipped instead:
    # r(-o) = IFFT(FFT(a) · FFT(b)(-ω)), so the caller flips the result back.
    flip = lambda x: np.roll(x[..., ::-1, ::-1], 1, axis=(-2, -1))  # noqa: E731  X(ω) → X(-ω)
    return flip(fft.fft2(kern, axes=(-2, -1))), flip(fft.fft2(grid))


def _unflip(r: np.ndarray) -> np.ndarray:
    """r(-o) → r(o) on a periodic grid."""
    return np.roll(r[::-1, ::-1], 1, axis=(0, 1))


@functools.lru_cache(maxsize=4)
def _bump_filter(factor: int) -> tuple[np.ndarray, np.ndarray]:
    """One sin² bump (at 1/factor resolution) and the per-pattern normalisation of _axes()."""
    t = (np.arange(SUB) + 0.5) / SUB
    bump = (np.sin(np.pi * t) ** 2).reshape(SUB // factor, factor).mean(axis=1).astype(np.float32)
    c = np.array([[1, 1, 1], [1, 0, -1], [1, -2, 1]], dtype=np.float64)
    full = np.stack([np.concatenate([ci * np.sin(np.pi * t) ** 2 for ci in row]) for row in c])
    return bump, (1.0 / np.sqrt((full**2).mean(axis=1))).astype(np.float32)


_C3 = ((1.0, 1.0, 1.0), (1.0, 0.0, -1.0), (1.0, -2.0, 1.0))


def _feature_maps(plane: np.ndarray, factor: int = 1) -> np.ndarray:
    """(PATTERNS, vh, vw): the pattern coefficients of a cell anchored at every pixel of a rescaled plane
    reduced by ``factor`` (separable: one bump filter per axis, then shifted sums over the 3 bumps)."""
    import cv2

    sub = SUB // factor
    c = 3 * sub
    bump, norm = _bump_filter(factor)
    h, w = plane.shape
    vh, vw = h - c + 1, w - c + 1
    rows = cv2.filter2D(plane, cv2.CV_32F, bump[None, :], anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
    rs = [rows[:, i * sub: i * sub + vw] for i in range(3)]
    out = np.empty((PATTERNS, vh, vw), np.float32)
    for v in range(3):
        a = _C3[v]
        comb = np.ascontiguousarray(rs[0] * a[0] + rs[1] * a[1] + rs[2] * a[2] if a[1] else rs[0] * a[0] + rs[2] * a[2])
        col = cv2.filter2D(comb, cv2.CV_32F, bump[:, None], anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
        cs = [col[i * sub: i * sub + vh] for i in range(3)]
        for k, (uu, vv) in enumerate(PAIRS):
            if vv != v:
                continue
            b = _C3[uu]
            m = cs[0] * b[0] + cs[2] * b[2]
            if b[1]:
                m += cs[1] * b[1]
            out[k] = m * (norm[uu] * norm[v] / (c * c))
    return out


def _lattice_scores(planes: list[np.ndarray], factor: int = 1) -> np.ndarray:
    """z-score of the bit-free lattice fit at every offset (modulo P = PERIOD/factor) of rescaled planes
    (already reduced by ``factor``) that share one geometry.

    Per anchor and pattern the single-phase phasors exp(2πi f/STEP) are first summed over the planes
    (coherent: a feature keeps its bit in every frame), then doubled, which removes the bit:
    Z² ≈ |Z|² exp(4πi dither/STEP) on a marked cell. score(o) = Σ_cells Re[Z² · conj(keyed phasor)],
    normalised by sqrt(Σ|Z|⁴/2): ≈ N(0, 1) on unmarked content, whose phases are unrelated to the key."""
    from scipy import fft

    p, c = PERIOD // factor, CELL // factor
    h, w = planes[0].shape
    if h < c or w < c:
        return np.zeros((p, p))
    vh, vw = h - c + 1, w - c + 1  # anchors of whole cells
    z1 = np.zeros((PATTERNS, vh, vw), dtype=np.complex64)
    for q in planes:
        ph = _feature_maps(q, factor) * np.float32(2.0 * np.pi / STEP)
        z1.real += np.cos(ph)
        z1.imag += np.sin(ph)
    z2 = z1 * z1
    ny, nx = -(-vh // p), -(-vw // p)
    pad = np.zeros((PATTERNS, ny * p, nx * p), dtype=np.complex64)
    pad[:, :vh, :vw] = z2
    zf = pad.reshape(PATTERNS, ny, p, nx, p).sum(axis=(1, 3))  # fold modulo the period
    mag = np.zeros((ny * p, nx * p), dtype=np.float32)
    mag[:vh, :vw] = (np.abs(z2) ** 2).sum(axis=0)
    magf = mag.reshape(ny, p, nx, p).sum(axis=(0, 2))
    fk, fgrid = _lattice_kernels(factor)
    score = fft.ifft2((fft.fft2(zf, axes=(-2, -1)) * fk).sum(axis=0)).real
    var = fft.ifft2(fft.fft2(magf) * fgrid).real / 2.0
    return _unflip(score) / np.sqrt(np.maximum(_unflip(var), 1e-9))


def _lattice_peaks(planes: list[np.ndarray]) -> list[tuple[float, float, tuple[int, int]]]:
    """Exhaustive bit-free search on planes sharing one geometry (a still, the temporal mean of a static
    video, or a few frames of a video summed coherently): every scale of LATTICE_SCALES, all shifts at once. Returns the TOP_PEAKS best [(z, scale, offset)] at
    distinct scales, best first. (Half resolution is not enough: host detail lost in the reduction moves
    the features by more than the doubled phase tolerates.)"""
    found = []
    for s in LATTICE_SCALES:
        z = _lattice_scores([_rescaled(p, s) for p in planes])
        k = int(np.argmax(z))
        found.append((float(z.flat[k]), s, (k // z.shape[1], k % z.shape[1])))
    found.sort(key=lambda t: -t[0])
    picked: list = []
    for z, s, off in found:
        if all(abs(np.log(s / q[1])) > 0.012 for q in picked):
            picked.append((z, s, off))
        if len(picked) == TOP_PEAKS:
            break
    return picked


LATTICE_SCALES = tuple(float(s) for s in np.round(np.exp(np.arange(np.log(0.70), np.log(1.085), 0.005)), 4))


# --- detection: geometry, decoding, decision --------------------------------------------------


def _llr(soft: np.ndarray) -> np.ndarray:
    lay = layout()
    s = soft * (1.0 - 2.0 * lay.scramble)  # descramble: positive = coded bit 0
    return np.bincount(lay.slot, weights=s, minlength=N_CODED)


def _code_fit(soft: np.ndarray) -> float:
    """Σ llr·(nearest code word) / Σ |llr| ∈ [-1, 1]: ≈ 0.75-0.85 on unmarked content, → 1 on a clean mark."""
    return float(_code_fits(soft[None])[0])


def _code_fits(softs: np.ndarray) -> np.ndarray:
    """``_code_fit`` of C soft vectors (C, N_FEATURES) at once (one batched Viterbi pass)."""
    llr = np.stack([_llr(s) for s in softs])
    total = np.maximum(np.abs(llr).sum(axis=1, keepdims=True), 1e-12)
    _, metric = ecc.viterbi_batch(llr / total, MESSAGE_BITS)
    seen = np.count_nonzero(llr, axis=1) >= MIN_SEEN * N_CODED  # a geometry that sees few features fits anything
    return np.where(seen, metric, 0.0)


MIN_SEEN = 0.75  # share of the coded bits a geometry must see to be ranked by its code fit


def _decode_soft(soft: np.ndarray) -> tuple[np.ndarray, bool, float]:
    """Summed feature soft values → (message bits, CRC ok, agreement of the re-encoded code word)."""
    bits, agree = _decode_word(soft)
    return bits, _crc_ok(bits), agree


def _decode_word(soft: np.ndarray) -> tuple[np.ndarray, float]:
    """Summed feature soft values → (message bits, agreement of the re-encoded code word), no CRC involved."""
    llr = _llr(soft)
    bits, _ = ecc.viterbi(llr / max(np.abs(llr).mean(), 1e-12), MESSAGE_BITS)
    code = ecc.conv_encode(bits)
    seen = llr != 0
    agree = float(np.mean((llr[seen] > 0) == (code[seen] == 0))) if seen.any() else 0.5
    return bits, agree


def _crc_ok(bits: np.ndarray) -> bool:
    return bool(np.array_equal(checksum(bits[:PAYLOAD_BITS]), bits[PAYLOAD_BITS:]))


def _best_near(planes: list[np.ndarray], scales, off0: tuple[int, int]) -> tuple[float, float, tuple[int, int]]:
    """Best (coherent lattice z, scale, offset) over ``scales`` and offsets within ±REFINE_PX of ``off0``."""
    best = (-np.inf, 1.0, off0)
    d = np.arange(-REFINE_PX, REFINE_PX + 1)
    for s in scales:
        z = _lattice_scores([_rescaled(p, float(s)) for p in planes])
        win = z[np.ix_((off0[0] + d) % PERIOD, (off0[1] + d) % PERIOD)]
        k = int(np.argmax(win))
        if win.flat[k] > best[0]:
            best = (float(win.flat[k]), float(s), (int(off0[0] + d[k // d.size]) % PERIOD,
                                                   int(off0[1] + d[k % d.size]) % PERIOD))
    return best


def _refine(planes: list[np.ndarray], s0: float, off0: tuple[int, int]) -> tuple[float, float, tuple[int, int]]:
    """Pin a candidate down to what the data needs (≈ 0.2 % in scale, 1 px): the coherent lattice score
    over ±2 % of scale in 0.4 % steps on half the frames (the sync's scale is only good to ~2 % on a small
    frame), then ±0.2 % around the best on all of them."""
    _, s1, off1 = _best_near(planes[::2], s0 * (1.0 + 0.004 * np.arange(-5, 6)), off0)
    return _best_near(planes, s1 * np.array([0.998, 1.0, 1.002]), off1)


def _geometry(acc: Accumulator) -> tuple[float, list[tuple[float, float, tuple[int, int], float]]]:
    """(best refined lattice z, candidate geometries [(code fit, scale, offset, gain)] best fit first, at
    most N_CRC_TESTS - 1).

    Candidates: the breathing sync's best peak refined by the coherent lattice score, and the raw best peak
    (videos); for videos smaller than SMALL_FRAME all TOP_PEAKS sync peaks refined and, when their sync stays
    weak, the exhaustive coherent lattice search over LATTICE_SCALES × all shifts on LATTICE_FRAMES frames (head
    motion drowns the sync of a small re-encode, its lattice still shows); for stills and static videos the
    lattice search on the temporal mean. Each candidate ±1 px is ranked by how well the summed soft decisions
    fit a code word (no CRC involved); the contrast gain is chosen at its best offset."""
    step = max(1, acc.frames // REFINE_FRAMES)
    planes = acc.planes[::step][:REFINE_FRAMES]
    starts: list = []
    cands: list = []
    if acc.frames >= MIN_SYNC_FRAMES:
        small = acc.native < SMALL_FRAME  # a small re-encode: its sync peaks are unreliable, refine them all
        for i, (z0, s0, off0) in enumerate(_sync_peaks(acc)):
            starts.append((z0, s0, off0))
            if i == 0 or small:
                cands.append(_refine(planes, s0, off0))
        if small and max(c[0] for c in cands) < Z_SYNC_OK:
            few = acc.planes[::max(1, acc.frames // LATTICE_FRAMES)][:LATTICE_FRAMES]
            cands += [_refine(planes, s0, off0) for _, s0, off0 in _lattice_peaks(few)]
    if acc.frames < MIN_SYNC_FRAMES or (max(c[0] for c in cands) < Z_SYNC_OK and acc.motion() < STATIC_MOTION):
        cands += [_refine(planes, s0, off0) for _, s0, off0 in _lattice_peaks([acc.mean()])[:LATTICE_CANDIDATES]]
    by_fit: dict = {}  # (scale, offset) → [(code fit, scale, offset, gain)] for every gain
    by_lattice: list = []  # (lattice coherence, scale, offset, gain) at each geometry's most coherent gain
    for _, s, off0 in cands + starts[:1]:  # every refined candidate, and the raw best sync peak
        scaled = [_rescaled(p, s) for p in planes]
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                off = ((off0[0] + dy) % PERIOD, (off0[1] + dx) % PERIOD)
                if (round(s, 4), off) in by_fit:
                    continue
                feats = [_features_at(q, off) for q in scaled]
                fits = _code_fits(np.stack([_soft_sum(feats, g) for g in GAINS]))  # every offset, every gain
                by_fit[(round(s, 4), off)] = [(float(f), s, off, g) for f, g in zip(fits, GAINS)]
                coh = _gain_coherence(feats)
                i = int(np.argmax(coh))
                by_lattice += [(float(coh[i]), s, off, GAINS[j]) for j in (i, i - 1, i + 1) if 0 <= j < len(GAINS)]
    # Two rankings, interleaved: the code fit of every (geometry, gain), and the bit-free lattice coherence
    # (the gain of a geometry is best read from its lattice; measured on chained files, each ranking alone missed
    # a file the other put first)
    fit_rank = sorted((c for cs in by_fit.values() for c in cs), key=lambda c: -c[0])
    lattice_rank = sorted(by_lattice, key=lambda c: -c[0])
    ranked, seen = [], set()
    for c in itertools.chain.from_iterable(itertools.zip_longest(fit_rank, lattice_rank)):
        if c is not None and (round(c[1], 4), c[2], c[3]) not in seen:
            seen.add((round(c[1], 4), c[2], c[3]))
            ranked.append(c)
    return max(c[0] for c in cands), ranked[:MAX_CANDIDATES]


def _gain_coherence(feats: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Per gain of GAINS: |Σ exp(2i·2π(f/gain − dither)/STEP)| / √n over every feature of every frame — the QIM
    phase doubled, so it is blind to the bits (≈ 1 on unmarked content, large at the mark's true gain)."""
    seen = [(a, k) for a, k in feats if a.size]
    if not seen:
        return np.zeros(len(GAINS))
    f = np.concatenate([a.ravel() for a, _ in seen])
    d = np.concatenate([layout().dither[k].ravel() for _, k in seen])
    inv = 1.0 / np.asarray(GAINS)[:, None]
    ph = np.exp(1j * (4.0 * np.pi / STEP) * (f[None, :] * inv - d[None, :]))
    return np.abs(ph.sum(axis=1)) / np.sqrt(f.size)


MAX_CANDIDATES = 120  # (geometry, gain) candidates decoded in the interleaved order until N_CRC_TESTS distinct words
Z_SYNC_OK = 6.0  # refined lattice z of a sync candidate above which the exhaustive lattice search is skipped
STATIC_MOTION = 2.0  # mean |frame - temporal mean| (luma levels) below which a video counts as static
REFINE_PX = 3  # offset window (reference px) around a sync candidate searched by the lattice score
MIN_SYNC_FRAMES = 8  # fewer frames than this: no sync search (a still, or nearly)
LATTICE_CANDIDATES = 2  # peaks of the lattice search on the temporal mean refined
SMALL_FRAME = 200  # px: below this short side a video's sync is weak (x264 at small sizes), search exhaustively
LATTICE_FRAMES = 8  # frames of a video summed coherently by the exhaustive lattice search


def _decide(acc: Accumulator) -> WatermarkResult:
    if acc.sum is None:
        return WatermarkResult(False, None, 0.5, 0.0, False, 1.0, (0, 0), 0)
    # 1st CRC test: the untouched geometry (a file as th wrote it, or re-encoded without crop or resize)
    s, off, z = 1.0, (0, 0), 0.0
    bits, ok, agree = _decode_soft(_soft_sum(_frame_features(acc.planes, s, off)))
    if not ok:  # then the search's candidates in their interleaved order, until N_CRC_TESTS distinct words are checked
        z, cands = _geometry(acc)
        checked, feats = {bits.tobytes()}, {}
        for _, s2, off2, gain2 in cands:
            if len(checked) >= N_CRC_TESTS:
                break
            if (s2, off2) not in feats:
                feats[(s2, off2)] = _frame_features(acc.planes, s2, off2)
            b2, a2 = _decode_word(_soft_sum(feats[(s2, off2)], gain2))
            if b2.tobytes() in checked:  # the same word again (a neighbouring gain): no new CRC test
                continue
            ok2 = _crc_ok(b2)
            if ok2 or len(checked) == 1:  # report the best-fitting geometry when none passes
                s, off, bits, ok, agree = s2, off2, b2, ok2, a2
            checked.add(b2.tobytes())
            if ok2:
                break
    return WatermarkResult(
        found=ok,
        payload=bits_to_payload(bits) if ok else None,
        bit_accuracy=agree,
        sync_z=z,
        crc_ok=ok,
        scale=s,
        shift=(int(off[0]) % PERIOD, int(off[1]) % PERIOD),
        frames=acc.frames,
    )


def detect(frames: Iterable[np.ndarray], max_frames: int = 250) -> WatermarkResult:
    """Vote over frames that share one geometry (a video; at most ``max_frames``): soft QIM decisions of
    every frame are summed per feature and decoded at the untouched geometry, then, if its CRC fails, at
    the geometry the sync (or, for stills, the lattice search) and the code fit agree on."""
    acc = Accumulator()
    for rgb in frames:
        acc.add(rgb)
        if acc.frames >= max_frames:
            break
    return _decide(acc)


def extract_bits(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Payload bits decoded from one frame (whatever the CRC says) and per-bit soft scores (positive = 1):
    the re-encoded code word's agreement with the frame, signed by each bit."""
    acc = Accumulator()
    acc.add(rgb)
    bits, ok, agree = _decode_soft(_soft_sum(_frame_features(acc.planes, 1.0, (0, 0))))
    if not ok:
        _, s, off, gain = _geometry(acc)[1][0]
        bits, _, agree = _decode_soft(_soft_sum(_frame_features(acc.planes, s, off), gain))
    return bits[:PAYLOAD_BITS], (2.0 * bits[:PAYLOAD_BITS] - 1.0) * agree


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 images."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)
