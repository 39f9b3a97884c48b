"""Invisible, crop- and scale-tolerant watermark for th's generated frames (numpy + OpenCV only).

Design (details, measurements and the false-match calculation in docs/PROVENANCE.md):

* Two carriers in the two chroma planes (BT.601), where a face carries little texture and the eye is
  least sensitive; luma is untouched (brightness edits act on it; marks in Y came back inverted by x264).
* **Sync (Cb)**: a ``TILE``×``TILE`` tile (at the reference scale: short side = ``REF`` px) repeated over
  the frame, built in the Fourier domain on a keyed ring of low frequencies (periods 16-51 px), with the
  frame's own Cb content in those bins cancelled at embedding (host rejection, capped at ``HOST_CAP``).
  The detector sums the high-passed Cb of all frames, folds it modulo the tile and finds the cyclic shift
  by phase-only correlation (one FFT) at each scale of a grid: a crop is a shift, a resize a scale.
* **Data (Cr)**: dither-modulation QIM of the means of 16×16 px blocks (reference px) on a
  ``PERIOD``×``PERIOD`` grid = 256 features. The inner mean of each block (a ``MARGIN`` px border is
  ignored, so sub-pixel misregistration and chroma blur do not leak neighbours in) is moved ``ALPHA`` of the
  way to the nearest point of ``STEP·Z + dither_k + bit_k·STEP/2`` by a block-constant change. QIM rejects
  the host, so static content (a talking head) does not bias the vote.
* Geometry: sync peaks give scale and offset modulo TILE; the data grid (period 2·TILE) resolves the
  ambiguity and refines scale/offset by maximising how well the summed soft QIM decisions fit the nearest
  code word (Viterbi metric, no CRC involved).
* Message = 32-bit payload + CRC-24 (56 bits) → convolutional code K=7, rate 1/4 (248 bits, soft Viterbi),
  keyed scrambling and interleaving over the 256 blocks. Soft decisions ``cos(2π(mean − dither)/STEP)``
  are summed over all frames of a file. ``found`` = CRC-24 valid on one of at most ``N_CRC_TESTS``
  decodes per file (the untouched geometry, the search's best).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from provenance import ecc

REF = 256  # reference short side: geometry is expressed at this scale
KEY = 0x7468_776D_0002  # "thwm" v2: public, so every copy of th can verify
PAYLOAD_BITS = 32
CRC_BITS = 24
MESSAGE_BITS = PAYLOAD_BITS + CRC_BITS

# --- sync (Cb) ---
TILE = 128  # sync tile period in reference px
R_LO, R_HI = 2.5, 8.0  # sync ring, in tile bins (periods 18-64 reference px)
SYNC_STRENGTH = 1.1  # RMS of the sync tile in Cb levels
HOST_CAP = 0.6  # max RMS (Cb levels) of the host-cancelling tile
HIGHPASS_SIGMA = 8.0  # px; the detector removes the local mean of Cb before folding
Z_THRESHOLD = 3.0  # sync z-score needed (with a valid CRC-24); the false-match bound does not rely on it
SCALES = tuple(float(s) for s in np.round(np.exp(np.arange(np.log(0.72), np.log(1.06), 0.016)), 4))

# --- data (Cr) ---
BLOCK = 16  # block side, reference px
GRID = 16  # blocks per side of the data period
PERIOD = BLOCK * GRID  # 256 reference px
N_FEATURES = GRID * GRID
STEP = 9.0  # QIM step in Cr levels
ALPHA = 0.9  # distortion compensation: move a block mean ALPHA of the way to its lattice point (RMS ≈ 2.3)
MARGIN = 3  # reference px ignored at each block edge by the detector
MIN_DATA_SIDE = 64  # px; smaller frames get the sync only
PSNR_FLOOR = 40.6  # per-frame guard: the mark is scaled down on the rare frame that would cost more

CR, CB = 1, 2  # channels of OpenCV's YCrCb (BT.601: Cb = 0.564 (B - Y), Cr = 0.713 (R - Y))
SYNC_CH, DATA_CH = CB, CR  # sync in Cb, data in Cr


@dataclass(frozen=True)
class WatermarkResult:
    """What the detector read: ``found`` only when sync and CRC agree."""

    found: bool
    payload: str | None  # hex, PAYLOAD_BITS/4 digits, when found
    bit_accuracy: float  # share of coded bits whose summed soft decision agrees with the decoded code word
    sync_z: float  # z-score of the best sync peak (≈ N(0,1) per test on unmarked content)
    crc_ok: bool
    scale: float  # rescale at which the tile was found (1.0 = no crop)
    shift: tuple[int, int]  # data-grid offset (dy, dx) in reference pixels
    frames: int  # frames accumulated


@dataclass(frozen=True)
class _Layout:
    sync_idx: tuple[np.ndarray, np.ndarray]
    sync_ref: np.ndarray  # complex unit phasors
    dither: np.ndarray  # (N_FEATURES,) in [0, STEP)
    scramble: np.ndarray  # (N_FEATURES,) 0/1 keyed
    slot: np.ndarray  # (N_FEATURES,) coded-bit index carried by each block (interleaver)


@functools.lru_cache(maxsize=1)
def layout() -> _Layout:
    rng = np.random.default_rng(KEY)
    u = np.fft.fftfreq(TILE, 1.0 / TILE)[:, None]
    v = np.arange(TILE // 2 + 1)[None, :]
    r = np.hypot(u, v)
    ring = (r >= R_LO) & (r <= R_HI) & (v > 0)  # v == 0 column is self-conjugate: skip it
    rows, cols = np.nonzero(ring)
    ref = np.exp(1j * rng.uniform(0.0, 2 * np.pi, rows.size))
    n_coded = ecc.RATE * (MESSAGE_BITS + ecc.TAIL)  # 248
    slots = np.concatenate([np.arange(n_coded), np.arange(N_FEATURES - n_coded)])  # 8 bits repeated
    return _Layout(
        sync_idx=(rows, cols),
        sync_ref=ref,
        dither=rng.uniform(0.0, STEP, N_FEATURES),
        scramble=rng.integers(0, 2, N_FEATURES).astype(np.uint8),
        slot=slots[rng.permutation(N_FEATURES)],
    )


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
    """The bit (0/1) each of the N_FEATURES blocks carries: coded, interleaved, scrambled."""
    lay = layout()
    coded = ecc.conv_encode(np.frombuffer(message_key, dtype=np.uint8))
    return coded[lay.slot] ^ lay.scramble


def feature_bits(payload_bits: np.ndarray) -> np.ndarray:
    """Public for the benchmark: block bits for a payload."""
    return _feature_bits(_message(payload_bits).tobytes())


# --- embedding --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _sync_tile() -> np.ndarray:
    lay = layout()
    spec = np.zeros((TILE, TILE // 2 + 1), dtype=np.complex128)
    spec[lay.sync_idx] = lay.sync_ref
    tile = np.fft.irfft2(spec, s=(TILE, TILE))
    return (tile / tile.std()).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _ring_gain() -> np.ndarray:
    """Gain of the detector's high-pass (Gaussian, HIGHPASS_SIGMA) at every rfft bin of the tile."""
    u = np.fft.fftfreq(TILE)[:, None]
    v = np.fft.rfftfreq(TILE)[None, :]
    return 1.0 - np.exp(-2.0 * np.pi**2 * HIGHPASS_SIGMA**2 * (u**2 + v**2))


def _ref_shape(height: int, width: int) -> tuple[int, int]:
    scale = REF / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _chroma(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 Y, Cr, Cb (BT.601, OpenCV order; chroma offset 0.5): index with CR, CB."""
    import cv2

    return cv2.cvtColor(rgb.astype(np.float32), cv2.COLOR_RGB2YCrCb)


def _to_ref(plane: np.ndarray) -> np.ndarray:
    import cv2

    h, w = plane.shape[:2]
    rh, rw = _ref_shape(h, w)
    if (rh, rw) == (h, w):
        return plane
    return cv2.resize(plane, (rw, rh), interpolation=cv2.INTER_AREA if rh < h else cv2.INTER_LINEAR)


def _highpass(plane: np.ndarray) -> np.ndarray:
    import cv2

    return plane - cv2.GaussianBlur(plane, (0, 0), HIGHPASS_SIGMA)


def _sync_plane(cr: np.ndarray) -> np.ndarray:
    """Sync tile plus capped host cancellation, repeated over the frame (native size)."""
    import cv2

    lay = layout()
    h, w = cr.shape
    spec = _fold_spectrum(_to_ref(cr), 1.0)
    corr = np.zeros_like(spec)
    corr[lay.sync_idx] = -spec[lay.sync_idx]
    cancel = np.fft.irfft2(corr, s=(TILE, TILE)).astype(np.float32)
    rms = float(np.sqrt(np.mean(cancel**2)))
    if rms > HOST_CAP:
        cancel *= HOST_CAP / rms
    tile = SYNC_STRENGTH * _sync_tile() + cancel
    rh, rw = _ref_shape(h, w)
    plane = np.tile(tile, (-(-rh // TILE), -(-rw // TILE)))[:rh, :rw]
    if (rh, rw) != (h, w):
        plane = cv2.resize(plane, (w, h), interpolation=cv2.INTER_CUBIC)
    return plane


@functools.lru_cache(maxsize=8)
def _native_boxes(height: int, width: int):
    """Inner boxes (native px) of every data block of a frame, the block each pixel belongs to, and the
    blocks' feature indices: the embedder reads exactly what the detector reads."""
    s = min(height, width) / REF

    def axis(n: int):
        i = np.arange(int(np.ceil(n / (BLOCK * s))))
        e0 = np.minimum(np.round(i * BLOCK * s).astype(int), n)
        e1 = np.minimum(np.round((i + 1) * BLOCK * s).astype(int), n)
        a = np.minimum(np.round((i * BLOCK + MARGIN) * s).astype(int), n - 1)
        b = np.clip(np.round((i * BLOCK + BLOCK - MARGIN) * s).astype(int), a + 1, n)
        keep = e1 > e0  # tiny frames: blocks narrower than a pixel vanish
        return a[keep], b[keep], (e1 - e0)[keep], i[keep] % GRID

    y0, y1, cy, by = axis(height)
    x0, x1, cx, bx = axis(width)
    k = by[:, None] * GRID + bx[None, :]
    return y0, y1, x0, x1, cy, cx, k


def _data_plane(cb: np.ndarray, fbits: np.ndarray) -> np.ndarray:
    """Block-constant Cb change moving every block's inner mean onto its bit's QIM lattice."""

    if min(cb.shape) < MIN_DATA_SIDE:  # too small to carry the blocks: sync only
        return np.zeros(cb.shape, np.float32)
    lay = layout()
    y0, y1, x0, x1, cy, cx, k = _native_boxes(*cb.shape)
    # inner-box sums: reduceat over [a0, b0, a1, b1, ...] gives [a_i, b_i) sums at even positions
    ey, ex = np.stack([y0, y1], 1).ravel(), np.stack([x0, x1], 1).ravel()
    rows = np.add.reduceat(cb[: ey[-1]], ey[:-1], axis=0)[0::2]
    sums = np.add.reduceat(rows[:, : ex[-1]], ex[:-1], axis=1)[:, 0::2]
    area = (y1 - y0)[:, None] * (x1 - x0)[None, :]
    mean = sums / np.maximum(area, 1)
    offset = lay.dither[k] + fbits[k] * (STEP / 2.0)
    target = STEP * np.round((mean - offset) / STEP) + offset
    d = (ALPHA * (target - mean)).astype(np.float32)
    return np.repeat(np.repeat(d, cy, axis=0), cx, axis=1)


def embed(rgb: np.ndarray, payload_bits: np.ndarray) -> np.ndarray:
    """Return ``rgb`` (uint8 H×W×3) with the mark for ``payload_bits`` (PAYLOAD_BITS of 0/1) added."""
    import cv2

    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 H×W×3, got {rgb.dtype} {rgb.shape}")
    fbits = _feature_bits(_message(payload_bits).tobytes())
    ych = _chroma(rgb)
    planes = [np.zeros(rgb.shape[:2], np.float32), None, None]
    planes[DATA_CH] = _data_plane(cv2.extractChannel(ych, DATA_CH), fbits) + np.float32(0.5)
    planes[SYNC_CH] = _sync_plane(cv2.extractChannel(ych, SYNC_CH)) + np.float32(0.5)
    delta = cv2.cvtColor(cv2.merge(planes), cv2.COLOR_YCrCb2RGB)  # (0, dCr, dCb) -> dRGB
    out = cv2.add(rgb, delta, dtype=cv2.CV_8U)  # rounds and saturates
    mse = cv2.norm(out, rgb, cv2.NORM_L2SQR) / out.size
    limit = 255.0**2 / 10 ** (PSNR_FLOOR / 10)
    if mse > limit:  # rare (e.g. strong host cancellation): scale the whole mark down
        out = cv2.add(rgb, delta * np.float32(np.sqrt(limit / mse) * 0.97), dtype=cv2.CV_8U)
    return out


# --- detection --------------------------------------------------------------------------------


def _fold_spectrum(img: np.ndarray, scale: float) -> np.ndarray:
    """rfft2 of the image rescaled by ``scale`` and folded (mean modulo TILE) onto one tile."""
    import cv2

    h, w = img.shape
    if scale != 1.0:
        img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))),
                         interpolation=cv2.INTER_LINEAR)
        h, w = img.shape
    nh, nw = -(-h // TILE), -(-w // TILE)
    pad = np.zeros((nh * TILE, nw * TILE), dtype=np.float32)
    pad[:h, :w] = img
    tile = pad.reshape(nh, TILE, nw, TILE).sum(axis=(0, 2))
    ones = np.zeros((nh * TILE, nw * TILE), dtype=np.float32)
    ones[:h, :w] = 1.0
    count = ones.reshape(nh, TILE, nw, TILE).sum(axis=(0, 2))
    return np.fft.rfft2(tile / np.maximum(count, 1.0))


def _sync_peak(spec: np.ndarray) -> tuple[float, tuple[int, int]]:
    """Phase-only correlation with the sync bins: (z-score, (dy, dx)) of the best cyclic shift."""
    lay = layout()
    x = spec[lay.sync_idx]
    p = x / np.maximum(np.abs(x), 1e-12)
    z_spec = np.zeros((TILE, TILE // 2 + 1), dtype=np.complex128)
    z_spec[lay.sync_idx] = p * np.conj(lay.sync_ref)
    # irfft2 gives (2/N²) Σ Re(.) over the half plane; each unit term has variance 1/2 under the null.
    corr = np.fft.irfft2(z_spec, s=(TILE, TILE)) * (TILE * TILE / 2.0)
    corr /= np.sqrt(lay.sync_ref.size / 2.0)
    k = int(np.argmax(corr))
    return float(corr.flat[k]), (k // TILE, k % TILE)


class Accumulator:
    """Sums the high-passed reference-scale Cr planes (sync) of frames sharing one geometry and keeps
    their reference-scale Cb planes (data, float16) for the decode once the geometry is known."""

    def __init__(self) -> None:
        self.sum: np.ndarray | None = None
        self.cb: list[np.ndarray] = []
        self.frames = 0

    def add(self, rgb: np.ndarray) -> None:
        import cv2

        ch = _to_ref(_chroma(rgb))
        res = _highpass(cv2.extractChannel(ch, SYNC_CH))
        if self.sum is None:
            self.sum = res.copy()
        elif res.shape == self.sum.shape:
            self.sum += res
        else:
            raise ValueError("all frames of one detection must share a size")
        self.cb.append(cv2.extractChannel(ch, DATA_CH).astype(np.float16))
        self.frames += 1


def _search(acc: Accumulator, top: int = 1) -> tuple[float, float, tuple[int, int], np.ndarray]:
    """Best (z, scale, shift, spectrum): native scale first, then the scale grid and a local refine."""
    return _sync_peaks(acc, top)[0]


def _sync_peaks(acc: Accumulator, top: int = 3) -> list[tuple[float, float, tuple[int, int], np.ndarray]]:
    """The ``top`` best sync peaks (z, scale, shift, spectrum) over the scale grid (local refine of each)."""
    assert acc.sum is not None
    spec = _fold_spectrum(acc.sum, 1.0)
    z, shift = _sync_peak(spec)
    if z >= Z_CLEAR:  # clear at native scale: skip the search
        return [(z, 1.0, shift, spec)]
    found = [(z, 1.0, shift, spec)]
    for s in SCALES:
        spec = _fold_spectrum(acc.sum, s)
        z, shift = _sync_peak(spec)
        found.append((z, s, shift, spec))
    found.sort(key=lambda t: -t[0])
    out: list = []
    for z, s0, shift, spec in found:
        if any(abs(np.log(s0 / o[1])) < 0.01 for o in out):
            continue
        best = (z, s0, shift, spec)
        for s in s0 * np.array([0.9925, 0.995, 0.9975, 1.0025, 1.005, 1.0075]):
            spec = _fold_spectrum(acc.sum, float(s))
            z, shift = _sync_peak(spec)
            if z > best[0]:
                best = (z, float(s), shift, spec)
        out.append(best)
        if len(out) >= top:
            break
    return out


Z_CLEAR = 8.0  # a native-scale sync peak this clear skips the scale search
REFINE_FRAMES = 40  # frames (spread over the clip) used by the data-aided geometry refinement
SEARCH_PEAKS = 8  # sync peaks (distinct scales) whose 4 data offsets start the data-aided search


def _candidates(scale: float, shift: tuple[int, int]) -> list[tuple[float, tuple[int, int]]]:
    """Data-grid offsets consistent with a sync peak: the sync gives the offset modulo TILE and the data
    period is 2·TILE, so 4 offsets (original reference coordinate u ↦ plane coordinate (u - off)/scale)."""
    oy, ox = (-shift[0]) % TILE, (-shift[1]) % TILE
    return [(scale, (oy + ay, ox + ax)) for ay in (0, TILE) for ax in (0, TILE)]


def _geometry(acc: Accumulator) -> tuple[float, float, tuple[int, int]]:
    """Sync peaks give scale and offset modulo TILE; the data grid (period 2·TILE) then picks the offset
    ambiguity and refines scale/offset by maximising how well the summed QIM decisions fit the nearest
    code word (``_code_fit``) — a CRC-free metric, so the search adds no CRC trials."""
    import cv2

    peaks = _sync_peaks(acc, top=SEARCH_PEAKS)  # the sync may be weak: several peaks are starts
    z = peaks[0][0]
    step = max(1, len(acc.cb) // REFINE_FRAMES)
    iis = [cv2.integral(cb.astype(np.float32), sdepth=cv2.CV_64F) for cb in acc.cb[::step]]
    shape = acc.cb[0].shape
    cache: dict = {}

    def metric(s: float, off: tuple[int, int]) -> float:
        key = (round(s, 5), off[0] % PERIOD, off[1] % PERIOD)
        if key not in cache:
            cache[key] = _code_fit(_soft_sum(iis, shape, s, (key[1], key[2])))
        return cache[key]

    starts = [(1.0, (0, 0))]
    for _, s, shift, _ in peaks:
        starts += _candidates(s, shift)[:4]
    finals = []
    for s, off in sorted(starts, key=lambda g: -metric(*g))[:3]:
        for _ in range(30):
            moves = [(s * f, off) for f in (0.996, 1.004)]
            moves += [(s, (off[0] + dy, off[1] + dx)) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
            nxt = max(moves, key=lambda g: metric(*g))
            if metric(*nxt) <= metric(s, off):
                break
            s, off = nxt
        finals.append((s, off))
    s, off = max(finals, key=lambda g: metric(*g))
    return z, s, (off[0] % PERIOD, off[1] % PERIOD)


def _boxes(shape: tuple[int, int], scale: float, off: tuple[int, int]):
    """Inner boxes of every visible data block in a reference-scale plane, for geometry (scale, off):
    original reference coordinate u ↦ plane coordinate (u - off) / scale. Returns (y0, y1, x0, x1, k)."""
    h, w = shape

    def axis(n: int, o: int):
        lo = int(np.floor(o / BLOCK)) - 1
        hi = int(np.ceil((o + n * scale) / BLOCK)) + 1
        i = np.arange(lo, hi)
        a = np.round((i * BLOCK + MARGIN - o) / scale).astype(int)
        b = np.round((i * BLOCK + BLOCK - MARGIN - o) / scale).astype(int)
        full = b - a
        a, b = np.clip(a, 0, n), np.clip(b, 0, n)
        keep = (b - a) >= np.maximum(0.6 * full, 1)
        return a[keep], b[keep], (i[keep] % GRID)

    y0, y1, by = axis(h, off[0])
    x0, x1, bx = axis(w, off[1])
    Y0, X0 = np.meshgrid(y0, x0, indexing="ij")
    Y1, X1 = np.meshgrid(y1, x1, indexing="ij")
    K = by[:, None] * GRID + bx[None, :]
    return Y0.ravel(), Y1.ravel(), X0.ravel(), X1.ravel(), K.ravel()


def _soft_sum(iis: list[np.ndarray], shape: tuple[int, int], scale: float, off: tuple[int, int]) -> np.ndarray:
    """Σ over frames (given as integral images) of the per-block soft QIM decisions at one geometry."""
    lay = layout()
    y0, y1, x0, x1, k = _boxes(shape, scale, off)
    total = np.zeros(N_FEATURES)
    if k.size == 0:
        return total
    area = (y1 - y0) * (x1 - x0)
    dither = lay.dither[k]
    count = np.maximum(np.bincount(k, minlength=N_FEATURES), 1)
    for ii in iis:
        mean = (ii[y1, x1] - ii[y0, x1] - ii[y1, x0] + ii[y0, x0]) / area
        total += np.bincount(k, weights=np.cos(2.0 * np.pi * (mean - dither) / STEP), minlength=N_FEATURES)
    return total / count


def _llr(soft: np.ndarray) -> np.ndarray:
    lay = layout()
    s = soft * (1.0 - 2.0 * lay.scramble)  # descramble: positive = coded bit 0
    return np.bincount(lay.slot, weights=s, minlength=ecc.RATE * (MESSAGE_BITS + ecc.TAIL))


def _code_fit(soft: np.ndarray) -> float:
    """Σ llr·(nearest code word) / Σ |llr| ∈ [-1, 1]: ≈ 0.5 on noise, → 1 on a clean mark."""
    llr = _llr(soft)
    total = float(np.abs(llr).sum())
    if total == 0:
        return 0.0
    _, metric = ecc.viterbi(llr / total, MESSAGE_BITS)
    return metric


def _decode_soft(soft: np.ndarray) -> tuple[np.ndarray, bool, float]:
    """Summed feature soft values → (message bits, CRC ok, agreement of the re-encoded code word)."""
    llr = _llr(soft)
    scale = np.abs(llr).mean()
    bits, _ = ecc.viterbi(llr / max(scale, 1e-12), MESSAGE_BITS)
    ok = bool(np.array_equal(checksum(bits[:PAYLOAD_BITS]), bits[PAYLOAD_BITS:]))
    code = ecc.conv_encode(bits)
    seen = llr != 0
    agree = float(np.mean((llr[seen] > 0) == (code[seen] == 0))) if seen.any() else 0.5
    return bits, ok, agree


N_CRC_TESTS = 2  # geometries whose decode is CRC-checked per file: untouched, and the search's best


def _decide(acc: Accumulator) -> WatermarkResult:
    import cv2

    if acc.sum is None:
        return WatermarkResult(False, None, 0.5, 0.0, False, 1.0, (0, 0), 0)
    z, s_best, off_best = _geometry(acc)
    ok = False
    for s, off in dict.fromkeys([(1.0, (0, 0)), (s_best, off_best)]):  # ≤ N_CRC_TESTS decodes per file
        iis = (cv2.integral(cb.astype(np.float32), sdepth=cv2.CV_64F) for cb in acc.cb)
        bits, ok, agree = _decode_soft(_soft_sum(iis, acc.cb[0].shape, s, off))
        if ok:
            break
    found = ok and z >= Z_THRESHOLD
    return WatermarkResult(
        found=found,
        payload=bits_to_payload(bits) if found else None,
        bit_accuracy=agree,
        sync_z=z,
        crc_ok=ok,
        scale=s,
        shift=off,
        frames=acc.frames,
    )


def detect(frames: Iterable[np.ndarray], max_frames: int = 250) -> WatermarkResult:
    """Vote over frames that share one geometry (a video; at most ``max_frames``): the sum of all Cr
    residuals gives scale and offset, then soft QIM decisions of every frame are summed per block at
    each candidate geometry and decoded; the first CRC-valid, most consistent candidate wins."""
    acc = Accumulator()
    for rgb in frames:
        acc.add(rgb)
        if acc.frames >= max_frames:
            break
    return _decide(acc)


def extract_bits(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Payload bits decoded from one frame (whatever the CRC says) and per-bit soft scores (positive = 1):
    the re-encoded code word's agreement with the frame, signed by each bit."""
    import cv2

    acc = Accumulator()
    acc.add(rgb)
    _, s, off = _geometry(acc)
    ii = cv2.integral(acc.cb[0].astype(np.float32), sdepth=cv2.CV_64F)
    bits, _, agree = _decode_soft(_soft_sum([ii], acc.cb[0].shape, s, off))
    return bits[:PAYLOAD_BITS], (2.0 * bits[:PAYLOAD_BITS] - 1.0) * agree


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 images."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)
