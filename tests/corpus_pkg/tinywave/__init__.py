"""tinywave: 1-D discrete wavelet transforms with hand-written backwards."""

from .functional import DWT1D, AFB1D

__all__ = ["AFB1D", "DWT1D"]
