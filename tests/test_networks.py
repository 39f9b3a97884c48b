"""Every network on tiny configs: shapes, finite outputs, every parameter gets a gradient; preset sizes."""

from __future__ import annotations

import pytest
import torch

from synth.nets.blocks import SelfAttention
from synth.nets.config import Config, preset, replace
from synth.train.metatrain import build_nets

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY_VARIANTS = {
    "tiny": preset("tiny"),
    "tiny2019": preset("tiny2019"),
    "tiny2019-no-attention": replace(preset("tiny2019"), net={"attn_res": 0}),
    "tiny-no-attention": replace(preset("tiny"), net={"attn_res": 0}),
    "tiny-3-levels": replace(preset("tiny"), net={"g_widths": (8, 8, 16), "e_widths": (8, 8, 8), "attn_res": 8}),
}


def _nets(cfg: Config):
    cfg = replace(cfg, net={"num_videos": 3})
    e, g, d = build_nets(cfg.net, seed=0)
    for m in (e, g, d):
        for sub in m.modules():
            if isinstance(sub, SelfAttention):
                sub.gamma.data.fill_(0.5)  # gamma starts at 0, which would zero the q/k/v gradients
    if g.uses_warp:  # zero-initialised output layers would zero the gradients of everything before them
        for conv in (g.head, g.confidence.conv2):
            conv.weight.data.normal_(0, 0.05)
    return cfg, e, g, d


def _assert_all_grads(module: torch.nn.Module, skip: tuple[str, ...] = ()) -> None:
    missing = [n for n, p in module.named_parameters()
               if n not in skip and (p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0)]
    assert not missing, missing


@pytest.mark.parametrize("name", list(TINY_VARIANTS))
def test_embedder(name: str) -> None:
    cfg, e, _, _ = _nets(TINY_VARIANTS[name])
    s, n = cfg.net.image_size, cfg.net.emb_dim
    x = torch.rand(2, 3, 3, s, s) * 2 - 1
    y = torch.rand(2, 3, 3, s, s) * 2 - 1
    out = e(x, y)
    assert out.shape == (2, n) and torch.isfinite(out).all() and (out >= 0).all()
    out.sum().backward()
    _assert_all_grads(e)


@pytest.mark.parametrize("name", list(TINY_VARIANTS))
def test_generator(name: str) -> None:
    cfg, _, g, _ = _nets(TINY_VARIANTS[name])
    s, n = cfg.net.image_size, cfg.net.emb_dim
    e_hat = torch.rand(2, n)
    psi = g.project(e_hat)
    assert psi.shape == (2, g.n_adain)
    warped = torch.rand(2, 3, 3, s, s) * 2 - 1 if g.uses_warp else None  # K = 3 shots
    out = g(torch.rand(2, 3, s, s) * 2 - 1, psi, warped)
    assert out.shape == (2, 3, s, s) and torch.isfinite(out).all()
    if not g.uses_warp:
        assert out.abs().max() <= 1  # tanh; the warp-guided output is clamped only when turned into pixels
    (out * torch.randn_like(out)).sum().backward()
    _assert_all_grads(g)


@pytest.mark.parametrize("name", list(TINY_VARIANTS))
def test_discriminator(name: str) -> None:
    cfg, _, _, d = _nets(TINY_VARIANTS[name])
    s = cfg.net.image_size
    video = torch.tensor([0, 2])
    r, feats = d(torch.rand(2, 3, s, s), torch.rand(2, 3, s, s), d.column(video))
    assert r.shape == (2,) and torch.isfinite(r).all()
    assert all(f.shape[0] == 2 for f in feats)
    (r.sum() + sum(f.mean() for f in feats)).backward()
    _assert_all_grads(d, skip=("W",))
    assert d.W.grad[1].abs().sum() == 0 and d.W.grad[0].abs().sum() > 0  # only sampled videos' columns


def test_nets_are_deterministic_from_seed() -> None:
    cfg = preset("tiny")
    a, b = build_nets(cfg.net, seed=3), build_nets(cfg.net, seed=3)
    for ma, mb in zip(a, b):
        for (ka, va), (_, vb) in zip(ma.state_dict().items(), mb.state_dict().items()):
            assert torch.equal(va, vb), ka


@pytest.mark.parametrize("name,size", [("cpu", 256), ("cpu2019", 128)])
def test_cpu_presets_fit_the_bundle_budget(name: str, size: int) -> None:
    cfg = replace(preset(name), net={"num_videos": 110})
    e, g, d = build_nets(cfg.net)
    n_params = sum(p.numel() for m in (e, g, d) for p in m.parameters())
    assert n_params * 4 / 1e6 <= 30.0  # ≤ 30 MB of fp32 weights, D's W for 110 videos included
    s = cfg.net.image_size
    warped = torch.zeros(1, 1, 3, s, s) if g.uses_warp else None
    with torch.no_grad():
        out = g(torch.zeros(1, 3, s, s), g.project(torch.rand(1, cfg.net.emb_dim)), warped)
    assert out.shape == (1, 3, size, size)


def test_paper_preset_layout() -> None:
    cfg = preset("paper")
    assert cfg.net.image_size == 256 and cfg.train.k_shot == 8 and cfg.train.batch == 48
    assert cfg.loss.content == "vgg" and cfg.train.lr_g == 5e-5 and cfg.train.lr_d == 2e-4


def test_config_round_trip_and_typos() -> None:
    from synth.errors import UserError

    cfg = preset("cpu")
    assert Config.from_json(cfg.to_json()) == cfg
    bad = cfg.to_dict()
    bad["net"]["g_widht"] = 3
    with pytest.raises(UserError):
        Config.from_dict(bad)


def test_golden_tiny_outputs() -> None:
    """Seed-0 tiny nets (2019 generator) on a fixed input: catches silent architecture or initialisation changes."""
    cfg = replace(preset("tiny2019"), net={"num_videos": 2})
    e, g, d = build_nets(cfg.net, seed=0)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(1, 2, 3, 32, 32, generator=gen) * 2 - 1
    y = torch.rand(1, 2, 3, 32, 32, generator=gen) * 2 - 1
    for m in (e, g, d):
        m.eval()
    with torch.no_grad():
        e_hat = e(x, y)
        out = g(y[:, 0], g.project(e_hat))
        r, _ = d(x[:, 0], y[:, 0], d.column(torch.tensor([1])))
    assert e_hat.sum().item() == pytest.approx(1.8986294, abs=1e-4)
    assert out.sum().item() == pytest.approx(-333.91638, abs=1e-2)
    assert out[0, 0, 0, :4].tolist() == pytest.approx([-0.1031603, 0.0710565, -0.1353262, 0.0052225], abs=1e-5)
    assert r.item() == pytest.approx(-0.0421921, abs=1e-5)


@pytest.mark.parametrize("k", [1, 3])
def test_untrained_warp_generator_returns_the_warp(k: int) -> None:
    """Δ's output layer and the confidence head start at zero: x̂ = the warp (K = 1), their mean (K > 1)."""
    cfg, _, g, _ = _nets(preset("tiny"))
    g = build_nets(cfg.net, seed=0)[1]  # fresh, not perturbed
    s, n = cfg.net.image_size, cfg.net.emb_dim
    warped = torch.rand(2, k, 3, s, s) * 2 - 1
    maps = g.forward_maps(torch.rand(2, 3, s, s) * 2 - 1, g.project(torch.rand(2, n)), warped)
    assert torch.allclose(maps["out"], warped.mean(1), atol=1e-6)
    assert maps["mask"].shape == (2, 1, s, s) and maps["confidence"].shape == (2, k, 1, s, s)
    assert torch.allclose(maps["confidence"].sum(1), torch.ones(2, 1, s, s), atol=1e-5)


def test_warp_generator_output_blends_warp_and_painted_by_the_mask() -> None:
    cfg, _, g, _ = _nets(preset("tiny"))
    s, n = cfg.net.image_size, cfg.net.emb_dim
    maps = g.forward_maps(torch.rand(1, 3, s, s) * 2 - 1, g.project(torch.rand(1, n)), torch.rand(1, 2, 3, s, s))
    m = maps["mask"]
    assert torch.allclose(maps["out"], m * maps["warp"] + (1 - m) * maps["painted"], atol=1e-6)
    assert not torch.allclose(maps["painted"], maps["warp"])  # the perturbed head paints something
