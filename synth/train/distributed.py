"""torchrun-based data parallelism in one small module; a single process when not under torchrun.

Gradients are averaged with one explicit all-reduce per phase instead of wrapping the networks in
DistributedDataParallel: G and D are used in several passes per step (D sees real and fake frames in
both phases), only some of D's per-video columns W_i get gradients, and spectral norm keeps its
power-iteration vectors as buffers. Averaging the full gradient of every parameter after backward
makes all ranks take the same Adam step (the untouched W_i columns just get zero), and the power
iteration stays identical on every rank because it only depends on the (identical) weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init(device_type: str = "cpu") -> DistInfo:
    """Join the torchrun process group if RANK/WORLD_SIZE are set (gloo on CPU, nccl on CUDA)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistInfo()
    import torch.distributed as dist

    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return info


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def average_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """All-reduce-average the gradients of ``params`` (missing gradients count as zero)."""
    if world <= 1:
        return
    import torch.distributed as dist

    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def any_flag(flag: bool, world: int, device: torch.device | None = None) -> bool:
    """True when ``flag`` is true on any rank (e.g. "time budget reached"), so all ranks stop together."""
    if world <= 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def assert_in_sync(modules: list[torch.nn.Module], world: int, device: torch.device | None = None) -> None:
    """Raise if the ranks' weights differ (compares per-tensor checksums with one all-reduce)."""
    if world <= 1:
        return
    import torch.distributed as dist

    sums = torch.stack([t.detach().double().sum() for m in modules for t in m.state_dict().values()])
    sums = sums.to(device) if device is not None else sums
    hi, lo = sums.clone(), sums.clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    if not torch.equal(hi, lo):
        raise RuntimeError(f"ranks diverged: max weight-checksum gap {float((hi - lo).abs().max()):.3g}")
