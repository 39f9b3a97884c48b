"""Meta-training: episodes, the two phases, checkpoints, exact resume, crash safety, CLI, model API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from synth.errors import UserError
from synth.faces.warp import ShotWarper
from synth.nets.config import preset, replace
from synth.train.checkpoint import list_checkpoints, load_checkpoint, load_latest
from synth.train.episodes import PreparedData, sample_episodes, write_synthetic_prepared
from synth.train.metatrain import build_nets, build_optimizers, discriminator_step, generator_step, meta_train

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def prep(tmp_path_factory) -> Path:
    """A synthetic prepared folder in the exact `th prepare` format (4 clips × 6 frames, 64 px)."""
    return write_synthetic_prepared(tmp_path_factory.mktemp("prep") / "prep", n_clips=4, frames=6, size=64)


def _train(prep: Path, run: Path, steps: int, **train) -> None:
    meta_train(prep, run, replace(preset("tiny"), train=train), steps, CPU, show_progress=False)


def test_prepared_data_and_episodes(prep: Path) -> None:
    data = PreparedData(prep, 32)
    assert len(data) == 4
    frames, images = data.clip(0)
    assert frames.shape == (6, 3, 32, 32) and images.shape == (6, 3, 32, 32)
    assert frames.min() >= -1 and frames.max() <= 1 and images.max() > 0  # landmarks were drawn
    whole = sample_episodes(data, k_shot=2, seed=1, step=5, batch=4)
    assert whole.frames.shape == (4, 3, 3, 32, 32) and whole.video.shape == (4,)
    halves = [sample_episodes(data, 2, 1, 5, 4, rank=r, world=2) for r in range(2)]
    assert np.array_equal(np.concatenate([h.frames for h in halves]), whole.frames)
    assert np.array_equal(np.concatenate([h.video for h in halves]), whole.video)
    # one epoch of steps visits every video once
    seen = np.concatenate([sample_episodes(data, 2, 1, s, 2).video for s in range(2)])
    assert sorted(seen.tolist()) == [0, 1, 2, 3]
    with pytest.raises(UserError):
        sample_episodes(data, 2, 1, 0, 3, rank=0, world=2)


def test_phases_update_only_their_networks(prep: Path) -> None:
    cfg = replace(preset("tiny"), net={"num_videos": 4})
    e, g, d = build_nets(cfg.net)
    opt_g, opt_d = build_optimizers(e, g, d, cfg)
    data = PreparedData(prep, cfg.net.image_size)
    b = sample_episodes(data, 2, 0, 0, 2, warp=True)
    x, y, video = torch.from_numpy(b.frames), torch.from_numpy(b.landmarks), torch.from_numpy(b.video)
    assert b.warped is not None and b.warped.shape == (2, 2, 3, 32, 32)  # K = 2 shots warped to the target
    snap = lambda m: {k: v.clone() for k, v in m.state_dict().items() if not k.endswith(("_u", "_v"))}  # noqa: E731
    before = [snap(m) for m in (e, g, d)]
    e_hat = e(x[:, :2], y[:, :2])
    losses, fake = generator_step(g, d, opt_g, y[:, 2], x[:, 2], g.project(e_hat), d.column(video), cfg.loss,
                                  mch=(e_hat, d.W[video]), warped=torch.from_numpy(b.warped))
    assert {"l1", "msssim", "adv", "fm", "mch", "g_total"} <= losses.keys()
    assert all(np.isfinite(v) for v in losses.values())
    changed = lambda m, old: any(not torch.equal(v, old[k]) for k, v in snap(m).items())  # noqa: E731
    assert changed(e, before[0]) and changed(g, before[1]) and not changed(d, before[2])
    assert all(p.requires_grad for p in d.parameters())  # the phase restored D's flags
    mid = [snap(m) for m in (e, g)]
    d_losses = discriminator_step(d, opt_d, y[:, 2], x[:, 2], fake, d.column(video), cfg.loss,
                                  mch=(d.W[video], e_hat.detach()))
    assert {"dsc", "r_real", "r_fake", "mch_w"} <= d_losses.keys()
    assert changed(d, before[2]) and not changed(e, mid[0]) and not changed(g, mid[1])


def test_checkpoints_resume_exactly(prep: Path, tmp_path: Path) -> None:
    _train(prep, tmp_path / "a", 5)
    _train(prep, tmp_path / "b", 3)
    assert load_latest(tmp_path / "b").step == 3
    _train(prep, tmp_path / "b", 5)  # same command again: resumes
    a, b = load_latest(tmp_path / "a"), load_latest(tmp_path / "b")
    assert a.step == b.step == 5
    for name in ("E", "G", "D"):
        for k, v in a.modules[name].items():
            assert torch.allclose(v, b.modules[name][k], atol=1e-6), (name, k)
    assert len(list_checkpoints(tmp_path / "a")) == 3  # keep_checkpoints
    # the library writes no sample grid (generated faces) without a sealing writer (the CLI passes one)
    assert (tmp_path / "a" / "config.json").is_file() and not (tmp_path / "a" / "samples").exists()
    assert list((tmp_path / "a" / "tb").iterdir())
    with pytest.raises(UserError, match="different config"):
        _train(prep, tmp_path / "a", 6, batch=4)


def test_export_load_and_finetune(prep: Path, tmp_path: Path) -> None:
    from synth.avatar.finetune import PersonParams, finetune, person_inputs
    from synth.avatar.model import TalkingHeadModel, export_model, tensor_to_images

    _train(prep, tmp_path / "run", 2)
    digest = export_model(tmp_path / "run", tmp_path / "m.safetensors")
    assert len(digest) == 64 and (tmp_path / "m.safetensors.sha256").read_text().startswith(digest)
    model = TalkingHeadModel.load(tmp_path / "m.safetensors")
    from_ckpt = TalkingHeadModel.load(tmp_path / "run")
    assert model.D.W.shape[0] == 0 and torch.equal(model.D.w0, from_ckpt.D.w0)
    from synth.train.shards import iter_shard

    clip = next(iter_shard(next((prep / "shards").glob("*.tar"))))
    frames, landmarks = clip.frames[:3], clip.landmarks[:3]
    x, y = person_inputs(model, frames, landmarks)
    ff = finetune(model, frames, landmarks, steps=0)
    assert model.uses_warp and ff.shots.shape == (3, 32, 32, 3) and ff.shot_landmarks.shape == (3, 68, 2)
    warper = ShotWarper(*ff.sources)
    warped = torch.from_numpy(np.stack([warper(lm) for lm in ff.shot_landmarks])).permute(0, 1, 4, 2, 3)
    warped = warped.float() / 127.5 - 1  # (3 targets, K=3, 3, S, S)
    out = model.generate(y, psi=ff.psi, warped=warped)
    assert torch.allclose(out, from_ckpt.generate(y, e_hat=ff.e_hat, warped=warped), atol=1e-5)
    assert torch.allclose(ff.column, model.D.w0 + ff.e_hat)
    tuned = finetune(model, frames, landmarks, steps=2, batch=2)
    assert len(tuned.losses) == 2 and "mch" not in tuned.losses[0]
    restored = PersonParams.from_tensors(tuned.tensors())
    assert np.array_equal(restored.shots, tuned.shots)
    out2 = model.generate(y, psi=restored.psi, generator=restored.generator_module(model), warped=warped)
    assert out2.shape == (3, 3, 32, 32) and tensor_to_images(out2).dtype == np.uint8
    assert not torch.allclose(out2, out)


def _th(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "TH_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "thcli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def test_cli_dry_run_and_paper_needs_vgg(prep: Path, tmp_path: Path) -> None:
    out, err = _th("meta-train", prep, tmp_path / "run", "--preset", "paper", "--dry-run").communicate(timeout=120)
    assert '"num_videos": 4' in out and '"image_size": 256' in out
    p = _th("meta-train", prep, tmp_path / "run", "--preset", "paper", "--steps", "1")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2 and "--vgg19" in err and err.count("\n") == 1


def test_sigkill_mid_training_then_resume(prep: Path, tmp_path: Path) -> None:
    """Kill -9 while training; only complete checkpoints are ever visible; rerunning resumes."""
    run = tmp_path / "run"
    args = ("meta-train", prep, run, "--preset", "tiny", "--steps", "400", "--threads", "1", "--quiet")
    p = _th(*args)
    deadline = time.monotonic() + 90
    checked = 0
    try:
        while time.monotonic() < deadline:
            for path in list_checkpoints(run):
                try:
                    load_checkpoint(path)  # every visible checkpoint is whole
                    checked += 1
                except FileNotFoundError:
                    pass  # rotated away between listing and reading
            if checked >= 4 and len(list_checkpoints(run)) >= 2:
                break
            time.sleep(0.05)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    last = load_latest(run)
    assert last is not None and last.step < 400
    for f in (run / "checkpoints").iterdir():  # leftovers are hidden temp files, never ckpt-*.safetensors
        assert f.name.startswith(".ckpt-") or load_checkpoint(f).step <= last.step
    p = _th("meta-train", prep, run, "--preset", "tiny", "--steps", str(last.step + 2), "--threads", "1")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert f"resuming from step {last.step}" in out
    assert load_latest(run).step == last.step + 2
    assert not [f for f in (run / "checkpoints").iterdir() if f.name.startswith(".")]


def test_meta_train_on_real_prepared_clips(prepared3: Path, tmp_path: Path) -> None:
    _train(prepared3, tmp_path / "run", 2)
    ckpt = load_latest(tmp_path / "run")
    assert ckpt.step == 2 and ckpt.config.net.num_videos == 3


def test_sigterm_checkpoints_and_stops(prep: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    p = _th("meta-train", prep, run, "--preset", "tiny", "--steps", "400", "--threads", "1", "--quiet")
    deadline = time.monotonic() + 90
    while not list_checkpoints(run) and time.monotonic() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert "(interrupted)" in out
    step = load_latest(run).step
    assert 0 < step < 400 and f"step {step}/400" in out
    # The sample grids hold generated faces: each went through the sealing write path.
    from provenance.verify import verify_file

    samples = sorted((run / "samples").glob("step-*.png"))
    assert samples and all(int(p.stem[5:]) <= step for p in samples)
    for png in (samples[0], samples[-1]):
        rep = verify_file(png)
        assert rep.verdict == "signed" and rep.mark.found and rep.mark.payload == rep.c2pa.payload, rep.to_dict()
        assert "meta-train" in rep.c2pa.claims["th"]["model_card_id"]
