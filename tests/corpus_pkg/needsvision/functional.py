"""Functional forms of the layers, through the package."""

from .layers import SoftShrink


def softshrink(x, lambd=0.5):
    return SoftShrink.apply(x, lambd)
