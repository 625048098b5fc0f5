"""The CIFAR-10 ResNets of He et al. (2016), "Deep Residual Learning for Image Recognition", sec. 4.2.

A 3x3 convolution to 16 channels, then three stages of ``n`` basic blocks with 16, 32 and 64
channels (strides 1, 2, 2), global average pooling to a 64-d feature. Depth is ``6n + 2``:
ResNet-20/32/44/56 have ``n = 3, 5, 7, 9``. The shortcut that changes shape is the paper's
option A: subsample by 2 and zero-pad the new channels, so it has no parameters.

Parameter names follow the public checkpoints of akamaster/pytorch_resnet_cifar10 (``conv1``,
``bn1``, ``layer1.0.conv1``, ...; the classifier is ``linear``), so those files load strictly.
The module here is the backbone only: it returns the pooled features and has no ``linear`` head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BasicBlock", "CifarResNet", "cifar_resnet"]

FEATURE_DIM = 64


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity or option-A (parameter-free) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.stride = stride
        self.pad = out_ch - in_ch

    def shortcut(self, x: Tensor) -> Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            # Zero channels split evenly before and after, as in the reference checkpoints.
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) backbone for 32x32 inputs: ``(B, 3, S, S)`` -> ``(B, 64)`` pooled features.

    Any input size works (the pooling is global); 32 is what the reference weights saw.
    """

    def __init__(self, blocks_per_stage: int) -> None:
        super().__init__()
        if blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be >= 1, got {blocks_per_stage}")
        self.blocks_per_stage = blocks_per_stage
        self.num_features = FEATURE_DIM
        self.conv1 = _conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, blocks_per_stage, stride=1)
        self.layer2 = self._stage(16, 32, blocks_per_stage, stride=2)
        self.layer3 = self._stage(32, 64, blocks_per_stage, stride=2)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(in_ch: int, out_ch: int, n: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(in_ch, out_ch, stride)]
        blocks += [BasicBlock(out_ch, out_ch) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def cifar_resnet(depth: int) -> CifarResNet:
    """The backbone of ResNet-``depth`` (depth = 6n + 2: 8, 20, 32, 44, 56, 110, ...)."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n + 2 with n >= 1, got {depth}")
    return CifarResNet((depth - 2) // 6)
