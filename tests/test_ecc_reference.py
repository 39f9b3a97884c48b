"""The watermark's CRC-24 against the published CRC-24/OpenPGP reference (RFC 4880 §6.1; the CRC
catalogue's check value: CRC-24/OPENPGP of the ASCII bytes "123456789" is 0x21CF02)."""

from __future__ import annotations

import numpy as np

from provenance import ecc


def _crc_of(data: bytes) -> int:
    bits = np.unpackbits(np.frombuffer(data, np.uint8))  # MSB first, as the watermark feeds its message
    return int("".join(map(str, ecc.crc24(bits))), 2)


def test_crc24_matches_the_published_check_value():
    assert _crc_of(b"123456789") == 0x21CF02


def test_crc24_of_nothing_is_the_init_value_and_one_flipped_bit_changes_it():
    assert _crc_of(b"") == 0xB704CE  # RFC 4880: CRC24_INIT, no final xor
    assert _crc_of(b"123456788") != 0x21CF02
