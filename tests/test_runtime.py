"""The animation engine: ONNX Runtime runs the same folded generator as torch, to float precision."""

from __future__ import annotations

import pytest
import torch

from synth.avatar.model import fold_spectral_norm
from synth.avatar.runtime import OnnxGenerator, runtime_generator
from synth.errors import UserError
from synth.nets.blocks import SelfAttention
from synth.nets.config import preset, replace
from synth.nets.engine import onnx_available
from synth.train.metatrain import build_nets

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.skipif(not onnx_available(), reason="onnx/onnxruntime not installed")]


def _folded_generator(name: str):
    """A tiny generator with every zero-initialised output layer perturbed (else both engines return the warp)."""
    cfg = replace(preset(name), net={"num_videos": 2})
    g = build_nets(cfg.net, seed=0)[1]
    with torch.no_grad():
        for m in g.modules():
            if isinstance(m, SelfAttention):
                m.gamma.fill_(0.5)
        if g.uses_warp:
            for conv in (g.head, g.confidence.conv2):
                conv.weight.normal_(0, 0.05)
    return cfg, fold_spectral_norm(g)


@pytest.mark.parametrize("name,k", [("tiny", 1), ("tiny", 3), ("tiny2019", None)])
def test_onnx_engine_matches_torch(name: str, k: int | None) -> None:
    cfg, g = _folded_generator(name)
    s = cfg.net.image_size
    engine = OnnxGenerator(g, s, k, threads=1)
    torch.manual_seed(1)
    for batch in (1, 3):  # the batch axis is dynamic
        y = torch.rand(batch, 3, s, s) * 2 - 1
        psi = g.project(torch.randn(1, cfg.net.emb_dim)).expand(batch, -1)
        warped = torch.rand(batch, k, 3, s, s) * 2 - 1 if k else None
        with torch.no_grad():
            ref = g(y, psi, warped)
        out = engine(y, psi, warped)
        assert out.shape == ref.shape == (batch, 3, s, s)
        assert ref.abs().mean() > 0.05 and (ref - (warped.mean(1) if k else 0)).abs().mean() > 1e-3  # not trivial
        assert (out - ref).abs().max() < 1e-4


def test_engine_choice() -> None:
    cfg, g = _folded_generator("tiny")
    s = cfg.net.image_size
    assert runtime_generator(g, s, 1, torch.device("cpu"), "torch") is g
    assert isinstance(runtime_generator(g, s, 1, torch.device("cpu"), "auto"), OnnxGenerator)
    with pytest.raises(UserError, match="unknown --engine"):
        runtime_generator(g, s, 1, torch.device("cpu"), "tensorrt")
    with pytest.raises(UserError, match="CPU only"):
        runtime_generator(g, s, 1, torch.device("meta"), "onnx")


def test_exported_graph_is_cached_per_weights(th_home) -> None:
    from synth.avatar.runtime import engine_key

    cfg, g = _folded_generator("tiny")
    s = cfg.net.image_size
    OnnxGenerator(g, s, 1, threads=1)
    cache = th_home / "cache" / "engine"
    files = list(cache.glob("*.onnx"))
    assert [f.stem for f in files] == [f"generator-{engine_key(g, s, 1)}"]
    mtime = files[0].stat().st_mtime_ns
    OnnxGenerator(g, s, 1, threads=1)  # same weights: read from the cache, not exported again
    assert list(cache.glob("*.onnx")) == files and files[0].stat().st_mtime_ns >= mtime
    assert engine_key(g, s, 2) != engine_key(g, s, 1)
    with torch.no_grad():
        g.head.weight.add_(0.01)  # other weights (a fine-tuned avatar): another graph
    y, psi = torch.rand(1, 3, s, s), g.project(torch.randn(1, cfg.net.emb_dim))
    w = torch.rand(1, 1, 3, s, s)
    out = OnnxGenerator(g, s, 1, threads=1)(y, psi, w)
    assert len(list(cache.glob("*.onnx"))) == 2
    with torch.no_grad():
        assert (out - g(y, psi, w)).abs().max() < 1e-4


def test_a_wrong_cached_graph_is_caught_on_the_first_frame(th_home) -> None:
    """A graph from the cache that does not compute this generator (here: another one's, planted under this
    one's key) fails loudly instead of shipping wrong frames."""
    from synth.avatar.runtime import engine_key

    cfg, g = _folded_generator("tiny")
    s = cfg.net.image_size
    OnnxGenerator(g, s, 1, threads=1)
    cache = th_home / "cache" / "engine"
    good = cache / f"generator-{engine_key(g, s, 1)}.onnx"
    with torch.no_grad():
        g.head.weight.mul_(-1.0)
    good.rename(cache / f"generator-{engine_key(g, s, 1)}.onnx")
    engine = OnnxGenerator(g, s, 1, threads=1)
    with pytest.raises(UserError, match="disagrees with torch"):
        engine(torch.rand(1, 3, s, s) * 2 - 1, g.project(torch.randn(1, cfg.net.emb_dim)), torch.rand(1, 1, 3, s, s))


@pytest.mark.parametrize("k", [1, 3])
def test_subpixel_head_is_the_same_function_border_included(k: int) -> None:
    """The export's rewritten head (one convolution at S/2 + pixel shuffle, border ring recomputed) equals the
    trained head on bilinear-upsampled features, on every pixel including the outermost ring."""
    from synth.avatar.runtime import SubpixelWarpGenerator

    cfg, g = _folded_generator("tiny")
    s = cfg.net.image_size
    torch.manual_seed(3)
    y, warped = torch.rand(2, 3, s, s) * 2 - 1, torch.rand(2, k, 3, s, s) * 2 - 1
    psi = g.project(torch.randn(2, cfg.net.emb_dim))
    with torch.no_grad():
        ref, fast = g(y, psi, warped), SubpixelWarpGenerator(g)(y, psi, warped)
    assert (ref - warped.mean(1)).abs().mean() > 1e-3  # the perturbed head paints something
    assert (fast - ref).abs().max() < 1e-5  # every pixel, the border ring included


def test_an_animated_avatar_is_compiled_and_animates_again_without_torch(tmp_path, th_home, astronaut) -> None:
    """`th animate` compiles an avatar (ψ + the cached graph + a reference frame); the next animation of it
    renders the torch path's frames with ONNX Runtime alone (torch cannot even be imported in that run), and a
    cache entry that disagrees with its graph is dropped instead of used."""
    import subprocess
    import sys

    import cv2
    import numpy as np

    from synth.avatar import compiled
    from synth.avatar.animate import render, render_frames
    from synth.avatar.avatar_file import Avatar
    from synth.avatar.bundled import default_model_path, file_sha256
    from synth.avatar.finetune import PersonParams
    from synth.avatar.model import TalkingHeadModel
    from synth.avatar.motion import builtin_motion
    from tests.conftest import run_th

    photo, avatar = tmp_path / "a.png", tmp_path / "a.avatar"
    cv2.imwrite(str(photo), astronaut[:, :, ::-1])
    assert run_th("enroll", photo, "-o", avatar, "--steps", "0", "--consent", "test").returncode == 0
    r = run_th("animate", avatar, "talk", "--seconds", "1", "-o", tmp_path / "first.mp4")
    assert r.returncode == 0, r.stderr
    entries = list((th_home / "cache" / "engine").glob("animate-*.npz"))
    assert len(entries) == 1

    av = Avatar.load(avatar)
    sources = (av.tensors["shots"], av.tensors["shot_landmarks"])
    model_sha, avatar_sha = file_sha256(default_model_path()), file_sha256(avatar)
    fast = compiled.CompiledAvatar.load(model_sha, avatar_sha, sources, av.landmarks, threads=1)
    assert fast is not None
    net = TalkingHeadModel.load(default_model_path())
    params = PersonParams.from_tensors(av.tensors)
    lms = builtin_motion("talk", av.landmarks, seconds=0.4)
    ref = np.stack(list(render(net, params.generator_module(net), params.psi, lms, 256, sources=params.sources)))
    out = np.stack(list(render_frames(fast.generate, fast.size, fast.uses_warp, lms, 256, sources=sources)))
    assert ref.shape == out.shape == (10, 256, 256, 3) and ref.std() > 20
    assert np.abs(ref.astype(int) - out).max() <= 1 and np.mean(ref != out) < 0.01  # float rounding only

    blocked = "import sys; sys.modules['torch'] = None; sys.argv[0] = 'th'; from thcli.app import main; main()"
    r = subprocess.run([sys.executable, "-c", blocked, "animate", str(avatar), "talk", "--seconds", "1",
                        "-o", str(tmp_path / "second.mp4")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "25 frames" in r.stdout, r.stderr
    assert run_th("verify", tmp_path / "second.mp4").returncode == 0

    with np.load(entries[0]) as z:  # a damaged entry: its reference no longer matches the graph
        fields = {k: z[k] for k in z.files}
    np.savez(entries[0], **{**fields, "reference": fields["reference"] + 0.1})
    assert compiled.CompiledAvatar.load(model_sha, avatar_sha, sources, av.landmarks, threads=1) is None
    assert not entries[0].exists()
    r = run_th("animate", avatar, "talk", "--seconds", "1", "-o", tmp_path / "third.mp4")  # torch again, recompiles
    assert r.returncode == 0 and entries[0].exists(), r.stderr
