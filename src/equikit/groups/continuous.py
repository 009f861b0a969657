"""Continuous (Lie) groups acting on R^d.

Element layouts:

- ``Translation(d)``: a vector ``t`` of shape ``(..., d)``; ``x -> x + t``.
- ``Scaling()``: a positive scalar ``s`` of shape ``(...)``; ``x -> s x``.
- ``SO(d)``, ``O(d)``, ``GLPlus(d)``, ``SL(d)``: matrices ``(..., d, d)``; ``x -> A x``.
- ``E(d)``, ``SE(d)``, ``Affine(d)``: homogeneous matrices ``(..., d+1, d+1)`` with blocks
  ``[[A, t], [0, 1]]``; ``x -> A x + t``. These are the semidirect products ``T(d) x| H``.

Every geometric group has ``as_affine(g) -> (A, t)`` so that point-cloud actions work for all
of them alike.

Sampling:

- ``SO(d)``/``O(d)``: Haar measure via the QR decomposition of a Gaussian matrix with the sign
  correction of Mezzadri (2007); ``SO(d)`` flips one column of the ``det = -1`` draws, which
  keeps the measure Haar because right-multiplication by a fixed reflection preserves it.
- ``E(d)``/``SE(d)``: Haar rotation times a Gaussian translation of std ``translation_std``.
- ``GLPlus(d)``/``SL(d)``: the polar decomposition ``g = R exp(S)`` with ``R`` Haar on SO(d)
  and ``S`` a Gaussian symmetric (traceless for SL) matrix of std ``scale``: the
  parametrisation of "Lie Group Decompositions for Equivariant Neural Networks"
  (Mironenco and Forré, 2024). ``GLPlus`` multiplies by ``exp(N(0, scale^2 / d))`` per axis.
- ``Scaling()``: log-uniform on ``[1/max_scale, max_scale]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from equikit._utils import check_int, check_positive
from equikit.groups.base import Group


def haar_orthogonal(n: int, d: int, generator: torch.Generator, special: bool) -> torch.Tensor:
    """``n`` Haar-random matrices from O(d) (or SO(d) when ``special``), float64."""
    z = torch.randn(n, d, d, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(z)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    if special:
        det = torch.linalg.det(q)
        q = q.clone()
        q[..., :, 0] = q[..., :, 0] * torch.sign(det).unsqueeze(-1)
    return q


def _homogeneous(a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    d = a.shape[-1]
    out = torch.zeros(*a.shape[:-2], d + 1, d + 1, dtype=a.dtype, device=a.device)
    out[..., :d, :d] = a
    out[..., :d, d] = t
    out[..., d, d] = 1
    return out


class _MatrixGroup(Group):
    """Groups of d x d matrices under multiplication."""

    d: int

    @property
    def element_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.d, self.d)

    def compose(self, g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return g @ h

    def _identity(self) -> torch.Tensor:
        return torch.eye(self.d, dtype=torch.float64)

    def as_affine(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return g, torch.zeros(*g.shape[:-1], dtype=g.dtype, device=g.device)


@dataclass(frozen=True, repr=False)
class SO(_MatrixGroup):
    """Rotations of R^d: orthogonal matrices with determinant +1.

    Example:
        >>> import torch
        >>> from equikit.groups import SO
        >>> R = SO(3).sample(5, generator=0, dtype=torch.float64)
        >>> bool(torch.allclose(R @ SO(3).inverse(R), SO(3).identity(5, dtype=torch.float64)))
        True
        >>> torch.linalg.det(R).round(decimals=6).tolist()
        [1.0, 1.0, 1.0, 1.0, 1.0]
    """

    d: int

    def __post_init__(self) -> None:
        check_int(self.d, "d", "SO", minimum=1)

    def _sample(self, n, generator):
        return haar_orthogonal(n, self.d, generator, special=True)

    def inverse(self, g):
        return g.transpose(-1, -2)


@dataclass(frozen=True, repr=False)
class O(_MatrixGroup):  # noqa: E742 - the group's standard name
    """Rotations and reflections of R^d: orthogonal matrices."""

    d: int

    def __post_init__(self) -> None:
        check_int(self.d, "d", "O", minimum=1)

    def _sample(self, n, generator):
        return haar_orthogonal(n, self.d, generator, special=False)

    def inverse(self, g):
        return g.transpose(-1, -2)


def _polar_sample(n, d, generator, scale, traceless):
    r = haar_orthogonal(n, d, generator, special=True)
    a = torch.randn(n, d, d, generator=generator, dtype=torch.float64) * scale
    s = (a + a.transpose(-1, -2)) / 2
    if traceless:
        tr = torch.diagonal(s, dim1=-2, dim2=-1).sum(-1) / d
        s = s - tr[:, None, None] * torch.eye(d, dtype=torch.float64)
    return r @ torch.linalg.matrix_exp(s)


@dataclass(frozen=True, repr=False)
class GLPlus(_MatrixGroup):
    """Invertible d x d matrices with positive determinant (not compact)."""

    d: int
    scale: float = 0.3
    compact = False

    def __post_init__(self) -> None:
        check_int(self.d, "d", "GLPlus", minimum=1)
        check_positive(self.scale, "scale", "GLPlus")

    def _sample(self, n, generator):
        return _polar_sample(n, self.d, generator, self.scale, traceless=False)

    def inverse(self, g):
        return torch.linalg.inv(g)


@dataclass(frozen=True, repr=False)
class SL(_MatrixGroup):
    """d x d matrices of determinant 1 (volume- and orientation-preserving; not compact)."""

    d: int
    scale: float = 0.3
    compact = False

    def __post_init__(self) -> None:
        check_int(self.d, "d", "SL", minimum=1)
        check_positive(self.scale, "scale", "SL")

    def _sample(self, n, generator):
        return _polar_sample(n, self.d, generator, self.scale, traceless=True)

    def inverse(self, g):
        return torch.linalg.inv(g)


@dataclass(frozen=True, repr=False)
class Translation(Group):
    """Translations of R^d (not compact): elements are vectors ``t``."""

    d: int
    std: float = 1.0
    compact = False

    def __post_init__(self) -> None:
        check_int(self.d, "d", "Translation", minimum=1)
        check_positive(self.std, "std", "Translation")

    @property
    def element_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.d,)

    def _sample(self, n, generator):
        return torch.randn(n, self.d, generator=generator, dtype=torch.float64) * self.std

    def compose(self, g, h):
        return g + h

    def inverse(self, g):
        return -g

    def _identity(self):
        return torch.zeros(self.d, dtype=torch.float64)

    def as_affine(self, g):
        eye = torch.eye(self.d, dtype=g.dtype, device=g.device)
        return eye.expand(*g.shape[:-1], self.d, self.d), g


@dataclass(frozen=True, repr=False)
class Scaling(Group):
    """Uniform scalings ``x -> s x`` by ``s > 0`` (the multiplicative group R_+)."""

    max_scale: float = 2.0
    compact = False
    element_shape = ()

    def __post_init__(self) -> None:
        if not (isinstance(self.max_scale, (int, float)) and self.max_scale > 1):
            raise ValueError(f"Scaling: `max_scale` must be a number > 1, got {self.max_scale!r}")

    def _sample(self, n, generator):
        u = torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1
        return torch.exp(u * torch.log(torch.tensor(float(self.max_scale), dtype=torch.float64)))

    def compose(self, g, h):
        return g * h

    def inverse(self, g):
        return 1 / g

    def _identity(self):
        return torch.tensor(1.0, dtype=torch.float64)

    def as_affine(self, g, d: int = 3):
        eye = torch.eye(d, dtype=g.dtype, device=g.device)
        return g[..., None, None] * eye, torch.zeros(*g.shape, d, dtype=g.dtype, device=g.device)


class _AffineGroup(Group):
    """Semidirect products ``T(d) x| H`` stored as homogeneous ``(d+1, d+1)`` matrices."""

    d: int
    translation_std: float = 1.0
    compact = False

    @property
    def element_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.d + 1, self.d + 1)

    def _linear_part(self) -> Group:
        raise NotImplementedError

    def _sample(self, n, generator):
        a = self._linear_part()._sample(n, generator)
        t = torch.randn(n, self.d, generator=generator, dtype=torch.float64) * self.translation_std
        return _homogeneous(a, t)

    def compose(self, g, h):
        return g @ h

    def inverse(self, g):
        a, t = self.as_affine(g)
        a_inv = self._linear_part().inverse(a)
        return _homogeneous(a_inv, -(a_inv @ t.unsqueeze(-1)).squeeze(-1))

    def _identity(self):
        return torch.eye(self.d + 1, dtype=torch.float64)

    def as_affine(self, g):
        return g[..., : self.d, : self.d], g[..., : self.d, self.d]

    def from_affine(self, a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Build elements from a linear part ``(..., d, d)`` and a translation ``(..., d)``."""
        return _homogeneous(a, t)


@dataclass(frozen=True, repr=False)
class E(_AffineGroup):
    """Euclidean group E(d) = T(d) x| O(d): rotations, reflections and translations.

    Example:
        >>> import torch
        >>> from equikit.groups import E
        >>> g = E(3).sample(2, generator=1, dtype=torch.float64)
        >>> A, t = E(3).as_affine(g)
        >>> A.shape, t.shape
        (torch.Size([2, 3, 3]), torch.Size([2, 3]))
        >>> bool(torch.allclose(E(3).compose(g, E(3).inverse(g)), E(3).identity(2, dtype=torch.float64)))
        True
    """

    d: int
    translation_std: float = 1.0

    def __post_init__(self) -> None:
        check_int(self.d, "d", "E", minimum=1)
        check_positive(self.translation_std, "translation_std", "E")

    def _linear_part(self):
        return O(self.d)


@dataclass(frozen=True, repr=False)
class SE(_AffineGroup):
    """Special Euclidean group SE(d) = T(d) x| SO(d): rigid motions without reflections."""

    d: int
    translation_std: float = 1.0

    def __post_init__(self) -> None:
        check_int(self.d, "d", "SE", minimum=1)
        check_positive(self.translation_std, "translation_std", "SE")

    def _linear_part(self):
        return SO(self.d)


@dataclass(frozen=True, repr=False)
class Affine(_AffineGroup):
    """Affine group T(d) x| GL+(d) (``linear="gl+"``) or T(d) x| SL(d) (``linear="sl"``)."""

    d: int
    translation_std: float = 1.0
    linear: str = "gl+"
    scale: float = 0.3

    def __post_init__(self) -> None:
        check_int(self.d, "d", "Affine", minimum=1)
        check_positive(self.translation_std, "translation_std", "Affine")
        if self.linear not in ("gl+", "sl"):
            raise ValueError(f"Affine: `linear` must be 'gl+' or 'sl', got {self.linear!r}")

    def _linear_part(self):
        return GLPlus(self.d, self.scale) if self.linear == "gl+" else SL(self.d, self.scale)
