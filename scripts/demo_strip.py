"""docs/images/demo_strip.png: 6 frames of out/demo.mp4 beside the warp of the astronaut along the same motion.

    .venv/bin/python scripts/demo_strip.py   (after `make demo`)

Top row: th's frames; bottom row: the piecewise-affine warp of the photo (th eval's `warp` baseline). Written
through the sealing write path (watermark + C2PA), since it holds generated pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OUT = Path("out")
DEST = Path("docs/images/demo_strip.png")


def main() -> None:
    from provenance.manifest import GenerationFacts
    from provenance.write import write_image
    from synth.avatar.avatar_file import Avatar
    from synth.avatar.motion import builtin_motion
    from synth.faces.warp import warp_frames
    from synth.media.video import iter_frames

    frames = list(iter_frames(OUT / "demo.mp4"))
    av = Avatar.load(OUT / "astronaut.avatar")
    lms = builtin_motion("demo", av.landmarks, fps=25.0, seconds=6.0)
    pick = np.linspace(0, len(frames) - 1, 6).round().astype(int)
    warped = warp_frames(av.source, av.landmarks, lms[pick])
    s = frames[0].shape[0]
    if warped.shape[1] != s:
        import cv2

        warped = np.stack([cv2.resize(w, (s, s), interpolation=cv2.INTER_CUBIC) for w in warped])
    strip = np.vstack([np.hstack([frames[i] for i in pick]), np.hstack(list(warped))])
    write_image(strip, DEST, GenerationFacts.current(), force=True)
    print(f"wrote {DEST}")


if __name__ == "__main__":
    main()
