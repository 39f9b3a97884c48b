"""Model benchmark: size, meta-training images/s and generator inference fps for each preset on this CPU.

    .venv/bin/python bench/bench_model.py [--presets tiny cpu paper] [--threads 2] [--repeats 5]

Train images/s = target frames per second of full meta-learning steps (E on K frames, G and D phases)
at batch 1 (batches > 1 do not help per frame on CPU); inference fps = one generator forward per
frame with spectral norm folded (the warp-guided G gets one warped shot, a one-shot avatar), in torch
(NCHW and channels-last) and in ONNX Runtime (synth.avatar.runtime: what `th animate` runs by default);
"G fps ×4" = ONNX Runtime on batches of 4 frames, per frame. Medians of several runs. The paper preset
is timed with the VGG-free content loss (its VGG terms need local weight files).
"""

from __future__ import annotations

import argparse
import os

from timing import median_time  # bench/timing.py (scripts run from bench/ on sys.path)

# Before torch loads OpenMP: spinning threads make timings meaningless on a shared CPU.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def bench_preset(name: str, repeats: int, num_videos: int = 110) -> dict:
    import torch

    from synth.avatar.model import fold_spectral_norm
    from synth.avatar.runtime import OnnxGenerator
    from synth.nets.config import preset, replace
    from synth.train.metatrain import build_nets, build_optimizers, meta_step

    cfg = replace(preset(name), net={"num_videos": num_videos}, train={"batch": 1},
                  loss={"content": "l1_msssim", "w_l1": 10.0, "w_msssim": 5.0})
    e, g, d = build_nets(cfg.net)
    n_all = sum(p.numel() for m in (e, g, d) for p in m.parameters())
    n_export = n_all - d.W.numel()
    opt_g, opt_d = build_optimizers(e, g, d, cfg)
    s, k = cfg.net.image_size, cfg.train.k_shot
    frames = torch.rand(1, k + 1, 3, s, s) * 2 - 1
    landmarks = torch.rand(1, k + 1, 3, s, s) * 2 - 1
    video = torch.zeros(1, dtype=torch.long)
    train_reps = max(2, repeats // 2) if name == "paper" else repeats
    warped = torch.rand(1, k, 3, s, s) * 2 - 1 if g.uses_warp else None  # the K shots warped to the target
    step = median_time(lambda: meta_step(e, g, d, opt_g, opt_d, frames, landmarks, video, cfg.loss, world=1,
                                         warped=warped), train_reps)
    folded = fold_spectral_norm(g)
    last = fold_spectral_norm(g).to(memory_format=torch.channels_last)
    engine = OnnxGenerator(folded, s, 1, torch.get_num_threads())
    y = torch.rand(4, 3, s, s) * 2 - 1
    one_shot = warped[:, :1].expand(4, -1, -1, -1, -1) if warped is not None else None  # a one-shot avatar
    reps = max(repeats, 5)
    with torch.no_grad():
        psi = g.project(torch.rand(1, cfg.net.emb_dim)).expand(4, -1)
        one = (y[:1], psi[:1], None if one_shot is None else one_shot[:1])
        fwd = median_time(lambda: folded(*one), reps, warmup=2)
        fwd_cl = median_time(lambda: last(*one), reps, warmup=2)
        fwd_onnx = median_time(lambda: engine(*one), reps, warmup=2)
        fwd_onnx4 = median_time(lambda: engine(y, psi, one_shot), reps, warmup=2) / 4
    return {
        "preset": name,
        "generator": cfg.net.generator,
        "res": s,
        "g_widths": "-".join(map(str, cfg.net.g_widths)),
        "ed_widths": "-".join(map(str, cfg.net.e_widths)) + f"->{cfg.net.emb_dim}",
        "K": k,
        "params_M": n_all / 1e6,
        "MB_ckpt_w": n_all * 4 / 1e6,
        "MB_export": n_export * 4 / 1e6,
        "train_img_s": 1.0 / step,
        "gen_fps": 1.0 / fwd,
        "gen_fps_cl": 1.0 / fwd_cl,
        "gen_fps_onnx": 1.0 / fwd_onnx,
        "gen_fps_onnx4": 1.0 / fwd_onnx4,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "cpu", "cpu2019", "paper"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from synth.device import set_threads

    n = set_threads(args.threads)
    rows = [bench_preset(p, args.repeats) for p in args.presets]
    head = ("preset", "G", "res", "G widths", "E/D widths", "K", "params M", "weights MB (E,G,D+W)", "export MB",
            "train img/s", "G fps torch", "G fps torch CL", "G fps onnx", "G fps onnx ×4")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print(f"| {r['preset']} | {r['generator']} | {r['res']} | {r['g_widths']} | {r['ed_widths']} | {r['K']} | {r['params_M']:.2f} | "
              f"{r['MB_ckpt_w']:.1f} | {r['MB_export']:.1f} | {r['train_img_s']:.2f} | {r['gen_fps']:.1f} | "
              f"{r['gen_fps_cl']:.1f} | {r['gen_fps_onnx']:.1f} | {r['gen_fps_onnx4']:.1f} |")
    print(f"\n{n} torch threads, fp32, batch 1; medians of {args.repeats} runs. The machine may be shared with "
          "other jobs: compare numbers taken at the same time only.")


if __name__ == "__main__":
    main()
