"""The one write path: watermark + encode + sign + atomic publish; nothing left behind on failure."""

from __future__ import annotations

import numpy as np
import pytest

from provenance import keys, manifest, watermark
from provenance.manifest import GenerationFacts
from provenance.write import write_image, write_video
from synth.errors import UserError


@pytest.fixture()
def th_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(keys.PASSPHRASE_ENV, raising=False)
    return tmp_path / "home"


def _frames(n: int, size: int = 128):
    """A moving synthetic 'face' (a generator: the write path must stream)."""
    yy, xx = np.mgrid[0:size, 0:size]
    for t in range(n):
        img = np.stack([(xx + 3 * t) % 256, (yy * 2) % 256, np.full_like(xx, 120)], -1)
        yield img.astype(np.uint8)


def test_video_is_watermarked_signed_and_identity_created(th_home, tmp_path):
    dest = tmp_path / "out.mp4"
    res = write_video(_frames(20), dest, 25, GenerationFacts.current())
    assert dest.exists() and res.frames == 20
    assert (th_home / "keys" / "signer.key").exists()  # created on first use
    r = manifest.read_manifest(dest, [keys.local_root().read_bytes()])
    assert r.state == "Trusted" and r.payload == res.payload
    from synth.media.video import iter_frames

    assert watermark.detect(iter_frames(dest)).payload == res.payload
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_image_is_watermarked_and_signed(th_home, tmp_path, suffix):
    dest = tmp_path / f"out{suffix}"
    res = write_image(next(_frames(1, 256)), dest, GenerationFacts.current())
    r = manifest.read_manifest(dest, [keys.local_root().read_bytes()])
    assert r.state == "Trusted" and r.payload == res.payload
    from synth.media.video import read_image

    assert watermark.detect([read_image(dest)]).payload == res.payload


def test_refuses_to_overwrite_without_force(th_home, tmp_path):
    dest = tmp_path / "out.png"
    dest.write_bytes(b"precious")
    with pytest.raises(UserError, match="--force"):
        write_image(next(_frames(1)), dest, GenerationFacts.current())
    assert dest.read_bytes() == b"precious"
    write_image(next(_frames(1)), dest, GenerationFacts.current(), force=True)
    assert dest.read_bytes() != b"precious"


def test_signing_failure_leaves_nothing(th_home, tmp_path):
    keys.create_identity()
    ident = keys.load_identity()
    broken = keys.Identity(chain_pem=ident.chain_pem, key_pem=b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                           root_path=ident.root_path)
    for dest, call in [
        (tmp_path / "v.mp4", lambda d: write_video(_frames(5), d, 25, GenerationFacts.current(), identity=broken)),
        (tmp_path / "i.png", lambda d: write_image(next(_frames(1)), d, GenerationFacts.current(), identity=broken)),
    ]:
        with pytest.raises(UserError, match=r"C2PA (refuses to sign|signing failed).*th keys"):
            call(dest)
        assert not dest.exists()
    assert list(tmp_path.glob(".*")) == []


def test_unsafe_key_fails_before_any_output(th_home, tmp_path):
    import os

    keys.create_identity()
    os.chmod(th_home / "keys" / "signer.key", 0o644)
    with pytest.raises(UserError, match="chmod 600"):
        write_video(_frames(5), tmp_path / "v.mp4", 25, GenerationFacts.current())
    assert list(tmp_path.glob("*.mp4")) == [] and list(tmp_path.glob(".*")) == []


def test_wrong_suffix_is_refused(th_home, tmp_path):
    with pytest.raises(UserError):
        write_video(_frames(2), tmp_path / "v.gif", 25, GenerationFacts.current())
