"""Wavelet filters (the decomposition filters of pywt.Wavelet(name))."""

import math

_S3 = math.sqrt(3.0)
_N = 4 * math.sqrt(2.0)

FILTERS = {
    "haar": ([1 / math.sqrt(2.0)] * 2, [-1 / math.sqrt(2.0), 1 / math.sqrt(2.0)]),
    "db2": (
        [(1 - _S3) / _N, (3 - _S3) / _N, (3 + _S3) / _N, (1 + _S3) / _N],
        [-(1 + _S3) / _N, (3 + _S3) / _N, -(3 - _S3) / _N, (1 - _S3) / _N],
    ),
}


def db2():
    return FILTERS["db2"]
