"""DistributedDataParallel under `torchrun`: one process per device, rank 0 owns the run directory.

    torchrun --nproc_per_node=4 -m nasctl retrain genotype=darts_v2

Every rank runs the whole CLI. Rank 0 picks the run directory and broadcasts it, so all ranks
share one; only rank 0 writes in it (manifest, metrics, checkpoints, TensorBoard); the other
ranks read from it (resume). `retrain.batch_size` stays the *global* batch: every rank builds
the same batch (data order and augmentation are a function of the seed) and trains on its
rank::world rows, so N processes follow the single-process recipe step for step (except that
BatchNorm sees B/N samples). Backends: gloo for CPU tensors, NCCL for CUDA tensors.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from nasctl.errors import NasctlError
from nasctl.store import Run

T = TypeVar("T")


def launched() -> bool:
    """True in a process that torchrun started as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def setup() -> None:
    """Join torchrun's process group (idempotent): gloo for CPU tensors, plus NCCL for CUDA tensors."""
    if launched() and not active():
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")


def hydra_args() -> list[str]:
    """Extra overrides for the non-zero ranks: no `.hydra/` files or job log of their own in rank 0's run."""
    return [] if is_main() else ["hydra.output_subdir=null", "hydra/job_logging=disabled"]


def from_main(value: T) -> T:
    """Rank 0's `value` on every rank (a run directory, a resume decision)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def device(picked: torch.device) -> torch.device:
    """This rank's device: cuda:LOCAL_RANK when the picked device is CUDA."""
    if active() and picked.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return picked


def parallel(model: torch.nn.Module) -> torch.nn.Module:
    """`model` wrapped in DDP when distributed (gradients averaged over ranks), else itself."""
    if not active():
        return model
    p = next(model.parameters())
    return DistributedDataParallel(model, device_ids=[p.device.index] if p.is_cuda else None)


class Shard:
    """This rank's rows (rank::world) of every global batch of a batch iterator."""

    def __init__(self, batches: Any) -> None:
        if batches.batch_size % world():
            raise NasctlError(f"The batch size {batches.batch_size} must be a multiple of the {world()} DDP processes.")
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.batches.epoch(epoch, start_step):
            yield x[rank()::world()], y[rank()::world()]


def shard(batches: Any) -> Any:
    return Shard(batches) if active() else batches


def all_sum(totals: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-rank sums (loss, correct, count) summed over the ranks."""
    if not active():
        return totals
    out = {k: torch.as_tensor(v).clone() for k, v in totals.items()}
    for v in out.values():
        dist.all_reduce(v)
    return out


def any_rank(flag: bool) -> bool:
    """True on every rank if it is true on any (e.g. one rank got SIGTERM: all stop at the same step)."""
    if not active():
        return flag
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier() -> None:
    if active():
        dist.barrier()


def teardown(clean: bool = True) -> None:
    """Leave the process group before the interpreter exits (after a barrier when every rank got here cleanly).

    Gloo's worker threads still alive during interpreter finalisation can abort the process (SIGABRT).
    """
    if active():
        if clean:
            dist.barrier()
        dist.destroy_process_group()


class ReplicaRun(Run):
    """A non-zero rank's view of rank 0's run: reads (resume), never writes (every writing method of Run)."""

    @classmethod
    def create(cls, path: Any, *args: Any, **kwargs: Any) -> ReplicaRun:
        return cls(path)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        pass

    def update(self, **fields: Any) -> None:
        pass

    def finish(self, status: str, **fields: Any) -> None:
        pass

    def log_metrics(self, record: dict[str, Any]) -> None:
        pass

    def truncate_metrics(self, epoch: int) -> None:
        pass

    def save_checkpoint(self, state: dict[str, Any], name: str = "last.pt") -> Any:
        return self.ckpt_dir / name


def run_class() -> type[Run]:
    """`Run` on rank 0, `ReplicaRun` on the others."""
    return Run if is_main() else ReplicaRun
