"""Watermark design check: QIM step vs distortion compensation α at equal embedding distortion (α·step = 3.6),
through the re-uploader's chain.

Hosts: 3 s of raw generator output (bundled model, one shot, no watermark) for four portraits and 3 s of two real
clips, 256 px. Each is marked with every (step, α), written by th's H.264 writer, sent through
`provenance.attacks.chain_video(..., "chain")` and read back; printed per host: PSNR mean / worst, the best agreement
of the true code word over the true geometry and every gain, and whether the reader finds the exact payload.

    TH_THREADS=1 .venv/bin/python bench/bench_qim.py [--workdir DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SETTINGS = ((4.0, 0.9), (5.0, 0.72), (6.0, 0.6), (7.0, 0.514))
PORTRAITS = (("EAMM__jake4.png", "nod"), ("LIA__macron.png", "talk"), ("LivePortrait__s1.jpg", "turn"),
             ("LivePortrait__d9.jpg", "nod"))
CLIPS = ("EDTalk__pose_source1.mp4", "LivePortrait__d8.mp4")
TRUE_GEOMETRIES = [(s, off) for s in (0.897, 0.899) for off in ((12, 12), (12, 13), (13, 12), (13, 13))]


def hosts() -> dict[str, np.ndarray]:
    import cv2
    import torch

    from synth.avatar.animate import render
    from synth.avatar.bundled import default_model_path
    from synth.avatar.enroll import enroll, load_shots
    from synth.avatar.finetune import PersonParams
    from synth.avatar.model import TalkingHeadModel
    from synth.avatar.motion import builtin_motion
    from synth.media.video import iter_frames

    torch.set_num_threads(1)
    net = TalkingHeadModel.load(default_model_path())
    out = {}
    for photo, motion in PORTRAITS:
        av = enroll(net, default_model_path(), load_shots([DATA / "portraits" / photo], net.image_size), 0, "x", "x")
        p = PersonParams.from_tensors(av.tensors)
        lms = builtin_motion(motion, av.landmarks, seconds=3)
        out[photo] = np.stack(list(render(net, p.generator_module(net), p.psi, lms, 256, sources=p.sources)))
    for clip in CLIPS:
        out[clip] = np.stack([cv2.resize(f, (256, 256), interpolation=cv2.INTER_AREA)
                              for f in iter_frames(DATA / "clips" / clip, max_frames=75)])
    return out


def main() -> None:
    from provenance import attacks, ecc
    from provenance import watermark as wm
    from synth.media.video import VideoWriter, iter_frames

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"needs the shared data at {DATA}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="th-bench-qim-"))
    work.mkdir(parents=True, exist_ok=True)
    payload = "c0ffee42"
    bits = wm.payload_to_bits(payload)
    code = ecc.conv_encode(np.concatenate([bits, wm.checksum(bits)]))
    print("| step | α | host | PSNR mean / worst | true-word agreement | read |\n|---|---|---|---|---|---|")
    all_hosts = hosts()
    for step, alpha in SETTINGS:
        wm.STEP, wm.ALPHA = step, alpha  # module parameters, read at call time; the layout depends on STEP
        wm.layout.cache_clear()
        for name, frames in all_hosts.items():
            marked = [wm.embed(f, bits, frame_index=i) for i, f in enumerate(frames)]
            psnr = [wm.psnr(m, f) for m, f in zip(marked, frames)]
            src = work / f"{step}_{Path(name).stem}.mp4"
            with VideoWriter(src, 25, (256, 256)) as w:
                for m in marked:
                    w.write(m)
            acc = wm.Accumulator()
            for f in iter_frames(attacks.chain_video(src, src.with_suffix(".chain.mp4"), "chain")):
                acc.add(f)
            best = 0.0
            for s, off in TRUE_GEOMETRIES:
                feats = wm._frame_features(acc.planes, s, off)
                for g in wm.GAINS:
                    llr = wm._llr(wm._soft_sum(feats, g))
                    seen = llr != 0
                    best = max(best, float(np.mean((llr[seen] > 0) == (code[seen] == 0))))
            r = wm._decide(acc)
            print(f"| {step:g} | {alpha:.2f} | {name} | {np.mean(psnr):.2f} / {np.min(psnr):.2f} | {best:.3f} | "
                  f"{'yes' if r.found and r.payload == payload else 'no'} |", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
