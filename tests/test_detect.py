"""The bundled detector: it loads, separates real frames from our generator's, is deterministic, and
`th detect` reports bad input in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, shared_path

REAL_CLIP = "clips/PC-AVS__00098.mp4"  # david_beckham: a test identity (models/dev_identities.txt)
DRIVER_CLIP = "clips/SadTalker__WDA_KatieHill_000.mp4"  # katie_hill: also held out
PHOTO = "portraits/CodeFormer__067_David_Beckham_00.png"  # david_beckham's photo


@pytest.fixture(scope="module")
def detector():
    from detect.model import Detector, has_bundled_weights

    if not has_bundled_weights():
        pytest.skip("no bundled detector weights in detect/assets")
    return Detector.load()


def generator_path() -> Path:
    """The bundled default generator, else the generator the bundled detector was trained on (if here)."""
    default = ROOT / "synth" / "assets" / "th-cpu-default.safetensors"
    if default.is_file():
        return default
    card = json.loads((ROOT / "detect" / "assets" / "th-detector.card.json").read_text())
    for m in card["config"]["models"]:
        if (ROOT / m).is_file():
            return ROOT / m
    pytest.skip("no generator here: synth/assets/th-cpu-default.safetensors is not committed yet")


def clip_crops(rel: str, n: int, size: int, every: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """n canonical crops of a real clip (at ``size``, every ``every``-th frame) and their landmarks in crop pixels."""
    from synth.faces.align import align_crop, apply_affine, clip_box
    from synth.faces.detector import FaceDetector
    from synth.media.video import iter_frames

    det = FaceDetector()
    frames = list(iter_frames(shared_path(rel), every=every, max_frames=n))
    lms = [det.detect(f)[0].landmarks for f in frames]
    box = clip_box(np.stack(lms))
    crops, out_lm = [], []
    for f, lm in zip(frames, lms):
        c, M = align_crop(f, box=box, size=size)
        crops.append(c)
        out_lm.append(apply_affine(lm, M))
    return np.stack(crops), np.stack(out_lm)


def test_card_matches_bundled_weights(detector):
    card = json.loads((ROOT / "detect" / "assets" / "th-detector.card.json").read_text())
    assert card["sha256"] == detector.sha256
    assert card["timm_arch"] == detector.spec.arch and card["pretrained"] is False
    assert abs(card["threshold"] - detector.spec.threshold) < 1e-9
    assert (ROOT / "detect" / "assets" / "th-detector.safetensors").stat().st_size < 10_000_000


CNN_NOT_FLAGGING = pytest.mark.xfail(strict=False, reason=(
    "the timm CNN alone (what scores a still image) ranks the generator's frames above real ones but flags "
    "about half at its 1 % FPR threshold; videos are scored by the temporal stage (docs/DETECTOR.md)"))


@pytest.fixture(scope="module")
def beckham_scores(detector):
    """Fake probabilities of 8 real frames of a held-out person and of 8 feed-forward frames the bundled
    generator made of them, driven by another held-out person."""
    import torch

    from detect.data import generate_fakes, resize_to
    from synth.avatar.model import TalkingHeadModel

    torch.set_num_threads(1)
    net = TalkingHeadModel.load(generator_path())
    real, real_lm = clip_crops(REAL_CLIP, 8, 256)
    _, drv_lm = clip_crops(DRIVER_CLIP, 8, 256)
    fake, _ = generate_fakes(net, real, real_lm, drv_lm, k_shot=4, steps=0, seed=0)
    return (detector.probabilities(resize_to(real, detector.spec.input_size)),
            detector.probabilities(resize_to(fake, detector.spec.input_size)))


def test_ranks_generated_above_real(detector, beckham_scores):
    """What the bundled detector does today: every real frame stays under the threshold, and the
    generated frames score clearly higher than the real ones."""
    p_real, p_fake = beckham_scores
    assert p_real.max() < detector.spec.threshold, p_real
    assert np.median(p_fake) > np.median(p_real) + 0.1 and p_fake.mean() > p_real.max(), (p_real, p_fake)


@CNN_NOT_FLAGGING
def test_flags_generated_frames_at_the_threshold(detector, beckham_scores):
    p_real, p_fake = beckham_scores
    assert np.median(p_fake) > detector.spec.image_threshold >= np.median(p_real), (p_real, p_fake)


def test_scores_are_deterministic(detector):
    from detect import score_file

    clip = shared_path(REAL_CLIP)
    a = score_file(clip, detector, max_frames=32)
    b = score_file(clip, detector, max_frames=32)
    assert a.frame_scores == b.frame_scores and a.score == b.score
    assert a.unit == "window" and a.faces == 2 and a.frame_indices == [0, 146]  # 246 frames: 2 windows of 100
    assert a.score is not None and not a.synthetic


def test_save_load_round_trip(detector, tmp_path):
    from detect.model import Detector

    x = np.random.default_rng(0).integers(0, 255, (3, detector.spec.input_size, detector.spec.input_size, 3),
                                          dtype=np.uint8)
    detector.save(tmp_path / "d.safetensors")
    again = Detector.load(tmp_path / "d.safetensors")
    assert again.spec == detector.spec
    assert np.array_equal(again.probabilities(x), detector.probabilities(x))


def test_cli_json_plot_and_image(detector, th, tmp_path):
    clip = shared_path(REAL_CLIP)
    photo = shared_path(PHOTO)
    plot = tmp_path / "scores.png"
    r = th("detect", clip, photo, "--json", "--plot", plot, "--max-frames", "4", "--threads", "1")
    assert r.returncode in (0, 1), r.stderr
    data = json.loads(r.stdout)
    assert [(len(d["frame_scores"]), d["unit"]) for d in data] == [(1, "window"), (1, "frame")]
    assert all(d["score"] is not None for d in data)
    assert data[0]["threshold"] == round(detector.spec.threshold, 4)  # a video: the temporal stage
    assert data[1]["threshold"] == round(detector.spec.image_threshold, 4)  # a photo: the CNN
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_exit_code_real_footage_0(detector, th):
    """The contract scripts rely on: `th detect` exits 0 when nothing is flagged."""
    real = th("detect", shared_path(REAL_CLIP), "--max-frames", "8", "--threads", "1")
    assert real.returncode == 0 and "not flagged" in real.stdout, real.stdout + real.stderr


def test_cli_exit_code_th_output_1(detector, th, generated_motion_clips):
    """... and 1 when a file is flagged: th's default output (a held-out person's photo, the built-in talking
    motion), as written by th."""
    _, th_file = generated_motion_clips
    fake = th("detect", th_file, "--max-frames", "8", "--threads", "1")
    assert fake.returncode == 1 and "LIKELY SYNTHETIC" in fake.stdout, fake.stdout + fake.stderr


def test_th_output_after_the_re_uploaders_chain_is_still_flagged(detector, generated_motion_clips, tmp_path):
    """Issue #14's laundering: th's file cropped, halved, brightened and re-encoded (the watermark issue's chain)
    is still flagged by the detector alone."""
    from detect import score_file
    from provenance.attacks import chain_video

    _, th_file = generated_motion_clips
    r = score_file(chain_video(th_file, tmp_path / "reup.mp4", "chain"), detector)
    assert r.unit == "window" and r.synthetic, r.to_dict()


@pytest.mark.xfail(strict=False, reason=(
    "files driven by a real clip are the detector's misses: this 2 s one scores 0.87 against the threshold 0.912 "
    "(about half of th's video-driven files of unseen people are flagged: docs/DETECTOR.md)"))
def test_th_output_driven_by_a_real_clip_is_flagged(detector, generated_clips):
    from detect import score_file

    _, th_file = generated_clips
    r = score_file(th_file, detector)
    assert r.unit == "window" and r.synthetic, r.to_dict()


@pytest.mark.parametrize("case", ["missing", "text", "plot-suffix"])
def test_cli_bad_inputs_one_line(th, tmp_path, case):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video\n")
    args = {"missing": [tmp_path / "nope.mp4"], "text": [bad], "plot-suffix": [bad, "--plot", tmp_path / "p.txt"]}[case]
    r = th("detect", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("th: error:"), r.stderr


def test_library_bad_inputs(detector, tmp_path):
    import torch
    from safetensors.torch import save_file

    from detect import score_file
    from detect.model import Detector
    from synth.errors import UserError

    bad = tmp_path / "notes.png"
    bad.write_text("not an image\n")
    for path in (tmp_path, tmp_path / "nope.mp4", bad):
        with pytest.raises(UserError):
            score_file(path, detector)
    with pytest.raises(UserError, match="not a th detector"):
        Detector.load(bad)
    other = tmp_path / "other.safetensors"  # valid safetensors, but not detector weights
    save_file({"w": torch.zeros(2)}, str(other), metadata={"format": "something-else"})
    with pytest.raises(UserError, match="not th detector weights"):
        Detector.load(other)


def test_real_footage_through_the_fake_encode_path_is_not_flagged(detector):
    """The shortcut check: real crops sent through exactly the encode paths the fakes of the training data
    took (H.264 at several CRFs, the re-uploader's chain) must stay below the threshold. A detector that
    had learnt the codec or the resolution instead of the face would flag them."""
    from detect.data import chain_roundtrip, h264_roundtrip, resize_to

    real, _ = clip_crops(REAL_CLIP, 8, 256)
    for name, crops in [("h264 crf23", h264_roundtrip(real, 23)), ("h264 crf35", h264_roundtrip(real, 35)),
                        ("chain", chain_roundtrip(real))]:
        p = detector.probabilities(resize_to(crops, detector.spec.input_size))
        assert np.median(p) < detector.spec.threshold, (name, p)


@pytest.mark.parametrize("path", ["combined", "chain"])
def test_real_video_through_a_re_upload_is_not_flagged(detector, path, tmp_path):
    """The temporal stage's shortcut check: a real clip of a held-out person cropped, halved, brightened and
    re-encoded, or sent through the re-uploader's chain (what the th files it was fitted on also went through),
    is not flagged."""
    from detect import score_file
    from provenance.attacks import attack_video, chain_video

    src = shared_path(REAL_CLIP)
    out = (attack_video(src, tmp_path / "a.mp4", "combined") if path == "combined"
           else chain_video(src, tmp_path / "a.mp4", "chain"))
    r = score_file(out, detector, max_frames=32)
    assert r.unit == "window" and r.score is not None and not r.synthetic, r.to_dict()


def test_windows_in_threads_score_as_in_one(detector):
    """score_file's windows run in threads (dlib behind a lock): the same numbers as one thread, again and again."""
    from detect import score_file

    src = shared_path(REAL_CLIP)
    one = score_file(src, detector, max_frames=48, workers=1)
    assert len(one.frame_scores) >= 2 and all(s is not None for s in one.frame_scores)
    for _ in range(2):
        assert score_file(src, detector, max_frames=48, workers=2).frame_scores == one.frame_scores


def test_texture_that_moves_with_the_face_reads_as_coherent(detector):
    """What the temporal stage measures, on a real face: frame t+1 shifted by a pixel with *fresh* noise (a camera)
    against the same shift with the *same* noise carried along (one texture re-rendered). After motion
    compensation the carried texture agrees more between t and t+1 and leaves less residual."""
    import cv2

    from detect import temporal
    from synth.faces.chip import chip_details, extract_chip
    from synth.faces.detector import FaceDetector
    from synth.media.video import iter_frames

    frame = next(iter_frames(shared_path(REAL_CLIP)))
    chip = extract_chip(frame, chip_details(FaceDetector().detect(frame)[0].landmarks, temporal.CHIP, 0.25))
    rng = np.random.default_rng(0)
    noise_t, noise_fresh = rng.normal(0, 4, chip.shape), rng.normal(0, 4, chip.shape)
    shift = np.float32([[1, 0, 1.0], [0, 1, 0.5]])

    def moved(img):
        return cv2.warpAffine(img.astype(np.float32), shift, (temporal.CHIP, temporal.CHIP), borderMode=cv2.BORDER_REFLECT)

    t = np.clip(chip + noise_t, 0, 255).astype(np.uint8)
    camera = np.clip(moved(chip) + noise_fresh, 0, 255).astype(np.uint8)
    carried = np.clip(moved(chip + noise_t), 0, 255).astype(np.uint8)
    f = temporal.pair_features(np.stack([t, t]), np.stack([camera, carried]))
    col = {n: i for i, n in enumerate(temporal.FEATURES)}
    assert f.shape == (2, len(temporal.FEATURES)) and np.isfinite(f).all()
    assert f[1, col["centre_mc_corr"]] > f[0, col["centre_mc_corr"]] + 0.2, f
    assert f[1, col["centre_mc_change"]] < f[0, col["centre_mc_change"]], f
    assert 0.5 < np.exp(f[0, col["centre_flow"]]) < 2.0  # the flow found the ~1.1 px shift
    assert np.array_equal(f, temporal.pair_features(np.stack([t, t]), np.stack([camera, carried])))  # deterministic


def test_temporal_head_round_trips_and_damage_is_refused(detector, tmp_path):
    import dataclasses

    from detect import temporal
    from detect.model import Detector
    from synth.errors import UserError

    head = temporal.Head.from_dict(detector.spec.temporal)
    assert temporal.Head.from_dict(head.to_dict()) == head and set(head.columns) <= set(temporal.COLUMNS)
    rows = np.random.default_rng(0).normal(size=(16, len(head.columns)))
    assert 0.0 <= head.probability(rows) <= 1.0
    with pytest.raises(ValueError):
        temporal.Head.from_dict({**head.to_dict(), "columns": [*head.columns[:-1], "sharpness_of_dreams"]})
    with pytest.raises(ValueError):
        temporal.Head.from_dict({**head.to_dict(), "weight": head.weight[:-1]})
    # a head with a hidden layer: fitted, stored, read back; a hidden layer of the wrong shape is refused
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 2 * len(head.columns)))
    y = (x[:, 0] * x[:, 1] > 0).astype(float)  # not linearly separable
    mlp = temporal.fit_head(x, y, head.columns, 1e-3, hidden=8)
    assert len(mlp.hidden) == 8 and temporal.Head.from_dict(mlp.to_dict()) == mlp
    assert np.mean([(mlp.window_probability(v) > 0.5) == t for v, t in zip(x, y)]) > 0.9
    with pytest.raises(ValueError):
        temporal.Head.from_dict({**mlp.to_dict(), "hidden": [r[:-1] for r in mlp.hidden]})
    with pytest.raises(ValueError):
        temporal.Head.from_dict({**mlp.to_dict(), "weight": list(mlp.weight) + [0.0]})
    bad = Detector(dataclasses.replace(detector.spec, temporal={**head.to_dict(), "weight": [1.0]}), detector.net)
    bad.save(tmp_path / "bad.safetensors")
    with pytest.raises(UserError, match="damaged temporal stage"):
        Detector.load(tmp_path / "bad.safetensors")


def test_pseudo_fake_families_change_only_what_they_claim():
    """Self-blended images differ from the frame inside the face only; autoencoder reconstructions keep the
    face (close to the input) but are not the input; both are deterministic for a seed."""
    from detect import pseudo

    real, lm = clip_crops(REAL_CLIP, 4, 256)
    sbi = pseudo.self_blended(real, lm, seed=3)
    assert sbi.shape == real.shape and sbi.dtype == np.uint8
    assert np.array_equal(sbi, pseudo.self_blended(real, lm, seed=3))
    diff = np.abs(sbi.astype(int) - real.astype(int)).max(axis=3)
    x0, y0 = lm[:, :, 0].min(), lm[:, :, 1].min()
    assert diff[:, :8, :].max() == 0 and diff[:, :, :8].max() == 0  # the frame's corners are the real frame
    assert diff[:, int(y0):, int(x0):].mean() > 1.0  # the face has changed
    nets = pseudo.train_autoencoders(real, seed=0, steps=30)
    assert set(nets) == set(pseudo.AE_KINDS)
    for net in nets.values():
        rec = pseudo.reconstructed(real, net)
        assert rec.shape == real.shape and not np.array_equal(rec, real)
        assert np.abs(rec.astype(float) - real).mean() < 60  # a reconstruction, not noise


def test_onnx_scorer_equals_torch_and_needs_no_torch_once_cached(detector, th_home):
    """`th verify` and `th detect` score in ONNX Runtime: the same probabilities as the torch detector, and
    from the cached graph without importing torch or timm (their import is most of verify's start-up)."""
    import subprocess
    import sys

    from detect.model import OnnxDetector, load_scorer
    from synth.nets.engine import onnx_available

    if not onnx_available():
        pytest.skip("onnx/onnxruntime not installed")
    crops, _ = clip_crops(REAL_CLIP, 12, detector.spec.input_size)
    fast = load_scorer()  # exports, checks against torch, caches
    assert isinstance(fast, OnnxDetector) and fast.sha256 == detector.sha256 and fast.spec == detector.spec
    np.testing.assert_allclose(fast.probabilities(crops), detector.probabilities(crops), atol=1e-5)
    assert len(list((th_home / "cache" / "engine").glob("detector-*.onnx"))) == 1
    code = ("import sys; from detect.model import load_scorer, OnnxDetector; d = load_scorer(); "
            "print(type(d).__name__, 'torch' in sys.modules, 'timm' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["OnnxDetector", "False", "False"]
