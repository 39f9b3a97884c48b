"""Watermark: exact round trip, PSNR, robustness to everyday edits and to the re-uploader's chain, silence on
real video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from provenance import attacks
from provenance import watermark as wm
from tests.conftest import run_th, shared_path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CLIP = DATA / "clips" / "EDTalk__pose_source1.mp4"  # 256x256, 10 s, 25 fps
needs_data = pytest.mark.skipif(not CLIP.exists(), reason=f"shared data not found at {DATA}")
PSNR_MIN = 38.0  # every frame


def _real_frames(n: int) -> list[np.ndarray]:
    from synth.media.video import iter_frames

    return list(iter_frames(CLIP, max_frames=n))


def test_payload_coding_round_trip():
    p = wm.new_payload()
    assert len(p) == wm.PAYLOAD_BITS // 4
    assert wm.bits_to_payload(wm.payload_to_bits(p)) == p
    assert wm.MESSAGE_BITS == wm.PAYLOAD_BITS + wm.CRC_BITS == 56
    assert wm.N_CODED <= wm.N_FEATURES


def test_flat_frame_round_trip_exact():
    gray = np.full((256, 256, 3), 128, np.uint8)
    bits = wm.payload_to_bits("c0ffee42")
    r = wm.detect([wm.embed(gray, bits)])
    assert r.found and r.payload == "c0ffee42" and r.bit_accuracy == 1.0 and r.shift == (0, 0)
    got, soft = wm.extract_bits(wm.embed(gray, bits))
    assert np.array_equal(got, bits) and soft.shape == (wm.PAYLOAD_BITS,)


def test_mark_is_luma_only_and_brightness_blind():
    """Zero-mean luma patterns: chroma untouched, and a brightness offset does not move a feature."""
    import cv2

    rng = np.random.default_rng(3)
    base = (rng.integers(60, 190, (256, 256, 3))).astype(np.uint8)
    marked = wm.embed(base, wm.payload_to_bits("12345678"), frame_index=5)
    d = marked.astype(int) - base.astype(int)
    assert np.abs(d[..., 0] - d[..., 1]).max() <= 1 and np.abs(d[..., 0] - d[..., 2]).max() <= 1
    y = cv2.cvtColor(marked, cv2.COLOR_RGB2GRAY).astype(np.float32)
    f0, _ = wm._features_at(y, (0, 0))
    f1, _ = wm._features_at(y + 17.0, (0, 0))
    assert np.allclose(f0, f1, atol=1e-3)


@needs_data
def test_real_frames_psnr_and_round_trip():
    frames = _real_frames(25)
    bits = wm.payload_to_bits("deadbeef")
    marked = [wm.embed(f, bits, frame_index=i) for i, f in enumerate(frames)]
    assert min(wm.psnr(a, b) for a, b in zip(frames, marked)) >= PSNR_MIN  # every frame, not the mean
    r = wm.detect(marked)
    assert r.found and r.payload == "deadbeef"
    assert not wm.detect(frames).found


@pytest.mark.parametrize("shape", [(70, 90), (255, 340), (513, 511), (720, 1280)])
def test_odd_sizes_round_trip(shape):
    rng = np.random.default_rng(0)
    base = np.full(shape + (3,), 120, np.uint8) + rng.integers(0, 20, shape + (3,), dtype=np.uint8)
    marked = wm.embed(base, wm.payload_to_bits("0badf00d"), frame_index=0)
    assert wm.psnr(base, marked) >= PSNR_MIN and wm.detect([marked]).payload == "0badf00d"
    assert wm.embed(np.zeros((3, 5, 3), np.uint8), wm.payload_to_bits("0badf00d")).shape == (3, 5, 3)


@needs_data
def test_jpeg75_single_image():
    bits = wm.payload_to_bits("12345678")
    r = wm.detect([attacks.jpeg(wm.embed(_real_frames(1)[0], bits), 75)])
    assert r.found and r.payload == "12345678"


@needs_data
def test_512_output_is_read_at_any_size():
    import cv2

    frame = cv2.resize(_real_frames(1)[0], (512, 512), interpolation=cv2.INTER_CUBIC)
    bits = wm.payload_to_bits("a5a5a5a5")
    marked = wm.embed(frame, bits)
    assert wm.detect([marked]).payload == "a5a5a5a5"
    assert wm.detect([attacks.resize(marked, 0.5)]).payload == "a5a5a5a5"


@needs_data
def test_still_through_the_chain():
    """Crop 90 %, ½, brightness +20, JPEG 75 on a marked still: the lattice search finds it."""
    bits = wm.payload_to_bits("feedf00d")
    r = wm.detect([attacks.chain_image(wm.embed(_real_frames(1)[0], bits))])
    assert r.found and r.payload == "feedf00d", r


def test_ecc_round_trip_with_noise_and_erasures():
    from provenance import ecc

    rng = np.random.default_rng(1)
    msg = rng.integers(0, 2, 56).astype(np.uint8)
    code = ecc.conv_encode(msg)
    assert code.size == wm.N_CODED
    soft = (1.0 - 2.0 * code) + rng.normal(0, 0.6, code.size)
    soft[rng.permutation(code.size)[:16]] = 0.0  # a cropped-away share of features
    assert np.array_equal(ecc.viterbi(soft, 56)[0], msg)


def test_batched_viterbi_is_the_single_decoder():
    from provenance import ecc

    rng = np.random.default_rng(2)
    msgs = rng.integers(0, 2, (40, 56)).astype(np.uint8)
    soft = np.stack([1.0 - 2.0 * ecc.conv_encode(m) for m in msgs]) + rng.normal(0, 1.1, (40, wm.N_CODED))
    bits, metrics = ecc.viterbi_batch(soft, 56)
    for i in range(40):
        b, m = ecc.viterbi(soft[i], 56)
        assert np.array_equal(bits[i], b) and metrics[i] == pytest.approx(m)
    assert 0 < np.mean(np.all(bits == msgs, axis=1)) < 1  # the noise makes some words fail, not all


@needs_data
def test_search_checks_at_most_16_distinct_words_on_unmarked_video(tmp_path, monkeypatch):
    """The false-match bound (≤ N_CRC_TESTS · 2⁻²⁴ per file) counts CRC-checked words: on an unmarked video
    through the chain (the full geometry and gain search runs) at most N_CRC_TESTS distinct words are checked."""
    from synth.media.video import VideoWriter, iter_frames

    src = tmp_path / "real.mp4"
    with VideoWriter(src, 25, (256, 256)) as w:
        for f in _real_frames(60):
            w.write(f)
    out = attacks.chain_video(src, tmp_path / "real.chain.mp4", "chain")
    words: list[bytes] = []
    checksum = wm.checksum
    monkeypatch.setattr(wm, "checksum", lambda bits: (words.append(np.asarray(bits).tobytes()), checksum(bits))[1])
    r = wm.detect(iter_frames(out))
    assert not r.found
    assert len(words) == len(set(words)) == wm.N_CRC_TESTS  # the search ran to its budget, no word twice


@pytest.fixture(scope="module")
def marked_clip(tmp_path_factory):
    from synth.media.video import VideoWriter

    path = tmp_path_factory.mktemp("wm") / "marked.mp4"
    bits = wm.payload_to_bits("5eed1e55")
    with VideoWriter(path, 25, (256, 256)) as w:
        for i, f in enumerate(_real_frames(250)):
            w.write(wm.embed(f, bits, frame_index=i))
    return path


@needs_data
@pytest.mark.parametrize("attack", ["crf23", "crf28", "half", "crop90", "crop90corner", "bright+20", "bright-20",
                                    "combined"])
def test_video_attacks_10s(marked_clip, tmp_path, attack):
    from synth.media.video import iter_frames

    out = attacks.attack_video(marked_clip, tmp_path / f"{attack}.mp4", attack)
    r = wm.detect(iter_frames(out))
    assert r.found and r.payload == "5eed1e55", r


# --- the re-uploader's chain on real th outputs (issue #13) -------------------------------------------------

TH_OUTPUTS = [("LIA__macron.png", "talk"), ("EAMM__jake4.png", "nod"), ("LivePortrait__s1.jpg", "turn")]


@pytest.fixture(scope="module")
def th_outputs(tmp_path_factory):
    """Three outputs of `th animate` (bundled model, one-shot, feed-forward): different people, motions."""
    d = tmp_path_factory.mktemp("th_out")
    env = {"TH_HOME": str(d / "home")}
    outs = []
    for photo, motion in TH_OUTPUTS:
        out = d / f"{Path(photo).stem}.{motion}.mp4"
        r = run_th("animate", shared_path(f"portraits/{photo}"), motion, "-o", out, "--seconds", "3",
                   "--steps", "0", "--consent", "test", env=env)
        assert r.returncode == 0, r.stderr
        outs.append(out)
    return outs


_STRONG = pytest.mark.xfail(reason="crop 80 % + ⅓ + CRF 32 (68 px): below the design's reach, docs/PROVENANCE.md")
_BRIGHT_BG = pytest.mark.xfail(reason=(
    "3 s (75 frames) of jake4 with a near-white background, saturated by +0.08 brightness: at the true geometry "
    "and the best of every gain the chained 114 px file agrees with its code word on 0.81-0.88 of the coded bits, "
    "too few for the CRC (the same person in bench/bench_chain.py, 4 s: read; docs/PROVENANCE.md)"))


@pytest.mark.parametrize(("chain", "which"), [
    ("chain", 0), pytest.param("chain", 1, marks=_BRIGHT_BG), ("chain", 2),
    *(pytest.param("chain-strong", i, marks=_STRONG) for i in range(len(TH_OUTPUTS)))])
def test_reuploaded_th_output_is_stripped_with_its_payload(th_outputs, tmp_path, monkeypatch, chain, which):
    from provenance import verify

    src = th_outputs[which]
    monkeypatch.setenv("TH_HOME", str(src.parent / "home"))  # the signer's own trust anchor: "signed", trusted
    signed = verify.verify_file(src)
    assert signed.verdict == "signed"
    out = attacks.chain_video(src, tmp_path / f"{src.stem}.{chain}.mp4", chain)
    rep = verify.verify_file(out)
    assert rep.verdict == "stripped" and rep.mark.payload == signed.mark.payload, rep.mark
