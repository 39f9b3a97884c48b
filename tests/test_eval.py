"""`th eval`: metric functions on hand-made arrays, the warp baseline, frame selection, and the CLI on
two short real clips with the tiny meta-trained model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SHARED, run_th, shared_path

CLIPS = ["RNTHM__examples_fine_tuning_test_video_e43ca9f.mp4", "EDTalk__pose_source1.mp4"]


def _face_landmarks(size: int = 128) -> np.ndarray:
    """A plausible 68-point layout inside a ``size`` crop (from the built-in neutral face)."""
    rng = np.random.default_rng(0)
    lm = np.zeros((68, 2), np.float32)
    t = np.linspace(-1, 1, 17)
    lm[:17] = np.column_stack([0.5 + 0.3 * t, 0.55 + 0.25 * np.sqrt(1 - t**2)])  # jaw
    lm[17:27] = np.column_stack([np.r_[np.linspace(0.25, 0.45, 5), np.linspace(0.55, 0.75, 5)], np.full(10, 0.35)])
    lm[27:36] = np.column_stack([np.r_[np.full(4, 0.5), np.linspace(0.44, 0.56, 5)], np.r_[np.linspace(0.4, 0.55, 4), np.full(5, 0.6)]])
    ang = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    lm[36:42] = np.column_stack([0.36 + 0.05 * np.cos(ang), 0.42 + 0.02 * np.sin(ang)])
    lm[42:48] = np.column_stack([0.64 + 0.05 * np.cos(ang), 0.42 + 0.02 * np.sin(ang)])
    ang12 = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    lm[48:60] = np.column_stack([0.5 + 0.12 * np.cos(ang12), 0.72 + 0.04 * np.sin(ang12)])
    ang8 = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    lm[60:68] = np.column_stack([0.5 + 0.08 * np.cos(ang8), 0.72 + 0.015 * np.sin(ang8)])
    return ((lm + rng.normal(0, 0.002, lm.shape)) * size).astype(np.float32)


# --- metrics on hand-made arrays ------------------------------------------------------------------

def test_psnr_ssim_identical_and_different():
    from synth.eval.metrics import PSNR_CAP, psnr, ssim

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert psnr(a, a) == PSNR_CAP
    assert ssim(a, a) == pytest.approx(1.0)
    b = np.clip(a.astype(int) + 10, 0, 255).astype(np.uint8)
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 / mse))
    c = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert -1.0 <= ssim(a, c) < 0.1


def test_landmark_error_and_flicker():
    from synth.eval.metrics import flicker_ratio, frame_change, inter_ocular, landmark_error

    lm = _face_landmarks()
    assert landmark_error(lm, lm) == 0.0
    iod = inter_ocular(lm)
    assert landmark_error(lm + np.array([3.0, 4.0], np.float32), lm) == pytest.approx(5.0 / iod, rel=1e-5)
    frames = np.stack([np.full((8, 8, 3), v, np.uint8) for v in (10, 20, 40)])
    assert frame_change(frames, [(0, 1), (1, 2)]) == pytest.approx(15.0)
    static = np.repeat(frames[:1], 3, axis=0)
    assert flicker_ratio(static, frames, [(0, 1), (1, 2)]) == 0.0
    assert flicker_ratio(frames, frames, [(0, 1)]) == pytest.approx(1.0)


def test_csim_two_photos_of_one_person_vs_two_people():
    """CSIM and dlib's same-person rule on real photos: two of one person score above any two people."""
    from synth.eval.metrics import cosine, face_descriptor, same_person
    from synth.faces.detector import FaceDetector
    from synth.media.video import read_image

    det = FaceDetector()

    def descriptor(name: str) -> np.ndarray:
        rgb = read_image(shared_path(f"portraits/{name}"))
        face = max(det.detect(rgb, thorough=True), key=lambda f: f.size)
        d = face_descriptor(rgb, face.landmarks)
        assert d.shape == (128,)
        return d

    people = {"angelina_jolie": ("deepface__img1.jpg", "deepface__img11.jpg"),
              "jennifer_aniston": ("deepface__img3.jpg", "deepface__img54.jpg"),
              "jeff_bezos": ("deepface__img20.jpg", "deepface__img21.jpg")}
    d = {who: [descriptor(n) for n in names] for who, names in people.items()}
    same = [cosine(*d[who]) for who in people]
    different = [cosine(d[a][i], d[b][j]) for a in people for b in people if a < b for i in (0, 1) for j in (0, 1)]
    assert min(same) > max(different) + 0.03, (same, different)  # measured: ≥ 0.950 vs ≤ 0.864
    assert all(same_person(*d[who]) for who in people)
    assert not any(same_person(d[a][0], d[b][0]) for a in people for b in people if a < b)


def test_warp_identity_and_shift():
    from synth.faces.warp import warp_frames

    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    lm = _face_landmarks()
    same = warp_frames(img, lm, lm[None])[0]
    assert np.array_equal(same, img)
    # moving every landmark by (+2, 0) moves the face region right by 2 px
    moved = warp_frames(img, lm, (lm + np.array([2.0, 0.0], np.float32))[None])[0]
    y0, y1, x0, x1 = 50, 70, 50, 70
    assert np.abs(moved[y0:y1, x0 + 2:x1 + 2].astype(int) - img[y0:y1, x0:x1]).mean() < 2.0


def test_select_frames_and_bootstrap():
    from synth.eval.protocol import mean_ci, select_frames

    valid = np.arange(100)
    sources, drive, pairs = select_frames(valid, (1, 8), 8)
    assert len(sources[1]) == 1 and len(sources[8]) == 8 and set(sources[1]) <= set(sources[8])
    assert not set(drive) & set(sources[8])
    assert len(drive) == 8 and len(pairs) == 4
    assert all(drive[j] == drive[i] + 1 for i, j in pairs)
    st = mean_ci({"a": [1.0, 2.0], "b": [3.0], "c": [4.0, 4.0]}, 200, 0)
    assert st["mean"] == pytest.approx(2.8) and st["ci_over"] == "clips"
    assert st["ci95"][0] <= st["mean"] <= st["ci95"][1]
    assert mean_ci({"a": []}, 10, 0)["mean"] is None


# --- the CLI on real clips -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_clips(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("eval_clips") / "clips"
    src.mkdir()
    for c in CLIPS:
        (src / c).symlink_to(shared_path(f"clips/{c}"))
    shutil.copy(SHARED / "MANIFEST.tsv", src / "MANIFEST.tsv")
    return src


def test_eval_cli_report(tiny_model, two_clips, tmp_path):
    out = tmp_path / "report"
    r = run_th("eval", two_clips, "--shots", "1,2", "--steps", "2", "--frames", "4", "--model", tiny_model,
               "--compare", f"again={tiny_model}", "-o", out, "--allow-train-identities", "--threads", "2")
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "report.json").read_text())
    assert rep["config"]["model_sha256"] and rep["config"]["seed"] == 0 and "th eval" in rep["config"]["command"]
    assert {c["identity"] for c in rep["clips"]} == {"aaron_rodgers", "alexandria_ocasio_cortez"}
    assert list(rep["self"]) == ["static", "warp", "again th-FT", "th-FF", "th-FT"]
    # the same model fine-tuned with the same seed on the same frames: the comparison row repeats th-FT
    assert rep["self"]["again th-FT"]["1"]["ssim"]["mean"] == pytest.approx(rep["self"]["th-FT"]["1"]["ssim"]["mean"])
    assert rep["config"]["compare"]["again"]["sha256"] == rep["config"]["model_sha256"]
    for by_k in rep["self"].values():
        assert set(by_k) == {"1", "2"}
        for st in by_k.values():
            assert -1 <= st["ssim"]["mean"] <= 1
            assert st["psnr"]["mean"] > 0
            assert -1 <= st["csim"]["mean"] <= 1
            assert 0 <= st["no_face"]["mean"] <= 1
            assert set(st["ssim"]["per_clip"]) == {c["key"] for c in rep["clips"]}
            lo, hi = st["ssim"]["ci95"]
            assert lo <= st["ssim"]["mean"] <= hi
    assert rep["self"]["static"]["1"]["flicker"]["mean"] == 0.0
    assert rep["self"]["static"]["1"]["ssim"] == rep["self"]["static"]["2"]["ssim"]
    assert (out / "report.md").read_text().startswith("# th eval report")
    assert (out / "plot.png").stat().st_size > 0
    strips = sorted(out.glob("strip_*.png"))
    assert len(strips) == 4
    v = run_th("verify", strips[0], "--json")  # generated pixels: watermarked (readable) and signed
    assert v.returncode == 0 and json.loads(v.stdout)["verdict"] == "signed", v.stdout + v.stderr


def test_eval_refuses_train_identities(tiny_model, two_clips, tmp_path):
    model = tmp_path / "m.safetensors"
    shutil.copy(tiny_model, model)
    (tmp_path / "m.card.json").write_text(json.dumps({"id": "m", "train_identities": ["aaron_rodgers"]}))
    r = run_th("eval", two_clips, "--model", model, "-o", tmp_path / "rep")
    assert r.returncode == 2
    assert "aaron_rodgers" in r.stderr and "--allow-train-identities" in r.stderr
    assert not (tmp_path / "rep" / "report.json").exists()
    r = run_th("eval", two_clips, "--model", model, "-o", tmp_path / "rep", "--identities", "nobody")
    assert r.returncode == 2 and "nobody" in r.stderr
