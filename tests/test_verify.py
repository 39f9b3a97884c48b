"""th verify: verdicts and exit codes for signed, tampered, stripped, real and broken files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detect import verify_evidence
from provenance import attacks, verify
from provenance.manifest import GenerationFacts
from provenance.write import write_image, write_video

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CLIPS = DATA / "clips"
needs_data = pytest.mark.skipif(not CLIPS.is_dir(), reason=f"shared data not found at {DATA}")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """TH_HOME for module-scoped fixtures (conftest gives each test its own home, so tests that verify the
    module's signed file pass its root with --trust, as a third party would)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TH_HOME", str(tmp_path_factory.mktemp("home")))
        yield


@pytest.fixture(scope="module")
def signed_mp4(home, tmp_path_factory):
    from provenance import keys
    from synth.media.video import iter_frames

    dest = tmp_path_factory.mktemp("out") / "signed.mp4"
    write_video(iter_frames(CLIPS / "EDTalk__pose_source1.mp4", max_frames=250), dest, 25, GenerationFacts.current())
    return dest, keys.local_root()


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from thcli.app import main

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.argv", ["th", "verify", *argv])
        with pytest.raises(SystemExit) as e:
            main()
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


@needs_data
def test_signed_is_trusted_exit_0(signed_mp4, capsys):
    path, root = signed_mp4
    code, out, _ = _cli([str(path), "--json", "--trust", str(root)], capsys)
    d = json.loads(out)
    assert code == 0 and d["verdict"] == "signed" and d["c2pa"]["state"] == "Trusted", d["c2pa"]
    assert d["watermark"]["found"] and d["watermark"]["matches_manifest"] is True
    assert d["watermark"]["payload"] == d["c2pa"]["claims"]["watermark_payload"]
    assert d["detector"] is None or d["detector"]["synthetic"] is False  # real footage, signed: not flagged


@needs_data
def test_flipped_byte_is_tampered_exit_4(signed_mp4, tmp_path, capsys):
    path, root = signed_mp4
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "flipped.mp4"
    bad.write_bytes(bytes(data))
    code, out, _ = _cli([str(bad), "--json"], capsys)
    assert code == 4 and json.loads(out)["c2pa"]["state"] == "Invalid"


@needs_data
@pytest.mark.parametrize("attack", ["crf23", "crf28", "half", "crop90"])
def test_reencoded_is_stripped_with_payload(signed_mp4, tmp_path, capsys, attack):
    path, _ = signed_mp4
    out_path = attacks.attack_video(path, tmp_path / f"{attack}.mp4", attack)
    code, out, _ = _cli([str(out_path), "--json"], capsys)
    d = json.loads(out)
    assert d["c2pa"]["state"] == "absent"
    signed = verify.verify_file(path)
    assert code == 3 and d["verdict"] == "stripped" and d["watermark"]["payload"] == signed.mark.payload


@needs_data
def test_signed_image_and_table_output(home, tmp_path, capsys):
    from synth.media.video import read_image

    portrait = next(iter(sorted((DATA / "portraits").glob("*.png"))), None) if (DATA / "portraits").is_dir() else None
    rgb = read_image(portrait)[:256, :256].copy() if portrait else np.full((256, 256, 3), 90, np.uint8)
    dest = tmp_path / "still.png"
    write_image(rgb, dest, GenerationFacts.current())
    code, out, _ = _cli([str(dest)], capsys)
    assert code == 0 and "signed" in out


REAL_CLIP_PARTS = 4  # every real clip, in parts the test workers share (`make test` runs pytest -n 2)


@needs_data
@pytest.mark.parametrize("part", range(REAL_CLIP_PARTS))
def test_every_real_clip_is_no_evidence(home, part):
    """No watermark is read off any real clip of the share (the watermark's false match); the detector's false
    positives are the next test's (held-out identities) and scripts/detect_temporal.py score's (every clip)."""
    clips = sorted(p for p in CLIPS.iterdir() if p.suffix.lower() in (".mp4", ".mov", ".mpg"))
    assert len(clips) >= 100
    verdicts = {c.name: verify.verify_file(c, max_frames=8).verdict for c in clips[part::REAL_CLIP_PARTS]}
    assert {v for v in verdicts.values()} == {"no-evidence"}, {k: v for k, v in verdicts.items() if v != "no-evidence"}


@needs_data
def test_held_out_real_clips_are_not_flagged_by_the_detector(home):
    """The detector on every real clip of the held-out identities (models/dev_identities.txt: never in its data),
    as `th verify` runs it: no-evidence, not likely-synthetic."""
    dev = {s.strip() for s in (Path(__file__).parents[1] / "models" / "dev_identities.txt").read_text().splitlines()
           if s.strip() and not s.startswith("#")}
    rows = [r.split("\t") for r in (DATA / "MANIFEST.tsv").read_text().splitlines()[1:]]
    clips = [DATA / r[0] for r in rows if r[1] == "clip" and r[2] in dev]
    assert len(clips) >= 10
    reports = {c.name: verify.verify_file(c, max_frames=16, detector=verify_evidence) for c in clips}
    assert all(r.detector is not None for r in reports.values())
    assert {r.verdict for r in reports.values()} == {"no-evidence"}, {k: r.detector["score"] for k, r in reports.items()}


@needs_data
def test_several_files_exit_with_the_worst(signed_mp4, tmp_path, capsys):
    path, root = signed_mp4
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "flipped.mp4"
    bad.write_bytes(bytes(data))
    code, out, _ = _cli([str(path), str(bad), "--json", "--trust", str(root)], capsys)
    assert code == 4 and [d["verdict"] for d in json.loads(out)] == ["signed", "tampered"]


@pytest.mark.parametrize("content", [b"hello, I am text\n", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 40])
def test_unreadable_inputs_exit_2_one_line(home, tmp_path, capsys, content):
    p = tmp_path / "broken.mp4"
    p.write_bytes(content)
    code, _, err = _cli([str(p)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("th: error:")


def test_missing_file_exit_2(home, tmp_path, capsys):
    code, _, err = _cli([str(tmp_path / "nope.mp4")], capsys)
    assert code == 2 and "no such file" in err


# --- verdicts that cannot be fooled (issue #18) ---------------------------------------------------------

def _still(seed: int = 0) -> np.ndarray:
    """A 256 px crop of a real photo (texture for the watermark; no shared data needed)."""
    from skimage import data

    return data.astronaut()[40 + seed:296 + seed, 150:406].copy()


def _signed_png(dest: Path, home: Path | None = None) -> Path:
    """A th-signed PNG; with ``home``, signed by the identity of that other $TH_HOME (untrusted here)."""
    with pytest.MonkeyPatch.context() as mp:
        if home is not None:
            mp.setenv("TH_HOME", str(home))
        write_image(_still(), dest, GenerationFacts.current())
    return dest


def test_untrusted_signer_is_signed_untrusted_exit_7(tmp_path, capsys):
    from provenance import keys

    png = _signed_png(tmp_path / "theirs.png", home=tmp_path / "their_home")
    code, out, _ = _cli([str(png), "--json"], capsys)
    d = json.loads(out)
    assert code == 7 and d["verdict"] == "signed-untrusted" and d["c2pa"]["state"] == "Valid", d
    assert "not trusted" in d["verdict_text"] and d["watermark"]["matches_manifest"] is True
    code, out, _ = _cli([str(png), "--trust", str(tmp_path / "their_home" / "keys" / "root.pem")], capsys)
    assert code == 0 and "signed-untrusted" not in out and "signer trusted" in out
    keys.ensure_identity()  # a local identity of our own changes nothing: their signer is still not ours
    assert _cli([str(png)], capsys)[0] == 7


def test_require_trusted_trusts_only_the_named_roots(tmp_path, capsys):
    from provenance import keys

    png = _signed_png(tmp_path / "mine.png")  # signed by this machine's own local identity
    assert _cli([str(png)], capsys)[0] == 0  # this machine's root is trusted by default
    code, _, err = _cli([str(png), "--require-trusted"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--trust ROOT.pem" in err
    other = tmp_path / "other_home"
    _signed_png(tmp_path / "other.png", home=other)
    code, out, _ = _cli([str(png), "--json", "--require-trusted", "--trust", str(other / "keys" / "root.pem")], capsys)
    assert code == 7 and json.loads(out)["verdict"] == "signed-untrusted"  # our own root is not implied
    assert _cli([str(png), "--require-trusted", "--trust", str(keys.local_root())], capsys)[0] == 0


def test_signed_file_without_watermark_is_not_consistent_exit_8(tmp_path, capsys):
    import cv2

    from provenance import keys, manifest

    raw, dest = tmp_path / "raw.png", tmp_path / "unmarked.png"
    cv2.imwrite(str(raw), cv2.cvtColor(_still(), cv2.COLOR_RGB2BGR))  # never watermarked
    definition = manifest.manifest_definition(GenerationFacts.current(), "0badf00d", dest.name)
    manifest.sign_file(raw, dest, definition, keys.ensure_identity(), "image/png")
    code, out, _ = _cli([str(dest), "--json"], capsys)
    d = json.loads(out)
    assert code == 8 and d["verdict"] == "signed-no-watermark" and d["c2pa"]["state"] == "Trusted", d
    assert d["watermark"]["found"] is False and d["watermark"]["expected"] == "0badf00d"
    assert "no th watermark" in d["verdict_text"] and "consistent" not in d["verdict_text"]
    code, out, _ = _cli([str(dest)], capsys)
    assert code == 8 and "consistent" not in out and "no th watermark" in out


def test_one_unreadable_file_among_several_is_reported_and_the_rest_verified(tmp_path, capsys):
    import cv2

    from provenance import keys, manifest
    from provenance import watermark as wm

    good = _signed_png(tmp_path / "good.png")
    raw, bad = tmp_path / "raw.png", tmp_path / "bad.png"  # watermark says 12345678, the manifest 0badf00d
    cv2.imwrite(str(raw), cv2.cvtColor(wm.embed(_still(), wm.payload_to_bits("12345678")), cv2.COLOR_RGB2BGR))
    definition = manifest.manifest_definition(GenerationFacts.current(), "0badf00d", bad.name)
    manifest.sign_file(raw, bad, definition, keys.ensure_identity(), "image/png")
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video\n")
    code, out, err = _cli([str(good), str(broken), str(bad), "--json"], capsys)
    rows = json.loads(out)
    assert [r["verdict"] for r in rows] == ["signed", "tampered", "unreadable"] and code == 4  # tampered is worst
    assert rows[2]["file"] == str(broken) and rows[2]["exit_code"] == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("th: error:") and "broken.mp4" in lines[0]
    code, out, err = _cli([str(good), str(broken)], capsys)
    assert code == 2 and "good.png" in out and "signed" in out and "broken.mp4" in err  # unreadable > signed


@needs_data
def test_real_footage_is_no_evidence_exit_5_through_the_cli(capsys):
    code, out, _ = _cli([str(CLIPS / "EDTalk__pose_source1.mp4"), "--json", "--max-frames", "16"], capsys)
    d = json.loads(out)
    assert code == 5 and d["verdict"] == "no-evidence" and d["c2pa"]["state"] == "absent", d
    assert d["detector"] is None or d["detector"]["synthetic"] is False


def test_unmarked_generated_video_is_likely_synthetic_exit_6_through_the_cli(generated_motion_clips, capsys):
    """th's default output (a photo, the built-in talking motion) without watermark or manifest, as another tool
    could write it: the detector's evidence alone makes it likely-synthetic."""
    raw, _ = generated_motion_clips
    code, out, _ = _cli([str(raw), "--json"], capsys)
    d = json.loads(out)
    assert d["c2pa"]["state"] == "absent" and not d["watermark"]["found"]
    if d["detector"] is None:
        pytest.skip("no bundled detector weights")
    assert code == 6 and d["verdict"] == "likely-synthetic" and d["detector"]["synthetic"], d


def test_detector_evidence_above_its_threshold_is_likely_synthetic(generated_clips, tmp_path):
    """The verdict path with the real network: the bundled detector's weights with a threshold set just
    under this file's own score flag it, and an unsigned, unmarked file becomes likely-synthetic (exit 6)."""
    from dataclasses import replace

    from detect.model import Detector, has_bundled_weights
    from detect.score import score_file
    from provenance import verify

    if not has_bundled_weights():
        pytest.skip("no bundled detector weights")
    raw, _ = generated_clips
    det = Detector.load()
    score = score_file(raw, det, max_frames=16).score
    strict = Detector(replace(det.spec, threshold=score - 1e-6), det.net, det.sha256)
    rep = verify.verify_file(raw, detector=lambda p, n: score_file(p, strict, max_frames=n).to_dict())
    assert rep.verdict == "likely-synthetic" and verify.EXIT_CODES["likely-synthetic"] == 6, rep.to_dict()
    lenient = Detector(replace(det.spec, threshold=score + 1e-6), det.net, det.sha256)
    rep = verify.verify_file(raw, detector=lambda p, n: score_file(p, lenient, max_frames=n).to_dict())
    assert rep.verdict == "no-evidence"
