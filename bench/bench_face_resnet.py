"""Face-descriptor speed: dlib's face-recognition ResNet (C++, dlib) vs its torch port (synth.nets.face_resnet).

    .venv/bin/python bench/bench_face_resnet.py [--threads 1 2] [--repeats 5] [--faces 32]

Rows: the network alone on ready 150×150 chips (dlib one chip per call; torch at batch 1 and 16); the
whole descriptor from (image, landmarks) (chip cut + network); and th eval's CSIM descriptors of 128 px crops
(upscaled to 256 px first): the old per-frame dlib path against the batched torch path. Times are medians
of ``--repeats`` runs, in ms per face. Faces are the astronaut photo under small transformations (the cost
does not depend on the content).
"""

from __future__ import annotations

import argparse
import os

from timing import median_time  # bench/timing.py (scripts run from bench/ on sys.path)

# Before torch loads OpenMP: spinning threads make timings meaningless on a shared CPU.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def faces(n: int):
    """n (512 px image, landmarks) pairs and n (128 px crop, landmarks) pairs of the astronaut."""
    import cv2
    import numpy as np
    from skimage import data

    from synth.faces.detector import FaceDetector

    img = data.astronaut()
    lm0 = FaceDetector().detect(img)[0].landmarks.astype(np.float64)
    rng = np.random.default_rng(0)
    images, crops = [], []
    for _ in range(n):
        m = cv2.getRotationMatrix2D((256 + rng.uniform(-20, 20), 200), rng.uniform(-10, 10), rng.uniform(0.8, 1.2))
        im = cv2.warpAffine(img, m, (512, 512), borderMode=cv2.BORDER_REFLECT)
        lm = lm0 @ m[:, :2].T + m[:, 2]
        images.append((im, np.round(lm)))
        x0, y0 = lm.min(0) - 40
        side = int((lm.max(0) - lm.min(0)).max() + 80)
        a = cv2.getAffineTransform(np.float32([[x0, y0], [x0 + side, y0], [x0, y0 + side]]),
                                   np.float32([[0, 0], [128, 0], [0, 128]]))
        crops.append((cv2.warpAffine(im, a, (128, 128), flags=cv2.INTER_AREA), lm @ a[:, :2].T + a[:, 2]))
    return images, crops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--faces", type=int, default=32)
    args = ap.parse_args()

    import dlib
    import numpy as np
    import torch

    from synth.eval import metrics
    from synth.faces.chip import face_chip
    from synth.nets.face_resnet import chips_to_tensor, default_model_path, face_descriptors, load_face_resnet

    images, crops = faces(args.faces)
    chips = np.stack([face_chip(im, lm) for im, lm in images])  # (N,150,150,3)
    rec = dlib.face_recognition_model_v1(str(default_model_path()))
    net = load_face_resnet()
    n = len(chips)

    def shape(lm: np.ndarray):
        return dlib.full_object_detection(dlib.rectangle(0, 0, 1, 1), [dlib.point(int(x), int(y)) for x, y in lm])

    def old_eval_descriptor(rgb: np.ndarray, lm: np.ndarray) -> np.ndarray:  # th eval before the port
        img, lm2 = metrics.descriptor_input(rgb, lm)
        return np.asarray(rec.compute_face_descriptor(img, shape(lm2)))

    rows: list[tuple[str, str, float]] = []  # (what, how, ms per face)
    k = 8  # dlib rows: a subset, dlib is the slow one
    rows.append(("network on a chip", "dlib, 1 chip per call",
                 1000 * median_time(lambda: [rec.compute_face_descriptor(c) for c in chips[:k]], args.repeats) / k))
    rows.append(("network on a chip", "dlib, 16 chips per call",
                 1000 * median_time(lambda: rec.compute_face_descriptor(list(chips[:16])), args.repeats) / 16))
    rows.append(("image + landmarks", "dlib compute_face_descriptor",
                 1000 * median_time(lambda: [rec.compute_face_descriptor(im, shape(lm)) for im, lm in images[:k]],
                                    args.repeats) / k))
    rows.append(("th eval CSIM (128 px crop)", "before: dlib per frame",
                 1000 * median_time(lambda: [old_eval_descriptor(c, lm) for c, lm in crops[:k]], args.repeats) / k))
    x = chips_to_tensor(chips)
    for t in args.threads:
        torch.set_num_threads(t)
        with torch.no_grad():
            for b in (1, 16):
                batches = [x[i:i + b] for i in range(0, 16, b)]
                rows.append(("network on a chip", f"torch, batch {b}, {t} thread(s)",
                             1000 * median_time(lambda bs=batches: [net.descriptor(c) for c in bs], args.repeats) / 16))
        rows.append(("image + landmarks", f"torch face_descriptors, batch 16, {t} thread(s)",
                     1000 * median_time(lambda: face_descriptors([i for i, _ in images], [lm for _, lm in images]),
                                        args.repeats) / n))
        rows.append(("th eval CSIM (128 px crop)", f"now: metrics.face_descriptors, {t} thread(s)",
                     1000 * median_time(lambda: metrics.face_descriptors([c for c, _ in crops], [lm for _, lm in crops]),
                                        args.repeats) / n))
    # agreement on the same faces
    ours = metrics.face_descriptors([c for c, _ in crops[:k]], [lm for _, lm in crops[:k]])
    ref = np.stack([old_eval_descriptor(c, lm) for c, lm in crops[:k]])
    base = {what: ms for what, how, ms in rows if how.startswith(("dlib, 1 chip", "dlib compute", "before"))}
    print(f"threads {args.threads}, {args.repeats} repeats (median), {n} faces, torch {torch.__version__}, "
          f"dlib {dlib.__version__}; eval descriptors: max |torch − dlib| = {np.abs(ours - ref).max():.1e}\n")
    print("| what | how | ms per face | speed-up vs dlib |\n|---|---|---|---|")
    for what, how, ms in rows:
        print(f"| {what} | {how} | {ms:.1f} | {base[what] / ms:.1f}× |")


if __name__ == "__main__":
    main()
