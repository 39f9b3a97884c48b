"""Foundation speed: `th faces` ms/frame on a 256 px and a 512 px clip, and `th prepare` throughput.

    .venv/bin/python bench/bench_foundation.py [--runs 3] [--prepare-all]

Runs the real CLI in subprocesses and prints a table (median of --runs). `--prepare-all` also times
`th prepare` over every clip of ../shared/data/clips into a temporary folder (a few minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CLIPS = {
    "256 px (EDTalk__pose_source1, 10 s)": "clips/EDTalk__pose_source1.mp4",
    "512 px (SadTalker__WDA_AlexandriaOcasioCortez_000, 8 s)": "clips/SadTalker__WDA_AlexandriaOcasioCortez_000.mp4",
}


def th(*args: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "thcli", *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"th {args[0]} failed: {r.stderr.strip()}")
    return time.perf_counter() - t0, r.stdout + r.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--prepare-all", action="store_true")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    print(f"load average {load:.2f} on {os.cpu_count()} cores" + ("  (machine busy: numbers are pessimistic)" if load > 1.5 else ""))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, rel in CLIPS.items():
            clip = SHARED / rel
            if not clip.exists():
                print(f"skip {label}: {clip} absent")
                continue
            from synth.media.video import probe

            n = probe(clip).frames
            times = [th("faces", str(clip), "-o", f"{tmp}/f.mp4", "--force")[0] for _ in range(args.runs)]
            med = statistics.median(times)
            rows.append((f"th faces {label}", f"{1000 * med / n:.1f} ms/frame", f"{n / med:.1f} frames/s", f"{n} frames, end to end incl. preview encode"))
        if args.prepare_all:
            out = Path(tmp) / "prep"
            dt, log = th("prepare", str(SHARED / "clips"), str(out), "-j", str(os.cpu_count() or 2))
            index = json.loads((out / "index.json").read_text())
            n_clips = len(index["clips"]) + len(index["skipped"])
            n_frames = sum(c["frames"] for c in index["clips"])
            rows.append(("th prepare all clips", f"{60 * n_clips / dt:.1f} clips/min", f"{n_frames / dt:.1f} frames/s",
                         f"{n_clips} clips ({len(index['skipped'])} skipped), {n_frames} crops, {dt:.0f} s"))
    w = max(len(r[0]) for r in rows)
    print(f"{'what':<{w}}  {'speed':>16}  {'rate':>16}  note")
    for r in rows:
        print(f"{r[0]:<{w}}  {r[1]:>16}  {r[2]:>16}  {r[3]}")


if __name__ == "__main__":
    main()
