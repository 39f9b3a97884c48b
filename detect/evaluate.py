"""The numbers of docs/DETECTOR.md that need files: foreign fakes vs held-out real clips, watermarked th
outputs (as written by th's own write path, then re-encoded at CRF 28), and per-frame throughput.

Run: ``python -m detect.evaluate CARD.json OUT.json [--shared ../shared/data]`` (single-threaded);
``python -m detect.evaluate --backbones`` prints the backbone comparison of docs/DETECTOR.md.
Foreign fakes (MANIFEST kind=foreign_fake) are never used for training.
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from detect import metrics
from detect.model import Detector
from detect.score import FileScore, score_file


def manifest_rows(shared: Path) -> list[dict[str, str]]:
    with open(shared / "MANIFEST.tsv", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def file_level(real: list[FileScore], fake: list[FileScore], threshold: float) -> dict:
    """Frame-level (pooled frames) and file-level (median per file) metrics."""
    def frames(rs: list[FileScore]) -> np.ndarray:
        return np.array([s for r in rs for s in r.frame_scores if s is not None])

    def files(rs: list[FileScore]) -> np.ndarray:
        return np.array([r.score for r in rs if r.score is not None])

    return {"frames": metrics.summary(frames(real), frames(fake), threshold),
            "files": metrics.summary(files(real), files(fake), threshold),
            "per_file": {Path(r.path).name: r.score for r in real + fake}}


def th_outputs(card: dict, det: Detector, out: Path, n: int = 8) -> dict:
    """Fakes of the test identities by the bundled (first) generator, feed-forward, each driven by the next
    test clip, 256 px like th animate, scored as files in three conditions: ``signed`` — written through
    provenance.write (watermark + C2PA, what th ships); ``crf28`` — that file re-encoded at CRF 28;
    ``chain`` — the same frames written *without* the watermark, then through the re-uploader's chain
    (crop 90 %, ½, brightness, CRF 28: ``provenance.attacks.chain_video``)."""
    from detect.data import generate_fakes, resize_to
    from provenance.attacks import attack_video, chain_video
    from provenance.manifest import GenerationFacts
    from provenance.write import write_video
    from synth.avatar.model import TalkingHeadModel
    from synth.media.video import VideoWriter
    from synth.train.shards import load_prepared

    clips = load_prepared(card["config"]["prepared"], identities=set(card["splits"]["test"]))[:n + 1]
    model_path = card["config"]["models"][0]
    net = TalkingHeadModel.load(model_path)
    rows: dict[str, list[FileScore]] = {"signed": [], "crf28": [], "chain": []}
    for i in range(min(n, len(clips) - 1)):
        fake, _ = generate_fakes(net, clips[i].frames, clips[i].landmarks, clips[i + 1].landmarks, 4, 0, i)
        frames = list(resize_to(fake, 256))
        dest = out / f"th_{clips[i].key}.mp4"
        write_video(frames, dest, 25.0, GenerationFacts.current(), force=True)
        rows["signed"].append(score_file(dest, det))
        rows["crf28"].append(score_file(attack_video(dest, out / f"th_{clips[i].key}_crf28.mp4", "crf28"), det))
        # unwatermarked generated pixels: only in this run's private temporary folder, deleted once scored
        raw, chained = out / f"raw_{clips[i].key}.mp4", out / f"raw_{clips[i].key}_chain.mp4"
        with VideoWriter(raw, 25.0, (256, 256)) as w:
            for f in frames:
                w.write(f)
        rows["chain"].append(score_file(chain_video(raw, chained), det))
        raw.unlink()
        chained.unlink()

    def show(rs: list[FileScore]) -> dict:
        return {Path(r.path).name: {"score": r.score, "flagged": r.synthetic, "faces": r.faces} for r in rs}

    return {"model": model_path, "threshold": det.spec.threshold, "n": len(rows["signed"]),
            **{k: show(v) for k, v in rows.items()},
            **{f"flagged_{k}": sum(r.synthetic for r in v) for k, v in rows.items()}}


def throughput(det: Detector, sample: Path) -> dict:
    """ms per frame: the network alone (batch 1 and 32) and the whole file pipeline (faces + crop + net)."""
    import torch

    s = det.spec.input_size
    x = np.random.default_rng(0).integers(0, 255, (32, s, s, 3), dtype=np.uint8)
    det.probabilities(x[:2])
    t = time.perf_counter()
    for i in range(32):
        det.probabilities(x[i:i + 1])
    b1 = (time.perf_counter() - t) / 32 * 1000
    t = time.perf_counter()
    for _ in range(3):
        det.probabilities(x)
    b32 = (time.perf_counter() - t) / 96 * 1000
    t = time.perf_counter()
    r = score_file(sample, det, max_frames=32)
    pipe = (time.perf_counter() - t) / max(1, len(r.frame_scores)) * 1000
    return {"threads": torch.get_num_threads(), "net_ms_per_frame_batch1": round(b1, 2),
            "net_ms_per_frame_batch32": round(b32, 2), "file_ms_per_frame": round(pipe, 1),
            "file_sample": sample.name, "frames_scored": len(r.frame_scores)}


BACKBONES = ("mobilenetv3_small_050", "mobilenetv3_small_100", "regnetx_002", "ghostnet_050", "resnet10t",
             "efficientnet_b0")


def compare_backbones(archs: tuple[str, ...] = BACKBONES, size: int = 128, batch: int = 16) -> list[dict]:
    """Params and single-thread ms/frame (inference at batch ``batch``, and one training step) per timm arch."""
    import timm
    import torch

    torch.set_num_threads(1)
    rows = []
    for arch in archs:
        net = timm.create_model(arch, pretrained=False, num_classes=1).eval()
        x = torch.randn(batch, 3, size, size)
        with torch.no_grad():
            net(x)
            t = time.perf_counter()
            for _ in range(3):
                net(x)
            infer = (time.perf_counter() - t) / (3 * batch) * 1000
        net.train()
        opt = torch.optim.AdamW(net.parameters())
        t = time.perf_counter()
        for _ in range(2):
            loss = net(x).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        train = (time.perf_counter() - t) / (2 * batch) * 1000
        rows.append({"arch": arch, "params_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 2),
                     "infer_ms_per_frame": round(infer, 1), "train_ms_per_frame": round(train, 1)})
    return rows


def run(card_path: Path, out_json: Path, shared: Path) -> dict:
    from synth.device import set_threads
    from synth.media.atomic import atomic_write_bytes

    set_threads(1)
    card = json.loads(card_path.read_text())
    det = Detector.load(card_path.parent / card["weights"])
    rows = manifest_rows(shared)
    test_ids = set(card["splits"]["test"])
    real = [score_file(shared / r["file"], det) for r in rows if r["kind"] == "clip" and r["identity"] in test_ids]
    foreign = [score_file(shared / r["file"], det) for r in rows if r["kind"] == "foreign_fake"]
    report = {"card": card["id"], "threshold": det.spec.threshold,
              "foreign_vs_heldout_real": file_level(real, foreign, det.spec.threshold)}
    with tempfile.TemporaryDirectory(prefix="th-detect-eval-") as tmp:
        report["th_outputs"] = th_outputs(card, det, Path(tmp))
    report["throughput"] = throughput(det, shared / next(r["file"] for r in rows if r["kind"] == "clip"
                                                        and r["identity"] in test_ids))
    atomic_write_bytes(out_json, (json.dumps(report, indent=2) + "\n").encode(), force=True)
    return report


if __name__ == "__main__":
    args = sys.argv[1:]
    if args == ["--backbones"]:
        for row in compare_backbones():
            print(json.dumps(row))
        sys.exit(0)
    shared_dir = Path(args[args.index("--shared") + 1]) if "--shared" in args else Path("../shared/data")
    print(json.dumps(run(Path(args[0]), Path(args[1]), shared_dir), indent=2))
