"""The README's audio-driven example: the astronaut speaks a sentence (rerun it when a model changes).

Speech: espeak-ng if installed (`apt-get install espeak-ng`), else the first seconds of a ../shared clip's
sound. Enrolls skimage.data.astronaut(), runs `th animate AVATAR speech.wav` with the bundled models,
verifies the mp4, and writes docs/images/audio_strip.png (signed): frames of the video above the
speech's level and the mouth opening the audio model gave them.

    python scripts/audio_strip.py [--out out/audio_strip] [--steps 100]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SENTENCE = ("Hello! I am an astronaut. I learned to speak from a few minutes of video, "
            "and every frame you see is signed.")
SHARED_CLIP = ROOT.parent / "shared" / "data" / "clips" / "TPSMM__driving.mp4"
N_FRAMES = 8


def th(*args: str) -> None:
    print("$ th " + " ".join(args), flush=True)
    r = subprocess.run([sys.executable, "-m", "thcli", *args])
    if r.returncode:
        sys.exit(f"audio_strip: `th {args[0]}` failed with exit code {r.returncode}")


def make_speech(dest: Path) -> str:
    """A speech wav; returns where it came from."""
    from synth.media.video import ffmpeg_exe

    espeak = shutil.which("espeak-ng")
    if espeak:
        subprocess.run([espeak, "-v", "en-us", "-s", "150", "-w", str(dest), SENTENCE], check=True)
        return f"espeak-ng: “{SENTENCE}”"
    if SHARED_CLIP.exists():
        subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(SHARED_CLIP), "-vn",
                        "-t", "5", str(dest)], check=True)
        return f"the first 5 s of {SHARED_CLIP.name}'s sound"
    sys.exit("audio_strip: needs espeak-ng (apt-get install espeak-ng) or ../shared/data")


def strip(video: Path, speech: Path, dest: Path, source: str) -> None:
    """Frames above the speech level and the mouth opening of the driving landmarks; signed PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from skimage import data

    from provenance.manifest import GenerationFacts
    from provenance.write import write_image
    from synth.audio import features as F
    from synth.audio.bundled import default_audio_model_path
    from synth.audio.infer import FPS, audio_motion
    from synth.audio.mouth import apply_mouth_motion, face_scale, opening
    from synth.audio.train import load_model
    from synth.avatar.bundled import file_sha256, model_identity, resolve_model
    from synth.faces.detector import FaceDetector
    from synth.media.video import iter_frames

    frames = list(iter_frames(video))
    motion = audio_motion(load_model(default_audio_model_path()), speech)
    face = FaceDetector().detect(data.astronaut(), thorough=True)[0].landmarks
    op = opening(apply_mouth_motion(face, motion)) / face_scale(face)  # inner-lip opening, face-scale units
    x = F.read_audio(speech)
    level = F.frame_rms_db(x, FPS, len(motion))
    loud = np.convolve(op, np.ones(3) / 3, "same")
    picks = sorted(int(i) for i in np.linspace(3, len(frames) - 4, N_FRAMES).round())
    # show the most open frame of each stretch so the strip shows speech, not rests
    half = max(1, (picks[1] - picks[0]) // 2)
    picks = [max(range(max(0, p - half), min(len(loud), p + half)), key=lambda i: loud[i]) for p in picks]
    fig = plt.figure(figsize=(N_FRAMES * 1.6, 2.75), dpi=100)
    for k, i in enumerate(picks):
        ax = fig.add_axes([k / N_FRAMES, 0.42, 1 / N_FRAMES, 0.58])
        ax.imshow(frames[min(i, len(frames) - 1)])
        ax.set_axis_off()
        ax.text(4, 14, f"{i / FPS:.2f} s", color="white", fontsize=8, weight="bold")
    ax = fig.add_axes([0.01, 0.17, 0.98, 0.22])
    t = np.arange(len(motion)) / FPS
    ax.fill_between(t, -60, np.maximum(level, -60), color="0.8", label="speech level (dBFS)")
    ax.set_ylim(-60, 0)
    ax.set_yticks([])
    ax2 = ax.twinx()
    ax2.plot(t, op, color="C3", lw=1.5, label="mouth opening (model)")
    ax2.set_yticks([])
    for i in picks:
        ax.axvline(i / FPS, color="C0", lw=0.8)
    ax.set_xlim(0, t[-1])
    ax.set_xlabel(f"time (s) — speech: {source}", fontsize=8, labelpad=1)
    ax.tick_params(labelsize=7, pad=1)
    ax2.legend(handles=[ax.collections[0], ax2.lines[0]], loc="upper right", fontsize=7, ncol=2,
               framealpha=0.8, borderpad=0.2)
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    model = resolve_model(None)
    model_id, model_sha = model_identity(model)
    facts = GenerationFacts(GenerationFacts.current().th_version, model_id, model_sha, "astronaut", None,
                            file_sha256(speech))
    write_image(rgb, dest, facts, force=True)
    print(f"→ {dest}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "audio_strip")
    ap.add_argument("--steps", default="100", help="fine-tuning steps of the enrollment")
    ap.add_argument("--png", type=Path, default=ROOT / "docs" / "images" / "audio_strip.png")
    ap.add_argument("--reuse", action="store_true", help="keep an existing enrollment and video; redraw the strip")
    args = ap.parse_args()
    from skimage import data

    from synth.media.video import write_image

    args.out.mkdir(parents=True, exist_ok=True)
    photo = args.out / "astronaut.png"
    write_image(photo, data.astronaut())  # a real photo, not generated: written as is
    speech = args.out / "speech.wav"
    avatar = args.out / "astronaut.avatar"
    video = args.out / "astronaut_speaks.mp4"
    if args.reuse and video.exists() and speech.exists():
        source = f"espeak-ng: “{SENTENCE}”" if shutil.which("espeak-ng") else f"{SHARED_CLIP.name}'s sound"
    else:
        source = make_speech(speech)
        th("enroll", str(photo), "-o", str(avatar), "--steps", args.steps, "--force",
           "--consent", "Public-domain NASA portrait (skimage.data.astronaut), used for the th demo")
        th("animate", str(avatar), str(speech), "-o", str(video), "--force")
        th("verify", str(video))
    strip(video, speech, args.png, source)


if __name__ == "__main__":
    main()
