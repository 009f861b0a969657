"""Soft-equivariance regularisers sharing the shape ``loss = task + reg(...)``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from equikit._utils import check_int, check_positive, resolve_generator, tree_flatten, tree_unflatten
from equikit.groups import Action, Element, Group
from equikit.symmetrize._frame import batch_size
from equikit.symmetrize._symmetrize import _cast


def _check_actions(in_action: Any, out_action: Any, where: str) -> None:
    if not isinstance(in_action, Action):
        raise TypeError(f"{where}: `in_action` must be an equikit Action, got {type(in_action).__name__}")
    if out_action is not None:
        if not isinstance(out_action, Action):
            raise TypeError(f"{where}: `out_action` must be an Action or None, got {type(out_action).__name__}")
        if out_action.group != in_action.group:
            raise ValueError(f"{where}: actions of different groups: {in_action.group!r} vs {out_action.group!r}")
    if not in_action.batchable or (out_action is not None and not out_action.batchable):
        raise TypeError(f"{where}: the actions must accept a batch of elements (dense data)")


def _sample_elements(group: Group, m: int, b: int, generator, like: torch.Tensor) -> Element:
    """``(m, B)`` elements: the whole group when it is finite with at most ``m`` elements."""
    dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
    if group.order is not None and group.order <= m:
        g = group.elements(dtype=dtype, device=like.device)
        k = group.order
        parts = g if isinstance(g, tuple) else (g,)
        shapes = group._element_shapes()
        out = tuple(p[:, None].expand(k, b, *s) for p, s in zip(parts, shapes))
        return out if isinstance(g, tuple) else out[0]
    g = group.sample(m * b, generator=generator, dtype=dtype, device=like.device)
    return group.reshape(g, (m, b))


def _act_stacked(action: Action, g: Element, x: Any) -> tuple[Any, int, int]:
    """Apply ``(m, B)`` elements to ``m`` copies of ``x`` and fold to a batch of ``m * B``."""
    leaves, structure = tree_flatten(x)
    m = action.group.batch_shape(g)[0]
    b = leaves[0].shape[0]
    expanded = tree_unflatten([t.unsqueeze(0).expand(m, *t.shape) for t in leaves], structure)
    moved, mstruct = tree_flatten(action(_cast(g, leaves), expanded))
    return tree_unflatten([t.reshape(m * b, *t.shape[2:]) for t in moved], mstruct), m, b


def _unfold(y: Any, m: int, b: int) -> list[torch.Tensor]:
    return [t.reshape(m, b, *t.shape[1:]) for t in tree_flatten(y)[0]]


def _moved_outputs(out_action: Action | None, g: Element, y_leaves: list, structure: Any, m: int) -> list:
    """``rho_out(g) f(x)`` for ``(m, B)`` elements, as ``(m, B, ...)`` leaves."""
    expanded = [t.unsqueeze(0).expand(m, *t.shape) for t in y_leaves]
    if out_action is None:
        return expanded
    return tree_flatten(out_action(_cast(g, y_leaves), tree_unflatten(expanded, structure)))[0]


class EquivarianceRegularizer(nn.Module):
    """Sampled equivariance penalty ``weight * E_g mean |f(g x) - rho_out(g) f(x)|^2``.

    One (or ``n_samples``) random element per input and step, as in data-augmentation-style
    soft equivariance; zero exactly when ``f`` is equivariant.

    Args:
        in_action, out_action: the actions (``out_action=None``: invariance).
        n_samples: elements per input.
        weight: strength.
        generator: seed/Generator for the sampled elements.

    Example:
        >>> import torch
        >>> from equikit.groups import O, PointCloud
        >>> reg = EquivarianceRegularizer(PointCloud(O(3)), PointCloud(O(3)))
        >>> f = torch.nn.Linear(3, 3, bias=False)
        >>> bool(reg(f, torch.randn(8, 5, 3)) > 0)
        True
    """

    def __init__(self, in_action: Action, out_action: Action | None = None, *, n_samples: int = 1,
                 weight: float = 1.0, generator: torch.Generator | int | None = None) -> None:
        super().__init__()
        _check_actions(in_action, out_action, "EquivarianceRegularizer")
        self.in_action, self.out_action = in_action, out_action
        self.n_samples = check_int(n_samples, "n_samples", "EquivarianceRegularizer", minimum=1)
        self.weight = float(weight)
        self.generator = resolve_generator(generator) if generator is not None else None

    def forward(self, f: Callable[[Any], Any], x: Any, y: Any = None) -> torch.Tensor:
        b = batch_size(x, "EquivarianceRegularizer")
        like = tree_flatten(x)[0][0]
        g = _sample_elements(self.in_action.group, self.n_samples, b, self.generator, like)
        gx, m, _ = _act_stacked(self.in_action, g, x)
        y = f(x) if y is None else y
        y_leaves, structure = tree_flatten(y)
        ref = _moved_outputs(self.out_action, g, y_leaves, structure, m)
        out = _unfold(f(gx), m, b)
        return self.weight * sum((o - r).pow(2).mean() for o, r in zip(out, ref))


class ProjectionRegularizer(nn.Module):
    """One projection regulariser per symmetry type with automatically tuned strengths
    (after Kim et al. 2023, "Regularizing Towards Soft Equivariance Under Mixed Symmetries").

    Math: for symmetry ``i`` with group ``G_i`` the projection of ``f`` onto equivariant
    functions is ``(P_i f)(x) = E_{g in G_i} rho_out(g) f(rho_in(g)^-1 x)`` (estimated with
    ``n_samples`` elements, or the whole group when it is that small). The regulariser is the
    squared distance to it, ``R_i = mean |f - P_i f|^2`` (in output units: standardise the
    targets), and the loss is ``weight * sum_i lambda_i R_i``. The strengths are tuned, not
    chosen: ``lambda_i = 1 / (floor + r_i)`` with ``r_i`` a running mean of ``R_i`` (the MAP
    precision of a Gaussian model of the non-equivariant part), so a symmetry that the data
    respects is enforced ever more strongly (up to ``1/floor``) while a broken one is left
    alone; ``r_i`` estimates how much of the output breaks symmetry ``i`` -- the discovered
    approximation level. Dividing ``R_i`` by the model's own output variance instead is a
    trap: at initialisation that variance is tiny, the penalty's gradient huge, and training
    collapses to a constant (observed in ``benchmarks/symmetrize_soft.py``).

    Args:
        symmetries: ``{name: (in_action, out_action or None)}``.
        n_samples: elements per input used to estimate each projection.
        weight: overall strength.
        momentum: running-mean momentum of ``r_i``.
        floor: smallest ``r_i`` counted (caps ``lambda_i`` at ``1/floor``).
        generator: seed/Generator.

    Example:
        >>> import torch
        >>> from equikit.groups import O, PointCloud, Scaling
        >>> reg = ProjectionRegularizer({"rot": (PointCloud(O(2)), None), "scale": (PointCloud(Scaling()), None)})
        >>> f = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 1))
        >>> loss = reg(f, torch.randn(16, 4, 2)); sorted(reg.strengths())
        ['rot', 'scale']
    """

    def __init__(self, symmetries: Mapping[str, tuple[Action, Action | None]], *, n_samples: int = 4,
                 weight: float = 1.0, momentum: float = 0.9, floor: float = 1e-2,
                 generator: torch.Generator | int | None = None) -> None:
        super().__init__()
        where = "ProjectionRegularizer"
        if not isinstance(symmetries, Mapping) or not symmetries:
            raise ValueError(f"{where}: `symmetries` must be a non-empty dict {{name: (in_action, out_action)}}")
        for name, pair in symmetries.items():
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise TypeError(f"{where}: symmetries[{name!r}] must be a pair (in_action, out_action or None)")
            _check_actions(pair[0], pair[1], where)
        if not 0 <= momentum < 1:
            raise ValueError(f"{where}: `momentum` must be in [0, 1), got {momentum!r}")
        self.symmetries = dict(symmetries)
        self.n_samples = check_int(n_samples, "n_samples", where, minimum=1)
        self.weight, self.momentum = float(weight), float(momentum)
        self.floor = check_positive(floor, "floor", where)
        self.generator = resolve_generator(generator) if generator is not None else None
        self.register_buffer("running", torch.full((len(self.symmetries),), float("nan"), dtype=torch.float64))

    def residuals(self, f: Callable[[Any], Any], x: Any, y: Any = None) -> dict[str, torch.Tensor]:
        """``{name: R_i}``: mean squared distance of ``f`` to its projection, per symmetry."""
        b = batch_size(x, "ProjectionRegularizer")
        like = tree_flatten(x)[0][0]
        y = f(x) if y is None else y
        y_leaves, structure = tree_flatten(y)
        out = {}
        for name, (ain, aout) in self.symmetries.items():
            g = _sample_elements(ain.group, self.n_samples, b, self.generator, like)
            ginv = ain.group.inverse(g)
            gx, m, _ = _act_stacked(ain, ginv, x)
            fy = _unfold(f(gx), m, b)
            if aout is not None:
                fy = tree_flatten(aout(_cast(g, fy), tree_unflatten(fy, structure)))[0]
            proj = [t.mean(0) for t in fy]
            out[name] = sum((yl - p).pow(2).mean() for yl, p in zip(y_leaves, proj))
        return out

    def strengths(self) -> dict[str, float]:
        """Current ``lambda_i`` (``1/floor`` before the first training step)."""
        r = torch.nan_to_num(self.running, nan=0.0)
        return {name: float(1.0 / (self.floor + r[i])) for i, name in enumerate(self.symmetries)}

    def levels(self) -> dict[str, float]:
        """Running estimates ``r_i`` of how far each symmetry is broken (0: exact), in squared output units."""
        return {name: float(self.running[i]) for i, name in enumerate(self.symmetries)}

    def forward(self, f: Callable[[Any], Any], x: Any, y: Any = None) -> torch.Tensor:
        res = self.residuals(f, x, y)
        vals = torch.stack([r.to(torch.float64) for r in res.values()]).detach()
        if self.training:
            with torch.no_grad():
                fresh = torch.isnan(self.running)
                blended = self.momentum * self.running + (1 - self.momentum) * vals
                self.running.copy_(torch.where(fresh, vals, blended))
        lam = self.strengths()
        return self.weight * sum(lam[name] * r for name, r in res.items())


def _element_features(g: Element) -> torch.Tensor:
    """Flattened float features of a batch of elements ``(B, ...)`` -> ``(B, F)``."""
    parts = g if isinstance(g, tuple) else (g,)
    return torch.cat([p.reshape(p.shape[0], -1).to(torch.get_default_dtype()) for p in parts], dim=-1)


class LearnedLatentAction(nn.Module):
    """A learned linear action of a group on embeddings: ``z -> M_theta(g) z`` with
    ``M_theta(g) = I + MLP(features(g))`` (a hypernetwork, as the equivariant predictor of
    SIE and the latent action of TransIP). Initialised at the identity map.

    Args:
        feature_dim: length of ``features(g)``; default features flatten the element.
        dim: embedding width acted on.
        hidden: hypernetwork width.
        features: optional callable ``g (B, ...) -> (B, feature_dim)``.

    Example:
        >>> import torch
        >>> from equikit.groups import SO
        >>> act = LearnedLatentAction(9, 6)
        >>> act(SO(3).sample(4, generator=0, dtype=torch.float32), torch.randn(4, 6)).shape
        torch.Size([4, 6])
    """

    def __init__(self, feature_dim: int, dim: int, *, hidden: int = 64,
                 features: Callable[[Element], torch.Tensor] | None = None) -> None:
        super().__init__()
        check_int(feature_dim, "feature_dim", "LearnedLatentAction", minimum=1)
        check_int(dim, "dim", "LearnedLatentAction", minimum=1)
        self.dim, self.features = dim, features or _element_features
        self.net = nn.Sequential(nn.Linear(feature_dim, hidden), nn.SiLU(), nn.Linear(hidden, dim * dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, g: Element, z: torch.Tensor) -> torch.Tensor:
        feats = self.features(g).to(z.dtype)
        if z.ndim != 2 or z.shape[-1] != self.dim or feats.shape[0] != z.shape[0]:
            raise ValueError(
                f"LearnedLatentAction: expected z (B, {self.dim}) and B elements, got z {tuple(z.shape)} and "
                f"{feats.shape[0]} elements"
            )
        m = torch.eye(self.dim, dtype=z.dtype, device=z.device) + self.net(feats).reshape(-1, self.dim, self.dim)
        return (m @ z.unsqueeze(-1)).squeeze(-1)


def _real_tokens(group: Group, z: torch.Tensor, zg: torch.Tensor, g: Element, mask: torch.Tensor | None,
                 where: str) -> tuple[torch.Tensor, torch.Tensor, Element]:
    """Rows ``(M, D)`` of the real tokens of ``z``, ``zg (B, T, D)`` and the element of each token's input."""
    b, t = z.shape[:2]
    if mask is None:
        mask = torch.ones(b, t, dtype=torch.bool, device=z.device)
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (b, t):
        raise ValueError(f"{where}: `mask` must be a bool tensor ({b}, {t}) marking the real tokens, got "
                         f"{getattr(mask, 'dtype', type(mask).__name__)} {tuple(getattr(mask, 'shape', ()))}")
    owner = torch.arange(b, device=z.device)[:, None].expand(b, t)[mask]
    return z[mask], zg[mask], group.take(g, owner)


class LatentAlignmentLoss(nn.Module):
    """Latent alignment: learn equivariance by aligning embeddings of transformed inputs
    (TransIP, "Learning Inter-Atomic Potentials without Explicit Equivariance"; split
    invariant/equivariant embeddings as in SIE).

    Math: with an encoder ``h`` and ``z = h(x) = [z_inv, z_eq]`` (``invariant_dim`` leading
    entries invariant), for random ``g``:

        L = (|z_inv(g x) - z_inv(x)|^2 + |z_eq(g x) - M_theta(g) z_eq(x)|^2) / Var(z)

    with ``M_theta`` a :class:`LearnedLatentAction` (``None``: the equivariant part must be
    invariant too). Dividing by the (detached) variance of ``z`` stops the loss from being
    minimised by shrinking the embeddings.

    Token embeddings: an encoder may return ``(B, T, D)`` (e.g. a transformer's per-atom tokens,
    as TransIP aligns them); the element drawn for input ``b`` then acts on each of its ``T``
    tokens, every real token is one row of the loss, and ``mask (B, T)`` (bool, passed to
    ``forward``) leaves padded tokens out.

    Args:
        in_action: how the group moves inputs.
        latent_action: learned action on ``z_eq`` or ``None``.
        invariant_dim: number of leading invariant entries of ``z``.
        weight: strength.
        generator: seed/Generator.

    Example:
        >>> import torch
        >>> from equikit.groups import SO, PointCloud
        >>> enc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(15, 8))
        >>> loss = LatentAlignmentLoss(PointCloud(SO(3)), LearnedLatentAction(9, 4), invariant_dim=4)
        >>> bool(loss(enc, torch.randn(6, 5, 3)) > 0)
        True
    """

    def __init__(self, in_action: Action, latent_action: LearnedLatentAction | None = None, *,
                 invariant_dim: int = 0, weight: float = 1.0, generator: torch.Generator | int | None = None) -> None:
        super().__init__()
        _check_actions(in_action, None, "LatentAlignmentLoss")
        if latent_action is not None and not isinstance(latent_action, LearnedLatentAction):
            raise TypeError(
                f"LatentAlignmentLoss: `latent_action` must be a LearnedLatentAction or None, got "
                f"{type(latent_action).__name__}"
            )
        self.in_action, self.latent_action = in_action, latent_action
        self.invariant_dim = check_int(invariant_dim, "invariant_dim", "LatentAlignmentLoss", minimum=0)
        self.weight = float(weight)
        self.generator = resolve_generator(generator) if generator is not None else None

    def forward(self, encoder: Callable[[Any], torch.Tensor], x: Any, z: torch.Tensor | None = None, *,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        where = "LatentAlignmentLoss"
        b = batch_size(x, where)
        like = tree_flatten(x)[0][0]
        g = _sample_elements(self.in_action.group, 1, b, self.generator, like)
        gx, _, _ = _act_stacked(self.in_action, g, x)
        z = encoder(x) if z is None else z
        zg = encoder(gx)
        if not isinstance(z, torch.Tensor) or z.ndim not in (2, 3) or zg.shape != z.shape or z.shape[0] != b:
            raise ValueError(f"{where}: the encoder must return (B, D) embeddings or (B, T, D) tokens for B = {b} "
                             f"inputs, got {getattr(z, 'shape', type(z))} and {getattr(zg, 'shape', type(zg))}")
        g0 = self.in_action.group.take(g, 0)
        if z.ndim == 3:
            z, zg, g0 = _real_tokens(self.in_action.group, z, zg, g0, mask, where)
        elif mask is not None:
            raise ValueError(f"{where}: `mask` is for (B, T, D) tokens; the encoder returned {tuple(z.shape)}")
        k = self.invariant_dim
        if k > z.shape[1]:
            raise ValueError(f"{where}: `invariant_dim`={k} exceeds the embedding width {z.shape[1]}")
        var = z.detach().var(dim=0).mean().clamp_min(1e-12)
        loss = (zg[:, :k] - z[:, :k]).pow(2).sum(-1).mean() if k else z.new_zeros(())
        if k < z.shape[1]:
            target = z[:, k:] if self.latent_action is None else self.latent_action(g0, z[:, k:])
            loss = loss + (zg[:, k:] - target).pow(2).sum(-1).mean()
        return self.weight * loss / (var * z.shape[1])
