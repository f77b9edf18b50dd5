"""The arguments a layer is called with, as its users call it.

Positional and keyword arguments, each a tensor, any other Python value (a flag, a
string, None, a number passed as a number), or a list or tuple of those, nested as
the layer expects (``DWTInverse((yl, [yh0, yh1]))``). A tensor inside is addressed by
its path: ``("args", 0, 1, 0)`` is ``args[0][1][0]``, ``("kwargs", "grid")`` the
keyword ``grid``. :class:`Call` is immutable; a changed argument gives a new one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import torch

Path = tuple  # ("args", i, ...) or ("kwargs", name, ...)


@dataclass(frozen=True)
class Call:
    args: tuple = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, fn: Callable[..., Any]) -> Any:
        return fn(*self.args, **self.kwargs)

    def get(self, path: Path) -> Any:
        value: Any = self.args if path[0] == "args" else self.kwargs
        for step in path[1:]:
            value = value[step]
        return value

    def replaced(self, path: Path, new: Any) -> "Call":
        """This call with the value at ``path`` replaced (lists and tuples on the way copied)."""
        top = list(self.args) if path[0] == "args" else dict(self.kwargs)
        top[path[1]] = _replaced(top[path[1]], path[2:], new)
        return Call(tuple(top), self.kwargs) if path[0] == "args" else Call(self.args, top)

    def map_tensors(self, fn: Callable[[torch.Tensor], Any]) -> "Call":
        """This call with every tensor ``t`` replaced by ``fn(t)``; the structure and other values kept."""
        return Call(tuple(_mapped(a, fn) for a in self.args), {k: _mapped(v, fn) for k, v in self.kwargs.items()})

    def tensors(self) -> Iterator[tuple[Path, torch.Tensor]]:
        """Every tensor with its path, positional arguments first, each in order."""
        for i, a in enumerate(self.args):
            yield from _walk(a, ("args", i))
        for k, v in self.kwargs.items():
            yield from _walk(v, ("kwargs", k))

    def __len__(self) -> int:
        return len(self.args) + len(self.kwargs)


def _replaced(value: Any, rest: tuple, new: Any) -> Any:
    if not rest:
        return new
    items = list(value)
    items[rest[0]] = _replaced(items[rest[0]], rest[1:], new)
    return rebuilt(value, items)


def rebuilt(value: Any, items: list) -> Any:
    """``items`` in the sequence type of ``value``: a list, a tuple, or a namedtuple (PackedSequence) kept as such."""
    if not isinstance(value, tuple):
        return items
    make = getattr(type(value), "_make", None)
    return make(items) if make is not None else tuple(items)


def _mapped(value: Any, fn: Callable) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (list, tuple)):
        return rebuilt(value, [_mapped(v, fn) for v in value])
    return value


def _walk(value: Any, path: tuple) -> Iterator[tuple[Path, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        yield path, value
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _walk(v, path + (i,))
