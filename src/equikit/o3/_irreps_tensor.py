"""A tensor that carries its irreps, and refuses the arithmetic that would break equivariance.

``IrrepsTensor(irreps, array)`` pairs a plain ``(..., irreps.dim)`` tensor with its
:class:`~equikit.o3.Irreps`. The irreps are immutable metadata: every operation either knows
the irreps of its result (and returns a new ``IrrepsTensor``) or raises a TypeError/ValueError
that says why the operation is not equivariant and what to use instead.

Equivariant, so allowed:

- ``x + y``, ``x - y``, ``-x`` when ``x`` and ``y`` have the same irreps;
- ``x * c``, ``x / c`` for a Python number or a 0-d tensor ``c``;
- ``x * s`` with ``s`` an ``IrrepsTensor`` of scalars (``l = 0``): one scalar for all of ``x``
  or one per irrep copy (``x.irreps.num_irreps``), broadcast over the ``2l + 1`` components
  (this is a gate); the parity of the result is the product of the parities;
- elementwise functions (``torch.tanh(x)``, ``torch.relu(x)``, ``x ** 2``, ``x + 1.0``) when
  every irrep of ``x`` is ``0e``; odd functions (``tanh``, ``sin``, ...) also on ``0o``;
- :func:`concatenate` along the irreps, :meth:`IrrepsTensor.filter` and
  :meth:`IrrepsTensor.slice_irreps` by irreps, indexing and :meth:`IrrepsTensor.reshape` of
  the leading batch dims, :meth:`IrrepsTensor.to`, :meth:`IrrepsTensor.norms`.

Refused, with the reason: adding different irreps, a constant or a plain tensor added to
non-scalar channels (a bias), elementwise nonlinearities on ``l > 0`` irreps, the elementwise
product of two non-scalar features (use a tensor product), ``@`` (use an equivariant linear
map), indexing into the irreps dimension, and every other torch function (unwrap with
``.array`` when you know what you are doing).

The class is a plain Python object wrapping a tensor, not a ``torch.Tensor`` subclass: built
inside a function from plain tensors and static ``Irreps``, it is traced away by
``torch.compile(fullgraph=True)``, so ``forward`` keeps taking and returning plain tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from equikit.o3._irreps import Irrep, Irreps, MulIr

# elementwise functions recognised by name; the odd ones keep the parity of 0o scalars
_ODD = frozenset({"tanh", "sin", "asinh", "atan", "sinh", "softsign", "tanhshrink", "neg", "negative"})
_ELEMENTWISE = _ODD | frozenset(
    {
        "relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish", "sigmoid",
        "logsigmoid", "softplus", "hardtanh", "hardsigmoid", "hardswish", "exp", "expm1", "log",
        "log1p", "cos", "cosh", "abs", "square", "sqrt", "rsqrt", "reciprocal", "pow", "erf",
        "sign", "clamp", "clip",
    }
)  # fmt: skip
_GATE_HINT = (
    "apply the nonlinearity to the 0e scalars only and gate the l > 0 irreps (x * gates, with "
    "gates an IrrepsTensor of 0e scalars, one per irrep copy), or act on the invariant norms "
    "(x.norms())"
)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_scalar_tensor(v: Any) -> bool:
    return isinstance(v, torch.Tensor) and v.ndim == 0


def _all_even_scalars(irreps: Irreps) -> bool:
    return all(m.ir == (0, 1) for m in irreps)


def _all_scalars(irreps: Irreps) -> bool:
    return all(m.ir.l == 0 for m in irreps)


class IrrepsTensor:
    r"""A ``(..., irreps.dim)`` tensor with its :class:`Irreps` attached as immutable metadata.

    Arithmetic that is equivariant returns a new ``IrrepsTensor``; arithmetic that is not
    raises TypeError/ValueError with the reason and the equivariant alternative (module doc).

    Args:
        irreps: anything :class:`Irreps` accepts, e.g. ``"4x0e + 2x1o"``. Inside a function
            compiled with ``torch.compile``, pass a prebuilt ``Irreps`` (a static value).
        array: a floating tensor ``(..., irreps.dim)``, irreps last in ``mul_ir`` layout.

    >>> x = IrrepsTensor("2x0e + 1o", torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    >>> (2 * x - x).array
    tensor([1., 2., 3., 4., 5.])
    >>> gates = IrrepsTensor("3x0e", torch.tensor([1.0, 0.5, 2.0]))  # one per irrep copy
    >>> (x * gates).array
    tensor([ 1.,  1.,  6.,  8., 10.])
    >>> x + 1.0
    Traceback (most recent call last):
    ...
    TypeError: IrrepsTensor.__add__: adding a constant to irreps '2x0e+1x1o' is not equivariant ...
    """

    __slots__ = ("_array", "_irreps")

    def __init__(self, irreps: Any, array: torch.Tensor) -> None:
        irreps = Irreps(irreps)
        where = "IrrepsTensor"
        if not isinstance(array, torch.Tensor):
            raise TypeError(f"{where}: `array` must be a torch.Tensor (..., {irreps.dim}), got {type(array).__name__}")
        if array.ndim == 0 or array.shape[-1] != irreps.dim:
            raise ValueError(
                f"{where}: `array` must have shape (..., {irreps.dim}) for irreps '{irreps}', got "
                f"{tuple(array.shape)}; the irreps go in the last dimension"
            )
        object.__setattr__(self, "_irreps", irreps)
        object.__setattr__(self, "_array", array)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"IrrepsTensor is immutable (cannot set {name!r}); build a new IrrepsTensor instead")

    # ------------------------------------------------------------------ access
    @property
    def irreps(self) -> Irreps:
        """The irreps of the last dimension."""
        return self._irreps

    @property
    def array(self) -> torch.Tensor:
        """The plain tensor ``(..., irreps.dim)``."""
        return self._array

    @property
    def shape(self) -> torch.Size:
        return self._array.shape

    @property
    def batch_shape(self) -> torch.Size:
        """The leading dimensions, ``shape[:-1]``."""
        return self._array.shape[:-1]

    @property
    def ndim(self) -> int:
        return self._array.ndim

    @property
    def dtype(self) -> torch.dtype:
        return self._array.dtype

    @property
    def device(self) -> torch.device:
        return self._array.device

    def __repr__(self) -> str:
        return f"IrrepsTensor('{self._irreps}', shape={tuple(self.shape)}, dtype={self.dtype})\n{self._array!r}"

    @property
    def chunks(self) -> list[torch.Tensor]:
        """One view ``(..., mul, 2l + 1)`` per block of the irreps."""
        return [
            self._array[..., s].reshape(*self.batch_shape, m.mul, m.ir.dim)
            for m, s in zip(self._irreps, self._irreps.slices())
        ]

    # ------------------------------------------------------------------ shape and dtype
    def to(self, *args: Any, **kwargs: Any) -> IrrepsTensor:
        """``array.to(...)`` (dtype and/or device), keeping the irreps."""
        return IrrepsTensor(self._irreps, self._array.to(*args, **kwargs))

    def reshape(self, *shape: int | Sequence[int]) -> IrrepsTensor:
        """Reshape the leading batch dims; the irreps dim stays last and untouched.

        >>> IrrepsTensor("1o", torch.zeros(6, 3)).reshape(2, 3).shape
        torch.Size([2, 3, 3])
        """
        if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
            shape = tuple(shape[0])
        return IrrepsTensor(self._irreps, self._array.reshape(*shape, self._irreps.dim))

    def __getitem__(self, index: Any) -> IrrepsTensor:
        """Index the batch dims only (``x[0]``, ``x[:, 1:3]``); the irreps dim is kept whole."""
        idx = index if isinstance(index, tuple) else (index,)
        used = sum(1 for i in idx if i is not None)
        if any(i is Ellipsis for i in idx) or used > self.ndim - 1:
            raise IndexError(
                f"IrrepsTensor.__getitem__: index {index!r} reaches into the irreps dimension (or uses "
                f"'...'), which would cut irreps apart; index the {self.ndim - 1} batch dims only, and "
                "select irreps with x.filter(...) or x.slice_irreps(...)"
            )
        return IrrepsTensor(self._irreps, self._array[(*idx, slice(None))])

    # ------------------------------------------------------------------ selecting irreps
    def slice_irreps(self, blocks: int | slice) -> IrrepsTensor:
        """Keep the blocks ``irreps[blocks]`` (an int or a step-1 slice of block indices).

        >>> x = IrrepsTensor("0e + 1o + 2e", torch.arange(9.0))
        >>> x.slice_irreps(slice(1, 3)).irreps, x.slice_irreps(1).array
        (Irreps('1x1o+1x2e'), tensor([1., 2., 3.]))
        """
        n = len(self._irreps)
        if isinstance(blocks, int) and not isinstance(blocks, bool):
            if not -n <= blocks < n:
                raise IndexError(f"IrrepsTensor.slice_irreps: block {blocks} out of range for {n} blocks")
            blocks = slice(blocks % n, blocks % n + 1)
        if not isinstance(blocks, slice) or blocks.step not in (None, 1):
            raise TypeError(
                f"IrrepsTensor.slice_irreps: `blocks` must be an int or a slice with step 1, got {blocks!r}"
            )
        start, stop, _ = blocks.indices(n)
        stop = max(start, stop)
        offset = self._irreps[:start].dim
        width = self._irreps[start:stop].dim
        return IrrepsTensor(self._irreps[start:stop], self._array[..., offset : offset + width])

    def filter(self, keep: Any = None, *, drop: Any = None, lmax: int | None = None) -> IrrepsTensor:
        """Keep the blocks that :meth:`Irreps.filter` keeps, with their components.

        >>> IrrepsTensor("0e + 1o + 0e", torch.arange(5.0)).filter("0e").array
        tensor([0., 4.])
        """
        kept = self._irreps.filter(keep, drop=drop, lmax=lmax)
        parts, i = [], 0
        for m, s in zip(self._irreps, self._irreps.slices()):
            if i < len(kept) and m == kept[i]:
                parts.append(self._array[..., s])
                i += 1
        if not parts:
            return IrrepsTensor(kept, self._array[..., :0])
        return IrrepsTensor(kept, torch.cat(parts, -1) if len(parts) > 1 else parts[0])

    def norms(self) -> IrrepsTensor:
        """The norm of every irrep copy: invariant ``0e`` scalars, one per copy (not
        differentiable at zero).

        >>> IrrepsTensor("0e + 1o", torch.tensor([-2.0, 3.0, 0.0, 4.0])).norms().array
        tensor([2., 5.])
        """
        parts = [c.norm(dim=-1) for c in self.chunks]
        irreps = Irreps([(m.mul, "0e") for m in self._irreps])
        return IrrepsTensor(irreps, torch.cat(parts, -1))

    # ------------------------------------------------------------------ + and -
    def _same_irreps(self, other: IrrepsTensor, op: str) -> None:
        if other._irreps != self._irreps and other._irreps.simplify() != self._irreps.simplify():
            raise ValueError(
                f"IrrepsTensor.{op}: cannot combine irreps '{self._irreps}' and '{other._irreps}': only "
                "features with the same irreps can be added equivariantly (each block transforms with "
                "its own D). Map one to the other with an equivariant linear layer, or keep both with "
                "equikit.o3.concatenate([x, y])"
            )

    def _add_constant(self, c: Any, op: str) -> torch.Tensor:
        if _is_number(c) and c == 0:
            return self._array
        if not (_is_number(c) or _is_scalar_tensor(c)):
            raise TypeError(
                f"IrrepsTensor.{op}: cannot add a {type(c).__name__} to an IrrepsTensor with irreps "
                f"'{self._irreps}'; wrap it as IrrepsTensor(irreps, tensor) with the same irreps (a bias "
                "is only equivariant on 0e channels: add it to x.filter('0e'))"
            )
        if not _all_even_scalars(self._irreps):
            raise TypeError(
                f"IrrepsTensor.{op}: adding a constant to irreps '{self._irreps}' is not equivariant "
                "(a constant does not rotate, and changes sign of no reflection); add a bias only to "
                "the 0e channels: x.filter('0e') + b, then concatenate"
            )
        return self._array + c

    def __add__(self, other: Any) -> IrrepsTensor:
        if isinstance(other, IrrepsTensor):
            self._same_irreps(other, "__add__")
            return IrrepsTensor(self._irreps, self._array + other._array)
        return IrrepsTensor(self._irreps, self._add_constant(other, "__add__"))

    __radd__ = __add__

    def __sub__(self, other: Any) -> IrrepsTensor:
        if isinstance(other, IrrepsTensor):
            self._same_irreps(other, "__sub__")
            return IrrepsTensor(self._irreps, self._array - other._array)
        negated = -other if _is_number(other) or isinstance(other, torch.Tensor) else other
        return IrrepsTensor(self._irreps, self._add_constant(negated, "__sub__"))

    def __rsub__(self, other: Any) -> IrrepsTensor:
        return (-self).__add__(other)

    def __neg__(self) -> IrrepsTensor:
        return IrrepsTensor(self._irreps, -self._array)

    def __pos__(self) -> IrrepsTensor:
        return self

    # ------------------------------------------------------------------ * and /
    def __mul__(self, other: Any) -> IrrepsTensor:
        if _is_number(other) or _is_scalar_tensor(other):
            return IrrepsTensor(self._irreps, self._array * other)
        if isinstance(other, IrrepsTensor):
            return _multiply(self, other)
        raise TypeError(
            f"IrrepsTensor.__mul__: multiplying irreps '{self._irreps}' by a plain "
            f"{type(other).__name__} of shape {tuple(getattr(other, 'shape', ()))} is ambiguous; wrap "
            "scalars as IrrepsTensor('Nx0e', s) (one per irrep copy, or one for all), or use a tensor "
            "product for non-scalar factors"
        )

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> IrrepsTensor:
        if _is_number(other) or _is_scalar_tensor(other):
            return IrrepsTensor(self._irreps, self._array / other)
        if isinstance(other, IrrepsTensor) and _all_scalars(other._irreps):
            return _multiply(self, IrrepsTensor(other._irreps, other._array.reciprocal()))
        raise TypeError(
            f"IrrepsTensor.__truediv__: can divide irreps '{self._irreps}' only by a number, a 0-d tensor "
            f"or an IrrepsTensor of scalars (l = 0), got {_describe(other)}"
        )

    def __rtruediv__(self, other: Any) -> IrrepsTensor:
        return _elementwise("reciprocal", self, lambda a: other / a, op="__rtruediv__")

    def __pow__(self, exponent: Any) -> IrrepsTensor:
        return _elementwise("pow", self, lambda a: a**exponent, op="__pow__")

    def __matmul__(self, other: Any) -> IrrepsTensor:
        raise TypeError(
            "IrrepsTensor.__matmul__: a dense matrix mixes components of different irreps and is not "
            "equivariant; use an equivariant linear map (one weight matrix per irrep, mixing only "
            "copies of the same irrep), or unwrap with x.array if the matrix is known to commute with D"
        )

    __rmatmul__ = __matmul__

    # ------------------------------------------------------------------ torch functions
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if name in ("cat", "concatenate", "concat"):
            dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
            if dim not in (-1,):
                raise ValueError(
                    f"torch.{name} on IrrepsTensors: only dim=-1 (the irreps) is supported, got dim={dim}; "
                    "for batch dims concatenate the .array of tensors with equal irreps and re-wrap"
                )
            return concatenate(args[0])
        xs = [a for a in args if isinstance(a, IrrepsTensor)]
        if name in _ELEMENTWISE and len(xs) == 1 and args and args[0] is xs[0]:
            rest = args[1:]
            return _elementwise(name, xs[0], lambda a: func(a, *rest, **kwargs), op=f"torch.{name}")
        raise TypeError(
            f"torch.{name} on an IrrepsTensor: equikit cannot tell whether it is equivariant, so it "
            "refuses; use the equivariant operations of IrrepsTensor (see its doc), or call it on x.array "
            "and re-wrap the result with IrrepsTensor(irreps, ...) if you know it is equivariant"
        )


def _describe(v: Any) -> str:
    if isinstance(v, IrrepsTensor):
        return f"IrrepsTensor('{v.irreps}')"
    if isinstance(v, torch.Tensor):
        return f"a tensor of shape {tuple(v.shape)}"
    return f"{type(v).__name__} {v!r}"


def _elementwise(name: str, x: IrrepsTensor, fn, *, op: str) -> IrrepsTensor:
    """Apply an elementwise ``fn`` if that is equivariant for ``x.irreps``, else explain."""
    ok = _all_even_scalars(x.irreps) or (_all_scalars(x.irreps) and name in _ODD)
    if not ok:
        why = (
            "an even function flips no sign, so it breaks the parity of 0o scalars"
            if _all_scalars(x.irreps)
            else "a rotation mixes the components of l > 0 irreps, and a function applied per "
            "component does not commute with that mixing"
        )
        raise TypeError(f"{op} on irreps '{x.irreps}' is not equivariant: {why}; {_GATE_HINT}")
    return IrrepsTensor(x.irreps, fn(x.array))


def _multiply(x: IrrepsTensor, y: IrrepsTensor) -> IrrepsTensor:
    """``x * y`` where one side is scalars (one for all, or one per irrep copy of the other)."""
    if _all_scalars(x.irreps) and _all_scalars(y.irreps) and x.irreps.num_irreps == 1:
        v, s = y, x
    elif _all_scalars(y.irreps):
        v, s = x, y
    elif _all_scalars(x.irreps):
        v, s = y, x
    else:
        raise TypeError(
            f"IrrepsTensor.__mul__: the elementwise product of irreps '{x.irreps}' and '{y.irreps}' is "
            "not equivariant (components of l > 0 irreps mix under rotation); use a tensor product "
            "(equikit.tp; e.g. 1o x 1o -> 0e is the dot product, -> 1e the cross product), or multiply "
            "by 0e scalars only"
        )
    n = v.irreps.num_irreps
    parities = [m.ir.p for m in s.irreps for _ in range(m.mul)]
    if len(parities) == 1:
        irreps = Irreps([MulIr(m.mul, Irrep(m.ir.l, m.ir.p * parities[0])) for m in v.irreps])
        return IrrepsTensor(irreps, v.array * s.array)
    if len(parities) != n:
        raise ValueError(
            f"IrrepsTensor.__mul__: cannot broadcast {len(parities)} scalars over the {n} irrep copies of "
            f"'{v.irreps}'; pass one scalar for all, or one per irrep copy ({n}x0e)"
        )
    batch = torch.broadcast_shapes(v.batch_shape, s.batch_shape)
    parts, blocks, start = [], [], 0
    for m, chunk in zip(v.irreps, v.chunks):
        gate = s.array[..., start : start + m.mul]
        parts.append((chunk * gate.unsqueeze(-1)).reshape(*batch, m.dim))
        for k in range(m.mul):  # split a block where the parity of its gates changes
            ir = Irrep(m.ir.l, m.ir.p * parities[start + k])
            if blocks and k > 0 and blocks[-1].ir == ir:
                blocks[-1] = MulIr(blocks[-1].mul + 1, ir)
            else:
                blocks.append(MulIr(1, ir))
        start += m.mul
    return IrrepsTensor(Irreps(blocks), torch.cat(parts, -1) if len(parts) > 1 else parts[0])


def concatenate(xs: Sequence[IrrepsTensor]) -> IrrepsTensor:
    """Concatenate along the irreps: irreps ``x.irreps + y.irreps + ...``; batch dims must match.

    >>> a = IrrepsTensor("0e", torch.ones(2, 1))
    >>> b = IrrepsTensor("1o", torch.zeros(2, 3))
    >>> concatenate([a, b]).irreps
    Irreps('1x0e+1x1o')
    """
    xs = list(xs)
    if not xs or not all(isinstance(x, IrrepsTensor) for x in xs):
        raise TypeError(
            "equikit.o3.concatenate: `xs` must be a non-empty sequence of IrrepsTensor, got "
            f"{[_describe(x) for x in xs]}; wrap plain tensors with IrrepsTensor(irreps, tensor) first"
        )
    irreps = Irreps(sum((tuple(x.irreps) for x in xs), ()))
    return IrrepsTensor(irreps, torch.cat([x.array for x in xs], -1))


__all__ = ["IrrepsTensor", "concatenate"]
