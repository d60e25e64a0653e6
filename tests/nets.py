"""Tiny networks for engine tests, importable by Hydra as ``model=custom model.module._target_=nets.X``."""

import os
import time

import torch
from torch import nn


class TinyConvBN(nn.Module):
    """conv (no bias) -> BN -> relu -> linear: small enough for dense references."""

    def __init__(self, in_channels: int = 1, num_classes: int = 3, image_size: int = 4, width: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width * image_size * image_size, num_classes)
        with torch.no_grad():  # non-trivial BN statistics and affine parameters
            g = torch.Generator().manual_seed(1)
            self.bn.running_mean.copy_(0.1 * torch.randn(width, generator=g))
            self.bn.running_var.copy_(0.5 + torch.rand(width, generator=g))
            self.bn.weight.copy_(1 + 0.1 * torch.randn(width, generator=g))
            self.bn.bias.copy_(0.1 * torch.randn(width, generator=g))

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


class TinyLinear(nn.Module):
    """A linear classifier: with loss=mse its loss is an exact quadratic in (weight, bias)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 3, image_size: int = 4):
        super().__init__()
        self.fc = nn.Linear(in_channels * image_size * image_size, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


class NoisyNet(TinyConvBN):
    """Dropout left active in eval mode: every forward pass is random (the probe must notice)."""

    def forward(self, x):
        return self.fc(torch.nn.functional.dropout(torch.relu(self.bn(self.conv(x))).flatten(1), 0.5, training=True))


def launcher_rank() -> int:
    """This process's rank as its launcher (torchrun, mpiexec) tells it; 0 when not launched."""
    for key in ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK"):
        if key in os.environ:
            return int(os.environ[key])
    return 0


class SlowTinyConvBN(TinyConvBN):
    """TinyConvBN that sleeps ``delay`` s per forward pass: a run long enough to be killed."""

    def __init__(self, delay: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.delay = delay

    def forward(self, x):
        time.sleep(self.delay)
        return super().forward(x)


class RankFailingTinyConvBN(TinyConvBN):
    """TinyConvBN whose forward pass on rank ``fail_rank`` raises (or, with ``hang``, never returns)
    from its ``after_calls``-th call on: a stand-in for a device error on one node."""

    def __init__(self, fail_rank: int = 1, after_calls: int = 0, hang: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.fail_rank, self.after_calls, self.hang = fail_rank, after_calls, hang
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if launcher_rank() == self.fail_rank and self.calls > self.after_calls:
            if self.hang:
                time.sleep(3600)
            raise RuntimeError(f"simulated device error on rank {self.fail_rank}")
        return super().forward(x)


class TinySmoothNet(TinyConvBN):
    """tanh instead of relu: a smooth loss, so finite differences converge to the Hessian."""

    def forward(self, x):
        return self.fc(torch.tanh(self.bn(self.conv(x))).flatten(1))
