"""Speed benchmark of the user-facing pipeline: per-stage ms/frame, `th animate` end-to-end fps, enrollment
time, `th verify` frames/s and peak memory for a short vs a long driver.

    .venv/bin/python bench/bench_speed.py [--model PATH] [--driver VIDEO] [--threads 2] [--repeats 3]
                                          [--long-seconds 300] [--enroll-steps 40]
                                          [--sections stages enroll animate verify live memory]

The real-time check of issue 15 is ``--sections stages animate verify``: the default driver is a 10 s, 25 fps,
256 px talking-head clip; `th animate` runs on a feed-forward avatar of it at --size 256, first with an empty
engine cache (cold: the ONNX export is part of the start-up) and then ``--repeats`` times warm.

Model: ``--model``, else an export of the newest checkpoint of runs/cpu, else a freshly built cpu-preset
model (labelled *untrained weights*: speed does not depend on the weights). Stages are timed in-process
(medians of ``--repeats``); end-to-end numbers run the real CLI in a child process, and peak memory is
that child's RSS high-water mark (``os.wait4`` rusage). The machine may be shared: a warning is printed
when the load average is high, and only numbers taken together should be compared.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from timing import median_time  # bench/timing.py (scripts run from bench/ on sys.path)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DRIVER = ROOT.parent / "shared" / "data" / "clips" / "EDTalk__pose_source1.mp4"  # 10 s, 25 fps, 256²
ENROLL_CLIP = ROOT.parent / "shared" / "data" / "clips" / "RNTHM__examples_fine_tuning_test_video_e43ca9f.mp4"


def run_child(argv: list[str], env: dict[str, str], check: bool = True) -> tuple[float, str]:
    """Run a command; returns (wall seconds, stdout). Fails loudly when ``check`` and it fails."""
    t = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, env=env)
    if check and p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{p.stderr[-2000:]}")
    return time.perf_counter() - t, p.stdout


def peak_rss_child(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one child process, via os.wait4 on exactly that child."""
    t = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{p.stderr.read().decode()[-2000:] if p.stderr else ''}")
    return wall, usage.ru_maxrss / 1024.0  # Linux: KiB


def resolve_bench_model(given: str | None, workdir: Path) -> tuple[Path, str]:
    """The model to time and a label saying what it is."""
    from synth.avatar.model import TalkingHeadModel, export_model
    from synth.nets.config import preset
    from synth.train.checkpoint import list_checkpoints

    if given:
        return Path(given), f"{given}"
    run = ROOT / "runs" / "cpu"
    if run.is_dir() and list_checkpoints(run):
        out = workdir / "runs_cpu_latest.safetensors"
        export_model(run, out, force=True)
        return out, f"runs/cpu latest checkpoint ({list_checkpoints(run)[-1].name})"
    out = workdir / "untrained_cpu.safetensors"
    TalkingHeadModel.build(preset("cpu")).export(out, force=True)
    return out, "cpu preset, UNTRAINED weights (speed does not depend on weights)"


def stage_times(model_path: Path, driver: Path, repeats: int, sizes: tuple[int, ...]) -> dict[str, float]:
    """ms/frame of each stage of `th animate`, in-process."""
    import cv2

    from provenance import keys, manifest, watermark
    from provenance.manifest import GenerationFacts
    from synth.avatar.animate import render
    from synth.avatar.model import TalkingHeadModel
    from synth.avatar.runtime import runtime_generator
    from synth.faces.tracking import track_frames
    from synth.media.video import VideoWriter, iter_frames, probe

    info = probe(driver)
    frames: list[np.ndarray] = []
    dec = median_time(lambda: frames.__setitem__(slice(None), list(iter_frames(driver))), repeats, warmup=0)
    n = len(frames)
    out = {"decode": dec / n * 1e3}
    from synth.faces.detector import FaceDetector, fit_landmarks

    fit_landmarks(frames[0], (0, 0, 64, 64))  # dlib's models load once per process (~1.8 s): not a per-frame cost
    FaceDetector().detect(frames[0])
    out["track"] = median_time(lambda: track_frames(frames, info.fps), repeats, warmup=0) / n * 1e3
    out["track, re-detecting every frame (gate 0)"] = median_time(
        lambda: track_frames(frames, info.fps, gate=0), repeats, warmup=0) / n * 1e3
    net = TalkingHeadModel.load(model_path)
    s = net.image_size
    import torch

    neutral = _neutral(s)
    lm = np.tile(neutral, (32, 1, 1)).astype(np.float32)
    gen = net.fast_generator()
    psi = gen.project(torch.zeros(1, net.config.net.emb_dim))[0]
    sources = None
    if net.uses_warp:  # a one-shot avatar: the astronaut at model size
        from skimage import data

        from synth.faces.align import align_crop
        from synth.faces.detector import FaceDetector
        from synth.faces.warp import ShotWarper

        img = data.astronaut()
        crop, _ = align_crop(img, FaceDetector().detect(img)[0].landmarks, size=s)
        sources = (crop[None], neutral[None])
        warper = ShotWarper(*sources)
        out["warp (piecewise affine, 1 shot)"] = median_time(lambda: [warper(x) for x in lm], repeats) / len(lm) * 1e3
    engines = {"torch": gen, "onnx": runtime_generator(gen, s, 1, torch.device("cpu"), "onnx")}
    for name, g in engines.items():
        for size in sizes:  # warp + landmark image + generator (batches of 8, as th animate) + resize
            out[f"render ({name})@{size}"] = median_time(
                lambda size=size, g=g: list(render(net, g, psi, lm, size, sources=sources)), repeats) / len(lm) * 1e3
    bits = watermark.payload_to_bits(watermark.new_payload())
    ident = keys.ensure_identity()
    with tempfile.TemporaryDirectory() as td:
        for size in sizes:
            img = cv2.resize(frames[0], (size, size))
            out[f"watermark@{size}"] = median_time(lambda img=img: watermark.embed(img, bits), repeats * 5) * 1e3
            clip = [cv2.resize(f, (size, size)) for f in frames]
            raw = Path(td) / f"raw{size}.mp4"

            def encode(clip=clip, raw=raw, size=size) -> None:
                raw.unlink(missing_ok=True)
                with VideoWriter(raw, info.fps, (size, size)) as w:
                    for f in clip:
                        w.write(f)

            out[f"encode@{size}"] = median_time(encode, repeats) / n * 1e3
            definition = manifest.manifest_definition(GenerationFacts.current(), watermark.new_payload(), "x.mp4")
            signed = Path(td) / f"signed{size}.mp4"

            def sign(raw=raw, signed=signed, definition=definition) -> None:
                signed.unlink(missing_ok=True)
                manifest.sign_file(raw, signed, definition, ident, "video/mp4")

            out[f"sign (per file, {n} frames)@{size}"] = median_time(sign, repeats) * 1e3
    out["_frames"] = n
    return out


def _neutral(size: int) -> np.ndarray:
    """A frontal face's 68 landmarks in a ``size`` crop, from a real photo (skimage's astronaut)."""
    from skimage import data

    from synth.faces.align import align_crop, apply_affine
    from synth.faces.detector import FaceDetector

    img = data.astronaut()
    face = FaceDetector().detect(img)[0]
    _, M = align_crop(img, face.landmarks, size=size)
    return apply_affine(face.landmarks, M)


SECTIONS = ("stages", "enroll", "animate", "verify", "live", "memory")


def live_run(th: list[str], avatar: Path, driver: str, model: Path, threads: int, env: dict, work: Path,
             size: int = 256) -> dict:
    """`th animate --live FIFO` read by a thread here: time to the first frame, frame interval, th's latency."""
    import threading

    fifo = work / "live.fifo"
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo)
    arrivals: list[float] = []
    frame_bytes = size * size * 3

    def read() -> None:
        with open(fifo, "rb") as fh:
            while fh.read(frame_bytes):
                arrivals.append(time.perf_counter())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.3)
    t0 = time.perf_counter()
    p = subprocess.run([*th, "animate", str(avatar), driver, "-o", str(work / "live.mp4"), "--size", str(size),
                        "--model", str(model), "--threads", str(threads), "--live", str(fifo), "--force"],
                       capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    reader.join(30)
    if p.returncode != 0:
        raise SystemExit(f"th animate --live failed:\n{p.stderr[-2000:]}")
    m = re.search(r"median (\d+) ms, p95 (\d+) ms", p.stderr)
    gaps = np.diff(arrivals) * 1000.0
    return {"frames": len(arrivals), "first": arrivals[0] - t0 if arrivals else float("nan"), "wall": wall,
            "gap_median": float(np.median(gaps)) if gaps.size else float("nan"),
            "gap_p95": float(np.percentile(gaps, 95)) if gaps.size else float("nan"),
            "latency": (int(m.group(1)), int(m.group(2))) if m else (None, None)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--driver", default=str(DEFAULT_DRIVER))
    ap.add_argument("--threads", type=int, default=int(os.environ.get("TH_THREADS", "2")))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--long-seconds", type=float, default=300.0, help="length of the long built-in driver")
    ap.add_argument("--enroll-steps", type=int, default=None, help="fine-tuning steps (default: th enroll's)")
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    args = ap.parse_args()
    todo = set(args.sections)

    from synth.device import set_threads
    from thcli.enroll import DEFAULT_STEPS

    load1 = os.getloadavg()[0]
    if load1 > 0.75 * (os.cpu_count() or 1):
        print(f"WARNING: load average {load1:.1f} on {os.cpu_count()} cores: the machine is shared, numbers are "
              "pessimistic; re-run on a quiet machine", file=sys.stderr)
    set_threads(args.threads)
    steps = DEFAULT_STEPS if args.enroll_steps is None else args.enroll_steps
    work = Path(tempfile.mkdtemp(prefix="th_bench_speed_"))
    env = {**os.environ, "TH_THREADS": str(args.threads), "OMP_NUM_THREADS": str(args.threads),
           "OMP_WAIT_POLICY": "PASSIVE", "TH_HOME": str(work / "home")}
    os.environ["TH_HOME"] = env["TH_HOME"]
    model, label = resolve_bench_model(args.model, work)
    th = [sys.executable, "-m", "thcli"]
    print(f"model: {label}\ndriver: {args.driver}\nthreads: {args.threads}, repeats: {args.repeats}\n")

    st = {}
    if "stages" in todo:
        st = stage_times(model, Path(args.driver), args.repeats, (128, 256))
        n = st.pop("_frames")
        print("| stage | ms/frame |\n|---|---|")
        for k, v in st.items():
            unit = f"{v:.1f} ms/file = {v / n:.2f} ms/frame" if k.startswith("sign") else f"{v:.2f}"
            print(f"| {k} | {unit} |")

    # photos for enrollment: 8 frames of a real clip
    from synth.media.video import iter_frames, probe, write_image

    photos = []
    all_frames = list(iter_frames(ENROLL_CLIP))
    for i, idx in enumerate(np.linspace(0, len(all_frames) - 1, 8).astype(int)):
        p = work / f"shot{i}.png"
        write_image(p, all_frames[idx])
        photos.append(str(p))
    rows = []
    for k in (1, 8) if "enroll" in todo else ():
        for s in (0, steps):
            wall, out = run_child([*th, "enroll", *photos[:k], "-o", str(work / f"a{k}_{s}.avatar"), "--steps", str(s),
                                      "--model", str(model), "--threads", str(args.threads), "--force"], env)
            rows.append((f"th enroll K={k} --steps {s} (wall, incl. start-up)", f"{wall:.1f} s"))
    avatar = work / "a1_0.avatar"
    if not avatar.exists():
        run_child([*th, "enroll", photos[0], "-o", str(avatar), "--steps", "0", "--model", str(model), "--force"], env)
    results = {}
    info = probe(args.driver)
    for size in (128, 256) if todo & {"animate", "verify"} else ():
        outp = work / f"anim{size}.mp4"
        walls, fps_render = [], []
        for rep in range(1 + args.repeats):
            if rep == 0:  # run 0: empty engine cache (a cold start-up pays the ONNX export)
                shutil.rmtree(Path(env["TH_HOME"]) / "cache" / "engine", ignore_errors=True)
            wall, out = run_child([*th, "animate", str(avatar), args.driver, "-o", str(outp), "--size", str(size),
                                   "--model", str(model), "--threads", str(args.threads), "--force"], env)
            m = re.search(r"(\d+) frames .* in ([\d.]+) s = ([\d.]+) fps \(total ([\d.]+) s\)", out)
            frames = int(m.group(1)) if m else info.frames
            fps_render.append(float(m.group(3)) if m else float("nan"))
            walls.append(wall)
        results[size] = (outp, frames)
        warm = float(np.median(walls[1:]))
        rows.append((f"th animate --size {size}: tracking + render + watermark + encode + sign, overlapped",
                     f"{float(np.median(fps_render[1:])):.1f} fps"))
        rows.append((f"th animate --size {size} end to end incl. start-up, warm (median of {args.repeats})",
                     f"{warm:.2f} s for {frames} frames = {info.duration:.0f} s of video: real-time factor "
                     f"{info.duration / warm:.2f}"))
        rows.append((f"th animate --size {size} end to end, cold engine cache (first run)", f"{walls[0]:.2f} s"))
    for size, (outp, frames) in results.items() if "verify" in todo else ():
        walls = []
        for _ in range(args.repeats):
            wall, out = run_child([*th, "verify", str(outp), "--json"], env, check=False)  # exit code = verdict
            if '"verdict"' not in out:
                raise SystemExit(f"th verify gave no verdict for {outp}")
            walls.append(wall)
        wall = float(np.median(walls))
        rows.append((f"th verify ({size} px, {frames} frames), median of {args.repeats}",
                     f"{wall:.2f} s = {frames / wall:.1f} frames/s"))
    if "live" in todo:
        lv = live_run(th, avatar, args.driver, model, args.threads, env, work)
        rows.append(("th animate --live FIFO (256 px): frames received / first frame after launch",
                     f"{lv['frames']} / {lv['first']:.2f} s (run {lv['wall']:.2f} s)"))
        rows.append(("--live: interval between frames received, median / p95", f"{lv['gap_median']:.0f} / {lv['gap_p95']:.0f} ms"))
        rows.append(("--live: latency landmarks → frame written (th's own count), median / p95",
                     f"{lv['latency'][0]} / {lv['latency'][1]} ms"))
    mem = {}
    for secs in (10.0, args.long_seconds) if "memory" in todo else ():
        wall, rss = peak_rss_child([*th, "animate", str(avatar), "talk", "--seconds", str(secs), "-o",
                                    str(work / f"mem{int(secs)}.mp4"), "--size", "128", "--model", str(model),
                                    "--threads", str(args.threads), "--force"], env)
        mem[secs] = rss
        rows.append((f"peak RSS, th animate talk {secs:g} s @128", f"{rss:.0f} MiB ({wall:.0f} s, {secs * 25 / wall:.1f} fps)"))
    if mem:
        rows.append((f"peak RSS ratio {args.long_seconds:g} s / 10 s", f"{mem[args.long_seconds] / mem[10.0]:.2f}×"))
    print("\n| measurement | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    if st:
        r128, r256 = st["render (onnx)@128"], st["render (onnx)@256"]
        print(f"\nratios: render torch/onnx @256 = {st['render (torch)@256'] / r256:.2f}×; onnx 256/128 = "
              f"{r256 / r128:.2f}×; watermark share of a 256 frame = "
              f"{st['watermark@256'] / (r256 + st['watermark@256'] + st['encode@256']):.0%}")
    print(f"load average now {os.getloadavg()[0]:.1f} (at start {load1:.1f}); {args.threads} threads; medians of {args.repeats}")


if __name__ == "__main__":
    main()
