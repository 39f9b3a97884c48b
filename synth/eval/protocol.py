"""The `th eval` protocol (docs/EVAL.md): self-reenactment and cross-identity reenactment with baselines.

Self-reenactment, per clip: track the face, cut one fixed canonical crop box for the whole clip, take K
source frames spread over the clip, enroll them feed-forward (``th-FF``, the paper's 0-step case) and
fine-tuned (``th-FT``), drive with the landmarks of other frames of the same clip (absolute, in crop
coordinates: the real frame is the ground truth) and compare every generated frame with the real crop.
The ``static`` (first source frame, unmoved) and ``warp`` (piecewise-affine warp of it by the driver's
landmarks) baselines run on the same frames. Driven frames come in pairs of consecutive frames spread
over the clip, so temporal flicker is measured on true frame-to-frame changes.

Other models (``compare``, e.g. the 2019 generator) run as extra ``LABEL th-FT`` rows on the same clips and
frames: enrolled at their own image size from the same crops, their frames upscaled to this model's size
(what `th animate` would show).

Cross-identity (``cross``): every avatar is driven by another identity's clip, with relative motion
transfer (th's default) and absolute landmarks (the paper's), and we measure how much of the avatar's
identity is kept and how much of the driver's leaks in (CSIM).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synth.errors import UserError
from synth.eval import metrics

METHODS = ("static", "warp", "th-FF", "th-FT")
BASELINES = ("static", "warp")
SELF_METRICS = ("ssim", "psnr", "csim", "id_match", "lmk_err", "no_face", "flicker")
CROSS_METHODS = ("warp", "th-FF", "th-FT")
TRANSFERS = ("relative", "absolute")


@dataclass(frozen=True)
class EvalConfig:
    shots: tuple[int, ...] = (1, 8)
    steps: int = 40  # fine-tuning steps for th-FT
    frames: int = 32  # driven frames per clip (in consecutive pairs)
    seed: int = 0
    cross: bool = False
    strip_frames: int = 4  # frames shown in each comparison strip
    bootstrap: int = 1000
    compare: tuple[str, ...] = ()  # labels of the comparison models (rows "LABEL th-FT")
    id_loss: float = 0.0  # > 0: also a "th-FT+id" row, fine-tuned with the dlib-ResNet identity term at this weight


@dataclass(frozen=True)
class ClipJob:
    path: Path
    key: str
    identity: str


@dataclass
class EvalClip:
    """One clip ready for the protocol: crops of the frames it uses, landmarks of every frame."""

    key: str
    identity: str
    path: Path
    n_frames: int
    landmarks: np.ndarray  # float32 (T, 68, 2) in crop pixels at model size
    crops: dict[int, np.ndarray]  # frame index → uint8 (S, S, 3), for sources and driven frames
    sources: dict[int, list[int]]  # K → source frame indices
    drive: list[int]  # driven frame indices, sorted
    pairs: list[tuple[int, int]]  # positions in ``drive`` of consecutive frames (flicker)
    real_desc: dict[int, np.ndarray] = field(default_factory=dict)  # frame → dlib descriptor

    def real(self, idx: list[int]) -> np.ndarray:
        return np.stack([self.crops[i] for i in idx])


@dataclass
class EvalResult:
    """Everything `th eval` reports; ``summary`` is method → K → metric → stats."""

    config: dict
    clips: list[dict]
    skipped: list[dict]
    summary: dict
    cross: dict | None
    strips: dict[str, dict[int, np.ndarray]]  # clip key → K → strip image
    warnings: list[str]


# --- inputs ---------------------------------------------------------------------------------------

def read_manifest(path: Path) -> dict[str, str]:
    """File name → identity from a MANIFEST.tsv (columns ``file`` and ``identity``)."""
    with open(path, newline="") as fh:
        return {Path(r["file"]).name: r.get("identity") or "" for r in csv.DictReader(fh, delimiter="\t")}


def collect_clips(source: Path, identities: set[str] | None = None, per_identity: int | None = None) -> list[ClipJob]:
    """Clips to evaluate: a folder of videos (identities from a MANIFEST.tsv in it or its parent, or the
    VoxCeleb2 layout) or a manifest TSV (its ``clip`` rows); optionally only ``identities``."""
    from synth.media.video import VIDEO_SUFFIXES
    from synth.train.prepare import discover, find_manifest
    from synth.train.shards import clip_key

    source = Path(source)
    if source.is_file() and source.suffix.lower() in (".tsv", ".txt"):
        jobs = []
        with open(source, newline="") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                p = source.parent / row["file"]
                if row.get("kind", "clip") == "clip" and p.suffix.lower() in VIDEO_SUFFIXES:
                    jobs.append(ClipJob(p, clip_key(Path(row["file"]).name), row.get("identity") or clip_key(p.name)))
    else:
        jobs = [ClipJob(j.path, j.key, j.identity) for j in discover(source, find_manifest(source))]
    if identities is not None:
        unknown = identities - {j.identity for j in jobs}
        if unknown:
            raise UserError(f"no clips of identities: {', '.join(sorted(unknown))}")
        jobs = [j for j in jobs if j.identity in identities]
    if per_identity is not None:
        seen: dict[str, int] = {}
        kept = []
        for j in sorted(jobs, key=lambda j: j.key):
            if seen.get(j.identity, 0) < per_identity:
                seen[j.identity] = seen.get(j.identity, 0) + 1
                kept.append(j)
        jobs = kept
    missing = [j for j in jobs if not j.path.exists()]
    if missing:
        raise UserError(f"{missing[0].path}: no such clip")
    if not jobs:
        raise UserError(f"{source}: no clips to evaluate")
    return sorted(jobs, key=lambda j: j.key)


def check_identities(jobs: list[ClipJob], model_path: Path, allow: bool) -> str | None:
    """Refuse clips of identities the model trained on (its card's ``train_identities``) unless ``allow``.

    Returns a warning when the check could not be made (no card), else None.
    """
    from synth.avatar.bundled import model_card_path, train_identities

    trained = train_identities(model_path)
    if trained is None:
        return (f"no train_identities in a model card ({model_card_path(model_path).name}): cannot check that "
                "the clips are held out of the model's training")
    overlap = sorted({j.identity for j in jobs} & set(trained))
    if overlap and not allow:
        raise UserError(f"the model trained on {len(overlap)} of these identities ({', '.join(overlap[:5])}"
                        f"{', …' if len(overlap) > 5 else ''}); evaluate on held-out identities or pass "
                        "--allow-train-identities")
    return None


def select_frames(valid: np.ndarray, shots: tuple[int, ...], n_drive: int) -> tuple[dict[int, list[int]], list[int], list[tuple[int, int]]]:
    """Source frames per K (spread over the clip, nested: every K's set is a subset of the largest) and
    driven frames: consecutive pairs spread over the frames that are no K's source."""
    kmax = max(shots)
    if len(valid) < kmax + 2:
        raise UserError(f"only {len(valid)} frames with a face (need {kmax + 2})")
    src_all = [int(valid[i]) for i in np.unique(np.round(np.linspace(0, len(valid) - 1, kmax)).astype(int))]
    sources = {k: [src_all[i] for i in np.unique(np.round(np.linspace(0, len(src_all) - 1, k)).astype(int))]
               for k in shots}
    rest = sorted(set(int(v) for v in valid) - set(src_all))
    rest_set = set(rest)
    starts = [t for t in rest if t + 1 in rest_set]
    n_pairs = max(1, n_drive // 2)
    chosen: list[int] = []
    if starts:
        for i in np.round(np.linspace(0, len(starts) - 1, min(n_pairs, len(starts)))).astype(int):
            t = starts[i]
            if not chosen or t >= chosen[-1] + 2:
                chosen.append(t)
    drive = sorted({f for t in chosen for f in (t, t + 1)})
    if not drive:  # no two consecutive usable frames: single frames, no flicker pairs
        drive = [rest[i] for i in np.unique(np.round(np.linspace(0, len(rest) - 1, min(n_drive, len(rest)))).astype(int))]
    pos = {f: i for i, f in enumerate(drive)}
    pairs = [(pos[t], pos[t + 1]) for t in chosen if t + 1 in pos]
    return sources, drive, pairs


def load_clip(job: ClipJob, size: int, cfg: EvalConfig) -> EvalClip:
    """Track the clip, fix its crop box, choose frames and cut their crops at the model's size."""
    from synth.faces.align import align_crop, apply_affine, clip_box
    from synth.faces.tracking import track_video
    from synth.media.video import iter_frames

    track = track_video(job.path)
    valid = np.flatnonzero(track.has_face)
    box = clip_box(track.landmarks[track.has_face])
    M = box.affine(size)
    lms = np.stack([apply_affine(lm, M) for lm in track.landmarks]).astype(np.float32)
    sources, drive, pairs = select_frames(valid, cfg.shots, cfg.frames)
    wanted = set(drive) | {i for s in sources.values() for i in s}
    crops = {}
    for i, fr in enumerate(iter_frames(job.path)):
        if i in wanted:
            crops[i] = align_crop(fr, box=box, size=size)[0]
        if i >= max(wanted):
            break
    if set(crops) != wanted:
        raise UserError(f"could not decode frames {sorted(wanted - set(crops))[:3]}…")
    return EvalClip(job.key, job.identity, job.path, len(track), lms, crops, sources, drive, pairs)


# --- methods --------------------------------------------------------------------------------------

def render_frames(model, params, landmarks: np.ndarray, size: int | None = None) -> np.ndarray:
    """uint8 (T, size, size, 3): the enrolled person (PersonParams) rendered for each landmark set, given in
    pixels of ``size`` (default: the model's size; another size is rescaled in and out)."""
    from synth.avatar.animate import render

    size = size or model.image_size
    gen = params.generator_module(model)
    lms = landmarks * (model.image_size / size)
    return np.stack(list(render(model, gen, params.psi, lms, size, sources=params.sources)))


def methods_for(cfg: EvalConfig) -> tuple[str, ...]:
    """Rows of the report: baselines, comparison models' fine-tuned rows, then this model's FF and FT."""
    return (*BASELINES, *(f"{label} th-FT" for label in cfg.compare), "th-FF", "th-FT",
            *(("th-FT+id",) if cfg.id_loss > 0 else ()))


def baseline_frames(method: str, source: np.ndarray, source_lm: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The ``static`` or ``warp`` baseline for a source photo and driving landmarks (T, 68, 2)."""
    from synth.faces.warp import warp_frames

    if method == "static":
        return np.repeat(source[None], len(landmarks), axis=0)
    if method == "warp":
        return warp_frames(source, source_lm, landmarks)
    raise ValueError(f"unknown baseline {method!r}")


def real_descriptors(clip: EvalClip, idx: list[int]) -> np.ndarray:
    """Face descriptors (len(idx), 128) of the clip's real frames, computed once (in one batch) and cached."""
    todo = [i for i in dict.fromkeys(idx) if i not in clip.real_desc]
    if todo:
        clip.real_desc.update(zip(todo, metrics.face_descriptors([clip.crops[i] for i in todo], clip.landmarks[todo])))
    return np.stack([clip.real_desc[i] for i in idx])


def score_frames(clip: EvalClip, generated: np.ndarray) -> dict[str, list[float]]:
    """Per-frame SSIM, PSNR, CSIM, landmark error (frames with a face found) and no-face flags, plus
    the clip's flicker ratio, for frames generated for ``clip.drive``."""
    out: dict[str, list[float]] = {m: [] for m in SELF_METRICS}
    gen_desc = metrics.face_descriptors(list(generated), clip.landmarks[clip.drive])
    real_desc = real_descriptors(clip, clip.drive)
    for g, i, d_gen, d_real in zip(generated, clip.drive, gen_desc, real_desc):
        real, lm = clip.crops[i], clip.landmarks[i]
        out["ssim"].append(metrics.ssim(g, real))
        out["psnr"].append(metrics.psnr(g, real))
        out["csim"].append(metrics.cosine(d_gen, d_real))
        out["id_match"].append(float(metrics.same_person(d_gen, d_real)))
        found = metrics.find_landmarks(g, lm)
        out["no_face"].append(float(found is None))
        if found is not None:
            out["lmk_err"].append(metrics.landmark_error(found, lm))
    if clip.pairs:
        out["flicker"].append(metrics.flicker_ratio(generated, clip.real(clip.drive), clip.pairs))
    return out


# --- statistics -----------------------------------------------------------------------------------

def mean_ci(per_clip: dict[str, list[float]], n_boot: int, seed: int) -> dict:
    """Mean over all values and a 95 % bootstrap interval: resampling clips (a cluster bootstrap, since
    frames of one clip are correlated) when there are ≥ 3 clips, else resampling values."""
    groups = [np.asarray(v, np.float64) for v in per_clip.values() if len(v)]
    per_clip_mean = {k: (float(np.mean(v)) if len(v) else None) for k, v in per_clip.items()}
    if not groups:
        return {"mean": None, "ci95": [None, None], "n": 0, "ci_over": None, "per_clip": per_clip_mean}
    flat = np.concatenate(groups)
    rng = np.random.default_rng(seed)
    if len(groups) >= 3:
        boots = [np.concatenate([groups[j] for j in rng.integers(0, len(groups), len(groups))]).mean()
                 for _ in range(n_boot)]
        over = "clips"
    else:
        boots = rng.choice(flat, size=(n_boot, len(flat)), replace=True).mean(axis=1)
        over = "frames"
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"mean": float(flat.mean()), "ci95": [float(lo), float(hi)], "n": int(len(flat)), "ci_over": over,
            "per_clip": per_clip_mean}


# --- comparison strips ----------------------------------------------------------------------------

def comparison_strip(columns: dict[str, np.ndarray], rows: list[int]) -> np.ndarray:
    """A grid: one column per method (real first), one row per chosen frame, labels on top."""
    import cv2

    s0 = next(iter(columns.values())).shape[1]
    if s0 < 128:  # tiny models: enlarge so the faces and the labels are readable
        columns = {n: np.stack([cv2.resize(f, (128, 128), interpolation=cv2.INTER_NEAREST) for f in v])
                   for n, v in columns.items()}
    s = max(s0, 128)
    header = np.zeros((22, s * len(columns), 3), np.uint8)
    for c, name in enumerate(columns):
        cv2.putText(header, name, (c * s + 4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    body = [np.hstack([frames[r] for frames in columns.values()]) for r in rows]
    return np.vstack([header, *body])


# --- the protocol ---------------------------------------------------------------------------------

Progress = Callable[[str, float], None]  # (description, fraction of the run done)


def evaluate(model, jobs: list[ClipJob], cfg: EvalConfig, on_progress: Progress | None = None,
             compare: list | None = None) -> EvalResult:
    """Run the protocol on ``jobs`` with a loaded TalkingHeadModel; returns numbers and strip images.

    ``compare``: other loaded models, one per label of ``cfg.compare``, fine-tuned and scored on the same frames.
    """
    import torch

    from synth.avatar.finetune import finetune

    def tell(desc: str, frac: float) -> None:
        if on_progress is not None:
            on_progress(desc, frac)

    torch.manual_seed(cfg.seed)
    size = model.image_size
    compare = list(compare or [])
    if len(compare) != len(cfg.compare):
        raise ValueError("one comparison model per label of cfg.compare")
    methods = methods_for(cfg)
    values: dict[str, dict[int, dict[str, dict[str, list[float]]]]] = {
        m: {k: {x: {} for x in SELF_METRICS} for k in cfg.shots} for m in methods}
    clips: list[EvalClip] = []
    skipped: list[dict] = []
    params: dict[tuple[str, int, str], object] = {}  # (clip, K, method) → PersonParams
    strips: dict[str, dict[int, np.ndarray]] = {}
    units_per_clip = 1 + len(cfg.shots) * (2 + len(compare) + (1 + len(compare)) * max(cfg.steps, 0) / 10)
    total = len(jobs) * units_per_clip
    done = 0.0
    for job in jobs:
        tell(f"{job.key}: tracking", done / total)
        try:
            clip = load_clip(job, size, cfg)
        except UserError as e:
            skipped.append({"clip": job.key, "identity": job.identity, "reason": str(e)})
            done += units_per_clip
            continue
        clips.append(clip)
        done += 1
        src0 = clip.sources[cfg.shots[0]][0]  # the first source frame is the same for every K
        drive_lm = clip.landmarks[clip.drive]
        base = {m: baseline_frames(m, clip.crops[src0], clip.landmarks[src0], drive_lm) for m in BASELINES}
        base_scores = {m: score_frames(clip, f) for m, f in base.items()}
        strips[clip.key] = {}
        for k in cfg.shots:
            src = clip.sources[k]
            gen = dict(base)
            scores = dict(base_scores)
            runs = [(f"{label} th-FT", m, cfg.steps, None) for label, m in zip(cfg.compare, compare)]
            runs += [("th-FF", model, 0, None), ("th-FT", model, cfg.steps, None)]
            if cfg.id_loss > 0:
                from synth.nets.losses import IdentityLoss

                runs.append(("th-FT+id", model, cfg.steps, IdentityLoss(cfg.id_loss, cfg.id_loss)))
            for method, net, steps, identity in runs:
                tell(f"{clip.key}: K={k} {method}", done / total)

                def step_tick(step: int, _losses: dict[str, float], base_done: float = done,
                              label: str = f"{clip.key}: K={k} {method}") -> None:
                    tell(f"{label} step {step}/{cfg.steps}", (base_done + step / 10) / total)

                p = finetune(net, clip.real(src), clip.landmarks[src], steps=steps, seed=cfg.seed,
                             on_step=step_tick if steps else None, identity=identity)
                if net is model:
                    params[(clip.key, k, method)] = p
                gen[method] = render_frames(net, p, drive_lm, size)
                tell(f"{clip.key}: K={k} {method} metrics", done / total)
                scores[method] = score_frames(clip, gen[method])
                done += 1 + (steps / 10 if steps else 0)
            for method in methods:
                for name, vals in scores[method].items():
                    values[method][k][name][clip.key] = vals
            rows = [int(r) for r in np.unique(np.round(np.linspace(0, len(clip.drive) - 1, min(cfg.strip_frames, len(clip.drive)))))]
            strips[clip.key][k] = comparison_strip({"real": clip.real(clip.drive), **gen}, rows)
    if not clips:
        raise UserError("no clip could be evaluated: " + "; ".join(f"{s['clip']}: {s['reason']}" for s in skipped))
    summary = {m: {str(k): {x: mean_ci(values[m][k][x], cfg.bootstrap, cfg.seed) for x in SELF_METRICS}
                   for k in cfg.shots} for m in methods}
    cross = None
    if cfg.cross:
        tell("cross-identity", done / total)
        cross = cross_identity(model, clips, params, cfg)
    tell("done", 1.0)
    clip_info = [{"key": c.key, "identity": c.identity, "path": str(c.path), "frames": c.n_frames,
                  "sources": {str(k): v for k, v in c.sources.items()}, "drive": c.drive} for c in clips]
    return EvalResult({}, clip_info, skipped, summary, cross, strips, [])


def cross_identity(model, clips: list[EvalClip], params: dict, cfg: EvalConfig) -> dict:
    """Drive each avatar with the next clip of another identity: CSIM of generated frames to the
    avatar's source photos (identity kept) and to the driver's real frames (identity leaked)."""
    from synth.avatar.motion import relative_transfer

    vals: dict[str, dict[int, dict[str, dict[str, dict[str, list[float]]]]]] = {
        m: {k: {t: {"kept": {}, "leaked": {}} for t in TRANSFERS} for k in cfg.shots} for m in CROSS_METHODS}
    pairs_used = []
    for a, avatar in enumerate(clips):
        drivers = [c for c in clips[a + 1:] + clips[:a] if c.identity != avatar.identity]
        if not drivers:
            continue
        drv = drivers[0]
        tag = f"{avatar.key}<-{drv.key}"
        pairs_used.append({"avatar": avatar.key, "driver": drv.key})
        kmax = max(cfg.shots)
        src_desc = dict(zip(avatar.sources[kmax], real_descriptors(avatar, avatar.sources[kmax])))
        src0 = avatar.sources[cfg.shots[0]][0]
        neutral = drv.landmarks[drv.drive[0]]
        lms = {"absolute": drv.landmarks[drv.drive],
               "relative": relative_transfer(avatar.landmarks[src0], drv.landmarks[drv.drive], neutral)}
        for k in cfg.shots:
            for t in TRANSFERS:
                for method in CROSS_METHODS:
                    if method == "warp":
                        frames = baseline_frames("warp", avatar.crops[src0], avatar.landmarks[src0], lms[t])
                    else:
                        frames = render_frames(model, params[(avatar.key, k, method)], lms[t])
                    kept, leaked = [], []
                    gen_desc = metrics.face_descriptors(list(frames), lms[t])
                    for d, d_drv in zip(gen_desc, real_descriptors(drv, drv.drive)):
                        kept.append(float(np.mean([metrics.cosine(d, src_desc[j]) for j in avatar.sources[k]])))
                        leaked.append(metrics.cosine(d, d_drv))
                    vals[method][k][t]["kept"][tag] = kept
                    vals[method][k][t]["leaked"][tag] = leaked
    summary = {m: {str(k): {t: {x: mean_ci(vals[m][k][t][x], cfg.bootstrap, cfg.seed) for x in ("kept", "leaked")}
                            for t in TRANSFERS} for k in cfg.shots} for m in CROSS_METHODS}
    return {"pairs": pairs_used, "summary": summary}


# --- report ---------------------------------------------------------------------------------------

def to_report(result: EvalResult) -> dict:
    """The JSON report: config, clips, skipped clips, self-reenactment and cross-identity summaries."""
    return {"version": 1, "config": result.config, "clips": result.clips, "skipped": result.skipped,
            "self": result.summary, "cross": result.cross, "warnings": result.warnings}


METRIC_LABELS = {"ssim": "SSIM ↑", "psnr": "PSNR dB ↑", "csim": "CSIM ↑", "id_match": "same person ↑", "lmk_err": "LMK err ↓",
                 "no_face": "no face ↓", "flicker": "flicker (1 = real)"}


def _fmt(stat: dict, digits: int = 3) -> str:
    if stat["mean"] is None:
        return "–"
    lo, hi = stat["ci95"]
    return f"{stat['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def report_markdown(report: dict) -> str:
    """The tables of report.json as markdown (mean [95 % interval])."""
    cfg = report["config"]
    lines = ["# th eval report", "",
             f"- model: `{cfg['model']}` (sha256 `{cfg['model_sha256'][:16]}…`)",
             f"- command: `{cfg['command']}`",
             f"- clips: {len(report['clips'])} evaluated, {len(report['skipped'])} skipped; "
             f"identities: {', '.join(sorted({c['identity'] for c in report['clips']}))}",
             f"- shots {cfg['shots']}, fine-tuning steps {cfg['steps']}, driven frames/clip ≤ {cfg['frames']}, "
             f"seed {cfg['seed']}", "",
             "Self-reenactment: mean [95 % bootstrap interval]. same person = share of generated frames "
             "dlib's verifier matches to the real frame (descriptor distance < 0.6); no face = share where dlib "
             "finds no face; flicker = generated frame-to-frame change / real.", ""]
    for k in cfg["shots"]:
        lines += [f"## K = {k}", "", "| method | " + " | ".join(METRIC_LABELS[m] for m in SELF_METRICS) + " |",
                  "|---|" + "---|" * len(SELF_METRICS)]
        for method, by_k in report["self"].items():
            st = by_k[str(k)]
            lines.append(f"| {method} | " + " | ".join(_fmt(st[m], 2 if m == "psnr" else 3) for m in SELF_METRICS) + " |")
        lines.append("")
    if report.get("cross"):
        lines += ["## Cross-identity", "",
                  "CSIM of generated frames to the avatar's source photos (kept ↑) and to the driver's real "
                  "frames (leaked ↓). Pairs: " + ", ".join(f"{p['avatar']} ← {p['driver']}" for p in report["cross"]["pairs"]),
                  "", "| method | K | transfer | kept ↑ | leaked ↓ |", "|---|---|---|---|---|"]
        for method, by_k in report["cross"]["summary"].items():
            for k, by_t in by_k.items():
                for t, st in by_t.items():
                    lines.append(f"| {method} | {k} | {t} | {_fmt(st['kept'])} | {_fmt(st['leaked'])} |")
        lines.append("")
    if report["skipped"]:
        lines += ["## Skipped clips", ""] + [f"- {s['clip']} ({s['identity']}): {s['reason']}" for s in report["skipped"]] + [""]
    return "\n".join(lines)


def bar_plot(report: dict, dest: Path) -> None:
    """Bars per method and K for each metric, with 95 % intervals (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shots = report["config"]["shots"]
    methods = list(report["self"])
    fig, axes = plt.subplots(1, len(SELF_METRICS), figsize=(3.2 * len(SELF_METRICS), 3.2))
    width = 0.8 / len(methods)
    for ax, metric in zip(axes, SELF_METRICS):
        for j, method in enumerate(methods):
            stats = [report["self"][method][str(k)][metric] for k in shots]
            means = np.array([s["mean"] if s["mean"] is not None else np.nan for s in stats])
            lo = np.array([s["ci95"][0] if s["mean"] is not None else np.nan for s in stats])
            hi = np.array([s["ci95"][1] if s["mean"] is not None else np.nan for s in stats])
            err = np.nan_to_num(np.vstack([means - lo, hi - means]).clip(min=0))
            ax.bar(np.arange(len(shots)) + (j - (len(methods) - 1) / 2) * width, means, width, yerr=err,
                   capsize=2, label=method)
        ax.set_xticks(np.arange(len(shots)), [f"K={k}" for k in shots])
        ax.set_title(METRIC_LABELS[metric], fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(dest, dpi=100)
    plt.close(fig)
