"""`th audio train`: fit the audio-to-landmark network on prepared clips; resumable.

Checkpoints follow synth/train/checkpoint.py: ``RUN/checkpoints/ckpt-<step>.safetensors`` written
atomically, weights and Adam state as tensors, config/step/format as JSON metadata, the newest three
kept; resuming = rerunning the same command. Batches and augmentations are drawn from (seed, step), so
a resumed run continues exactly as an uninterrupted one. At the end the weights alone are exported to
``RUN/audio-model.safetensors`` (what ``th animate`` loads; the bundled model is such a file).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from synth.audio import features as F
from synth.audio.dataset import ClipData
from synth.audio.model import AudioModelConfig, AudioToLandmarks, stack_features
from synth.audio.mouth import JAW, N_MOVING, apply_mouth_motion, opening
from synth.errors import UserError
from synth.media.atomic import atomic_path
from synth.train.checkpoint import CheckpointDir, flatten_optimizer, read_metadata, read_tensors, unflatten_optimizer

FORMAT = "th-audio-train"
MODEL_FORMAT = "th-audio-model"
FORMAT_VERSION = 1
KEEP = 3


@dataclass(frozen=True)
class AudioTrainConfig:
    """The training recipe (the network's own hyperparameters are in AudioModelConfig)."""

    steps: int = 800  # the bundled model's (validation loss is flat after ~300 steps)
    batch: int = 16
    window: int = 64  # frames per training sequence (2.56 s)
    lr: float = 1e-3
    weight_decay: float = 1e-2
    seed: int = 0
    jaw_weight: float = 0.5  # loss weight of jaw points relative to mouth points
    velocity_weight: float = 1.0
    gain_db: float = 12.0  # random gain ± this
    noise_prob: float = 0.5
    noise_snr_db: tuple[float, float] = (10.0, 40.0)
    freq_masks: int = 2
    mel_shift: int = 3  # shift the mel bins by up to ± this many (another voice's pitch and formants)
    speed: float = 0.1  # time-stretch audio and motion together by a factor within 1 ± this
    silence_prob: float = 0.3  # a sequence gets a stretch of digital silence with a still, neutral mouth
    ema: float = 0.995  # exponential moving average of the weights: what is validated and exported
    checkpoint_every: int = 250
    eval_every: int = 250

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def _point_weights(cfg: AudioTrainConfig) -> torch.Tensor:
    w = torch.ones(N_MOVING)
    w[: len(JAW)] = cfg.jaw_weight
    return (w / w.mean()).view(1, 1, N_MOVING, 1)


def augment(feats: np.ndarray, motion: np.ndarray, valid: np.ndarray, cfg: AudioTrainConfig, r: int,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gain, additive noise, frequency masks and inserted silence on one sequence (in the log-mel domain).

    feats (L+2R, 8, M) log-mel; motion (L, 37, 2); valid (L,). Gain and noise act on mel *power*, so
    they are exact up to the noise's randomness: log(g·(e^x − floor) + noise + floor).
    """
    power = np.maximum(np.exp(feats) - F.LOG_FLOOR, 0.0)
    power *= 10 ** (rng.uniform(-cfg.gain_db, cfg.gain_db) / 10)
    if rng.random() < cfg.noise_prob:
        level = np.percentile(power.sum(-1), 90) / feats.shape[-1]
        snr = rng.uniform(*cfg.noise_snr_db)
        tilt = np.linspace(0, rng.uniform(-2, 0), feats.shape[-1])  # white … pinkish, in log-power
        power = power + level * 10 ** (-snr / 10) * np.exp(tilt) * rng.exponential(1.0, power.shape)
    motion = motion.copy()
    valid = valid.copy()
    if rng.random() < cfg.silence_prob:
        n = len(motion)
        a = int(rng.integers(0, n - 8))
        b = int(rng.integers(a + 8, min(n, a + 48) + 1))
        power[a + r:b + r] = 0.0  # features of output frames a…b-1 (shifted by the context R)
        inner = slice(min(b, a + 4), max(a + 4, b - 4))  # the mouth settles within ±4 frames of the edges
        motion[inner] = 0.0
        valid[inner] = True
    out = np.log(power + F.LOG_FLOOR).astype(np.float32)
    k = int(rng.integers(-cfg.mel_shift, cfg.mel_shift + 1))
    if k > 0:
        out[..., k:] = out[..., :-k].copy()
    elif k < 0:
        out[..., :k] = out[..., -k:].copy()
    for _ in range(cfg.freq_masks):
        w = int(rng.integers(1, 10))
        f0 = int(rng.integers(0, feats.shape[-1] - w))
        out[..., f0:f0 + w] = out[..., f0:f0 + w].mean()
    return out, motion, valid


def stretch(clip: ClipData, factor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The clip played ``factor`` times faster: log-mel frames and motion resampled together (linear)."""
    n = max(2, int(round(len(clip) / factor)))
    t_src = np.minimum(np.arange(n) * factor, len(clip) - 1)
    m_src = np.minimum(np.arange(4 * n) * factor, len(clip.mel) - 1)

    def interp(x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        i0 = np.floor(pos).astype(int)
        i1 = np.minimum(i0 + 1, len(x) - 1)
        w = (pos - i0).reshape(-1, *([1] * (x.ndim - 1)))
        return ((1 - w) * x[i0] + w * x[i1]).astype(np.float32)

    valid = clip.valid[np.floor(t_src).astype(int)] & clip.valid[np.minimum(np.floor(t_src).astype(int) + 1, len(clip) - 1)]
    return interp(clip.mel, m_src), interp(clip.motion, t_src), valid


def make_batch(clips: list[ClipData], cfg: AudioTrainConfig, r: int, step: int, augment_on: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch drawn from (seed, step): clips by length, random windows of ``cfg.window`` frames."""
    rng = np.random.default_rng([cfg.seed, step])
    lengths = np.array([len(c) for c in clips], np.float64)
    picks = rng.choice(len(clips), size=cfg.batch, p=lengths / lengths.sum())
    feats, motions, valids = [], [], []
    for i in picks:
        c = clips[i]
        factor = 1.0 + rng.uniform(-cfg.speed, cfg.speed) if augment_on else 1.0
        mel, motion, valid = stretch(c, factor) if factor != 1.0 else (c.mel, c.motion, c.valid)
        s = int(rng.integers(0, max(1, len(motion) - cfg.window + 1)))
        e = min(s + cfg.window, len(motion))
        f = stack_features(mel, s - r, e + r)
        m, v = motion[s:e], valid[s:e]
        if e - s < cfg.window:  # a short clip: pad with silence and masked targets
            pad = cfg.window - (e - s)
            f = np.concatenate([f, stack_features(c.mel[:0], 0, pad)])
            m = np.concatenate([m, np.zeros((pad, N_MOVING, 2), np.float32)])
            v = np.concatenate([v, np.zeros(pad, bool)])
        if augment_on:
            f, m, v = augment(f, m, v, cfg, r, rng)
        feats.append(f)
        motions.append(m)
        valids.append(v)
    return (torch.from_numpy(np.stack(feats)), torch.from_numpy(np.stack(motions)),
            torch.from_numpy(np.stack(valids)))


def losses(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, cfg: AudioTrainConfig
           ) -> dict[str, torch.Tensor]:
    """Named loss terms (face-scale units): the weighted mean L2 distance per point — what the evaluation
    measures — and the same for frame-to-frame velocities."""
    w = _point_weights(cfg).to(pred)[..., 0]  # (1, 1, 37)
    m = valid.to(pred)[:, :, None]

    def dist(a: torch.Tensor) -> torch.Tensor:  # (B, T, 37, 2) → (B, T, 37), smooth at 0
        return torch.sqrt((a ** 2).sum(-1) + 1e-8)

    pos = (dist(pred - target) * w * m).sum() / (m.sum() * N_MOVING).clamp(min=1)
    mv = m[:, 1:] * m[:, :-1]
    dv = dist((pred[:, 1:] - pred[:, :-1]) - (target[:, 1:] - target[:, :-1])) * w * mv
    vel = dv.sum() / (mv.sum() * N_MOVING).clamp(min=1)
    return {"position": pos, "velocity": vel, "total": pos + cfg.velocity_weight * vel}


@torch.no_grad()
def predict_clip(model: AudioToLandmarks, clip: ClipData) -> np.ndarray:
    """Mouth-space motion (T, 37, 2) for a prepared clip, in one pass."""
    r = model.config.context
    model.eval()
    f = torch.from_numpy(stack_features(clip.mel, -r, len(clip) + r))[None]
    return model(f)[0][0].numpy()


def lagged_corr(a: np.ndarray, b: np.ndarray, max_lag: int) -> tuple[float, int]:
    """Best Pearson correlation of a[t] with b[t + lag] over |lag| ≤ max_lag: (r, lag).

    lag > 0: ``b`` runs late (its frame t + lag matches ``a``'s frame t).
    """
    best = (float("nan"), 0)
    n = len(a)
    for lag in range(-max_lag, max_lag + 1):
        x = a[max(0, -lag):n - max(0, lag)]
        y = b[max(0, lag):n - max(0, -lag)]
        if len(x) < 10 or x.std() < 1e-6 or y.std() < 1e-6:  # constant (float32 rounding): undefined
            continue
        r = float(np.corrcoef(x, y)[0, 1])
        if not r <= best[0]:
            best = (r, lag)
    return best


def validate(model: AudioToLandmarks, clips: list[ClipData], cfg: AudioTrainConfig) -> dict[str, float]:
    """Mean loss, mouth distance and median mouth-opening correlation (best lag ±4) on held-out clips."""
    if not clips:
        return {}
    dists, corrs = [], []
    for c in clips:
        pred = predict_clip(model, c)
        v = c.valid
        d = np.linalg.norm(pred[:, len(JAW):] - c.motion[:, len(JAW):], axis=-1).mean(-1)
        dists.append(float(d[v].mean()))
        corrs.append(lagged_corr(c.opening, opening(apply_mouth_motion(c.neutral, pred)), 4)[0])
    return {"val_mouth_dist": float(np.mean(dists)), "val_open_corr": float(np.median(corrs))}


def data_stats(clips: list[ClipData]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin log-mel mean/std and per-output motion std over the training clips."""
    mel = np.concatenate([c.mel for c in clips])
    mot = np.concatenate([c.motion[c.valid].reshape(-1, 2 * N_MOVING) for c in clips])
    return mel.mean(0), mel.std(0) + 1e-3, mot.std(0) + 1e-4


def save_checkpoint(run: Path, step: int, model: AudioToLandmarks, ema: AudioToLandmarks,
                    opt: torch.optim.Optimizer, train_cfg: AudioTrainConfig, info: dict) -> Path:
    tensors = {f"{name}/{k}": v.detach().cpu().contiguous().clone()
               for name, mod in (("model", model), ("ema", ema)) for k, v in mod.state_dict().items()}
    t, m = flatten_optimizer("opt", opt.state_dict())
    tensors.update(t)
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "step": str(step),
            "model_config": model.config.to_json(), "train_config": train_cfg.to_json(),
            "optimizer": json.dumps(m), "info": json.dumps(info)}
    return CheckpointDir(run / "checkpoints", keep=KEEP).save(step, tensors, meta)


def _read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors, meta = read_tensors(path)
    if meta.get("format") != FORMAT:
        raise UserError(f"{path}: not a th audio training checkpoint")
    return tensors, meta


def export_model(model: AudioToLandmarks, dest: Path, info: dict, force: bool = True) -> Path:
    """Weights + config + what it was trained on; no optimizer state. Loadable with ``load_model``."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {"format": MODEL_FORMAT, "format_version": str(FORMAT_VERSION),
            "model_config": model.config.to_json(), "info": json.dumps(info)}
    with atomic_path(dest, force=force) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return dest


def load_model(path: Path) -> AudioToLandmarks:
    """An exported audio model or a training checkpoint, in eval mode on the CPU."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such audio model file")
    try:
        meta = read_metadata(path)
    except Exception as e:
        raise UserError(f"{path}: not an audio model (safetensors) file") from e
    if meta.get("format") not in (MODEL_FORMAT, FORMAT):
        raise UserError(f"{path}: not a th audio model (format {meta.get('format')!r})")
    if int(meta.get("format_version", "0")) > FORMAT_VERSION:
        raise UserError(f"{path}: audio model format {meta['format_version']} is newer than this th")
    model = AudioToLandmarks(AudioModelConfig.from_json(meta["model_config"]))
    tensors = load_file(str(path))
    if meta["format"] == FORMAT:  # a training checkpoint: its averaged weights
        tensors = {k[len("ema/"):]: v for k, v in tensors.items() if k.startswith("ema/")}
    model.load_state_dict(tensors)
    return model.eval()


def model_info(path: Path) -> dict:
    return json.loads(read_metadata(path).get("info", "{}"))


@torch.no_grad()
def update_ema(ema: AudioToLandmarks, model: AudioToLandmarks, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·model for the weights; buffers (data statistics) copied."""
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p, 1.0 - decay)
    for be, b in zip(ema.buffers(), model.buffers()):
        be.copy_(b)


def learning_rate(cfg: AudioTrainConfig, step: int) -> float:
    """100 steps of warm-up, then cosine decay to zero at ``cfg.steps``."""
    return cfg.lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + np.cos(np.pi * min(step, cfg.steps) / cfg.steps))


def train(run: Path, train_clips: list[ClipData], val_clips: list[ClipData], cfg: AudioTrainConfig,
          model_cfg: AudioModelConfig, info: dict, on_log: Callable[[dict], None] | None = None,
          time_budget_s: float | None = None, until: int | None = None) -> Path | None:
    """Train (or resume) into ``run``; returns the exported model path, or None when stopped early
    (``time_budget_s`` spent or step ``until`` reached: checkpointed, rerun to continue)."""
    if not train_clips:
        raise UserError("no training clips left after the filters")
    run.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = AudioToLandmarks(model_cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = AudioToLandmarks(model_cfg).requires_grad_(False)
    saved = CheckpointDir(run / "checkpoints", keep=KEEP).load_latest(_read_checkpoint)
    step = 0
    if saved is not None:
        tensors, meta = saved
        if AudioModelConfig.from_json(meta["model_config"]) != model_cfg:
            raise UserError(f"{run}: was started with another model config; use a new run folder")
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
        ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema/")})
        opt.load_state_dict(unflatten_optimizer("opt", tensors, json.loads(meta["optimizer"])))
        step = int(meta["step"])
    else:
        mean, std, out_std = data_stats(train_clips)
        model.mel_mean.copy_(torch.from_numpy(mean))
        model.mel_std.copy_(torch.from_numpy(std))
        model.out_scale.copy_(torch.from_numpy(out_std))
        ema.load_state_dict(model.state_dict())
    (run / "config.json").write_text(json.dumps({"model": asdict(model_cfg), "train": asdict(cfg), **info}, indent=1))
    r = model_cfg.context
    model.train()
    log_path = run / "log.jsonl"
    t0 = time.perf_counter()
    stop = min(cfg.steps, until) if until is not None else cfg.steps
    while step < stop:
        torch.manual_seed(cfg.seed * 1_000_003 + step)  # dropout reproducible per step
        for g in opt.param_groups:
            g["lr"] = learning_rate(cfg, step)
        feats, target, valid = make_batch(train_clips, cfg, r, step)
        pred, _ = model(feats)
        terms = losses(pred, target, valid, cfg)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        update_ema(ema, model, min(cfg.ema, (1 + step) / (10 + step)))
        step += 1
        if step % cfg.eval_every == 0 or step == cfg.steps:
            rec = {"step": step, **{k: round(v.item(), 5) for k, v in terms.items()},
                   "lr": round(learning_rate(cfg, step - 1), 6), "seconds": round(time.perf_counter() - t0, 1)}
            rec.update({k: round(v, 4) for k, v in validate(ema, val_clips, cfg).items()})
            with open(log_path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
            if on_log:
                on_log(rec)
        out_of_time = time_budget_s is not None and time.perf_counter() - t0 > time_budget_s
        if step % cfg.checkpoint_every == 0 or step == stop or out_of_time:
            save_checkpoint(run, step, model, ema, opt, cfg, info)
        if out_of_time:
            return None
    if step < cfg.steps:
        return None
    return export_model(ema.eval(), run / "audio-model.safetensors", {**info, "steps": step})
