"""The expression encoder for generated images: a small CNN trained to predict the landmark code (the
sender's z_exp) from a face crop, then frozen, so that L_exp can compare codes of generated frames."""

from __future__ import annotations

import torch
from torch import nn


class ExpressionCNN(nn.Module):
    def __init__(self, k: int, width: int = 32):
        super().__init__()
        layers, cin = [], 3
        for cout in (width, 2 * width, 4 * width, 4 * width, 8 * width):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
            cin = cout
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(cin, k)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] → (B, K) codes."""
        return self.head(self.features(images))
