"""Forward-mode derivatives in plain tensor arithmetic, so that they export to ONNX.

``torch.func.jvp`` gives the same numbers, but torch 2.13's exporters cannot trace it with a
free batch size (a Python scalar in a product pins the batch dimension; the TorchScript
exporter fails on the look-ups). A :class:`Dual` carries a value and its tangents along the
differentiated inputs (last axis) and answers the few torch functions the formulation uses
(``__torch_function__``), so the very same formulation code computes values and tangents,
and the traced graph is ordinary arithmetic.
"""

from __future__ import annotations

import torch

#: Functions of one argument: derivative of f at the value.
_UNARY = {
    torch.sqrt: lambda v, f: 0.5 / f,
    torch.rsqrt: lambda v, f: -0.5 * f * f * f,
    torch.Tensor.sqrt: lambda v, f: 0.5 / f,
    torch.Tensor.rsqrt: lambda v, f: -0.5 * f * f * f,
}


class Dual:
    """A value (any shape) and its tangents (the value's shape plus one axis of directions).

    ``plain_columns``: on an input (N, C) dual, columns from this index on carry no tangent
    (z_start and z_end: never differentiated), and selecting them gives plain tensors, so
    the field look-ups stay plain arithmetic.
    """

    def __init__(self, value: torch.Tensor, tangent: torch.Tensor, plain_columns=None):
        self.value, self.tangent, self.plain_columns = value, tangent, plain_columns

    @classmethod
    def seed(cls, inputs: torch.Tensor, n_directions: int) -> Dual:
        """The (N, C) inputs, differentiated by their first ``n_directions`` columns."""
        index = torch.arange(n_directions, device=inputs.device)
        eye = (index.unsqueeze(1) == index.unsqueeze(0)).to(inputs.dtype)  # (D, D)
        zeros = inputs[:, : inputs.shape[1] - n_directions].unsqueeze(2) * 0.0
        zeros = zeros[:, :, :1].expand(-1, -1, n_directions)
        own = (inputs[:, :n_directions].unsqueeze(2) * 0.0) + eye  # (N, D, D)
        return cls(inputs, torch.cat((own, zeros), 1), plain_columns=n_directions)

    # -- plumbing -------------------------------------------------------------------------
    @property
    def shape(self):
        return self.value.shape

    @property
    def dtype(self):
        return self.value.dtype

    @property
    def device(self):
        return self.value.device

    def double(self) -> Dual:
        return Dual(self.value.double(), self.tangent.double(), self.plain_columns)

    def float(self) -> Dual:
        return Dual(self.value.float(), self.tangent.float(), self.plain_columns)

    def expand(self, *sizes) -> Dual:
        return Dual(self.value.expand(*sizes), self.tangent.expand(*sizes, -1))

    def unsqueeze(self, dim: int) -> Dual:
        return Dual(self.value.unsqueeze(dim), self.tangent.unsqueeze(_tangent_dim(dim)))

    def unbind(self, dim: int) -> tuple:
        return tuple(self[(slice(None),) * dim + (k,)] for k in range(self.value.shape[dim]))

    def __getitem__(self, key) -> Dual | torch.Tensor:
        key = key if isinstance(key, tuple) else (key,)
        if self.plain_columns is not None and len(key) == 2 and _columns_plain(key[1], self):
            return self.value[key]
        return Dual(self.value[key], self.tangent[key])

    # -- arithmetic -----------------------------------------------------------------------
    def __add__(self, other) -> Dual:
        value, tangent = _parts(other)
        return Dual(self.value + value, _add(self.tangent, tangent))

    __radd__ = __add__

    def __sub__(self, other) -> Dual:
        value, tangent = _parts(other)
        return Dual(self.value - value, _add(self.tangent, _neg(tangent)))

    def __rsub__(self, other) -> Dual:
        return Dual(other - self.value, -self.tangent)

    def __neg__(self) -> Dual:
        return Dual(-self.value, -self.tangent)

    def __mul__(self, other) -> Dual:
        value, tangent = _parts(other)
        out = self.tangent * _col(value)
        if tangent is not None:
            out = out + tangent * _col(self.value)
        return Dual(self.value * value, out)

    __rmul__ = __mul__

    def __truediv__(self, other) -> Dual:
        value, tangent = _parts(other)
        quotient = self.value / value
        out = self.tangent / _col(value)
        if tangent is not None:
            out = out - tangent * _col(quotient / value)
        return Dual(quotient, out)

    def __rtruediv__(self, other) -> Dual:
        quotient = other / self.value
        return Dual(quotient, -self.tangent * _col(quotient / self.value))

    def __pow__(self, exponent: float) -> Dual:
        return Dual(
            self.value**exponent,
            self.tangent * _col(exponent * self.value ** (exponent - 1)),
        )

    def sum(self, dim: int) -> Dual:
        return Dual(self.value.sum(dim), self.tangent.sum(_tangent_dim(dim)))

    # -- torch functions --------------------------------------------------------------------
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _UNARY:
            (x,) = args
            value = func(x.value)
            return Dual(value, x.tangent * _col(_UNARY[func](x.value, value)))
        if func in (torch.clamp, torch.Tensor.clamp):
            return _clamp(*args, **kwargs)
        if func in (torch.stack, torch.cat):
            return _join(func, *args, **kwargs)
        if func in (torch.matmul, torch.Tensor.__matmul__) and not isinstance(args[0], Dual):
            return _matmul(*args)
        if func in _REFLECTED:  # a plain tensor on the left of a Dual: plain (op) dual
            plain, dual = args
            return getattr(dual, _REFLECTED[func])(plain)
        raise TypeError(f"Dual does not support {getattr(func, '__name__', func)}")


_REFLECTED = {
    torch.Tensor.__add__: "__radd__",
    torch.Tensor.__radd__: "__add__",
    torch.Tensor.__sub__: "__rsub__",
    torch.Tensor.__rsub__: "__sub__",
    torch.Tensor.__mul__: "__rmul__",
    torch.Tensor.__rmul__: "__mul__",
    torch.Tensor.__truediv__: "__rtruediv__",
    torch.Tensor.__rtruediv__: "__truediv__",
}


def _matmul(matrix: torch.Tensor, x: Dual) -> Dual:
    """A plain (K, K) matrix times a (K, N) dual: the tangents, (K, N, D), as D batches."""
    tangent = torch.matmul(matrix, x.tangent.permute(2, 0, 1)).permute(1, 2, 0)
    return Dual(torch.matmul(matrix, x.value), tangent)


def _parts(other) -> tuple:
    if isinstance(other, Dual):
        return other.value, other.tangent
    return other, None


def _col(value):
    """A value broadcast against tangents (one more trailing axis)."""
    return value.unsqueeze(-1) if isinstance(value, torch.Tensor) else value


def _add(a: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return a if b is None else a + b


def _neg(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else -t


def _tangent_dim(dim: int) -> int:
    return dim if dim >= 0 else dim - 1


def _columns_plain(key, dual: Dual) -> bool:
    start = key if isinstance(key, int) else key.start if isinstance(key, slice) else None
    return start is not None and start >= dual.plain_columns


def _clamp(x: Dual, min=None, max=None) -> Dual:
    value = torch.clamp(x.value, min=min, max=max)
    inside = (value == x.value).to(x.value.dtype)  # the derivative is 0 where clamped
    return Dual(value, x.tangent * _col(inside))


def value_of(x: Dual | torch.Tensor) -> torch.Tensor:
    """The value of a dual, or a plain tensor itself."""
    return x.value if isinstance(x, Dual) else x


def tangent_of(x: Dual | torch.Tensor, width: int) -> torch.Tensor:
    """The tangents of a dual, or the zero tangents (``width`` directions) of a plain tensor,
    in the value's full shape (zeros built from the value, so a traced batch stays free)."""
    if isinstance(x, Dual):
        return x.tangent.expand(*x.value.shape, width)
    return (x.unsqueeze(-1) * 0.0).expand(*x.shape, width)


def _join(func, parts, dim: int = 0) -> Dual:
    width = next(p for p in parts if isinstance(p, Dual)).tangent.shape[-1]
    tangents = [tangent_of(p, width) for p in parts]
    return Dual(func([value_of(p) for p in parts], dim), func(tangents, _tangent_dim(dim)))
