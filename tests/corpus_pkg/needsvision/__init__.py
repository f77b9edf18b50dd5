"""A model zoo: layers, and transforms that need an optional dependency (as timm needs torchvision)."""

from .layers import SoftShrink
from .transforms import resize

__all__ = ["SoftShrink", "resize"]
