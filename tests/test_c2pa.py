"""C2PA: signed files read back Trusted with the local root, Valid without, Invalid when modified."""

from __future__ import annotations

import numpy as np
import pytest

from provenance import keys, manifest
from provenance.manifest import DIGITAL_SOURCE_TYPE, GenerationFacts


@pytest.fixture()
def signed_png(tmp_path, monkeypatch):
    import cv2

    monkeypatch.setenv("TH_HOME", str(tmp_path / "home"))
    ident = keys.ensure_identity()
    src, dest = tmp_path / "raw.png", tmp_path / "signed.png"
    cv2.imwrite(str(src), np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    facts = GenerationFacts(th_version="9.9", model_card_id="th-cpu-v1", model_sha256="ab" * 32,
                            avatar_id="alice", consent_statement="I agree", driver_sha256="cd" * 32)
    manifest.sign_file(src, dest, manifest.manifest_definition(facts, "0badf00d", "signed.png"), ident, "image/png")
    return dest


def test_trusted_with_local_root_and_claims(signed_png):
    r = manifest.read_manifest(signed_png, [keys.local_root().read_bytes()])
    assert r.state == "Trusted" and r.payload == "0badf00d"
    c = r.claims
    assert c["digital_source_type"] == DIGITAL_SOURCE_TYPE
    assert c["actions"] == ["c2pa.created", "c2pa.watermarked"]
    assert c["software_agent"] == {"name": "th", "version": "9.9"}
    assert c["th"]["avatar_id"] == "alice" and c["th"]["consent_statement"] == "I agree"
    assert set(c["training_mining"].values()) == {"notAllowed"}
    assert c["soft_binding"]["blocks"][0]["value"] == "0badf00d"


def test_valid_but_untrusted_without_root(signed_png):
    assert manifest.read_manifest(signed_png, []).state == "Valid"


def test_flipped_byte_is_invalid(signed_png):
    data = bytearray(signed_png.read_bytes())
    data[-40] ^= 0x01  # inside the image data (IEND is the last 12 bytes)
    signed_png.write_bytes(bytes(data))
    assert manifest.read_manifest(signed_png, [keys.local_root().read_bytes()]).state == "Invalid"


def test_unsigned_file_is_absent(tmp_path):
    import cv2

    p = tmp_path / "plain.png"
    cv2.imwrite(str(p), np.zeros((8, 8, 3), np.uint8))
    assert manifest.read_manifest(p, []).state == "absent"
