"""Losses against hand-computed values on tiny tensors (reproductions failed on hinge signs and VGG scaling)."""

from __future__ import annotations

import pytest
import torch

from synth.errors import UserError
from synth.nets import losses as L

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_hinge_d_hand_computed() -> None:
    r_real = torch.tensor([2.0, 0.5])
    r_fake = torch.tensor([-2.0, 0.5])
    # relu(1 + fake) = [0, 1.5] -> 0.75 ; relu(1 - real) = [0, 0.5] -> 0.25
    assert L.hinge_d(r_real, r_fake).item() == pytest.approx(1.0)
    # a confident, correct D has zero loss; the same scores swapped are penalised
    assert L.hinge_d(torch.tensor([1.5]), torch.tensor([-1.5])).item() == 0.0
    assert L.hinge_d(torch.tensor([-1.5]), torch.tensor([1.5])).item() == pytest.approx(5.0)


def test_hinge_d_gradient_signs() -> None:
    r_real = torch.tensor([0.0], requires_grad=True)
    r_fake = torch.tensor([0.0], requires_grad=True)
    L.hinge_d(r_real, r_fake).backward()
    assert r_real.grad.item() == -1.0  # descending raises real scores
    assert r_fake.grad.item() == 1.0  # ... and lowers fake scores


def test_adversarial_g() -> None:
    r = torch.tensor([1.0, 3.0], requires_grad=True)
    loss = L.adversarial_g(r)
    assert loss.item() == -2.0
    loss.backward()
    assert torch.equal(r.grad, torch.tensor([-0.5, -0.5]))  # descending raises fake realism


def test_embedding_match() -> None:
    w = torch.tensor([[1.0, 2.0]])
    e = torch.tensor([[0.0, 4.0]])
    assert L.embedding_match(w, e).item() == pytest.approx(1.5)


def test_feature_matching_sums_layers_and_detaches_real() -> None:
    fake = [torch.ones(1, 2, 2, 2, requires_grad=True), torch.full((1, 3), 2.0, requires_grad=True)]
    real = [torch.zeros(1, 2, 2, 2, requires_grad=True), torch.zeros(1, 3, requires_grad=True)]
    loss = L.feature_matching(fake, real)
    assert loss.item() == pytest.approx(3.0)
    loss.backward()
    assert real[0].grad is None and fake[0].grad is not None


def test_l1() -> None:
    assert L.l1(torch.tensor([1.0, -1.0]), torch.tensor([0.0, 1.0])).item() == pytest.approx(1.5)


def test_caffe_preprocess_bgr_0_255_mean() -> None:
    x = torch.tensor([1.0, -1.0, 0.0]).view(1, 3, 1, 1)  # RGB = (255, 0, 127.5)
    out = L.caffe_preprocess(x, L.VGG19_MEAN_BGR).flatten().tolist()
    expected = [127.5 - 103.939, 0.0 - 116.779, 255.0 - 123.68]  # B, G, R minus the BGR means
    assert out == pytest.approx(expected, abs=1e-4)


def test_ssim_identical_and_constant_images() -> None:
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert L.ssim(x, x).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    a = torch.full((1, 1, 8, 8), 0.5)
    b = torch.full((1, 1, 8, 8), -0.5)
    c1 = (0.01 * 2) ** 2
    # zero variance: SSIM = (2·μx·μy + C1) / (μx² + μy² + C1)
    assert L.ssim(a, b).item() == pytest.approx((2 * 0.5 * -0.5 + c1) / (0.25 + 0.25 + c1), abs=1e-6)
    assert L.multiscale_ssim_loss(x, x).item() == pytest.approx(0.0, abs=1e-5)


def test_content_loss_weights() -> None:
    fake = torch.zeros(1, 3, 16, 16)
    real = torch.full((1, 3, 16, 16), 0.5)
    total, terms = L.content_loss(fake, real, w_l1=10.0, w_msssim=0.0, ms_scales=3)
    assert set(terms) == {"l1"}
    assert total.item() == pytest.approx(5.0)
    total, terms = L.content_loss(fake, real, w_l1=1.0, w_msssim=2.0, ms_scales=2)
    assert total.item() == pytest.approx(terms["l1"].item() + 2 * terms["msssim"].item())


def test_vgg_loader_natural_order_and_errors(tmp_path) -> None:
    from safetensors.torch import save_file

    net = L.CaffeVGG(L._VGG16_CFG, L._TAPS16, L.VGGFACE_MEAN_BGR)
    convs = [m for m in net.layers if isinstance(m, torch.nn.Conv2d)]
    # torchvision-style names: lexical order would put features.10 before features.2
    idx = [i for i, v in enumerate(L._VGG16_CFG)]
    sd = {}
    for n, conv in zip(idx[: len(convs)], convs):
        sd[f"features.{n}.weight"] = torch.full_like(conv.weight, float(n))
        sd[f"features.{n}.bias"] = torch.full_like(conv.bias, float(n))
    path = tmp_path / "vggface.safetensors"
    save_file(sd, str(path))
    net.load_weights(path)
    assert [c.bias[0].item() for c in convs] == [float(n) for n in idx[: len(convs)]]
    with pytest.raises(UserError):
        net.load_weights(tmp_path / "missing.safetensors")
    feats = net(torch.zeros(1, 3, 32, 32))
    assert len(feats) == 5


def test_normalised_l1_hand_computed() -> None:
    a = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)  # unit channel vector (0.6, 0.8)
    b = torch.tensor([8.0, 6.0]).view(1, 2, 1, 1)  # (0.8, 0.6): the scale does not matter
    assert L.normalised_l1(a, b).item() == pytest.approx(0.2)
    assert L.normalised_l1(a, 5 * a).item() == pytest.approx(0.0, abs=1e-7)


def test_identity_loss(astronaut) -> None:
    """loss(fake, real, landmarks_px): zero for the real face itself, larger for a changed face, weighted
    as configured, and differentiable with respect to the fake only."""
    import cv2

    from synth.faces.detector import FaceDetector
    from synth.nets.config import LossConfig

    assert L.IdentityLoss.from_config(LossConfig()) is None  # off by default
    loss = L.IdentityLoss.from_config(LossConfig(w_id=2.0, w_idfeat=0.5))
    assert loss is not None
    s = 256
    img = cv2.resize(astronaut, (s, s), interpolation=cv2.INTER_AREA)
    lm = torch.from_numpy(FaceDetector().detect(img)[0].landmarks)[None]  # (1,68,2) pixels of S
    real = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1  # (1,3,S,S)
    total, terms = loss(real, real, lm)
    assert terms["id"].item() == pytest.approx(0.0, abs=1e-5) and terms["idfeat"].item() == pytest.approx(0.0, abs=1e-5)
    fake = torch.flip(real, dims=[3]).clone().requires_grad_(True)  # the mirrored face: same person, moved
    total, terms = loss(fake, real, lm)
    assert terms["id"].item() > 1e-3 and terms["idfeat"].item() > 1e-2
    assert total.item() == pytest.approx(2.0 * terms["id"].item() + 0.5 * terms["idfeat"].item(), rel=1e-5)
    total.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())  # the face network stays frozen
    with pytest.raises(ValueError):
        loss(fake, real, torch.cat([lm, lm]))

def test_vgg_loader_reads_a_real_torchvision_vgg19(tmp_path) -> None:
    """A full torchvision VGG19 state dict (random init, weights=None: nothing downloaded), classifier
    included: our relu*_1 taps equal torchvision's own features on the same Caffe-preprocessed input."""
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    tv = torchvision.models.vgg19(weights=None).eval()
    path = tmp_path / "vgg19.safetensors"
    save_file({k: v.contiguous() for k, v in tv.state_dict().items()}, str(path))
    net = L.CaffeVGG(L._VGG19_CFG, L._TAPS19, L.VGG19_MEAN_BGR)
    net.load_weights(path)
    x = torch.rand(1, 3, 48, 48) * 2 - 1
    ours = net(x)
    ref, h, n_conv = [], L.caffe_preprocess(x, L.VGG19_MEAN_BGR), -1
    with torch.no_grad():
        for layer in tv.features:
            h = layer(h)
            if isinstance(layer, torch.nn.Conv2d):
                n_conv += 1
            elif isinstance(layer, torch.nn.ReLU) and n_conv in L._TAPS19:
                ref.append(h.clone())
                if n_conv == L._TAPS19[-1]:
                    break
    assert [o.shape for o in ours] == [r.shape for r in ref] and len(ours) == 5
    for o, r in zip(ours, ref):
        assert torch.allclose(o, r, atol=1e-4, rtol=1e-4)
