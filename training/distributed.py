"""One process or many: the process group that torchrun describes in the environment
(RANK, WORLD_SIZE, LOCAL_RANK). NCCL on GPUs, Gloo on CPUs; a single process needs none."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @classmethod
    def setup(cls, device: str = "auto") -> "Distributed":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device)
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError("device 'cuda' asked for, but PyTorch sees no GPU")
            if dev.index is None:
                dev = torch.device("cuda", local if world > 1 else torch.cuda.current_device())
            torch.cuda.set_device(dev)
        if world <= 1:
            return cls(device=dev)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
        return cls(rank=rank, world=world, device=dev, backend=backend)

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()

    def gather(self, obj) -> list | None:
        """Every process's object, in rank order, on the main process (None elsewhere)."""
        if not self.active:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out if self.main else None

    def share_buffers(self, module: torch.nn.Module) -> None:
        """Give every process the main process's buffers (BatchNorm statistics): each process
        updated its own in its last training forward, and DistributedDataParallel would only
        align them at the next one."""
        if self.active:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def any(self, flag: bool) -> bool:
        """True on every process when it is true on any (a stop request, say)."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())
