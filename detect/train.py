"""Train the detector: build the data (detect.data), fit a timm backbone, calibrate, write weights + card.

The recipe, top to bottom: identity splits → real + generated crops (with real H.264 on a share) →
``steps`` of AdamW on class-balanced batches with in-the-wild augmentation (seeded per step) →
threshold at ``fpr`` false positives on the held-out *val* identities' real frames → metrics on the
*test* identities (raw and after H.264) → ``th-detector.safetensors`` + ``th-detector.card.json``.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from detect import metrics
from detect.data import Samples, augment, build_samples, family, split_identities
from detect.model import DEFAULT_ARCH, DEFAULT_INPUT, Detector, DetectorSpec, build_network
from synth.avatar.bundled import file_sha256
from synth.errors import UserError

CARD_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a detector training run (stored in the card)."""

    prepared: str
    models: tuple[str, ...]
    arch: str = DEFAULT_ARCH
    input_size: int = DEFAULT_INPUT
    steps: int = 500
    batch: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    seed: int = 0
    fpr: float = 0.01
    val_fraction: float = 0.2
    test_identities: tuple[str, ...] = ()
    fake_frames: int = 16
    finetune_every: int = 12
    finetune_steps: int = 6
    test_crf: int = 28
    ckpt_every: int = 50
    ae_steps: int = 250  # fitting steps of each pseudo-fake autoencoder (detect.pseudo)
    exclude_families: tuple[str, ...] = ()  # fake families left out of training (leave-one-family-out runs)
    notes: list[str] = field(default_factory=list)


def default_generators(run_dir: Path = Path("runs/cpu")) -> list[Path]:
    """The bundled default model (if this install has it) plus the checkpoints of ``run_dir``."""
    from synth.avatar.bundled import DEFAULT_MODEL
    from synth.train.checkpoint import list_checkpoints

    bundled = Path(__file__).resolve().parents[1] / "synth" / "assets" / DEFAULT_MODEL
    return ([bundled] if bundled.is_file() else []) + list_checkpoints(run_dir)


def lr_at(step: int, total: int, base: float, warmup: int = 30) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return base * (step + 1) / warmup
    return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def batch_indices(real: np.ndarray, fake: np.ndarray, batch: int, rng: np.random.Generator,
                  shipped: np.ndarray | None = None) -> np.ndarray:
    """Half real, half fake: the classes are balanced whatever the sample counts. With ``shipped`` (the fakes
    made the way th ships them, family ``gen``), half of the fakes come from it and half from all the
    fake families: what th writes is never a minority of a batch."""
    n_fake = batch - batch // 2
    if shipped is None or len(shipped) == 0:
        fakes = rng.choice(fake, n_fake)
    else:
        fakes = np.concatenate([rng.choice(shipped, n_fake // 2), rng.choice(fake, n_fake - n_fake // 2)])
    return np.concatenate([rng.choice(real, batch // 2), fakes])


STATE_FORMAT = "th-detector-train-state"


def _state_key(cfg: TrainConfig, data_key: str) -> str:
    """What a saved training state must match to be resumed: the config (but not its notes) and the data."""
    fields = {k: v for k, v in asdict(cfg).items() if k not in ("notes", "ckpt_every")}
    return hashlib.sha256(json.dumps([fields, data_key], sort_keys=True, default=str).encode()).hexdigest()[:16]


def _save_state(states, step: int, net, opt, history: list[dict[str, float]], key: str) -> None:
    from synth.train.checkpoint import flatten_optimizer

    tensors = {f"net/{k}": v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    opt_tensors, opt_meta = flatten_optimizer("opt", opt.state_dict())
    tensors.update(opt_tensors)
    states.save(step, tensors, {"format": STATE_FORMAT, "step": str(step), "key": key,
                                "optimizer": json.dumps(opt_meta), "history": json.dumps(history)})


def _read_state(path: Path) -> dict:
    from synth.train.checkpoint import read_tensors, unflatten_optimizer

    tensors, meta = read_tensors(path)
    if meta.get("format") != STATE_FORMAT:
        raise ValueError("not a detector training state")
    return {"step": int(meta["step"]), "key": meta["key"], "history": json.loads(meta["history"]),
            "net": {k[4:]: v for k, v in tensors.items() if k.startswith("net/")},
            "opt": unflatten_optimizer("opt", tensors, json.loads(meta["optimizer"]))}


def fit(det: Detector, data: Samples, cfg: TrainConfig, log: Callable[[str], None],
        state_dir: Path | None = None, data_key: str = "") -> list[dict[str, float]]:
    """``cfg.steps`` AdamW steps on the train split (binary cross-entropy on one logit).

    With ``state_dir`` the network and optimiser are checkpointed every ``cfg.ckpt_every`` steps
    (``synth.train.checkpoint.CheckpointDir``) and a rerun resumes from the newest readable state of the
    same config and data; batches and augmentation are seeded per step, so a resumed run takes the
    same steps as an uninterrupted one.
    """
    import torch

    from synth.train.checkpoint import CheckpointDir

    tr = data.split == "train"
    fams = np.array([family(s) for s in data.source])
    if cfg.exclude_families:
        tr &= ~np.isin(fams, list(cfg.exclude_families))
    real = np.flatnonzero(tr & (data.label == 0))
    fake = np.flatnonzero(tr & (data.label == 1))
    shipped = np.flatnonzero(tr & (data.label == 1) & (fams == "gen"))
    if len(real) == 0 or len(fake) == 0:
        raise UserError("the train split needs both real and generated frames")
    net = det.net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[dict[str, float]] = []
    start = 0
    states = CheckpointDir(state_dir, keep=2) if state_dir is not None else None
    key = _state_key(cfg, data_key)
    if states is not None:
        saved = states.load_latest(_read_state)
        if saved is not None and saved["key"] != key:
            log(f"training state in {state_dir} is from another config or data: starting from step 0")
        elif saved is not None:
            net.load_state_dict(saved["net"])
            opt.load_state_dict(saved["opt"])
            start, history = saved["step"], saved["history"]
            log(f"resuming from step {start} ({state_dir})")
    t0 = time.perf_counter()
    for step in range(start, cfg.steps):
        rng = np.random.default_rng([cfg.seed, step])  # per-step reseeding: deterministic from (seed, step)
        torch.manual_seed(cfg.seed * 1_000_003 + step)
        idx = batch_indices(real, fake, cfg.batch, rng, shipped)
        crops = np.stack([augment(data.crops[i], rng) for i in idx])
        y = torch.from_numpy(data.label[idx]).float()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.steps, cfg.lr)
        logits = det.logits(det.to_tensor(crops))  # (B,)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        acc = float(((logits > 0).float() == y).float().mean())
        history.append({"bce": loss.item(), "acc": acc})
        if (step + 1) % 25 == 0 or step + 1 == cfg.steps:
            recent = history[-25:]
            log(f"step {step + 1}/{cfg.steps} bce={np.mean([h['bce'] for h in recent]):.4f} "
                f"acc={np.mean([h['acc'] for h in recent]):.3f} {time.perf_counter() - t0:.0f}s")
        if states is not None and (step + 1) % cfg.ckpt_every == 0 and step + 1 < cfg.steps:
            _save_state(states, step + 1, net, opt, history, key)
    det.net.eval()
    return history


def calibration_scores(det: Detector, data: Samples, copies: int, seed: int) -> np.ndarray:
    """Fake probabilities of the val identities' real frames, as they are (raw and H.264) and in
    ``copies`` augmented versions each: the real frames a detector meets in the wild are distorted, and a
    threshold fitted to clean frames alone flagged 5-7 % of other people's real frames (measured)."""
    crops = data.crops[(data.split == "val") & (data.label == 0)]
    rng = np.random.default_rng([seed, 7])
    aug = np.stack([augment(c, rng) for _ in range(copies) for c in crops]) if copies else crops[:0]
    return det.probabilities(np.concatenate([crops, aug]))


def evaluate(det: Detector, data: Samples, fpr: float, test_crf: int, seed: int, copies: int = 2) -> dict:
    """Calibrate on val real frames (``calibration_scores``); report val and test metrics: raw, after
    H.264 at ``test_crf``, after the re-uploader's chain, and the test fakes of each family against all
    test real frames (the leave-one-family-out view when that family was excluded from training)."""
    probs = np.full(len(data.label), np.nan)
    held = data.split != "train"
    probs[held] = det.probabilities(data.crops[held])
    h264 = np.array([":h264" in s for s in data.source])
    chain = np.array([s.endswith(":chain") for s in data.source])
    fam = np.array([family(s) for s in data.source])
    val = data.split == "val"
    test = data.split == "test"
    threshold = metrics.threshold_at_fpr(calibration_scores(det, data, copies, seed), fpr)
    out: dict = {"threshold": threshold,
                 "calibrated_on": f"val identities' real frames (raw, H.264, + {copies} augmented copies), {fpr:g} FPR"}
    sets = {
        "val": val,
        "test_raw": test & ~h264 & ~chain,
        f"test_h264_crf{test_crf}": test & h264,
        "test_chain": test & chain,
    }
    for name, m in sets.items():
        out[name] = metrics.summary(probs[m & (data.label == 0)], probs[m & (data.label == 1)], threshold, fpr)
    real_test = probs[test & (data.label == 0)]
    out["test_by_family"] = {f: metrics.summary(real_test, probs[test & (fam == f)], threshold, fpr)
                             for f in sorted(set(fam[test & (data.label == 1)]))}
    return out


def load_or_build(out_dir: Path, cfg: TrainConfig, split, log: Callable[[str], None]) -> tuple[Samples, str]:
    """The dataset, cached in ``out_dir`` under a key of everything that shapes it (re-running reuses it)."""
    key_src = json.dumps({"prepared": cfg.prepared, "models": [file_sha256(Path(m)) for m in cfg.models],
                          "input": cfg.input_size, "seed": cfg.seed, "split": asdict(split)["test"],
                          "val": asdict(split)["val"], "fake_frames": cfg.fake_frames,
                          "ft": [cfg.finetune_every, cfg.finetune_steps], "crf": cfg.test_crf,
                          **({"ae_steps": cfg.ae_steps} if cfg.ae_steps != 250 else {}),
                          "kinds": "generated+warp+blend+sbi+ae, h264+chain on both classes"}, sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    cache = out_dir / f"samples-{key}.npz"
    if cache.is_file():
        log(f"reusing generated data {cache}")
        with np.load(cache, allow_pickle=False) as z:
            return Samples(z["crops"], z["label"], z["split"].astype(object), z["clip"].astype(object),
                           z["source"].astype(object)), key
    data = build_samples(Path(cfg.prepared), [Path(m) for m in cfg.models], split, cfg.input_size, cfg.seed,
                         fake_frames=cfg.fake_frames, finetune_every=cfg.finetune_every,
                         finetune_steps=cfg.finetune_steps, ae_steps=cfg.ae_steps,
                         test_crf=cfg.test_crf, log=log)
    from synth.media.atomic import atomic_path

    with atomic_path(cache, force=True) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, crops=data.crops, label=data.label, split=data.split.astype(str), clip=data.clip.astype(str),
                 source=data.source.astype(str))
    return data, key


def train(out_dir: Path, cfg: TrainConfig, command: str, force: bool = False,
          log: Callable[[str], None] = print) -> dict:
    """The whole recipe (module docstring); returns the card it wrote."""
    import torch

    from synth.media.atomic import atomic_write_bytes, check_writable
    from synth.train.shards import read_index

    out_dir = Path(out_dir)
    weights = out_dir / "th-detector.safetensors"
    card_path = out_dir / "th-detector.card.json"
    check_writable(weights, force)
    check_writable(card_path, force)
    if not cfg.models:
        raise UserError("no generator to make fakes with: pass --model PATH (a th model or checkpoint)")
    for m in cfg.models:
        if not Path(m).is_file():
            raise UserError(f"--model {m}: no such file")
    index = read_index(cfg.prepared)
    identities = [c["identity"] for c in index["clips"]]
    split = split_identities(identities, list(cfg.test_identities), cfg.val_fraction, cfg.seed)
    if not split.test or not split.val or not split.train:
        raise UserError(f"identity split left a set empty (train {len(split.train)}, val {len(split.val)}, "
                        f"test {len(split.test)}): need more identities in {cfg.prepared}")
    log(f"identities: train {len(split.train)}, val {len(split.val)}, test {len(split.test)}")
    t0 = time.perf_counter()
    data, data_key = load_or_build(out_dir, cfg, split, log)
    t_data = time.perf_counter() - t0
    log(f"data: {data.counts()} in {t_data:.0f}s")
    torch.manual_seed(cfg.seed)
    spec = DetectorSpec.for_arch(cfg.arch, cfg.input_size)
    det = Detector(spec, build_network(spec))
    t1 = time.perf_counter()
    state_dir = out_dir / "train-state"
    history = fit(det, data, cfg, log, state_dir=state_dir, data_key=data_key)
    t_fit = time.perf_counter() - t1
    results = evaluate(det, data, cfg.fpr, cfg.test_crf, cfg.seed)
    det = Detector(DetectorSpec(**{**asdict(spec), "threshold": results["threshold"]}), det.net)
    sha = det.save(weights, force=force)
    n_params = sum(p.numel() for p in det.net.parameters())
    card = {
        "card_version": CARD_VERSION,
        "id": f"th-detector-{sha[:12]}",
        "weights": weights.name,
        "sha256": sha,
        "timm_arch": spec.arch,
        "pretrained": False,
        "params": n_params,
        "input": {"size": spec.input_size, "crop": "synth.faces.align canonical crop (crop_box of the frame's 68 landmarks)",
                  "mean": spec.mean, "std": spec.std, "normalisation": "timm resolve_data_config(model) mean/std"},
        "threshold": results["threshold"],
        "aggregate": spec.aggregate,
        "command": command,
        "config": asdict(cfg),
        "data": {"prepared": cfg.prepared, "cache_key": data_key, "counts": data.counts(),
                 "sources": {s: int((data.source == s).sum()) for s in sorted(set(data.source))},
                 "generators": [{"path": m, "sha256": file_sha256(Path(m))} for m in cfg.models],
                 "watermark": "fakes are raw generator output (no watermark); the watermark is not a cue"},
        "splits": {"train": list(split.train), "val": list(split.val), "test": list(split.test)},
        "metrics": results,
        "final_train": {k: round(float(np.mean([h[k] for h in history[-25:]])), 4) for k in ("bce", "acc")},
        "seconds": {"data": round(t_data, 1), "fit": round(t_fit, 1)},
        "torch_threads": torch.get_num_threads(),
    }
    atomic_write_bytes(card_path, (json.dumps(card, indent=2) + "\n").encode(), force=force)
    shutil.rmtree(state_dir, ignore_errors=True)  # finished: nothing left to resume
    return card
