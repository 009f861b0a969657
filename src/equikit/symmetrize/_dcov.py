"""Distance covariance (dCov), joint distance covariance (JdCov) and concatenated distance
covariance (CCdCov) as differentiable dependence penalties.

References: Szekely, Rizzo & Bakirov (2007) for dCov; Chakraborty & Zhang (2019) for JdCov;
Lee, Antonio, Avanzi, Marchi & Zhou (2025), "Machine Learning with Multitype Protected
Attributes: Intersectional Fairness through Regularisation", for CCdCov and their use as
fairness regularisers (demographic parity: predictions independent of protected attributes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from equikit._utils import check_finite, check_positive

KINDS = ("dcov", "jdcov", "ccdcov")


def _as_matrix(v: torch.Tensor, name: str, where: str, n: int | None = None) -> torch.Tensor:
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"{where}: `{name}` must be a tensor, got {type(v).__name__}")
    if v.ndim == 1:
        v = v[:, None]
    if v.ndim != 2:
        raise ValueError(f"{where}: `{name}` must be (n,) or (n, p), got {tuple(v.shape)}")
    if n is not None and v.shape[0] != n:
        raise ValueError(f"{where}: `{name}` has {v.shape[0]} samples but the predictions have {n}")
    if not v.is_floating_point():
        raise TypeError(
            f"{where}: `{name}` must be floating; one-hot encode categorical attributes first "
            f"(see `one_hot`), got {v.dtype}"
        )
    return check_finite(v, name, where)


def _distances(v: torch.Tensor) -> torch.Tensor:
    """Euclidean distances of ``v (n, p)`` with a zero (not NaN) gradient at coincident samples."""
    sq = (v[:, None, :] - v[None, :, :]).pow(2).sum(-1)
    pos = sq > 0
    return torch.where(pos, torch.where(pos, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))


def centered_distances(v: torch.Tensor) -> torch.Tensor:
    """Double-centred Euclidean distance matrix ``A_kl = a_kl - a_k. - a_.l + a_..`` of ``v (n, p)``."""
    a = _distances(v)
    return a - a.mean(0, keepdim=True) - a.mean(1, keepdim=True) + a.mean()


def distance_covariance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared sample distance covariance (V-statistic), ``dCov^2(x, y) = mean_kl A_kl B_kl``.

    Zero in the population iff ``x`` and ``y`` are independent (finite first moments).

    Args:
        x: ``(n,)`` or ``(n, p)``; y: ``(n,)`` or ``(n, q)``.

    Example:
        >>> import torch
        >>> x = torch.randn(200, dtype=torch.float64)
        >>> bool(distance_covariance(x, x ** 2) > distance_covariance(x, torch.randn(200, dtype=torch.float64)))
        True
    """
    where = "distance_covariance"
    x = _as_matrix(x, "x", where)
    y = _as_matrix(y, "y", where, x.shape[0])
    return (centered_distances(x) * centered_distances(y.to(x.dtype))).mean()


def joint_distance_covariance(xs: Sequence[torch.Tensor], c: float = 1.0) -> torch.Tensor:
    """Joint distance covariance of ``d >= 2`` variables (Chakraborty & Zhang 2019),
    ``JdCov^2 = mean_kl prod_i (c - A^i_kl) - c^d``, with ``A^i`` the double-centred distances
    of variable ``i`` (each scaled by its mean distance so that units do not matter). Zero in
    the population iff the variables are mutually independent.

    Example:
        >>> import torch
        >>> a, b = torch.randn(100, dtype=torch.float64), torch.randn(100, dtype=torch.float64)
        >>> c = torch.randn(100, dtype=torch.float64)
        >>> bool(joint_distance_covariance([a, b, a + b]) > joint_distance_covariance([a, b, c]))
        True
    """
    where = "joint_distance_covariance"
    if len(xs) < 2:
        raise ValueError(f"{where}: needs at least two variables, got {len(xs)}")
    check_positive(c, "c", where)
    mats = [_as_matrix(v, f"xs[{i}]", where, xs[0].shape[0]) for i, v in enumerate(xs)]
    prod = None
    for m in mats:
        a = _distances(m)
        a = a / a.mean().clamp_min(1e-12)
        cent = a - a.mean(0, keepdim=True) - a.mean(1, keepdim=True) + a.mean()
        term = c - cent.to(mats[0].dtype)  # U = -A: the positive-definite (kernel) form
        prod = term if prod is None else prod * term
    return prod.mean() - c ** len(mats)


def concatenated_distance_covariance(y: torch.Tensor, attrs: Sequence[torch.Tensor]) -> torch.Tensor:
    """CCdCov: ``dCov^2(y, [s_1, ..., s_k])`` between predictions and the concatenation of all
    protected attributes (each standardised to unit mean distance), which vanishes only when
    ``y`` is independent of the attributes *jointly*, intersections included.

    Example:
        >>> import torch
        >>> s1 = torch.randint(0, 2, (300,)).double(); s2 = torch.randint(0, 2, (300,)).double()
        >>> y_xor = (s1 != s2).double() + 0.1 * torch.randn(300, dtype=torch.float64)
        >>> bool(concatenated_distance_covariance(y_xor, [s1, s2]) > 10 * distance_covariance(y_xor, s1))
        True
    """
    where = "concatenated_distance_covariance"
    y = _as_matrix(y, "y", where)
    if len(attrs) < 1:
        raise ValueError(f"{where}: needs at least one protected attribute")
    blocks = []
    for i, s in enumerate(attrs):
        s = _as_matrix(s, f"attrs[{i}]", where, y.shape[0]).to(y.dtype)
        scale = torch.cdist(s, s).mean().clamp_min(1e-12)
        blocks.append(s / scale)
    return distance_covariance(y, torch.cat(blocks, dim=1))


def one_hot(
    labels: torch.Tensor, num_classes: int | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """One-hot encode an integer categorical attribute ``(n,)`` -> ``(n, classes)`` (scaled by
    ``1/sqrt(2)`` so that two different categories are at distance 1)."""
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.ndim != 1:
        got = getattr(labels, "dtype", type(labels))
        raise TypeError(f"one_hot: `labels` must be an integer tensor (n,), got {got}")
    return torch.nn.functional.one_hot(labels, num_classes or int(labels.max()) + 1).to(dtype) / 2**0.5


class DependenceRegularizer(nn.Module):
    """``loss = task + weight * D(predictions, protected attributes)``.

    ``kind="dcov"``: sum over attributes of ``dCov^2(y, s_i)`` (marginal parity);
    ``"jdcov"``: ``JdCov^2(y, s_1, ..., s_k)``; ``"ccdcov"``: ``dCov^2(y, [s_1..s_k])``
    (intersectional parity). Continuous attributes are passed as floats ``(n,)``/``(n, q)``,
    categorical ones one-hot encoded (:func:`one_hot`).

    Args:
        kind: ``"dcov"``, ``"jdcov"`` or ``"ccdcov"``.
        weight: regularisation strength.
        c: the JdCov constant.

    Example:
        >>> import torch
        >>> reg = DependenceRegularizer("ccdcov", weight=1.0)
        >>> y = torch.randn(64, 1, requires_grad=True)
        >>> reg(y, [torch.randn(64), one_hot(torch.randint(0, 3, (64,)))]).backward()
    """

    def __init__(self, kind: str = "dcov", weight: float = 1.0, *, c: float = 1.0) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"DependenceRegularizer: `kind` must be one of {KINDS}, got {kind!r}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ValueError(f"DependenceRegularizer: `weight` must be a number >= 0, got {weight!r}")
        self.kind, self.weight, self.c = kind, float(weight), check_positive(c, "c", "DependenceRegularizer")

    def forward(self, y: torch.Tensor, attrs: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        if isinstance(attrs, torch.Tensor):
            attrs = [attrs]
        if self.kind == "dcov":
            val = sum(distance_covariance(y, s.to(y.dtype) if s.is_floating_point() else s) for s in attrs)
        elif self.kind == "jdcov":
            val = joint_distance_covariance([y, *attrs], self.c)
        else:
            val = concatenated_distance_covariance(y, attrs)
        return self.weight * val
