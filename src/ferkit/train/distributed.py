"""Training on several processes at once (torchrun, DistributedDataParallel): the process group, each
process's share of a batch, the validation outputs gathered, and which process writes.

Under torchrun (RANK, WORLD_SIZE and LOCAL_RANK in the environment, WORLD_SIZE above 1) each process (a
rank) holds one replica of the net. Every rank draws the same epoch permutation from the same seeded
generator and cuts each global batch of --batch-size faces into equal contiguous shares, one per rank, so the
union over the ranks is the single-process epoch. The gradients are averaged over the ranks after each
backward pass, so N processes follow one process's trajectory with the same global batch and learning rate
(up to the order of floating-point sums; BatchNorm normalises each rank's share unless --sync-bn).

Without torchrun `World()` stands in: one rank, no process group, and every method here hands back what it
was given, so a plain run is exactly what it always was.
"""

from __future__ import annotations

import inspect
import math
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ferkit.errors import ConfigError, DataError


# ---------------------------------------------------------------------------- who and where this process is
@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1  # the processes on this node
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where collectives run

    @classmethod
    def from_env(cls) -> World:
        """The torchrun environment, or one process when there is none (or WORLD_SIZE is 1)."""
        names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
        if os.environ.get("WORLD_SIZE", "1").strip() == "1":
            return cls()
        try:
            rank, size, local = (int(os.environ[name]) for name in names)
            local_size = int(os.environ.get("LOCAL_WORLD_SIZE") or local + 1)
        except (KeyError, ValueError):
            shown = ", ".join(f"{n}={os.environ.get(n)!r}" for n in names)
            raise ConfigError(f"torchrun environment incomplete ({shown}): start it with torchrun") from None
        if not 0 <= rank < size:
            raise ConfigError(f"torchrun environment: RANK {rank} is not below WORLD_SIZE {size}")
        return cls(rank, size, local, local_size)

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that prints and writes the run folder."""
        return self.rank == 0

    def quiet_on_fault(self) -> None:
        """For a fault every process of a node finds alike (the settings): all but the node's first exit with
        status 2 and say nothing, so each node's torchrun shows the one line once."""
        if self.local_rank != 0:
            raise SystemExit(2)

    def describe(self) -> dict:
        """What a run's session record keeps of the world (nothing for a single process)."""
        return {"world_size": self.size, "backend": dist.get_backend()} if self.distributed else {}

    # ------------------------------------------------------------------ the device and the checks
    def check(self, cfg) -> None:
        if self.distributed and cfg.batch_size % self.size:
            raise ConfigError(f"--batch-size {cfg.batch_size}: the global batch must split evenly over {self.size} "
                              f"processes (each takes batch-size / {self.size}); use a multiple of {self.size}")

    def rank_device(self, requested: str, device: torch.device) -> torch.device:
        """Each rank's GPU is the one of its LOCAL_RANK; on CPUs every rank trains on the CPU."""
        if not self.distributed or device.type != "cuda":
            return device
        if requested.startswith("cuda:"):
            raise ConfigError(f"--device {requested}: under torchrun each process takes the GPU of its LOCAL_RANK; "
                              "use --device cuda or auto")
        gpus = torch.cuda.device_count()
        if max(self.local_size, self.local_rank + 1) > gpus:
            raise ConfigError(f"--nproc-per-node {self.local_size}: this machine has {gpus} CUDA device(s), one per "
                              f"process; start at most {gpus} per node, or train on the CPU (--device cpu)")
        return torch.device("cuda", self.local_rank)

    @contextmanager
    def process_group(self, device: torch.device):
        """Join the other ranks (NCCL on GPUs, gloo on CPUs) for the duration; a single process joins nothing."""
        if not self.distributed:
            yield self
            return
        self.device = device
        backend, bound = "gloo", {}
        if device.type == "cuda":
            torch.cuda.set_device(device)
            backend = "nccl"
            if "device_id" in inspect.signature(dist.init_process_group).parameters:  # torch 2.3 on
                bound = {"device_id": device}
        dist.init_process_group(backend, rank=self.rank, world_size=self.size, **bound)
        yield self
        # Left only on success: after a failure the other ranks may be gone, and tearing NCCL down could hang.
        dist.destroy_process_group()

    # ------------------------------------------------------------------ the model
    def prepare(self, model: nn.Module, sync_bn: bool) -> nn.Module:
        """With --sync-bn, BatchNorm layers that normalise over the global batch (same parameters and buffers,
        so checkpoints load into the plain net). torch's SyncBatchNorm runs on GPUs only; on CPUs (gloo) the
        statistics are summed over the ranks by `AllReduceBatchNorm`."""
        if not (self.distributed and sync_bn):
            return model
        if self.device.type == "cuda":
            return nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return AllReduceBatchNorm.convert(model)

    def wrap(self, model: nn.Module) -> nn.Module:
        """The replica trained forward and backward (DistributedDataParallel); the model itself otherwise."""
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        # Buffers (BatchNorm's running statistics) are rank 0's, sent before every forward pass.
        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def sync_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm's running statistics) on every rank, so all of them score the same net."""
        if self.distributed:
            for buf in model.buffers():
                dist.broadcast(buf, 0)

    # ------------------------------------------------------------------ the data
    def epoch_generator(self, gen: torch.Generator, seed: int, epoch: int) -> torch.Generator:
        """The generator an epoch's augmentation draws from. One process: the run's own `gen` (which also
        draws the permutation), as ever. Several: a generator of (seed, rank, epoch), and torch's global one
        (dropout) seeded likewise, so ranks differ and a resumed epoch repeats itself."""
        if not self.distributed:
            return gen
        global_seed, aug_seed = np.random.SeedSequence([seed % 2**64, self.rank, epoch]).generate_state(2, np.uint64)
        torch.manual_seed(int(global_seed))
        return torch.Generator().manual_seed(int(aug_seed))

    def shard(self, rows):
        """This rank's contiguous share of `rows` (as np.array_split cuts them); all of them for one process."""
        return rows if not self.distributed else np.array_split(rows, self.size)[self.rank]

    def gather_rows(self, part: torch.Tensor, total: int) -> torch.Tensor:
        """Every rank's `shard` of `total` rows, back in order, on every rank (CPU)."""
        if not self.distributed:
            return part
        sizes = [len(s) for s in np.array_split(np.arange(total), self.size)]
        padded = torch.zeros((max(sizes), *part.shape[1:]), dtype=part.dtype, device=self.device)
        padded[:len(part)] = part.to(self.device)
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        return torch.cat([p[:n] for p, n in zip(parts, sizes)]).cpu()

    def sum(self, *values: float) -> tuple[float, ...]:
        """Each value summed over the ranks (epoch totals: loss, correct, faces seen)."""
        if not self.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return tuple(t.tolist())

    # ------------------------------------------------------------------ agreeing and waiting
    def agree(self, flag: bool) -> bool:
        """Rank 0's answer, on every rank."""
        if not self.distributed:
            return flag
        t = torch.tensor([int(flag)], device=self.device)
        dist.broadcast(t, 0)
        return bool(t.item())

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    @contextmanager
    def rank_zero_first(self):
        """Rank 0 runs the block (filling caches) while the others wait; then they run it."""
        if self.distributed and not self.main:
            dist.barrier()
        yield
        if self.distributed and self.main:
            dist.barrier()

    def say(self, message: str) -> None:
        if self.main:
            print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- batches
class BatchShards:
    """An epoch's steps: global batches of `batch_size` faces cut from the shared permutation, and this
    rank's share of each. A last batch too small to give every rank two faces (BatchNorm needs two) is left
    out of a distributed epoch: at most 2 x ranks - 1 faces, a different few each epoch."""

    def __init__(self, n: int, batch_size: int, world: World) -> None:
        self.batch_size, self.world = batch_size, world
        self.steps = math.ceil(n / batch_size)
        if world.distributed and 0 < n % batch_size < 2 * world.size:
            self.steps -= 1
        if self.steps == 0:
            raise DataError(f"{n} training faces cannot make a batch for {world.size} processes")

    def __len__(self) -> int:
        return self.steps

    def batch(self, perm: torch.Tensor, step: int) -> tuple[torch.Tensor, float]:
        """This rank's faces of the step's global batch, and the weight of its mean loss: the share of the
        global batch it holds times the ranks, so the average over ranks of the gradients is the gradient of
        the global batch's mean loss (1 for one process, and for even shares)."""
        whole = perm[step * self.batch_size:(step + 1) * self.batch_size]
        mine = torch.tensor_split(whole, self.world.size)[self.world.rank] if self.world.distributed else whole
        return mine, len(mine) * self.world.size / len(whole)


# ---------------------------------------------------------------------------- BatchNorm over all ranks (CPUs)
class AllReduceBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are the global batch's: the per-channel sums (then the squared
    deviations from the global mean) are summed over the ranks with a differentiable all-reduce, so the
    gradient flows through them as in torch's SyncBatchNorm. Evaluation uses the running statistics."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        dims, shape = [0, *range(2, x.dim())], [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        count = torch.full((1,), xf.numel() // xf.shape[1], dtype=xf.dtype, device=xf.device)
        sums = _AllReduceSum.apply(torch.cat([xf.sum(dims), count]))
        n = sums[-1]
        mean = sums[:-1] / n
        centred = xf - mean.view(shape)
        var = _AllReduceSum.apply((centred * centred).sum(dims)) / n  # two passes, as exact as BatchNorm's own
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * (n / (n - 1)) if float(n) > 1 else var
                self.running_mean.mul_(1 - factor).add_(mean.detach().to(self.running_mean.dtype), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.detach().to(self.running_var.dtype), alpha=factor)
        return y.to(x.dtype)

    @classmethod
    def convert(cls, module: nn.Module) -> nn.Module:
        """`module` with every BatchNorm replaced by one of these, holding the same parameters and buffers."""
        if isinstance(module, _BatchNorm) and not isinstance(module, cls):
            new = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
            if module.affine:
                new.weight, new.bias = module.weight, module.bias
            if module.track_running_stats:
                new.running_mean, new.running_var = module.running_mean, module.running_var
                new.num_batches_tracked = module.num_batches_tracked
            new.train(module.training)
            return new
        for name, child in module.named_children():
            module.add_module(name, cls.convert(child))
        return module


class _AllReduceSum(torch.autograd.Function):
    """A tensor summed over the ranks; its gradient is the ranks' gradients summed the same way."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad
