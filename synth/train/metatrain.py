"""Meta-learning stage of Zakharov et al. 2019 (Sec. 3.2): E, G and D trained on episodes.

One step = one generator phase and one discriminator phase, written as explicit functions that
return named losses; few-shot fine-tuning (synth.avatar.finetune) reuses the same two phase functions.

- ``generator_step``: minimise L_CNT + L_ADV + L_MCH (Eq. 1) over E, G and P.
- ``discriminator_step``: minimise the hinge loss L_DSC (Eq. 6) over D (θ, W, w0, b).

L_MCH = ‖W_i − ê_i‖₁ couples E and D's columns: its gradient w.r.t. ê_i is applied in the generator
phase and its gradient w.r.t. W_i in the discriminator phase (W belongs to D and its optimiser), so
each parameter is updated once per step by exactly one Adam. The adversarial term sees W_i detached.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from synth.errors import UserError
from synth.media.atomic import atomic_write_bytes
from synth.nets.config import Config, LossConfig, NetConfig, replace
from synth.nets.discriminator import Discriminator
from synth.nets.embedder import Embedder
from synth.nets.generator import Generator, build_generator
from synth.nets.losses import (
    IdentityLoss,
    Perceptual,
    adversarial_g,
    content_loss,
    embedding_match,
    feature_matching,
    hinge_d,
)
from synth.train import distributed
from synth.train.checkpoint import load_latest, save_checkpoint
from synth.train.episodes import EpisodeBatch, PreparedData, sample_episodes

Sync = Callable[[], None]


def build_nets(net: NetConfig, seed: int = 0) -> tuple[Embedder, Generator, Discriminator]:
    """E, G, D initialised deterministically from ``seed`` (identical on every rank)."""
    torch.manual_seed(seed)
    return Embedder(net), build_generator(net), Discriminator(net)


def build_optimizers(
    e: Embedder, g: Generator, d: Discriminator, cfg: Config
) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Adam for (E, G, P) at lr_g and for D (θ, W, w0, b) at lr_d (paper: 5e-5 and 2e-4)."""
    t = cfg.train
    opt_g = torch.optim.Adam([*e.parameters(), *g.parameters()], lr=t.lr_g, betas=t.betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=t.lr_d, betas=t.betas)
    return opt_g, opt_d


def _params(opt: torch.optim.Optimizer) -> list[nn.Parameter]:
    return [p for group in opt.param_groups for p in group["params"]]


def generator_step(
    g: Generator,
    d: Discriminator,
    opt: torch.optim.Optimizer,
    y: torch.Tensor,
    x: torch.Tensor,
    psi: torch.Tensor,
    column: torch.Tensor,
    loss: LossConfig,
    perceptual: Perceptual | None = None,
    mch: tuple[torch.Tensor, torch.Tensor] | None = None,
    sync: Sync | None = None,
    warped: torch.Tensor | None = None,
    identity: IdentityLoss | None = None,
    points: torch.Tensor | None = None,
) -> tuple[dict[str, float], torch.Tensor]:
    """Generator phase: x̂ = G(y, ψ[, warped]); minimise L_CNT + L_ADV (−r + FM) [+ L_MCH]; one Adam step.

    y, x (B,3,S,S) target landmark image and frame; psi (B,n_adain) AdaIN parameters (P·ê, or the
    trainable ψ' when fine-tuning); column (B,N) D's projection (W_i + w0, or W'); ``mch`` = (ê, W_i)
    adds 80·‖W_i − ê‖₁ with W_i detached; ``warped`` (B,K,3,S,S) = the source shots warped to y, for the
    warp-guided G; ``identity`` adds the dlib-ResNet identity/perceptual term (the VGGFace role, Sec. 3.2) on
    face chips cut at the target's landmarks ``points`` (B,68,2) in pixels. Returns named unweighted losses
    and x̂ (detached).
    """
    d.requires_grad_(False)
    try:
        fake = g(y, psi, warped)  # (B,3,S,S)
        r_fake, f_fake = d(fake, y, column.detach())  # (B,), [features]
        with torch.no_grad():
            _, f_real = d.features(x, y)
        cnt, terms = content_loss(
            fake, x, loss.w_l1, loss.w_msssim, loss.ms_scales, perceptual, loss.w_vgg19, loss.w_vggface
        )
        adv = adversarial_g(r_fake)
        fm = feature_matching(f_fake, f_real)
        total = cnt + loss.w_adv * adv + loss.w_fm * fm
        named = {**terms, "adv": adv, "fm": fm}
        if identity is not None and points is not None:
            id_total, id_terms = identity(fake, x, points)
            total = total + id_total
            named.update(id_terms)
        if mch is not None:
            e_hat, w = mch
            named["mch"] = embedding_match(w.detach(), e_hat)
            total = total + loss.w_mch * named["mch"]
        opt.zero_grad(set_to_none=True)
        total.backward()
        if sync is not None:
            sync()
        opt.step()
    finally:
        d.requires_grad_(True)
    named["g_total"] = total
    return {k: float(v.detach()) for k, v in named.items()}, fake.detach()


def discriminator_step(
    d: Discriminator,
    opt: torch.optim.Optimizer,
    y: torch.Tensor,
    x_real: torch.Tensor,
    x_fake: torch.Tensor,
    column: torch.Tensor,
    loss: LossConfig,
    mch: tuple[torch.Tensor, torch.Tensor] | None = None,
    sync: Sync | None = None,
) -> dict[str, float]:
    """Discriminator phase: minimise the hinge loss (Eq. 6) [+ L_MCH w.r.t. W_i]; one Adam step.

    Real and fake frames go through D in one batch (D has no batch-dependent layers). ``mch`` =
    (W_i, ê) with ê detached. Returns named unweighted losses and mean realism scores.
    """
    b = x_real.shape[0]
    r, _ = d(torch.cat([x_real, x_fake.detach()]), torch.cat([y, y]), torch.cat([column, column]))  # (2B,)
    r_real, r_fake = r[:b], r[b:]
    dsc = hinge_d(r_real, r_fake)
    total = dsc
    named = {"dsc": dsc, "r_real": r_real.mean(), "r_fake": r_fake.mean()}
    if mch is not None:
        w, e_hat = mch
        named["mch_w"] = embedding_match(w, e_hat.detach())
        total = total + loss.w_mch * named["mch_w"]
    opt.zero_grad(set_to_none=True)
    total.backward()
    if sync is not None:
        sync()
    opt.step()
    return {k: float(v.detach()) for k, v in named.items()}


def to_tensors(batch: EpisodeBatch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                   torch.Tensor | None]:
    return (
        torch.from_numpy(batch.frames).to(device),
        torch.from_numpy(batch.landmarks).to(device),
        torch.from_numpy(batch.video).to(device),
        None if batch.warped is None else torch.from_numpy(batch.warped).to(device),
    )


def meta_step(
    e: Embedder,
    g: Generator,
    d: Discriminator,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    frames: torch.Tensor,
    landmarks: torch.Tensor,
    video: torch.Tensor,
    loss: LossConfig,
    perceptual: Perceptual | None = None,
    world: int = 1,
    warped: torch.Tensor | None = None,
) -> tuple[dict[str, float], torch.Tensor]:
    """One meta-learning step on episodes frames, landmarks (B,K+1,3,S,S), video (B,); ``warped``
    (B,K,3,S,S) = the K shots warped to the target (warp-guided G)."""
    k = frames.shape[1] - 1
    x_t, y_t = frames[:, k], landmarks[:, k]  # (B,3,S,S) target
    e_hat = e(frames[:, :k], landmarks[:, :k])  # (B,N), Eq. 2
    psi = g.project(e_hat)  # (B,n_adain), ψ̂ = P·ê
    g_params, d_params = _params(opt_g), _params(opt_d)
    losses, fake = generator_step(
        g, d, opt_g, y_t, x_t, psi, d.column(video), loss, perceptual,
        mch=(e_hat, d.W[video]), sync=lambda: distributed.average_gradients(g_params, world), warped=warped,
    )
    losses.update(discriminator_step(
        d, opt_d, y_t, x_t, fake, d.column(video), loss,
        mch=(d.W[video], e_hat.detach()), sync=lambda: distributed.average_gradients(d_params, world),
    ))
    return losses, fake


def step_seed(seed: int, rank: int, step: int) -> int:
    """Per-step torch seed from (seed, rank, step): resuming reproduces the same randomness."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


@dataclass
class TrainResult:
    step: int
    checkpoint: Path | None
    images_per_s: float
    stopped_by_budget: bool
    interrupted: bool = False


def resolve_config(cfg: Config, data: PreparedData) -> Config:
    """The run's config: the preset with ``num_videos`` taken from the data."""
    return replace(cfg, net={"num_videos": len(data)})


def _check_run_config(run_dir: Path, cfg: Config, force: bool) -> None:
    path = run_dir / "config.json"
    if path.is_file() and not force:
        old = Config.from_json(path.read_text())
        if old != cfg:
            a, b = old.to_dict(), cfg.to_dict()
            diff = [f"{s}.{k}: {a[s][k]!r} -> {b[s][k]!r}" for s in ("net", "loss", "train")
                    for k in b[s] if a[s].get(k) != b[s][k]]
            if a["preset"] != b["preset"]:
                diff.insert(0, f"preset: {a['preset']} -> {b['preset']}")
            raise UserError(
                f"{run_dir} was started with a different config ({'; '.join(diff)}); rerun with the same "
                "options to resume, use a new RUN folder, or pass --force to continue with the new config"
            )


def build_perceptual(loss: LossConfig, vgg19: Path | None, vggface: Path | None) -> Perceptual | None:
    """The VGG19 + VGGFace content loss when the config asks for it (``content = "vgg"``)."""
    if loss.content != "vgg":
        return None
    if vgg19 is None or vggface is None:
        raise UserError(
            "this config's content loss is the paper's VGG19 + VGGFace perceptual loss: pass local Caffe "
            "weights with --vgg19 PATH --vggface PATH, or train without them with --content l1_msssim"
        )
    return Perceptual(Path(vgg19), Path(vggface))


def sample_grid(landmarks: torch.Tensor, real: torch.Tensor, fake: torch.Tensor, rows: int = 4,
                warp: torch.Tensor | None = None) -> np.ndarray:
    """RGB uint8 grid, one row per episode: landmark image | real frame | [first shot warped |] generated."""
    n = min(rows, real.shape[0])
    cols = [landmarks, real] + ([warp] if warp is not None else []) + [fake]
    tiles = torch.cat([torch.cat([c[i] for c in cols], dim=2) for i in range(n)], dim=1)
    return ((tiles.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


SampleWriter = Callable[[Path, np.ndarray, int], None]
"""Publishes a sample grid: ``write(path, rgb, step)``. The grids hold generated faces, so the CLI passes
one that goes through the sealing write path (``provenance.write.write_image``): watermarked and
signed. This layer does not import provenance; without a writer no grid is written."""


def _install_stop_handlers(flag: dict[str, bool]) -> dict[int, object]:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, frame: object) -> None:
        if flag["flag"]:  # second signal: stop now
            raise KeyboardInterrupt
        flag["flag"] = True

    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        old[sig] = signal.signal(sig, handler)
    return old


def _restore_handlers(old: dict[int, object]) -> None:
    import signal

    for sig, h in old.items():
        signal.signal(sig, h)


def meta_train(
    data_root: Path,
    run_dir: Path,
    cfg: Config,
    steps: int,
    device: torch.device,
    time_budget_s: float | None = None,
    force: bool = False,
    vgg19: Path | None = None,
    vggface: Path | None = None,
    show_progress: bool = True,
    write_sample: SampleWriter | None = None,
) -> TrainResult:
    """Meta-train E, G, D until ``steps`` total steps (resuming from RUN's latest checkpoint).

    Rank 0 writes config.json, checkpoints, TensorBoard scalars and sample grids (through
    ``write_sample``, see ``SampleWriter``); under torchrun every rank takes its slice of each global
    batch and gradients are averaged (synth.train.distributed).
    """
    info = distributed.init(device.type)
    if device.type == "cuda" and info.world > 1:  # one GPU per local rank
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    run_dir = Path(run_dir)
    data = PreparedData(data_root, cfg.net.image_size)
    cfg = resolve_config(cfg, data)
    t = cfg.train
    if t.batch % info.world:
        raise UserError(f"--batch {t.batch} must be a multiple of the number of processes ({info.world})")
    perceptual = build_perceptual(cfg.loss, vgg19, vggface)
    if perceptual is not None:
        perceptual.to(device)
    _check_run_config(run_dir, cfg, force)
    e, g, d = build_nets(cfg.net, t.seed)
    for m in (e, g, d):
        m.to(device).train()
    opt_g, opt_d = build_optimizers(e, g, d, cfg)
    start = 0
    ckpt = load_latest(run_dir)
    if ckpt is not None and ckpt.config.net != cfg.net:
        raise UserError(f"{run_dir}'s checkpoints have a different architecture ({ckpt.config.preset} preset "
                        "or data with another number of videos); they cannot be resumed: use a new RUN folder")
    if ckpt is not None:
        for name, m in (("E", e), ("G", g), ("D", d)):
            m.load_state_dict(ckpt.modules[name])
        opt_g.load_state_dict(ckpt.optimizers["opt_g"])
        opt_d.load_state_dict(ckpt.optimizers["opt_d"])
        start = ckpt.step
        if info.is_main and show_progress:
            print(f"resuming from step {start} ({ckpt.path})", flush=True)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(run_dir / "config.json", (cfg.to_json() + "\n").encode(), force=True)
    last_ckpt = ckpt.path if ckpt is not None else None
    if start >= steps:
        return TrainResult(start, last_ckpt, 0.0, False)

    writer = None
    progress = None
    if info.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tb"), purge_step=start)
        if show_progress and sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            progress = Progress(TextColumn("meta-train"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), TextColumn("{task.description}"))
            progress.start()
            task = progress.add_task("", total=steps, completed=start)

    def checkpoint(step: int) -> Path | None:
        distributed.assert_in_sync([e, g, d], info.world, device)
        if not info.is_main:
            return None
        return save_checkpoint(run_dir, step, cfg, {"E": e, "G": g, "D": d},
                               {"opt_g": opt_g, "opt_d": opt_d}, keep=t.keep_checkpoints)

    t0 = time.monotonic()
    window_t, window_n = time.monotonic(), 0
    ips = 0.0
    by_budget = False
    # SIGINT/SIGTERM finish the current step, checkpoint and stop (no step is ever half-applied).
    signalled = {"flag": False}
    old_handlers = _install_stop_handlers(signalled)
    step = start
    interrupted = False
    # Episodes for the next step are decoded in a background thread while this step computes.
    sample = lambda s: sample_episodes(data, t.k_shot, t.seed, s, t.batch, info.rank, info.world,  # noqa: E731
                                       warp=g.uses_warp)
    pool = ThreadPoolExecutor(max_workers=1)
    upcoming = pool.submit(sample, step)
    try:
        while step < steps:
            torch.manual_seed(step_seed(t.seed, info.rank, step))
            batch = upcoming.result()
            if step + 1 < steps:
                upcoming = pool.submit(sample, step + 1)
            frames, landmarks, video, warped = to_tensors(batch, device)
            losses, fake = meta_step(e, g, d, opt_g, opt_d, frames, landmarks, video, cfg.loss,
                                     perceptual, info.world, warped)
            step += 1
            window_n += t.batch
            if info.is_main and (step % t.log_every == 0 or step == steps):
                now = time.monotonic()
                ips = window_n / max(now - window_t, 1e-9)
                window_t, window_n = now, 0
                for k, v in losses.items():
                    writer.add_scalar(f"loss/{k}", v, step)
                writer.add_scalar("perf/images_per_s", ips, step)
                shown = " ".join(f"{k}={losses[k]:.3g}" for k in ("l1", "msssim", "vgg19", "adv", "fm",
                                                                 "mch", "dsc") if k in losses)
                if progress is not None and progress.console.is_terminal:
                    progress.update(task, completed=step, description=f"{shown} {ips:.2f} img/s")
                elif show_progress and (step % (10 * t.log_every) == 0 or step == steps):
                    # Not a terminal (a log file): one plain line every 10 log intervals.
                    print(f"step {step}/{steps} {shown} {ips:.2f} img/s", flush=True)
            if info.is_main and write_sample is not None and (step % t.sample_every == 0 or step == steps):
                k = frames.shape[1] - 1
                write_sample(run_dir / "samples" / f"step-{step:08d}.png",
                             sample_grid(landmarks[:, k], frames[:, k], fake,
                                         warp=None if warped is None else warped[:, 0]), step)
            over = time_budget_s is not None and time.monotonic() - t0 >= time_budget_s
            by_budget, interrupted = (distributed.any_flag(f, info.world, device) for f in (over, signalled["flag"]))
            if step % t.ckpt_every == 0 or step == steps or by_budget or interrupted:
                last_ckpt = checkpoint(step) or last_ckpt
            if by_budget or interrupted:
                break
    finally:
        _restore_handlers(old_handlers)
        pool.shutdown(wait=True, cancel_futures=True)
        if progress is not None:
            progress.stop()
        if writer is not None:
            writer.close()
    distributed.barrier(info.world)
    return TrainResult(step, last_ckpt, ips, by_budget and not interrupted, interrupted)
