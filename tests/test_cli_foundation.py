"""`th faces` and `th prepare` end to end, and every bad input: one line, non-zero exit, nothing left."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from synth.faces.tracking import LandmarkTrack
from synth.media.video import write_image
from tests.conftest import SHARED, run_th, shared_path


def one_line_error(r: subprocess.CompletedProcess, code: int = 2) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("th: error:"), r.stderr
    return lines[0]


def test_help_does_not_import_torch():
    code = "import sys; from thcli.app import app; app(['--help'], standalone_mode=False); " \
           "bad = [m for m in ('torch', 'cv2', 'dlib', 'c2pa', 'timm') if m in sys.modules]; sys.exit(1 if bad else 0)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_faces_on_image(tmp_path, astronaut):
    img = tmp_path / "astronaut.png"
    write_image(img, astronaut)
    r = run_th("faces", img, "-o", tmp_path / "prev.png")
    assert r.returncode == 0, r.stderr
    tr = LandmarkTrack.load(tmp_path / "prev.npz")
    assert len(tr) == 1 and tr.has_face.all() and tr.frame_size == (512, 512)
    # No overwrite without --force, and the existing file is untouched.
    before = (tmp_path / "prev.png").read_bytes()
    one_line_error(run_th("faces", img, "-o", tmp_path / "prev.png"))
    assert (tmp_path / "prev.png").read_bytes() == before
    assert run_th("faces", img, "-o", tmp_path / "prev.png", "--force").returncode == 0


def test_faces_on_video_writes_track_and_preview(tmp_path):
    from synth.media.video import probe

    clip = shared_path("clips/RNTHM__examples_fine_tuning_test_video_e43ca9f.mp4")
    r = run_th("faces", clip, "-o", tmp_path / "p.mp4")
    assert r.returncode == 0, r.stderr
    tr = LandmarkTrack.load(tmp_path / "p.npz")
    info = probe(tmp_path / "p.mp4")
    assert len(tr) == info.frames == 100 and tr.fps == 25 and info.has_audio
    assert tr.landmarks.dtype == np.float32 and tr.landmarks.shape == (100, 68, 2)


def test_faces_several_faces_largest_chosen_and_said(tmp_path, astronaut):
    import cv2

    small = cv2.resize(astronaut, (256, 256))
    two = np.zeros((512, 1024, 3), np.uint8)
    two[:, :512] = astronaut
    two[128:384, 600:856] = small
    img = tmp_path / "two.png"
    write_image(img, two)
    r = run_th("faces", img, "-o", tmp_path / "a.png")
    assert r.returncode == 0 and "2 faces found" in r.stderr
    big = LandmarkTrack.load(tmp_path / "a.npz").landmarks[0]
    assert big[:, 0].mean() < 512
    r = run_th("faces", img, "-o", tmp_path / "b.png", "--face-index", "1")
    assert r.returncode == 0
    assert LandmarkTrack.load(tmp_path / "b.npz").landmarks[0][:, 0].mean() > 512
    one_line_error(run_th("faces", img, "-o", tmp_path / "c.png", "--face-index", "5"))
    assert not (tmp_path / "c.png").exists()


def bad_inputs(tmp_path, astronaut):
    import cv2

    (tmp_path / "notes.txt").write_text("not media")
    (tmp_path / "fake.png").write_text("not a png")
    (tmp_path / "empty.mp4").write_bytes(b"")
    clip = shared_path("clips/RNTHM__examples_fine_tuning_test_video_e43ca9f.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(clip[: len(clip) // 50])
    (tmp_path / "garbage.mp4").write_bytes(bytes(range(256)) * 100)
    write_image(tmp_path / "blank.png", np.full((300, 300, 3), 128, np.uint8))
    write_image(tmp_path / "tiny_face.png", cv2.resize(astronaut, (48, 48)))
    return {
        "missing.png": "no such file",
        "notes.txt": "not an image or video",
        "fake.png": "not a readable image",
        "empty.mp4": "empty",
        "truncated.mp4": "not a readable video",
        "garbage.mp4": "not a readable video",
        "blank.png": "no face",
        "tiny_face.png": "no face found",
    }


def test_bad_inputs_fail_cleanly(tmp_path, astronaut):
    cases = bad_inputs(tmp_path, astronaut)
    for name, expect in cases.items():
        out = tmp_path / f"out_{name}.png" if not name.endswith(".mp4") else tmp_path / f"out_{name}"
        r = run_th("faces", tmp_path / name, "-o", out)
        line = one_line_error(r)
        assert expect.lower() in line.lower(), (name, line)
        assert not out.exists() and not out.with_suffix(".npz").exists(), name
    leftovers = [p.name for p in tmp_path.iterdir() if ".part" in p.name]
    assert not leftovers


def test_huge_image_is_refused_quickly(tmp_path):
    from PIL import Image

    big = tmp_path / "huge.png"
    Image.new("RGB", (8000, 8000), (90, 90, 90)).save(big)
    line = one_line_error(run_th("faces", big, "-o", tmp_path / "h.png"))
    assert "8000x8000" in line


def test_prepare_three_clips_then_resume(tmp_path, prepared3):
    index = json.loads((prepared3 / "index.json").read_text())
    assert index["version"] == 1 and index["size"] == 128 and len(index["clips"]) == 3
    assert len({c["identity"] for c in index["clips"]}) == 3
    from synth.train.shards import iter_shard

    for c in index["clips"]:
        (sample,) = list(iter_shard(prepared3 / c["shard"]))
        assert sample.frames.shape == (c["frames"], 128, 128, 3) and c["frames"] >= 9
        assert sample.landmarks.shape == (c["frames"], 68, 2)
        assert sample.landmarks.min() > -10 and sample.landmarks.max() < 138  # faces sit inside the crop
    mtimes = {p.name: p.stat().st_mtime_ns for p in (prepared3 / "shards").iterdir()}
    src = tmp_path / "src"
    src.mkdir()
    for c in index["clips"]:
        (src / c["clip"]).symlink_to(SHARED / "clips" / c["clip"])
    (src / "broken.mp4").write_bytes(b"\x00" * 5000)
    r = run_th("prepare", src, prepared3, "--frames", "16", "--size", "128", "--manifest", SHARED / "MANIFEST.tsv")
    assert r.returncode == 0, r.stderr
    assert "3 already done" in r.stderr and "1 skipped" in r.stderr and "broken.mp4" in r.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (prepared3 / "shards").iterdir()} == mtimes
    index2 = json.loads((prepared3 / "index.json").read_text())
    assert [s["clip"] for s in index2["skipped"]] == ["broken.mp4"]
    assert len(index2["clips"]) == 3


def test_prepare_filters_keep_hold_outs_out_of_the_index(tmp_path, prepared3):
    """--exclude-identity and --license decide what the index offers to training, also when shards of the
    filtered clips exist from an earlier run without the filters: a hold-out identity never comes back."""
    import shutil

    index = json.loads((prepared3 / "index.json").read_text())
    assert {c["identity"] for c in index["clips"]} == {"aaron_rodgers", "alexandria_ocasio_cortez", "barack_obama"}
    out = tmp_path / "prep"
    shutil.copytree(prepared3, out)  # all three shards already made
    src = tmp_path / "src"
    src.mkdir()
    for c in index["clips"]:
        (src / c["clip"]).symlink_to(SHARED / "clips" / c["clip"])
    licence = {"aaron_rodgers": "GPL-3.0", "alexandria_ocasio_cortez": "Apache-2.0", "barack_obama": "CC BY-NC 4.0"}
    manifest = tmp_path / "licences.tsv"
    manifest.write_text("file\tidentity\tlicense\n" + "".join(
        f"{c['clip']}\t{c['identity']}\t{licence[c['identity']]}\n" for c in index["clips"]))
    common = ("prepare", src, out, "--frames", "16", "--size", "128", "--manifest", manifest)
    r = run_th(*common, "--license", "Apache", "--license", "CC")  # CC matches, but NC is dropped
    assert r.returncode == 0, r.stderr
    assert "1 already done" in r.stderr and "2 filtered out" in r.stderr
    kept = json.loads((out / "index.json").read_text())
    assert [c["identity"] for c in kept["clips"]] == ["alexandria_ocasio_cortez"] and kept["identities"] == ["alexandria_ocasio_cortez"]
    (tmp_path / "holdout.txt").write_text("# evaluation hold-out\nbarack_obama\n")
    r = run_th(*common, "--exclude-identity", "aaron_rodgers", "--exclude-identity", f"@{tmp_path / 'holdout.txt'}")
    assert r.returncode == 0, r.stderr
    kept = json.loads((out / "index.json").read_text())
    assert [c["identity"] for c in kept["clips"]] == ["alexandria_ocasio_cortez"]
    assert len(list((out / "shards").glob("*.tar"))) == 3  # nothing was deleted, only not offered
    from synth.train.episodes import PreparedData

    assert len(PreparedData(out, 32)) == 1  # what meta-training sees
    r = run_th(*common, "--exclude-identity", "@" + str(tmp_path / "missing.txt"))
    assert r.returncode == 2 and "missing.txt: no such file" in r.stderr


@pytest.mark.parametrize("args, expect", [
    (["prepare", "/nonexistent/folder", "OUT"], "no such folder"),
    (["faces"], "Missing argument 'input'"),
    (["animate", "a.avatar", "talk", "-o", "OUT.mp4", "--size", "64"], "--size must be an even number ≥ 128"),
    (["verify", "x.png", "--require-trusted"], "--require-trusted needs the roots you trust"),
])
def test_usage_errors(tmp_path, args, expect):
    r = run_th(*[a.replace("OUT", str(tmp_path / "o")) for a in args])
    assert r.returncode == 2
    assert expect and expect in r.stderr, r.stderr
