"""Run under torchrun (2 processes, gloo): BatchNorm2d as --sync-bn makes it on CPUs (AllReduceBatchNorm), each
rank normalising its share of a channels-last batch, against plain BatchNorm2d on the whole batch in one process.
Rank 0 writes the largest differences (output, input gradient, weight and bias gradients, running statistics)."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from torch import nn

from ferkit.train.distributed import AllReduceBatchNorm


def batchnorm() -> nn.BatchNorm2d:
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(6)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    return bn.train()


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank, size = dist.get_rank(), dist.get_world_size()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(11, 6, 5, 5, generator=gen) * 3 + 1  # 11 faces: shares of 6 and 5
    dy = torch.randn(11, 6, 5, 5, generator=gen)

    whole = batchnorm()  # one process, the whole batch
    xw = x.clone().requires_grad_()
    y_whole = whole(xw)
    (y_whole * dy).sum().backward()

    synced = AllReduceBatchNorm.convert(nn.Sequential(batchnorm()))  # this rank's share
    mine = torch.tensor_split(torch.arange(len(x)), size)[rank]
    xs = x[mine].contiguous(memory_format=torch.channels_last).requires_grad_()
    y = synced(xs)
    (y * dy[mine]).sum().backward()
    bn = synced[0]

    grads = torch.cat([bn.weight.grad, bn.bias.grad])
    dist.all_reduce(grads)  # the ranks' losses summed: the whole batch's
    rows = torch.zeros(2, *x.shape)
    rows[0, mine], rows[1, mine] = y.detach(), xs.grad
    dist.all_reduce(rows)  # every rank's rows in place
    if rank == 0:
        diffs = {
            "output": float((rows[0] - y_whole.detach()).abs().max()),
            "input_grad": float((rows[1] - xw.grad).abs().max()),
            "param_grad": float((grads - torch.cat([whole.weight.grad, whole.bias.grad])).abs().max()),
            "running_mean": float((bn.running_mean - whole.running_mean).abs().max()),
            "running_var": float((bn.running_var - whole.running_var).abs().max()),
            "batches_tracked": int(bn.num_batches_tracked),
            "converted": type(bn).__name__,
        }
        with open(out, "w") as fh:
            json.dump(diffs, fh)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
