"""Fault injection with real processes: killed (SIGKILL), disk full, file-size limit, read-only or vanished
destination, broken signing identities, two writers at once, killed trainings. After each fault nothing
partial or unsigned is left beside the user's files, and the rerun is clean (docs/FAULTS.md)."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synth.media.video import probe, write_image
from tests.conftest import SHARED, run_th, shared_path

SMALL = ("--size", "128", "--fps", "10")  # the tiny model renders 32 px: fast enough to race with a kill


def th_popen(*args, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "thcli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "TH_THREADS": "1", **(env or {})},
                            **kw)


def wait_for(cond, timeout: float = 90, what: str = "") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or cond}")


def anonymous_bytes(pid: int) -> int:
    """Bytes in the nameless (O_TMPFILE) files process ``pid`` holds open: its unsigned encode in progress."""
    total = 0
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if "/#" in os.readlink(f"/proc/{pid}/fd/{fd}"):  # "/folder/#<inode> (deleted)"
                    total += os.stat(f"/proc/{pid}/fd/{fd}").st_size
    return total


def children(pid: int) -> list[int]:
    out = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out += [int(x) for x in fh.read().split()]
    return out


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1].split()[0] == "Z"  # a zombie has exited
    except OSError:
        return True


def kill9(p: subprocess.Popen) -> list[int]:
    """SIGKILL the th process by its PID (as a user would); wait for the children it leaves behind."""
    kids = children(p.pid)
    os.kill(p.pid, signal.SIGKILL)
    p.communicate(timeout=30)
    wait_for(lambda: all(gone(k) for k in kids), 60, "the killed process's children to exit")
    return kids


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def one_line(r, code: int) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("th: error:"), r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def avatar(tmp_path_factory, tiny_model, astronaut) -> Path:
    d = tmp_path_factory.mktemp("fault_avatar")
    write_image(d / "astronaut.png", astronaut)
    r = run_th("enroll", d / "astronaut.png", "-o", d / "a.avatar", "--steps", "0", "--model", tiny_model)
    assert r.returncode == 0, r.stderr
    return d / "a.avatar"


def animate(avatar: Path, model: Path, out: Path, seconds: float = 1, *extra, **kw):
    return run_th("animate", avatar, "talk", "-o", out, "--model", model, "--seconds", str(seconds), *SMALL,
                  *extra, **kw)


# --- killed --------------------------------------------------------------------------------------------

def test_sigkill_during_animate_leaves_nothing_and_the_rerun_is_clean(tmp_path, th_home, tiny_model, avatar):
    out = tmp_path / "out"
    out.mkdir()
    p = th_popen("animate", avatar, "talk", "-o", out / "long.mp4", "--model", tiny_model, "--seconds", "600", *SMALL)
    wait_for(lambda: anonymous_bytes(p.pid) > 0 or p.poll() is not None, what="the encode to start")
    assert p.poll() is None, p.communicate()
    assert files_under(out) == []  # while it runs, the unsigned encode has no name anywhere
    kill9(p)
    assert list(out.iterdir()) == []  # nothing beside the user's files, hidden or not
    work = th_home / "work"
    assert [f for f in files_under(work) if not f.endswith(".lock")] == []  # no unsigned media survived
    (lock,) = work.glob("*.lock")  # the dead writer's lock, holding its PID, is all that is left
    assert lock.read_text().strip() == str(p.pid)
    r = animate(avatar, tiny_model, out / "long.mp4")
    assert r.returncode == 0, r.stderr
    assert [x.name for x in out.iterdir()] == ["long.mp4"] and probe(out / "long.mp4").frames == 10
    assert not work.exists()  # the rerun swept the dead writer's session, then removed its own


def test_sigkill_leaves_a_named_intermediate_in_the_work_folder_and_the_next_run_removes_it(tmp_path, th_home):
    """`th faces` encodes its preview (a real video, not generated) under a name in th's work folder: kill it
    mid-encode, and the next th command that writes there removes it and says so in one line."""
    clip = shared_path("clips/RNTHM__examples_fine_tuning_test_video_e43ca9f.mp4")
    work = th_home / "work"
    p = th_popen("faces", clip, "-o", tmp_path / "prev.mp4")
    wait_for(lambda: any(f.stat().st_size > 0 for f in work.rglob("*.part.mp4")) or p.poll() is not None,
             what="the preview encode")
    assert p.poll() is None, p.communicate()
    kill9(p)
    assert list(tmp_path.iterdir()) == []
    left = [f for f in files_under(work) if f.endswith(".part.mp4")]
    assert len(left) == 1
    r = run_th("faces", clip, "-o", tmp_path / "prev.mp4")
    assert r.returncode == 0, r.stderr
    notes = [ln for ln in r.stderr.splitlines() if "unfinished" in ln]
    assert len(notes) == 1 and f"pid {p.pid}" in notes[0] and "removed 1 unfinished file" in notes[0], r.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["prev.mp4", "prev.npz"] and not work.exists()


# --- write failures --------------------------------------------------------------------------------------

@contextlib.contextmanager
def tmpfs(folder: Path, size: str, read_only: bool = False):
    """A small tmpfs at ``folder`` (root only; skips otherwise)."""
    folder.mkdir()
    opts = f"size={size}" + (",ro" if read_only else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(folder)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_disk_full_is_one_line_and_leaves_nothing(tmp_path, tiny_model, avatar):
    with tmpfs(tmp_path / "small", "48k") as small:
        r = animate(avatar, tiny_model, small / "out.mp4", 20, "--size", "256")
        line = one_line(r, 1)
        assert "no space left on device" in line and "nothing was written" in line, line
        assert list(small.iterdir()) == []  # its .th-work (another filesystem than TH_HOME) is gone too


def test_file_size_limit_is_one_line_and_leaves_nothing(tmp_path, th_home, tiny_model, avatar):
    out = tmp_path / "out" / "out.mp4"

    def limit():  # `ulimit -f 29` for th and the ffmpeg it starts
        resource.setrlimit(resource.RLIMIT_FSIZE, (30_000, 30_000))

    r = subprocess.run([sys.executable, "-m", "thcli", "animate", str(avatar), "talk", "-o", str(out), "--model",
                        str(tiny_model), "--seconds", "20", "--size", "256", "--fps", "10"],
                       capture_output=True, text=True, preexec_fn=limit, timeout=300)
    line = one_line(r, 1)
    assert "file size limit" in line and str(out) in line and "nothing was written" in line, line
    assert list(out.parent.iterdir()) == [] and not (th_home / "work").exists()


def test_read_only_destination_fails_before_any_work(tmp_path, tiny_model, avatar):
    if os.geteuid() == 0:
        ctx = tmpfs(tmp_path / "ro", "1m", read_only=True)
    else:
        (tmp_path / "ro").mkdir()
        os.chmod(tmp_path / "ro", 0o555)
        ctx = contextlib.nullcontext(tmp_path / "ro")
    with ctx as ro:
        t0 = time.monotonic()
        line = one_line(animate(avatar, tiny_model, ro / "out.mp4"), 2)
        assert f"cannot write into {ro}" in line and ("read-only" in line or "permission denied" in line), line
        assert list(ro.iterdir()) == []
    assert time.monotonic() - t0 < 60


def test_destination_is_a_directory(tmp_path, tiny_model, avatar):
    (tmp_path / "out.mp4").mkdir()
    line = one_line(animate(avatar, tiny_model, tmp_path / "out.mp4"), 2)
    assert "is a directory" in line
    assert list((tmp_path / "out.mp4").iterdir()) == []


def test_destination_folder_vanishes_mid_run(tmp_path, th_home, tiny_model, avatar):
    folder = tmp_path / "shoot"
    folder.mkdir()
    p = th_popen("animate", avatar, "talk", "-o", folder / "out.mp4", "--model", tiny_model, "--seconds", "30", *SMALL)
    wait_for(lambda: anonymous_bytes(p.pid) > 0 or p.poll() is not None, what="the encode to start")
    shutil.rmtree(folder)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 1, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "its folder does not exist (any more); nothing was written" in lines[0], err
    assert not folder.exists()  # not silently re-created
    assert not (th_home / "work").exists()


# --- signing failures --------------------------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["missing key", "unreadable key", "wrong passphrase", "corrupt chain",
                                   "key of another identity"])
def test_broken_signing_identity_fails_first_naming_th_keys(tmp_path, th_home, tiny_model, avatar, fault):
    from provenance import keys

    env = {}
    keys.create_identity(passphrase="open sesame" if fault == "wrong passphrase" else None)
    kdir = th_home / "keys"
    if fault == "missing key":
        (kdir / "signer.key").unlink()
    elif fault == "unreadable key":
        (kdir / "signer.key").unlink()
        (kdir / "signer.key").mkdir(mode=0o700)  # unreadable as a file, for root too
    elif fault == "wrong passphrase":
        env[keys.PASSPHRASE_ENV] = "open says me"
    elif fault == "corrupt chain":
        pem = (kdir / "signer.pem").read_bytes()
        (kdir / "signer.pem").write_bytes(pem[:60] + b"!!" + pem[62:])
    else:
        other = tmp_path / "other"
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TH_HOME", str(other))
            keys.create_identity()
        shutil.copy(other / "keys" / "signer.pem", kdir / "signer.pem")
    out = tmp_path / "out.mp4"
    line = one_line(animate(avatar, tiny_model, out, env=env), 2)
    assert "th keys" in line, line
    assert not out.exists() and not (th_home / "work").exists()


# --- two writers, one destination -----------------------------------------------------------------------

@pytest.mark.parametrize("force", [False, True])
def test_two_animate_runs_to_one_destination(tmp_path, tiny_model, avatar, force):
    from provenance.verify import verify_file

    dest = tmp_path / "same.mp4"
    extra = ("--force",) if force else ()
    procs = [th_popen("animate", avatar, "talk", "-o", dest, "--model", tiny_model, "--seconds", "3", *SMALL,
                      *extra) for _ in range(2)]
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
    codes = sorted(c for c, _ in results)
    if force:  # both write whole, signed files; the last one published stays (documented)
        assert codes == [0, 0], results
    else:
        assert codes == [0, 2], results
        err = next(e for c, e in results if c == 2).strip().splitlines()
        assert len(err) == 1 and ("created by another process meanwhile" in err[0] or "exists" in err[0]), err
    assert [x.name for x in tmp_path.iterdir()] == ["same.mp4"]
    rep = verify_file(dest)
    assert rep.verdict == "signed" and rep.mark.payload == rep.c2pa.payload and probe(dest).frames == 30


# --- trainings and preparation, killed and rerun ------------------------------------------------------------

def test_sigkill_during_prepare_then_resume(tmp_path, th_home):
    clips = ["RNTHM__examples_fine_tuning_test_video_e43ca9f.mp4", "EDTalk__pose_source1.mp4",
             "first-order-model__00.mp4", "PC-AVS__00098.mp4"]
    src = tmp_path / "src"
    src.mkdir()
    for c in clips:
        (src / c).symlink_to(shared_path(f"clips/{c}"))
    out = tmp_path / "prep"
    args = ("prepare", src, out, "--frames", "12", "--size", "64", "--manifest", SHARED / "MANIFEST.tsv", "-j", "2")
    p = th_popen(*args)
    wait_for(lambda: any((out / "shards").glob("*.tar")) or p.poll() is not None, 180, "the first shard")
    assert p.poll() is None, p.communicate()
    kill9(p)  # the pool's workers die with it (they must not finish clips nobody will index)
    done = {f.name: f.stat().st_mtime_ns for f in (out / "shards").iterdir()}
    assert all(n.endswith(".tar") and not n.startswith(".") for n in done)
    assert not (out / "index.json").exists() and sorted(x.name for x in out.iterdir()) == ["shards"]
    from synth.train.shards import iter_shard

    for name in done:
        assert len(list(iter_shard(out / "shards" / name))) == 1  # every published shard is whole
    r = run_th(*args)
    assert r.returncode == 0, r.stderr
    assert f"{len(done)} already done" in r.stderr
    import json

    index = json.loads((out / "index.json").read_text())
    assert len(index["clips"]) + len(index["skipped"]) == 4
    assert {n: (out / "shards" / n).stat().st_mtime_ns for n in done} == done  # resumed, not redone
    assert not (th_home / "work").exists()


def test_sigkill_during_detect_train_then_resume(tmp_path, th_home, prepared3, tiny_model):
    import json

    ids = tmp_path / "test_ids.txt"
    index = json.loads((prepared3 / "index.json").read_text())
    ids.write_text(index["clips"][0]["identity"] + "\n")
    out = tmp_path / "det"
    args = ("detect", "train", out, "--real", prepared3, "--model", tiny_model, "--steps", "80", "--batch", "4",
            "--input-size", "64", "--fake-frames", "4", "--ae-steps", "10", "--test-identities", ids, "--ckpt-every", "10",
            "--threads", "1")
    p = th_popen(*args)
    state = out / "train-state"
    wait_for(lambda: any(state.glob("ckpt-*.safetensors")) or p.poll() is not None, 300, "a training state")
    assert p.poll() is None, p.communicate()
    kill9(p)
    saved = max(int(f.name[5:13]) for f in state.glob("ckpt-*.safetensors"))
    assert saved < 80 and not (out / "th-detector.safetensors").exists()
    r = run_th(*args)
    assert r.returncode == 0, r.stderr
    assert "reusing generated data" in r.stderr and f"resuming from step {saved}" in r.stderr, r.stderr
    assert (out / "th-detector.safetensors").is_file()
    card = json.loads((out / "th-detector.card.json").read_text())
    assert card["config"]["steps"] == 80 and len(card["splits"]["test"]) == 1 and 0 <= card["threshold"] <= 1
    assert {"val", "test_raw", "threshold"} <= set(card["metrics"])
    assert not state.exists()  # finished: nothing left to resume


def test_truncated_latest_checkpoint_falls_back_with_a_warning(tmp_path, capsys):
    from synth.avatar.model import TalkingHeadModel
    from synth.train.checkpoint import list_checkpoints, load_latest
    from synth.train.episodes import write_synthetic_prepared

    prep = write_synthetic_prepared(tmp_path / "prep", n_clips=2, frames=6, size=64)
    run = tmp_path / "run"
    common = ("meta-train", prep, run, "--preset", "tiny", "--threads", "1")
    assert run_th(*common, "--steps", "4", "--quiet").returncode == 0
    ckpts = list_checkpoints(run)
    assert [c.name for c in ckpts] == ["ckpt-00000002.safetensors", "ckpt-00000004.safetensors"]

    def truncate(path: Path) -> None:  # a copy cut short, a full disk, a power cut
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])

    truncate(ckpts[-1])
    r = run_th(*common, "--steps", "6")
    assert r.returncode == 0, r.stderr
    assert "ckpt-00000004.safetensors cannot be read" in r.stderr and "resuming from the checkpoint before it" in r.stderr
    assert "resuming from step 2" in r.stdout
    assert load_latest(run).step == 6
    r = run_th(*common, "--steps", "6")  # and again: the damaged file was replaced, no warning, no loop
    assert r.returncode == 0 and "cannot be read" not in r.stderr, r.stderr
    truncate(list_checkpoints(run)[-1])
    assert TalkingHeadModel.load(run) is not None  # loading a run folder falls back the same way
    assert "ckpt-00000006.safetensors cannot be read" in capsys.readouterr().err
