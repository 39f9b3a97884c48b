"""`th animate AVATAR|PHOTO DRIVER -o OUT.mp4`: drive an avatar; output watermarked and C2PA-signed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from thcli.enroll import DEFAULT_STEPS


def animate(
    avatar: Annotated[Path, typer.Argument(help="An .avatar from `th enroll`, or a photo (enrolled on the fly, one shot).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output .mp4 (watermarked + C2PA-signed).")],
    driver: Annotated[str | None, typer.Argument(help="A driver video, a .npz track from `th faces`, a built-in motion (talk, nod, turn, blink, smile, demo), or an audio file (wav, mp3, m4a, ogg, flac) to speak.")] = None,
    absolute: Annotated[bool, typer.Option("--absolute", help="Use the driver's landmarks directly (the paper's way; the driver's face shape leaks).")] = False,
    size: Annotated[int, typer.Option(help="Output side in pixels (the model renders at its own size; larger is upscaled).")] = 256,
    full_frame: Annotated[bool, typer.Option("--full-frame", help="Blend the animated face back into the avatar's whole first photo (output = the photo's size) instead of the face crop.")] = False,
    seconds: Annotated[float, typer.Option(help="Length of a built-in motion.")] = 4.0,
    fps: Annotated[float, typer.Option(help="Frame rate of a built-in motion (videos and tracks keep theirs).")] = 25.0,
    neutral: Annotated[int | None, typer.Option(help="Driver frame taken as neutral for relative motion (default: the first with a face).")] = None,
    steps: Annotated[int, typer.Option(help="Fine-tuning steps when AVATAR is a photo.")] = DEFAULT_STEPS,
    consent: Annotated[str | None, typer.Option(help="Consent statement when AVATAR is a photo.")] = None,
    model: Annotated[Path | None, typer.Option(help="Base model file (default: the bundled model).")] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda | mps | auto")] = "cpu",
    threads: Annotated[int | None, typer.Option(help="Torch threads (default: all cores or TH_THREADS).")] = None,
    engine: Annotated[str, typer.Option(help="Generator engine: auto (ONNX Runtime on a CPU when installed, ~2x faster, same pixels; an avatar animated before starts without loading torch) | onnx | torch.")] = "auto",
    audio_from: Annotated[Path | None, typer.Option("--audio-from", help="Speak the sound of this video (instead of a DRIVER).")] = None,
    audio_model: Annotated[Path | None, typer.Option(help="Audio-to-landmark model for audio drivers (default: the bundled one).")] = None,
    live: Annotated[str | None, typer.Option(help="Also send every frame, watermarked, as raw RGB24 (size × size, or the photo's size with --full-frame) to this named pipe, or - for stdout, the moment it is made (a live view; the signed mp4 is still written). Regular files are refused.")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing output.")] = False,
) -> None:
    """Animate an avatar with a driver; the mp4 keeps the driver's fps and audio and is always
    watermarked and C2PA-signed."""
    import contextlib

    from rich.console import Console

    from provenance.write import load_signer
    from synth.audio.features import check_audio, is_audio_path
    from synth.avatar.animate import TrackedDriver, streamable
    from synth.errors import UserError
    from synth.media.atomic import check_writable
    from synth.media.live import LiveSink, check_live_target
    from synth.nets.engine import ENGINES

    console = Console(stderr=True)
    if out.suffix.lower() != ".mp4":
        raise UserError(f"{out}: th animate writes an .mp4")
    if size < 128 or size % 2:
        raise UserError("--size must be an even number ≥ 128 (smaller frames cannot carry the watermark)")
    if (driver is None) == (audio_from is None):
        raise UserError("give a DRIVER or --audio-from VIDEO (one of them)")
    if not seconds > 0:
        raise UserError(f"--seconds must be > 0 (got {seconds:g}): the length of a built-in motion")
    if engine not in ENGINES:
        raise UserError(f"unknown --engine {engine!r} (use {', '.join(ENGINES)})")
    if audio_from is not None or is_audio_path(driver or ""):
        check_audio(Path(audio_from or driver or ""))  # before any slow work: no audio stream = one clear line
    if live is not None:
        check_live_target(live)
    check_writable(out, force)
    identity = load_signer()  # a key that cannot sign fails now, not after the rendering
    with contextlib.ExitStack() as stack:
        sink = None
        if live is not None:  # opened now: a pipe nobody reads is an error before the slow work
            sink = LiveSink(live)
            stack.callback(sink.close)
        tracked = None
        if audio_from is None and streamable(driver, not absolute, neutral):
            # the driver's decoding and tracking start now, in a child process, while torch and the model load
            tracked = TrackedDriver(Path(driver or "")).start()
            stack.callback(tracked.close)
        # heavy imports from here on: the tracker child is already decoding the driver meanwhile
        import sys
        import time

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from provenance.manifest import GenerationFacts
        from provenance.write import write_video
        from synth.avatar import compiled
        from synth.avatar.animate import plan_driver, render_frames, torch_generate
        from synth.avatar.avatar_file import Avatar
        from synth.avatar.bundled import file_sha256, model_identity, resolve_model
        from synth.device import thread_count
        from synth.media.pipeline import Prefetch
        from synth.media.video import is_image_path
        from synth.nets.engine import onnx_available

        model_path = resolve_model(model)
        model_id, model_sha = model_identity(model_path)
        t0 = time.perf_counter()
        av, fast, setup = None, None, None
        if not is_image_path(avatar):
            av = Avatar.load(avatar, base_model_sha256=model_sha)
            avatar_sha = file_sha256(avatar)
            sources = (av.tensors["shots"], av.tensors["shot_landmarks"]) if "shots" in av.tensors else None
            if device == "cpu" and engine != "torch" and onnx_available(export=False):
                # an avatar animated before: its compiled generator runs without importing torch (~2-3 s)
                fast = compiled.CompiledAvatar.load(model_sha, avatar_sha, sources, av.landmarks, thread_count(threads))
        if fast is not None:
            image_size, uses_warp, generate = fast.size, fast.uses_warp, fast.generate
        else:
            import torch

            from synth.avatar.enroll import enroll as run_enroll
            from synth.avatar.enroll import load_shots
            from synth.avatar.finetune import PersonParams
            from synth.avatar.model import TalkingHeadModel
            from synth.avatar.runtime import OnnxGenerator, runtime_generator
            from synth.device import resolve_device, set_threads

            set_threads(threads)
            dev = resolve_device(device)
            net = TalkingHeadModel.load(model_path, dev)
            if av is None:
                shots = load_shots([avatar], net.image_size)
                av = run_enroll(net, model_path, shots, steps, avatar.stem, consent or "not stated")
                print(f"th: enrolled {avatar.name} on the fly ({steps} steps)", file=sys.stderr)
            params = PersonParams.from_tensors(av.tensors)
            sources = params.sources
            k = None if sources is None else len(sources[0])
            g = params.generator_module(net)
            gen = runtime_generator(g, net.image_size, k, dev, engine)
            image_size, uses_warp, generate = net.image_size, net.uses_warp, torch_generate(net, gen, params.psi)
            if isinstance(gen, OnnxGenerator) and not is_image_path(avatar):  # the next run skips torch
                compiled.save(model_sha, avatar_sha, gen.key, net.image_size, net.uses_warp, g, params.psi, sources,
                              av.landmarks)
            n_threads = torch.get_num_threads()  # OpenMP keeps the count per thread: the renderer thread too

            def setup():
                torch.set_num_threads(n_threads)

        plan = plan_driver(str(audio_from) if driver is None else driver, av.landmarks, image_size,
                           relative=not absolute, fps=fps, seconds=seconds, neutral=neutral,
                           audio_only=audio_from is not None, audio_model=audio_model, tracked=tracked)
        paste = None
        if full_frame:
            if av.photo is None or av.photo_affine is None:
                raise UserError(f"{avatar}: this avatar keeps no photo for --full-frame; re-enroll it")
            h, w = av.photo.shape[:2]  # H.264 4:2:0 needs even sides: an odd photo loses its last row/column
            paste = (av.photo[: h - h % 2, : w - w % 2], av.photo_affine)
        facts = GenerationFacts(GenerationFacts.current().th_version, model_id, model_sha, av.avatar_id,
                                av.meta.get("consent"), plan.driver_sha256)
        # Three overlapped stages: a video driver is decoded and tracked in a child process (started before the
        # imports), the renderer thread warps and generates, this thread watermarks and feeds the encoder.
        with Progress(TextColumn("[bold]animate"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, disable=not console.is_terminal) as progress:  # no bar in logs
            task = progress.add_task("", total=plan.frames)

            def taken():  # a live sink times each frame from the moment the renderer takes its landmarks
                for lm in plan.landmarks:
                    sink.ready()
                    yield lm

            def frames():
                lms, batch = (taken(), 1) if sink is not None else (plan.landmarks, 8)  # live: no batching delay
                for f in render_frames(generate, image_size, uses_warp, lms, size, batch=batch, paste_into=paste,
                                       sources=sources):
                    progress.advance(task)
                    yield f

            t1 = time.perf_counter()
            with Prefetch(frames(), setup=setup, name="th-render") as rendered:
                result = write_video(rendered, out, plan.fps, facts, audio_from=plan.audio_from, force=force,
                                     identity=identity, on_frame=sink)
        if plan.faceless_count():  # a streamed driver is counted while it is tracked: reported after the rendering
            print(f"th: {plan.faceless_count()} driver frame(s) without a face: last landmarks held", file=sys.stderr)
        dt = time.perf_counter() - t1
        report = sys.stderr if sink is not None and sink.target == "-" else sys.stdout  # stdout may carry the frames
        print(f"{result.frames} frames ({plan.description}) in {dt:.1f} s = {result.frames / dt:.1f} fps "
              f"(total {time.perf_counter() - t0:.1f} s) → {out} [watermark {result.payload}, C2PA-signed]", file=report)
        if sink is not None:
            print(f"th: {sink.summary()}", file=sys.stderr)
