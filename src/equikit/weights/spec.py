"""Permutation specifications: which axes of which parameters move with which hidden units.

A network's hidden units can be relabelled without changing its function: permute the rows
of the layer that produces them and the columns of every layer that reads them. A
:class:`PermutationSpec` writes this down once, as data: a set of named permutation groups
(one per block of interchangeable units) and, for every entry of the ``state_dict``, which
of its axes each group moves.

Convention (shared with :class:`equikit.groups.Permutation` and
:class:`equikit.groups.FeaturePermutation`): a permutation ``sigma`` (int64 ``(n,)``,
``sigma[i]`` = new slot of unit ``i``) moves hidden unit ``i`` to slot ``sigma(i)``, so the
permuted network's hidden vector is ``h'[sigma(i)] = h[i]``. Internally parameters are
gathered with ``sigma^{-1}``: ``W'[j] = W[sigma^{-1}(j)]``.

Positive scalings: when the nonlinearity after a unit commutes with positive scaling
(ReLU, or no nonlinearity), ``h_i -> s_i h_i`` is also a symmetry: the unit's incoming
weights and bias are multiplied by ``s_i`` and its outgoing weights divided by it. Axes say
which side they are on (``scale=+1`` incoming, ``-1`` outgoing); groups say whether they
may be scaled.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from equikit._utils import check_int

Params = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class PermAxis:
    """How one axis of a parameter moves.

    ``perms`` factorises the axis, outer to inner: ``("heads", "qk")`` says an axis of size
    ``H * d`` is laid out as ``(H, d)``, heads permuted by ``"heads"`` and the ``d`` dims of
    every head by ``"qk"``. ``scale`` is ``+1`` when the axis carries a unit's incoming
    weights (multiplied by its scale), ``-1`` for its outgoing weights (divided), ``0`` when
    it is never scaled. Only single-factor axes may scale.
    """

    perms: tuple[str, ...]
    scale: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.perms, str) or not isinstance(self.perms, tuple) or not self.perms:
            raise TypeError(f"PermAxis: `perms` must be a non-empty tuple of names, got {self.perms!r}")
        if self.scale not in (-1, 0, 1):
            raise ValueError(f"PermAxis: `scale` must be -1, 0 or +1, got {self.scale!r}")
        if self.scale and len(self.perms) > 1:
            raise ValueError(f"PermAxis: only a single-factor axis may scale, got perms={self.perms}")


def out_axis(perm: str) -> PermAxis:
    """The axis of a layer's *outputs* (rows of ``W``, the bias): scaled by ``s``."""
    return PermAxis((perm,), +1)


def in_axis(perm: str) -> PermAxis:
    """The axis of a layer's *inputs* (columns of ``W``): scaled by ``1 / s``."""
    return PermAxis((perm,), -1)


def plain_axis(*perms: str) -> PermAxis:
    """A permuted axis that never scales (norm parameters, factorised head axes)."""
    return PermAxis(tuple(perms), 0)


@dataclass(frozen=True)
class Units:
    """A group of interchangeable hidden units: its size and whether positive per-unit
    scalings are also a symmetry (the nonlinearity after it is positively homogeneous and
    no normalisation reads it)."""

    size: int
    scalable: bool = False

    def __post_init__(self) -> None:
        check_int(self.size, "size", "Units", minimum=1)


@dataclass(frozen=True)
class Site:
    """Where a group's units can be observed: the output of submodule ``module``, units
    along ``dim`` (``1`` for ``(B, C, ...)``, ``-1`` for ``(B, L, C)``). Used by activation
    matching and the activation-statistics attack."""

    module: str
    dim: int = 1


@dataclass(frozen=True)
class PermutationSpec:
    """Permutation groups of a network and the axes they move.

    Args:
        units: name -> :class:`Units` for every permutation group.
        axes: ``state_dict`` key -> one entry per dim, a :class:`PermAxis` or ``None``
            (not permuted). Every key of the ``state_dict`` must appear, so a forgotten
            parameter is an error rather than a silently wrong model.
        sites: optional name -> :class:`Site`, for activation-based methods.

    Example:
        >>> import torch
        >>> from equikit.weights import PermutationSpec, Units, out_axis, in_axis, permute
        >>> spec = PermutationSpec(
        ...     units={"h": Units(3, scalable=True)},
        ...     axes={"0.weight": (out_axis("h"), None), "0.bias": (out_axis("h"),),
        ...           "2.weight": (None, in_axis("h")), "2.bias": (None,)})
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
        >>> sd = permute(spec, net.state_dict(), {"h": torch.tensor([2, 0, 1])})
        >>> x = torch.randn(4, 2)
        >>> y = torch.func.functional_call(net, sd, (x,))
        >>> torch.allclose(y, net(x), atol=1e-6)
        True
    """

    units: Mapping[str, Units]
    axes: Mapping[str, tuple[PermAxis | None, ...]]
    sites: Mapping[str, Site] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = "PermutationSpec"
        for name, u in self.units.items():
            if not isinstance(u, Units):
                raise TypeError(f"{where}: `units[{name!r}]` must be a Units, got {type(u).__name__}")
        for key, axes in self.axes.items():
            if not isinstance(axes, tuple):
                raise TypeError(f"{where}: `axes[{key!r}]` must be a tuple (one entry per dim), got {axes!r}")
            for d, ax in enumerate(axes):
                if ax is None:
                    continue
                if not isinstance(ax, PermAxis):
                    raise TypeError(f"{where}: `axes[{key!r}][{d}]` must be a PermAxis or None, got {ax!r}")
                for p in ax.perms:
                    if p not in self.units:
                        raise ValueError(
                            f"{where}: `axes[{key!r}][{d}]` names the unknown group {p!r}; "
                            f"known: {sorted(self.units)}"
                        )
                    if self.units[p].scalable and not ax.scale:
                        raise ValueError(
                            f"{where}: group {p!r} is scalable but the axis {key!r}[{d}] = "
                            f"{ax.perms} does not say how it scales (use out_axis/in_axis, or "
                            "Units(scalable=False))"
                        )
        for name in self.sites:
            if name not in self.units:
                raise ValueError(f"{where}: `sites` names the unknown group {name!r}")

    # ------------------------------------------------------------------ queries
    def occurrences(self, perm: str) -> list[tuple[str, int, int]]:
        """``(key, dim, factor)`` for every place the group ``perm`` acts."""
        return [
            (key, d, f)
            for key, axes in self.axes.items()
            for d, ax in enumerate(axes)
            if ax is not None
            for f, p in enumerate(ax.perms)
            if p == perm
        ]

    def axis_size(self, ax: PermAxis) -> int:
        return math.prod(self.units[p].size for p in ax.perms)

    def fingerprint(self) -> str:
        """A short hash of the groups and axes: two specs with the same fingerprint describe
        the same architecture."""
        text = repr(sorted((k, u.size, u.scalable) for k, u in self.units.items()))
        text += repr(sorted((k, tuple(None if a is None else (a.perms, a.scale) for a in v))
                            for k, v in self.axes.items()))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def check_params(self, params: Params, name: str, where: str) -> None:
        """Raise unless ``params`` has exactly this spec's keys with matching shapes."""
        if not isinstance(params, Mapping):
            raise TypeError(f"{where}: `{name}` must be a state_dict (a mapping), got {type(params).__name__}")
        missing = sorted(set(self.axes) - set(params))
        extra = sorted(set(params) - set(self.axes))
        if missing or extra:
            raise ValueError(
                f"{where}: `{name}` does not fit the spec: missing keys {missing[:5]}, keys the spec "
                f"does not describe {extra[:5]} (is the spec for another architecture?)"
            )
        for key, axes in self.axes.items():
            t = params[key]
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{where}: `{name}[{key!r}]` must be a tensor, got {type(t).__name__}")
            if t.ndim != len(axes):
                raise ValueError(
                    f"{where}: `{name}[{key!r}]` has shape {tuple(t.shape)} but the spec describes "
                    f"{len(axes)} dims"
                )
            for d, ax in enumerate(axes):
                if ax is not None and t.shape[d] != self.axis_size(ax):
                    raise ValueError(
                        f"{where}: `{name}[{key!r}]` has size {t.shape[d]} along dim {d}, but the "
                        f"spec's groups {ax.perms} need {self.axis_size(ax)}"
                    )

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        """Plain data (str/int/bool/list) for saving beside a key."""
        return {
            "units": {k: [u.size, u.scalable] for k, u in self.units.items()},
            "axes": {k: [None if a is None else [list(a.perms), a.scale] for a in v]
                     for k, v in self.axes.items()},
            "sites": {k: [s.module, s.dim] for k, s in self.sites.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> PermutationSpec:
        return cls(
            units={k: Units(int(v[0]), bool(v[1])) for k, v in data["units"].items()},
            axes={k: tuple(None if a is None else PermAxis(tuple(a[0]), int(a[1])) for a in v)
                  for k, v in data["axes"].items()},
            sites={k: Site(v[0], int(v[1])) for k, v in data.get("sites", {}).items()},
        )
