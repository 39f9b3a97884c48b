"""Issue #13 measurement: many th outputs through the re-uploader's chain, read back by `th verify`.

Makes 22 th outputs with the real CLI (the `make demo` pipeline, then 21 one-shot animations of different
portraits driven by every built-in motion and by real driver videos, three output sizes including
--full-frame), 6 signed PNG stills (enrollment previews), re-encodes every video through the chains of
`provenance.attacks.CHAINS` and every still through `attacks.chain_image`, runs `th verify --json` on each
result and prints one table. Outputs are kept in WORKDIR: a rerun only verifies again.

    TH_THREADS=1 OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/bench_chain.py [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
P, C = DATA / "portraits", DATA / "clips"

# (name, photo, driver, extra `th animate` options)
VIDEOS: list[tuple[str, str, str, list[str]]] = [
    ("macron-talk", "LIA__macron.png", "talk", []),
    ("jake-nod", "EAMM__jake4.png", "nod", []),
    ("s1-turn", "LivePortrait__s1.jpg", "turn", []),
    ("aya-smile", "MakeItTalk__aya.jpg", "smile", []),
    ("emma-blink", "3DDFA_V2__emma.jpg", "blink", []),
    ("beckham-demo", "CodeFormer__067_David_Beckham_00.png", "demo", []),
    ("monroe-talk", "LIA__monroe.png", "talk", ["--size", "384"]),
    ("d9-nod", "LivePortrait__d9.jpg", "nod", []),
    ("male2-turn", "DAWN__real_male2.jpeg", "turn", []),
    ("dune-smile", "EAMM__dune_1.jpg", "smile", ["--size", "320"]),
    ("s5-blink", "LivePortrait__s5.jpg", "blink", []),
    ("joyvasa-demo", "JoyVASA__joyvasa_005.png", "demo", []),
    ("einstein-talk", "avatarify__einstein.jpg", "talk", ["--full-frame"]),
    ("obama-nod", "face_recognition__obama.jpg", "nod", ["--full-frame"]),
    ("blake-pose", "GFPGAN__Blake_Lively.jpg", str(C / "EDTalk__pose_source1.mp4"), []),
    ("hermione-contempt", "MakeItTalk__hermione.jpg", str(C / "EAMM__contempt.mp4"), []),
    ("musk-dreamtalk", "MuseTalk__musk.png", str(C / "dreamtalk__M030_front_happy_level3_001.mp4"), []),
    ("jobs-fomm", "avatarify__jobs.jpg", str(C / "first-order-model__08.mp4"), []),
    ("carell-rnthm", "openface__carell.jpg", str(C / "RNTHM__examples_fine_tuning_test_video_e43ca9f.mp4"), []),
    ("hanks-pcavs", "LivePortrait__Tom_Hanks_54745.png", str(C / "PC-AVS__517600055.mp4"), []),
    ("paint-helloMeme", "MakeItTalk__paint3.jpg", str(C / "HelloMeme__nice.mp4"), []),
]
STILLS = ["LIA__macron.png", "EAMM__jake4.png", "MakeItTalk__aya.jpg", "avatarify__einstein.jpg",
          "SadTalker__happy.png"]


def th(*args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "thcli", *map(str, args)], env=env, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise SystemExit(f"th {args[0]} failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    return r


def verify(path: Path, env: dict) -> dict:
    r = th("verify", path, "--json", env=env, check=False)
    try:
        return json.loads(r.stdout)
    except json.JSONDecodeError:
        return {"verdict": f"error {r.returncode}", "watermark": {}, "c2pa": {}, "stderr": r.stderr[-300:]}


def make_outputs(work: Path, env: dict, steps: int, demo_steps: int, seconds: float) -> tuple[list[Path], list[Path]]:
    """The th outputs (videos, stills), made once."""
    from skimage import data

    from synth.media.video import write_image

    videos, stills = [], []
    astronaut = work / "astronaut.png"
    if not astronaut.exists():
        write_image(astronaut, data.astronaut())
    demo = work / "demo.mp4"
    if not demo.exists():  # what `make demo` does (scripts/demo.py)
        th("enroll", astronaut, "-o", work / "astronaut.avatar", "--steps", demo_steps, "--force",
           "--consent", "Public-domain NASA portrait (skimage.data.astronaut), used for the th demo", env=env)
        th("animate", work / "astronaut.avatar", "demo", "-o", demo, "--seconds", 6, "--force", env=env)
    videos.append(demo)
    stills.append(work / "astronaut.preview.png")
    for name, photo, driver, extra in VIDEOS:
        out = work / f"{name}.mp4"
        if not out.exists():
            t = time.perf_counter()
            th("animate", P / photo, driver, "-o", out, "--seconds", seconds, "--steps", steps,
               "--consent", "bench_chain measurement", *extra, env=env)
            print(f"made {out.name} in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
        videos.append(out)
    for photo in STILLS:
        avatar = work / f"{Path(photo).stem}.avatar"
        preview = work / f"{Path(photo).stem}.preview.png"
        if not preview.exists():
            th("enroll", P / photo, "-o", avatar, "--steps", 0, "--consent", "bench_chain measurement", env=env)
        stills.append(preview)
    return videos, stills


def main() -> None:
    import numpy as np

    from provenance import attacks
    from synth.media.video import probe, read_image

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/th-bench-chain"))
    ap.add_argument("--steps", type=int, default=10, help="fine-tuning steps of the one-shot animations")
    ap.add_argument("--demo-steps", type=int, default=100, help="enrollment steps of the demo (make demo: 100)")
    ap.add_argument("--seconds", type=float, default=4.0, help="length of the built-in motions")
    args = ap.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"needs the shared data at {DATA}")
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TH_HOME": str(work / "home"), "PYTHONPATH": str(ROOT)}
    videos, stills = make_outputs(work, env, args.steps, args.demo_steps, args.seconds)

    rows, results = [], {}
    for v in videos:
        info = probe(v)
        want = verify(v, env)["watermark"].get("payload")
        row = {"file": v.name, "size": f"{info.width}x{info.height}", "frames": info.frames, "payload": want}
        for name in attacks.CHAINS:
            out = work / "attacked" / f"{v.stem}.{name}.mp4"
            out.parent.mkdir(exist_ok=True)
            attacks.chain_video(v, out, name)
            a = probe(out)
            t = time.perf_counter()
            d = verify(out, env)
            ok = d["verdict"] == "stripped" and d["watermark"].get("payload") == want
            row[name] = {"ok": ok, "verdict": d["verdict"], "size": f"{a.width}x{a.height}",
                         "z": d["watermark"].get("sync_z"), "acc": d["watermark"].get("bit_accuracy"),
                         "verify_s": round(time.perf_counter() - t, 1)}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    for s in stills:
        rgb = read_image(s)
        want = verify(s, env)["watermark"].get("payload")
        out = work / "attacked" / f"{s.stem}.chain.jpg"
        attacks.chain_image(rgb, out)
        d = verify(out, env)
        rows.append({"file": s.name, "size": f"{rgb.shape[1]}x{rgb.shape[0]}", "frames": 1, "payload": want,
                     "image-chain": {"ok": d["verdict"] == "stripped" and d["watermark"].get("payload") == want,
                                     "verdict": d["verdict"], "z": d["watermark"].get("sync_z"),
                                     "acc": d["watermark"].get("bit_accuracy")}})
    results["rows"] = rows
    (work / "results.json").write_text(json.dumps(results, indent=1))

    cols = [*attacks.CHAINS, "image-chain"]
    print("| th output | size | frames | " + " | ".join(cols) + " |")
    print("|---|---|---|" + "---|" * len(cols))
    for r in rows:
        cells = []
        for c in cols:
            x = r.get(c)
            cells.append("" if x is None else f"{'ok' if x['ok'] else x['verdict']} ({x.get('size', '')} z {x['z']})")
        print(f"| {r['file']} | {r['size']} | {r['frames']} | " + " | ".join(cells) + " |")
    for c in cols:
        got = [r[c]["ok"] for r in rows if c in r]
        if got:
            print(f"{c}: stripped with the exact payload in {sum(got)}/{len(got)} = {100 * np.mean(got):.0f} %")


if __name__ == "__main__":
    main()
