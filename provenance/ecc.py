"""Error control for the watermark message (pure numpy): CRC-24 and a K=9, rate-1/2 convolutional code
(the NASA/3GPP-style generators 561, 753 octal, free distance 12) with soft-decision Viterbi decoding.

Conventions: bits are uint8 0/1; soft values are "LLR-like" floats, positive = bit 0, zero = erasure.
"""

from __future__ import annotations

import functools

import numpy as np

CRC24_POLY = 0x864CFB  # CRC-24/OpenPGP (RFC 4880)
CRC24_INIT = 0xB704CE
K = 9  # constraint length: 256 states
GENERATORS = (0o561, 0o753)  # rate 1/2, free distance 12
RATE = len(GENERATORS)
TAIL = K - 1


def crc24(bits: np.ndarray) -> np.ndarray:
    """CRC-24/OpenPGP of a bit array (MSB first), as 24 bits."""
    reg = CRC24_INIT
    for b in np.asarray(bits, dtype=np.uint8):
        top = ((reg >> 23) & 1) ^ int(b)
        reg = ((reg << 1) & 0xFFFFFF) ^ (CRC24_POLY if top else 0)
    return np.array([(reg >> (23 - i)) & 1 for i in range(24)], dtype=np.uint8)


@functools.lru_cache(maxsize=1)
def _trellis() -> tuple[np.ndarray, np.ndarray]:
    """out[state, bit] = RATE output bits (0/1) and next[state, bit] for the shift register
    reg = (bit << (K-1)) | state."""
    n = 1 << (K - 1)
    out = np.zeros((n, 2, RATE), dtype=np.uint8)
    nxt = np.zeros((n, 2), dtype=np.int64)
    for s in range(n):
        for b in (0, 1):
            reg = (b << (K - 1)) | s
            out[s, b] = [bin(reg & g).count("1") & 1 for g in GENERATORS]
            nxt[s, b] = reg >> 1
    return out, nxt


def conv_encode(bits: np.ndarray) -> np.ndarray:
    """Encode ``bits`` followed by K-1 zero tail bits: RATE*(len+K-1) coded bits."""
    out, nxt = _trellis()
    s = 0
    coded = []
    for b in list(np.asarray(bits, dtype=np.uint8)) + [0] * TAIL:
        coded.append(out[s, int(b)])
        s = int(nxt[s, int(b)])
    return np.concatenate(coded).astype(np.uint8)


def viterbi(soft: np.ndarray, n_bits: int) -> tuple[np.ndarray, float]:
    """Soft-decision ML decoding of a zero-terminated code word: (bits, path metric).

    ``soft`` has RATE*(n_bits+K-1) values, positive = 0."""
    bits, metric = viterbi_batch(np.asarray(soft)[None], n_bits)
    return bits[0], float(metric[0])


def viterbi_batch(soft: np.ndarray, n_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """``viterbi`` of C code words at once (one trellis pass): soft (C, RATE*(n_bits+K-1)) → bits
    (C, n_bits) uint8 and path metrics (C,)."""
    out, _ = _trellis()
    n = 1 << (K - 1)
    sign = 1.0 - 2.0 * out.astype(np.float64)  # (n, 2, RATE): +1 for a 0 output
    soft = np.asarray(soft, dtype=np.float64).reshape(len(soft), n_bits + TAIL, RATE)
    c = len(soft)
    metric = np.full((c, n), -np.inf)
    metric[:, 0] = 0.0
    # predecessors of next state ns: bit b = ns >> (K-2), states p0 = (ns & mask) << 1 and p0 | 1
    ns = np.arange(n)
    b = ns >> (K - 2)
    p0 = (ns & ((1 << (K - 2)) - 1)) << 1
    p1 = p0 | 1
    s0, s1 = sign[p0, b], sign[p1, b]  # (n, RATE): the branch into ns from p0 / p1
    choices = np.zeros((n_bits + TAIL, c, n), dtype=bool)
    for t in range(n_bits + TAIL):
        m0 = metric[:, p0] + soft[:, t] @ s0.T
        m1 = metric[:, p1] + soft[:, t] @ s1.T
        pick = m1 > m0
        choices[t] = pick
        metric = np.where(pick, m1, m0)
        if t >= n_bits:  # tail: only 0 inputs allowed
            metric[:, b == 1] = -np.inf
    state = np.zeros(c, dtype=np.int64)
    bits = np.zeros((c, n_bits + TAIL), dtype=np.uint8)
    best = metric[:, 0].copy()
    rows = np.arange(c)
    for t in range(n_bits + TAIL - 1, -1, -1):
        bits[:, t] = state >> (K - 2)
        state = ((state & ((1 << (K - 2)) - 1)) << 1) | choices[t, rows, state]
    return bits[:, :n_bits], best
