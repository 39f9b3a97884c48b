"""Invisible, crop- and scale-tolerant watermark for th's generated frames (numpy + OpenCV only).

Design (details and measurements in docs/PROVENANCE.md):

* The mark lives in the blue-difference chroma plane Cb (BT.601), where faces carry little texture,
  so the detector sees mostly the mark, and where the eye is least sensitive.
* It is a tile of ``TILE``×``TILE`` pixels (at the reference scale: short side = ``REF`` pixels)
  repeated over the frame. The tile is built in the Fourier domain from ``N_SYNC`` keyed *sync* bins
  and ``N_DATA`` keyed *data* bins on a ring of mid frequencies (periods of ~11-32 reference pixels:
  they survive H.264 at CRF 28 and a ½ resize, and cost little PSNR).
* A crop only shifts the tile (cyclically); a resize only changes its scale. The detector folds the
  frame onto one tile (sum modulo ``TILE``), finds the shift by phase-only correlation with the sync
  bins (one FFT), and tries a small grid of scales. The same geometry holds for every frame of a
  video, so frames are accumulated before the search: a 10 s clip gives ~250× the evidence.
* Message = 32-bit payload + CRC-8 (40 bits), spread with keyed repetition over the data chips.
  ``found`` needs a sync z-score above ``Z_THRESHOLD`` *and* a valid CRC: the false-match bound is
  written down in docs/PROVENANCE.md.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

REF = 256  # reference short side: frames are compared at this scale
TILE = 128  # tile period in reference pixels
R_LO, R_HI = 2.5, 8.0  # frequency ring of the tile, in tile bins (periods TILE/R_HI..TILE/R_LO px)
PAYLOAD_BITS = 32
CRC_BITS = 8
MESSAGE_BITS = PAYLOAD_BITS + CRC_BITS
STRENGTH = 1.8  # RMS of the mark in Cb levels (plus host rejection): ~40 dB PSNR in RGB
Z_THRESHOLD = 6.5  # sync z-score needed (together with a valid CRC) to call the mark found
HIGHPASS_SIGMA = 8.0  # px; the detector removes the local mean of Cb before folding
HOST_REJECTION = 1.0  # share of the host's own in-band content cancelled at embedding
KEY = 0x7468_776D_0001  # "thwm" v1: public, so every copy of th can verify
# Candidate rescales of the normalised frame that bring the tile back to TILE px:
# 1.0 = untouched or uniformly resized; < 1 = cropped by up to ~28 % per side.
SCALES = tuple(float(s) for s in np.round(np.exp(np.arange(np.log(0.72), np.log(1.06), 0.016)), 4))
_CB = np.array([-0.168736, -0.331264, 0.5], dtype=np.float32)  # RGB -> Cb (no offset)
_CB_TO_RGB = np.array([0.0, -0.344136, 1.772], dtype=np.float32)  # dCb -> dRGB (dY = dCr = 0)


@dataclass(frozen=True)
class WatermarkResult:
    """What the detector read: ``found`` only when sync and CRC agree."""

    found: bool
    payload: str | None  # hex, PAYLOAD_BITS/4 digits, when found
    bit_accuracy: float  # share of data chips agreeing with the decoded message (0.5 = chance)
    sync_z: float  # z-score of the best sync peak (≈ N(0,1) on unmarked content)
    crc_ok: bool
    scale: float  # rescale at which the tile was found (1.0 = no crop)
    shift: tuple[int, int]  # tile offset (dy, dx) in reference pixels
    frames: int  # frames accumulated


@dataclass(frozen=True)
class _Layout:
    """The keyed frequency layout of the tile: which rfft bins carry sync and data, and their phases."""

    sync_idx: tuple[np.ndarray, np.ndarray]
    data_idx: tuple[np.ndarray, np.ndarray]
    sync_ref: np.ndarray  # complex unit phasors (N_SYNC,)
    data_ref: np.ndarray  # complex unit phasors (N_DATA,)
    chip_bit: np.ndarray  # (2*N_DATA,) message bit index carried by each data chip
    chip_sign: np.ndarray  # (2*N_DATA,) keyed ±1 scrambling per chip


@functools.lru_cache(maxsize=1)
def layout() -> _Layout:
    """Build the keyed layout once: ring bins of the rfft grid, split half sync / half data."""
    rng = np.random.default_rng(KEY)
    u = np.fft.fftfreq(TILE, 1.0 / TILE)[:, None]  # row frequency, bins
    v = np.arange(TILE // 2 + 1)[None, :]  # column frequency (rfft half plane)
    r = np.hypot(u, v)
    ring = (r >= R_LO) & (r <= R_HI) & (v > 0)  # v == 0 column is self-conjugate: skip it
    rows, cols = np.nonzero(ring)
    order = rng.permutation(rows.size)
    rows, cols = rows[order], cols[order]
    n_sync = rows.size // 2
    phases = rng.uniform(0.0, 2 * np.pi, rows.size)
    ref = np.exp(1j * phases)
    n_data = rows.size - n_sync
    chip_bit = np.resize(np.arange(MESSAGE_BITS), 2 * n_data)
    chip_bit = chip_bit[rng.permutation(chip_bit.size)]
    chip_sign = rng.choice(np.array([-1.0, 1.0]), size=2 * n_data)
    return _Layout(
        sync_idx=(rows[:n_sync], cols[:n_sync]),
        data_idx=(rows[n_sync:], cols[n_sync:]),
        sync_ref=ref[:n_sync],
        data_ref=ref[n_sync:],
        chip_bit=chip_bit,
        chip_sign=chip_sign,
    )


# --- message coding ---------------------------------------------------------------------------


def checksum(bits: np.ndarray) -> np.ndarray:
    """CRC-8 (poly 0x07, init 0xFF) of a bit array, as CRC_BITS bits (MSB first)."""
    reg = 0xFF
    for b in bits.astype(np.uint8):
        top = ((reg >> 7) & 1) ^ int(b)
        reg = ((reg << 1) & 0xFF) ^ (0x07 if top else 0)
    return np.array([(reg >> (7 - i)) & 1 for i in range(8)], dtype=np.uint8)


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


# --- embedding --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _tile(message_key: bytes) -> np.ndarray:
    """The TILE×TILE mark (unit RMS, float32) for one MESSAGE_BITS message."""
    lay = layout()
    message = np.frombuffer(message_key, dtype=np.uint8)
    chips = (2.0 * message[lay.chip_bit] - 1.0) * lay.chip_sign  # ±1 per data chip
    spec = np.zeros((TILE, TILE // 2 + 1), dtype=np.complex128)
    spec[lay.sync_idx] = lay.sync_ref
    spec[lay.data_idx] = lay.data_ref * (chips[0::2] + 1j * chips[1::2]) / np.sqrt(2.0)
    tile = np.fft.irfft2(spec, s=(TILE, TILE))
    return (tile / tile.std()).astype(np.float32)


def _ring_gain() -> np.ndarray:
    """Gain of the detector's high-pass (Gaussian, HIGHPASS_SIGMA) at every rfft bin of the tile."""
    u = np.fft.fftfreq(TILE)[:, None]
    v = np.fft.rfftfreq(TILE)[None, :]
    return 1.0 - np.exp(-2.0 * np.pi**2 * HIGHPASS_SIGMA**2 * (u**2 + v**2))


def _ref_shape(height: int, width: int) -> tuple[int, int]:
    scale = REF / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _tile_to_rgb(tile: np.ndarray, height: int, width: int) -> np.ndarray:
    """Repeat a Cb tile over the frame (reference scale), resize to the frame, map dCb -> dRGB."""
    import cv2

    rh, rw = _ref_shape(height, width)
    plane = np.tile(tile, (-(-rh // TILE), -(-rw // TILE)))[:rh, :rw]
    if (rh, rw) != (height, width):
        plane = cv2.resize(plane, (width, height), interpolation=cv2.INTER_CUBIC)
    return plane[:, :, None] * _CB_TO_RGB[None, None, :]


def _host_rejection(rgb: np.ndarray) -> np.ndarray:
    """Tile that cancels the frame's own Cb content in the sync and data bins (improved spread
    spectrum, Malvar & Florencio 2003): the detector then sees the mark, not the face."""
    lay = layout()
    spec = _fold_spectrum(_normalised_cb(rgb), 1.0)
    gain = _ring_gain()
    corr = np.zeros_like(spec)
    for idx in (lay.sync_idx, lay.data_idx):
        corr[idx] = -HOST_REJECTION * spec[idx] / gain[idx]
    return np.fft.irfft2(corr, s=(TILE, TILE)).astype(np.float32)


def embed(rgb: np.ndarray, payload_bits: np.ndarray) -> np.ndarray:
    """Return ``rgb`` (uint8 H×W×3) with the mark for ``payload_bits`` (PAYLOAD_BITS of 0/1) added."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 H×W×3, got {rgb.dtype} {rgb.shape}")
    tile = STRENGTH * _tile(_message(payload_bits).tobytes()) + _host_rejection(rgb)
    out = rgb.astype(np.float32)
    out += _tile_to_rgb(tile, rgb.shape[0], rgb.shape[1])
    np.clip(out, 0.0, 255.0, out=out)
    return np.rint(out, out=out).astype(np.uint8)


# --- detection --------------------------------------------------------------------------------


def _normalised_cb(rgb: np.ndarray) -> np.ndarray:
    """Cb plane at the reference scale, local mean removed (float32)."""
    import cv2

    cb = cv2.transform(rgb.astype(np.float32), _CB[None, :]).reshape(rgb.shape[:2])
    h, w = cb.shape
    scale = REF / min(h, w)
    if scale != 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        cb = cv2.resize(cb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return cb - cv2.GaussianBlur(cb, (0, 0), HIGHPASS_SIGMA)


class Accumulator:
    """Sums normalised Cb residuals of frames that share one geometry (the frames of one video)."""

    def __init__(self) -> None:
        self.sum: np.ndarray | None = None
        self.frames = 0

    def add(self, rgb: np.ndarray) -> None:
        self.add_residual(_normalised_cb(rgb))

    def add_residual(self, res: np.ndarray) -> None:
        if self.sum is None:
            self.sum = res.copy()
        elif res.shape == self.sum.shape:
            self.sum += res
        else:
            raise ValueError("all frames of one detection must share a size")
        self.frames += 1


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


def _chips(spec: np.ndarray, shift: tuple[int, int]) -> np.ndarray:
    """Soft data chips (phase-only) after undoing the cyclic shift, descrambled: (2*N_DATA,)."""
    lay = layout()
    rows, cols = lay.data_idx
    u = np.fft.fftfreq(TILE, 1.0 / TILE)[rows]
    phase = np.exp(2j * np.pi * (u * shift[0] + cols * shift[1]) / TILE)
    x = spec[lay.data_idx]
    d = x / np.maximum(np.abs(x), 1e-12) * phase * np.conj(lay.data_ref)
    chips = np.empty(2 * d.size)
    chips[0::2], chips[1::2] = d.real, d.imag
    return chips * lay.chip_sign


def _decode(chips: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Message bits, per-bit soft scores and chip agreement from soft chips (repetition decoding)."""
    lay = layout()
    soft = np.bincount(lay.chip_bit, weights=chips, minlength=MESSAGE_BITS)
    bits = (soft > 0).astype(np.uint8)
    agree = float(np.mean(np.sign(chips) == (2.0 * bits[lay.chip_bit] - 1.0)))
    return bits, soft, agree


def _search(acc: Accumulator) -> tuple[float, float, tuple[int, int], np.ndarray]:
    """Best (z, scale, shift, spectrum): native scale first, then the scale grid and a local refine."""
    assert acc.sum is not None
    best = (-np.inf, 1.0, (0, 0), np.zeros(0))
    spec = _fold_spectrum(acc.sum, 1.0)
    z, shift = _sync_peak(spec)
    best = (z, 1.0, shift, spec)
    if z >= Z_THRESHOLD + 1.0:  # clear at native scale: skip the search
        return best
    for s in SCALES:
        spec = _fold_spectrum(acc.sum, s)
        z, shift = _sync_peak(spec)
        if z > best[0]:
            best = (z, s, shift, spec)
    for s in best[1] * np.array([0.9925, 0.995, 0.9975, 1.0025, 1.005, 1.0075]):
        spec = _fold_spectrum(acc.sum, float(s))
        z, shift = _sync_peak(spec)
        if z > best[0]:
            best = (z, float(s), shift, spec)
    return best


SEARCH_FRAMES = 48  # frames kept (as reference-scale residuals) to find the geometry


def _decode_frames(residuals: Iterable[np.ndarray], scale: float, shift: tuple[int, int]) -> tuple[np.ndarray, int]:
    """Sum of per-frame soft chips at a known geometry (each frame votes with unit-phase chips)."""
    total = np.zeros(2 * layout().data_ref.size)
    n = 0
    for res in residuals:
        total += _chips(_fold_spectrum(res, scale), shift)
        n += 1
    return total, n


def _result(z: float, scale: float, shift: tuple[int, int], chips: np.ndarray, frames: int) -> WatermarkResult:
    bits, _, agree = _decode(chips)
    crc_ok = bool(np.array_equal(checksum(bits[:PAYLOAD_BITS]), bits[PAYLOAD_BITS:]))
    found = crc_ok and z >= Z_THRESHOLD
    return WatermarkResult(
        found=found,
        payload=bits_to_payload(bits) if found else None,
        bit_accuracy=agree,
        sync_z=z,
        crc_ok=crc_ok,
        scale=scale,
        shift=shift,
        frames=frames,
    )


def _candidates(z: float, scale: float, shift: tuple[int, int]) -> list[tuple[float, tuple[int, int]]]:
    """Geometries tried for decoding: the sync peak and its 8 neighbours (sub-pixel misses), plus the
    native geometry and its neighbours. Their count enters the false-match bound (PROVENANCE.md)."""
    out = []
    for s, (dy, dx) in ((scale, shift), (1.0, (0, 0))):
        for ey in (-1, 0, 1):
            for ex in (-1, 0, 1):
                g = (s, ((dy + ey) % TILE, (dx + ex) % TILE))
                if g not in out:
                    out.append(g)
    return out


def detect(frames: Iterable[np.ndarray]) -> WatermarkResult:
    """Vote over frames that share one geometry (a video): the first SEARCH_FRAMES are summed to find
    scale and shift, the candidate geometries are decoded on them (first CRC-valid, most confident
    wins), then every further frame votes at that geometry. Memory is bounded."""
    acc = Accumulator()
    kept: list[np.ndarray] = []
    it = iter(frames)
    for rgb in it:
        res = _normalised_cb(rgb)
        acc.add_residual(res)
        kept.append(res)
        if len(kept) >= SEARCH_FRAMES:
            break
    if acc.sum is None:
        return WatermarkResult(False, None, 0.5, 0.0, False, 1.0, (0, 0), 0)
    z, scale, shift, _ = _search(acc)
    spectra = {s: [_fold_spectrum(r, s) for r in kept] for s in {scale, 1.0}}
    best = None
    for s, sh in _candidates(z, scale, shift):
        chips = sum(_chips(sp, sh) for sp in spectra[s])
        bits, soft, _ = _decode(chips)
        ok = bool(np.array_equal(checksum(bits[:PAYLOAD_BITS]), bits[PAYLOAD_BITS:]))
        key = (ok, float(np.abs(soft).min()))
        if best is None or key > best[0]:
            best = (key, s, sh, chips)
    assert best is not None
    _, scale, shift, chips = best
    del kept, spectra
    more, m = _decode_frames((_normalised_cb(rgb) for rgb in it), scale, shift)
    return _result(z, scale, shift, chips + more, acc.frames + m)


def extract_bits(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Payload bits read from one frame and their soft scores (positive = 1), whatever the sync says."""
    acc = Accumulator()
    acc.add(rgb)
    _, _, shift, spec = _search(acc)
    bits, soft, _ = _decode(_chips(spec, shift))
    return bits[:PAYLOAD_BITS], soft[:PAYLOAD_BITS]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 images."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)
