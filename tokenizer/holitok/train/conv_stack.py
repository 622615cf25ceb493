"""The trunk every sub-discriminator ends with: LeakyReLU conv stack -> output conv, keeping each feature map."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def run_conv_stack(x: torch.Tensor, convs, conv_post, leaky_slope: float,
                   features: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Flattened scores and the feature maps (appended to `features`) that feature matching compares."""
    for conv in convs:
        x = F.leaky_relu(conv(x), leaky_slope)
        features.append(x)
    x = conv_post(x)
    features.append(x)
    return x.flatten(1), features
