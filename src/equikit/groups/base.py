"""The Group protocol.

A group element is a tensor of shape ``(*batch, *element_shape)`` (or, for a
:class:`DirectProduct`, a tuple of such tensors). Every method is vectorised over the
leading batch dims, so sampling, composing and inverting run on whole batches at once.

Sampling is always done on the CPU in float64 from a ``torch.Generator`` and only then moved
to the requested dtype and device: the same seed gives the same elements everywhere.
"""

from __future__ import annotations

import abc
from typing import Any

import torch

from equikit._utils import default_dtype, resolve_generator

Element = Any  # torch.Tensor, or a tuple of tensors for product groups


class Group(abc.ABC):
    """Abstract base: subclasses are frozen dataclasses, so equal parameters mean equal groups.

    Subclasses implement ``_sample`` (float64/int64 on the CPU), ``compose``, ``inverse`` and
    ``identity``; finite groups also implement ``elements``.
    """

    #: shape of one element (without batch dims)
    element_shape: tuple[int, ...] = ()
    #: True when elements are integer tensors (permutations, shifts, ...)
    discrete: bool = False
    #: True when a Haar probability measure exists and ``sample`` draws from it
    compact: bool = True

    # ------------------------------------------------------------------ interface
    def sample(
        self,
        n: int = 1,
        *,
        generator: torch.Generator | int | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Element:
        """Draw ``n`` elements, shape ``(n, *element_shape)``.

        Compact groups draw from the Haar measure; non-compact groups from the documented
        distribution of the class. Reproducible given ``generator`` (a Generator or int seed).
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"{type(self).__name__}.sample: `n` must be an int >= 0, got {n!r}")
        g = self._sample(n, resolve_generator(generator))
        return self._cast(g, dtype, device)

    @abc.abstractmethod
    def _sample(self, n: int, generator: torch.Generator) -> Element: ...

    @abc.abstractmethod
    def compose(self, g: Element, h: Element) -> Element:
        """The product ``g h`` (apply ``h`` first, then ``g``); batch dims broadcast."""

    @abc.abstractmethod
    def inverse(self, g: Element) -> Element: ...

    @abc.abstractmethod
    def _identity(self) -> Element:
        """One identity element, float64/int64 on the CPU, without batch dims."""

    def identity(
        self,
        n: int | None = 1,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Element:
        """``n`` copies of the identity, shape ``(n, *element_shape)``; ``n=None`` gives one
        element without a batch dim."""
        e = self._identity()
        if n is not None:
            e = _map(lambda t: t.unsqueeze(0).repeat(n, *([1] * t.ndim)), e)
        return self._cast(e, dtype, device)

    def elements(
        self, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> Element | None:
        """All elements of a finite group as one batch, or ``None`` for infinite groups."""
        return None

    @property
    def order(self) -> int | None:
        """Number of elements of a finite group, ``None`` otherwise."""
        return None

    def __repr__(self) -> str:
        """``SO(3)``, ``E(3)``, ``Permutation(10)``: fields at their defaults are left out."""
        import dataclasses

        if not dataclasses.is_dataclass(self):
            return type(self).__name__ + "()"
        parts = []
        for i, f in enumerate(dataclasses.fields(self)):
            value = getattr(self, f.name)
            if f.default is not dataclasses.MISSING and value == f.default:
                continue
            parts.append(repr(value) if i == 0 else f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    # ------------------------------------------------------------------ helpers
    def allclose(self, g: Element, h: Element, atol: float = 1e-9) -> bool:
        """Elementwise equality of two batches of elements (exact for discrete groups)."""
        gs, hs = _as_tuple(g), _as_tuple(h)
        if len(gs) != len(hs):
            return False
        for a, b in zip(gs, hs):
            if a.shape != b.shape:
                return False
            if a.is_floating_point() or b.is_floating_point():
                if not torch.allclose(a.double(), b.double(), atol=atol, rtol=0):
                    return False
            elif not torch.equal(a, b):
                return False
        return True

    def batch_shape(self, g: Element) -> tuple[int, ...]:
        """Leading batch dims of ``g``."""
        first = _as_tuple(g)[0]
        k = len(self._element_shapes()[0])
        return tuple(first.shape[: first.ndim - k])

    def take(self, g: Element, index: Any) -> Element:
        """Index the batch dims of ``g`` (works for tuple elements too)."""
        return _map(lambda t: t[index], g)

    def reshape(self, g: Element, shape: tuple[int, ...]) -> Element:
        """Reshape the batch dims of ``g``."""
        shapes = self._element_shapes()
        parts = tuple(t.reshape(*shape, *s) for t, s in zip(_as_tuple(g), shapes))
        return parts if isinstance(g, tuple) else parts[0]

    def cat(self, gs: list[Element]) -> Element:
        """Concatenate batches of elements along the first batch dim."""
        if isinstance(gs[0], tuple):
            return tuple(torch.cat([g[i] for g in gs]) for i in range(len(gs[0])))
        return torch.cat(gs)

    def check_element(self, g: Element, name: str = "g", where: str | None = None) -> Element:
        """Raise a TypeError/ValueError if ``g`` is not a (batch of) element(s) of this group."""
        where = where or type(self).__name__
        shapes = self._element_shapes()
        parts = _as_tuple(g)
        if isinstance(g, tuple) != isinstance(self._identity(), tuple) or len(parts) != len(shapes):
            raise TypeError(
                f"{where}: `{name}` must be an element of {self!r} "
                f"({'a tuple of ' + str(len(shapes)) + ' tensors' if len(shapes) > 1 else 'a tensor'}),"
                f" got {type(g).__name__}"
            )
        for t, s in zip(parts, shapes):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{where}: `{name}` must hold tensors, got {type(t).__name__}")
            if tuple(t.shape[t.ndim - len(s) :]) != tuple(s) or t.ndim < len(s):
                raise ValueError(
                    f"{where}: `{name}` must have shape (*batch, {', '.join(map(str, s))}) for "
                    f"{self!r}, got {tuple(t.shape)}"
                )
        return g

    def _element_shapes(self) -> tuple[tuple[int, ...], ...]:
        return (tuple(self.element_shape),)

    def _cast(self, g: Element, dtype: torch.dtype | None, device: Any) -> Element:
        def cast(t: torch.Tensor) -> torch.Tensor:
            if t.is_floating_point():
                return t.to(dtype=default_dtype(dtype), device=device)
            return t.to(device=device)

        return _map(cast, g)


def _as_tuple(g: Element) -> tuple[torch.Tensor, ...]:
    return g if isinstance(g, tuple) else (g,)


def _map(fn, g: Element) -> Element:
    return tuple(fn(t) for t in g) if isinstance(g, tuple) else fn(g)
