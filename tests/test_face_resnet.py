"""dlib's face-recognition ResNet in torch, checked against dlib itself (the golden values are dlib's own)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from synth.errors import UserError
from synth.faces.chip import chip_details, cut_chips, face_chip
from synth.nets import face_resnet as fr
from tests.conftest import SHARED

dlib = pytest.importorskip("dlib")
pytestmark = pytest.mark.usefixtures("one_torch_thread")
N_FACES = 20


def dlib_shape(lm: np.ndarray):
    """dlib's full_object_detection from landmarks (dlib's points are whole pixels)."""
    pts = [dlib.point(int(round(x)), int(round(y))) for x, y in lm]
    return dlib.full_object_detection(dlib.rectangle(0, 0, 1, 1), pts)


@pytest.fixture(scope="module")
def recognizer():
    return dlib.face_recognition_model_v1(str(fr.default_model_path()))


@pytest.fixture(scope="module")
def net() -> fr.FaceResNet:
    return fr.load_face_resnet()


def astronaut_variants(img: np.ndarray, n: int) -> list[np.ndarray]:
    """Small transformations of one photo: scale, rotation, shift, mirror, brightness."""
    import cv2

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        angle, scale = rng.uniform(-15, 15), rng.uniform(0.6, 1.6)
        m = cv2.getRotationMatrix2D((256 + rng.uniform(-20, 20), 200 + rng.uniform(-20, 20)), angle, scale)
        v = cv2.warpAffine(img, m, (512, 512), borderMode=cv2.BORDER_REFLECT)
        v = np.clip(v.astype(np.float32) * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8)
        out.append(v[:, ::-1].copy() if i % 2 else v)
    return out


@pytest.fixture(scope="module")
def faces(astronaut) -> list[tuple[np.ndarray, np.ndarray]]:
    """≥ 20 (image, landmarks) pairs: portraits of ../shared/data when present, else the astronaut
    under small transformations. Landmarks from the repo's dlib detector, rounded to whole pixels."""
    from synth.faces.detector import FaceDetector
    from synth.media.video import read_image

    det = FaceDetector()
    portraits = sorted((SHARED / "portraits").glob("*")) if (SHARED / "portraits").is_dir() else []
    images = (read_image(p) for p in portraits) if portraits else iter(astronaut_variants(astronaut, 2 * N_FACES))
    out = []
    for img in images:
        found = det.detect(img)
        if found and found[0].size >= 60:
            out.append((img, np.round(found[0].landmarks).astype(np.float64)))
        if len(out) == N_FACES:
            break
    assert len(out) == N_FACES
    return out


def test_descriptors_match_dlib(faces, recognizer):
    images, lms = [f[0] for f in faces], [f[1] for f in faces]
    ours = fr.face_descriptors(images, lms)
    ref = np.array([recognizer.compute_face_descriptor(img, dlib_shape(lm)) for img, lm in faces])
    cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    assert ours.shape == (N_FACES, 128)
    assert cos.min() >= 0.9999
    assert np.abs(ours - ref).max() <= 1e-3
    # ... and dlib still tells the faces apart: not every pair is "the same person"
    d = np.linalg.norm(ours[:, None] - ours[None], axis=2)
    assert (d > 0.6).any()


def test_chips_are_dlibs_pixel_for_pixel(faces):
    for img, lm in faces[:8]:
        assert np.array_equal(face_chip(img, lm), dlib.get_face_chip(img, dlib_shape(lm), 150, 0.25))


def test_chip_through_the_pyramid_and_from_5_points(astronaut):
    """A large, rotated face (dlib halves the image with its pyramid first) and the 5-point layout."""
    import cv2

    from synth.faces.detector import FaceDetector, model_file

    m = cv2.getRotationMatrix2D((256, 256), 25, 3.0)
    big = cv2.warpAffine(astronaut, m, (1200, 1100))
    lm = np.round(FaceDetector().detect(astronaut)[0].landmarks @ m[:, :2].T + m[:, 2])
    assert (chip_details(lm).rect[2] - chip_details(lm).rect[0]) > 2 * 150  # the pyramid is used
    assert np.array_equal(face_chip(big, lm), dlib.get_face_chip(big, dlib_shape(lm), 150, 0.25))
    sp5 = dlib.shape_predictor(str(model_file("shape_predictor_5_face_landmarks.dat")))
    shape5 = sp5(astronaut, dlib.rectangle(170, 40, 300, 170))
    lm5 = np.array([(p.x, p.y) for p in shape5.parts()], np.float64)
    assert np.array_equal(face_chip(astronaut, lm5), dlib.get_face_chip(astronaut, shape5, 150, 0.25))


def test_chips_of_several_frames_at_once_and_the_fast_sampling(astronaut):
    """extract_chips: one plan for several images gives each image's own chip exactly; fast=True (OpenCV's
    fixed-point bilinear, what the detector's temporal stage cuts with) stays within a level of dlib's, through
    the pyramid too, except on the image's edge."""
    import cv2

    from synth.faces.chip import extract_chip, extract_chips
    from synth.faces.detector import FaceDetector

    lm = FaceDetector().detect(astronaut)[0].landmarks
    shifted = np.roll(astronaut, (3, -2), axis=(0, 1))
    m = cv2.getRotationMatrix2D((256, 256), 25, 3.0)
    big, big_lm = cv2.warpAffine(astronaut, m, (1200, 1100)), lm @ m[:, :2].T + m[:, 2]
    for imgs, marks in (([astronaut, shifted], lm), ([big, np.roll(big, 5, axis=1)], big_lm)):
        d = chip_details(marks)
        exact, fast = extract_chips(imgs, d), extract_chips(imgs, d, fast=True)
        for img, e, f in zip(imgs, exact, fast):
            assert np.array_equal(e, extract_chip(img, d))
            diff = np.abs(e.astype(int) - f)
            # all but the pixels on the image's edge (dlib: black, OpenCV: blended with black) within one level
            assert np.mean(diff.max(axis=2) <= 1) > 0.99 and diff.mean() < 1.0, (np.mean(diff <= 1), diff.mean())


def test_network_alone_on_a_chip_and_batch_independence(faces, recognizer, net):
    chips = np.stack([face_chip(img, lm) for img, lm in faces[:2]])
    with torch.no_grad():
        out = net(fr.chips_to_tensor(chips))
        single = net.descriptor(fr.chips_to_tensor(chips[1:]))
    assert [tuple(m.shape) for m in out.maps] == [(2, 32, 35, 35), (2, 64, 17, 17), (2, 128, 8, 8), (2, 256, 4, 4)]
    ref = np.array(recognizer.compute_face_descriptor(chips[0]))
    assert np.abs(out.descriptor[0].numpy() - ref).max() < 1e-5
    assert torch.allclose(out.descriptor[1:], single, atol=1e-5)


def test_gradient_reaches_the_input_image(faces, net):
    img, lm = faces[0]
    x = (torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1).requires_grad_(True)
    chips = cut_chips(x, torch.from_numpy(lm)[None])  # (1,3,150,150)
    ref = fr.chips_to_tensor(face_chip(img, lm)[None])
    assert (chips.detach() - ref).abs().mean() * 127.5 < 1.0  # dlib's chip up to its rounding down
    d = net.descriptor(chips)
    (1 - torch.nn.functional.cosine_similarity(d, net.descriptor(ref).detach())).sum().backward()
    g = x.grad[0].abs().sum(0)  # (H,W)
    assert torch.isfinite(g).all() and g.sum() > 0
    ys, xs = np.nonzero(g.numpy())  # only pixels under the (rotated) chip get a gradient
    corners = chip_details(lm).corners()
    corners = np.vstack([corners, corners[1] + corners[2] - corners[0]])
    (x0, y0), (x1, y1) = corners.min(0) - 3, corners.max(0) + 3
    assert xs.min() >= x0 and xs.max() <= x1 and ys.min() >= y0 and ys.max() <= y1


def test_truncated_foreign_and_compressed_files(tmp_path):
    from synth.faces.detector import model_file

    data = fr.default_model_path().read_bytes()
    for n in (3, 400, len(data) // 2, len(data) - 1):
        cut = tmp_path / f"cut{n}.dat"
        cut.write_bytes(data[:n])
        with pytest.raises(UserError, match="truncated"):
            fr.read_face_resnet(cut)
    junk = tmp_path / "junk.dat"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    for foreign in (model_file("mmod_human_face_detector.dat"), model_file("shape_predictor_5_face_landmarks.dat"),
                    junk):
        with pytest.raises(UserError, match="not a dlib face-recognition network"):
            fr.read_face_resnet(foreign)
    with pytest.raises(UserError, match="not found"):
        fr.read_face_resnet(tmp_path / "missing.dat")
    gz = tmp_path / "model.dat.gz"
    gz.write_bytes(gzip.compress(data, compresslevel=1))
    a, b = fr.read_face_resnet(gz).state_dict(), fr.load_face_resnet().state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_topology_is_checked_layer_by_layer():
    parsed = fr.read_dlib_net(fr.default_model_path().read_bytes())
    model = fr.FaceResNet()
    assert len(fr.state_dict_from_dlib(parsed, model, "ok")) == len(model.state_dict())
    parsed.layers.pop(5)
    with pytest.raises(UserError, match="not dlib's face-recognition ResNet"):
        fr.state_dict_from_dlib(parsed, model, "x.dat")
    with pytest.raises(UserError, match="not dlib's face-recognition ResNet"):
        fr.state_dict_from_dlib(fr.read_dlib_net(fr.default_model_path().read_bytes()),
                                fr.FaceResNet(stages=fr.ANET_STAGES[:-1]), "x.dat")


def test_eval_csim_descriptor_equals_dlibs(faces, recognizer):
    """th eval's descriptor of a small crop (upscaled to 256 px first) is dlib's, as before the port."""
    import cv2

    from synth.eval.metrics import DESCRIPTOR_MIN_SIDE, face_descriptors

    img, lm = faces[0]
    x0, y0 = lm.min(0) - 30
    side = int((lm.max(0) - lm.min(0)).max() + 60)
    crop = cv2.resize(img[int(y0):int(y0) + side, int(x0):int(x0) + side], (128, 128), interpolation=cv2.INTER_AREA)
    crop_lm = (lm - [int(x0), int(y0)]) * 128 / side
    k = DESCRIPTOR_MIN_SIDE / 128
    up = cv2.resize(crop, (256, 256), interpolation=cv2.INTER_CUBIC)
    ref = np.array(recognizer.compute_face_descriptor(up, dlib_shape(crop_lm * k)))
    assert np.abs(face_descriptors([crop], [crop_lm])[0] - ref).max() <= 1e-3
