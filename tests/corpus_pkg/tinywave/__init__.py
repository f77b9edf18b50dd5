"""tinywave: 1-D discrete wavelet transforms with hand-written backwards."""

from .functional import AFB1D, DWT1D

__all__ = ["AFB1D", "DWT1D"]
