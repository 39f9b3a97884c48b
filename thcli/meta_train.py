"""`th meta-train PREP RUN`: the meta-learning stage (E, G, D on episodes); resume = same command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer


def meta_train(
    prep: Annotated[Path, typer.Argument(help="Prepared data folder (output of `th prepare`).")],
    run: Annotated[Path, typer.Argument(help="Run folder: config, checkpoints, TensorBoard logs, samples.")],
    preset: Annotated[str, typer.Option(help="tiny | cpu | paper")] = "cpu",
    steps: Annotated[int | None, typer.Option(help="Total steps to reach (default: the preset's).")] = None,
    batch: Annotated[int | None, typer.Option(help="Global batch (episodes per step).")] = None,
    k_shot: Annotated[int | None, typer.Option("--k", help="K frames embedded per episode.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (training is deterministic from seed, rank, step).")] = None,
    content: Annotated[str | None, typer.Option(help="Content loss: l1_msssim | vgg.")] = None,
    vgg19: Annotated[Path | None, typer.Option(help="Local VGG19 Caffe weights (content=vgg).")] = None,
    vggface: Annotated[Path | None, typer.Option(help="Local VGGFace Caffe weights (content=vgg).")] = None,
    time_budget: Annotated[float | None, typer.Option(help="Stop and checkpoint after this many minutes.")] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N | mps | auto")] = "cpu",
    threads: Annotated[int | None, typer.Option(help="Torch threads per process.")] = None,
    nproc: Annotated[int, typer.Option(help="Spawn torchrun with this many processes.")] = 1,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and exit.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Continue RUN even if its config differs.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Meta-train the embedder, generator and discriminator (Zakharov et al. 2019, Sec. 3.2).

    Rerunning the same command resumes from RUN's latest checkpoint. For several processes run
    `torchrun --nproc-per-node N -m thcli meta-train ...` (or pass --nproc N).
    """
    import json
    import os

    # Before torch loads OpenMP: on a shared CPU, spinning OpenMP threads slow a 2-thread step 10-30x
    # whenever another process is busy (measured: 0.06 vs 1.1-1.3 images/s); passive waiting costs ~nothing.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    from synth.nets.config import DEFAULT_STEPS, replace
    from synth.nets.config import preset as get_preset

    cfg = get_preset(preset)
    cfg = replace(
        cfg,
        train={k: v for k, v in {"batch": batch, "k_shot": k_shot, "seed": seed}.items() if v is not None},
        loss={"content": content} if content is not None else {},
    )
    total = steps if steps is not None else DEFAULT_STEPS[preset]
    if dry_run:
        index = prep / "index.json"
        if index.is_file():
            cfg = replace(cfg, net={"num_videos": len(json.loads(index.read_text()).get("clips", []))})
        typer.echo(cfg.to_json())
        typer.echo(f"steps: {total}")
        return
    if nproc > 1:
        import subprocess

        per_proc = (threads or max(1, (os.cpu_count() or 1) // nproc)) if device == "cpu" else threads
        opts = {"--preset": preset, "--steps": total, "--batch": batch, "--k": k_shot, "--seed": seed,
                "--content": content, "--vgg19": vgg19, "--vggface": vggface, "--time-budget": time_budget,
                "--device": device, "--threads": per_proc}
        argv = [str(prep), str(run)] + [str(x) for k, v in opts.items() if v is not None for x in (k, v)]
        argv += [flag for flag, on in (("--force", force), ("--quiet", quiet)) if on]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "thcli", "meta-train", *argv]
        raise typer.Exit(subprocess.run(cmd, check=False).returncode)

    from synth.device import resolve_device, set_threads
    from synth.train.metatrain import meta_train as run_meta_train

    set_threads(threads)
    dev = resolve_device(device)
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 writes samples
    result = run_meta_train(
        prep, run, cfg, total, dev,
        time_budget_s=time_budget * 60 if time_budget is not None else None,
        force=force, vgg19=vgg19, vggface=vggface, show_progress=not quiet,
        write_sample=_sample_writer(run, preset) if main_rank else None,
    )
    from synth.train import distributed

    if distributed.init(dev.type).is_main:
        why = " (time budget reached)" if result.stopped_by_budget else " (interrupted)" if result.interrupted else ""
        typer.echo(f"step {result.step}/{total}{why}; checkpoint {result.checkpoint}; "
                   f"{result.images_per_s:.2f} images/s")
    distributed.shutdown()


def _sample_writer(run: Path, preset: str):
    """Sample grids hold generated faces: they go through the sealing write path (watermark + C2PA)."""
    from provenance.manifest import GenerationFacts
    from provenance.write import load_signer, write_image

    identity = load_signer()  # a key that cannot sign fails before training, not at the first sample
    version = GenerationFacts.current().th_version

    def write(path: Path, rgb, step: int) -> None:
        facts = GenerationFacts(version, model_card_id=f"meta-train {run.name} ({preset} preset) step {step}")
        write_image(rgb, path, facts, force=True, identity=identity)

    return write
