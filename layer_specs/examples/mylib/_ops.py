"""The derivative the layers' backwards share (imported relatively: ``from ._ops import ...``)."""

import torch


def swish_grad(x: torch.Tensor, beta: torch.Tensor | float) -> torch.Tensor:
    """d/dx x * sigmoid(beta x) = s + beta x s (1 - s), s = sigmoid(beta x)."""
    s = torch.sigmoid(beta * x)
    return s + beta * x * s * (1 - s)
