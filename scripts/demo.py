"""The README's main job, on a fresh machine with no network and no ../shared:

enroll the public-domain astronaut portrait (skimage.data.astronaut), animate it with a built-in
motion, write out/demo.mp4 (watermarked + C2PA-signed), verify it and print the verdict.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

OUT = Path("out")
STEPS = os.environ.get("TH_DEMO_STEPS", "100")


def th(*args: str) -> subprocess.CompletedProcess:
    print("$ th " + " ".join(args), flush=True)
    r = subprocess.run([sys.executable, "-m", "thcli", *args], text=True)
    if r.returncode not in (0,):
        sys.exit(f"demo: `th {args[0]}` failed with exit code {r.returncode}")
    return r


def main() -> None:
    from skimage import data

    from synth.media.video import write_image

    t0 = time.perf_counter()
    OUT.mkdir(exist_ok=True)
    photo = OUT / "astronaut.png"
    write_image(photo, data.astronaut())  # a real photo, not generated: written as is
    th("enroll", str(photo), "-o", str(OUT / "astronaut.avatar"), "--steps", STEPS, "--force",
       "--consent", "Public-domain NASA portrait (skimage.data.astronaut), used for the th demo")
    th("animate", str(OUT / "astronaut.avatar"), "demo", "-o", str(OUT / "demo.mp4"), "--seconds", "6", "--force")
    th("faces", str(OUT / "demo.mp4"), "-o", str(OUT / "demo.faces.mp4"), "--force")
    th("verify", str(OUT / "demo.mp4"))
    print(f"demo done in {time.perf_counter() - t0:.0f} s: {OUT / 'demo.mp4'} "
          f"(preview of the enrollment: {OUT / 'astronaut.preview.png'})")


if __name__ == "__main__":
    main()
