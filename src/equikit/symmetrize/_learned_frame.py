"""Learned canonicalisation for continuous groups O(d), SO(d), E(d), SE(d) (Kaba et al. 2023,
"Equivariance with Learned Canonicalization Functions").

A small E(d)-equivariant network (EGNN-style message passing on pairwise distances) predicts
vectors ``v_1, ..., v_m`` from a point cloud; they move with the input,
``v(X Q^T + t) = Q v(X)``. Gram-Schmidt turns them into an orthogonal frame ``R(X)`` with
``R(X Q^T + t) = Q R(X)``:

- O(d)/E(d): ``m = d`` vectors orthonormalised, ``R = [u_1 ... u_d]`` (``det R = +-1``: the
  reflection is kept, so reflections are canonicalised too);
- SO(d)/SE(d): ``m = d - 1`` vectors orthonormalised, the last column is their generalised
  cross product (``u_1 x u_2`` in 3D), so ``det R = +1``.

With the centroid ``c`` (E/SE; ``c = 0`` for O/SO, which fix the origin) the frame is the one
element ``g(X) = (R(X), c(X))``: the backbone sees ``g^-1 X = (X - c) R`` and its outputs are
mapped back by ``g`` (:class:`Symmetrize`, any mode -- the frame has ``K = 1``).

Degenerate inputs (documented rule): with ``r_k`` the Gram-Schmidt residual of ``v_k`` (its
distance to the span of ``v_1, ..., v_(k-1)``; ``r_1 = |v_1|``) and ``s`` the RMS distance of
the points from ``c``, an input is flagged when ``min_k r_k <= tol * s`` (or ``s = 0``):
the predicted vectors are (nearly) zero or linearly dependent, so the frame is ill-defined
or unstable. Inputs with a nontrivial symmetry (collinear or planar clouds under O(3),
regular polytopes) always land here: equivariant vectors must be fixed by the stabiliser.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from equikit._utils import check_finite, check_int, check_positive
from equikit.groups import SE, SO, E, Group, O
from equikit.symmetrize._frame import Frame, FrameOutput, batch_size, select

_GROUPS = (O, SO, E, SE)
_RBF = 8  # Gaussian radial basis functions on [0, 3] RMS radii


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, n_out))


class EquivariantVectors(nn.Module):
    """EGNN-style network mapping centred points ``(B, N, d)`` to ``m`` equivariant vectors.

    Math: invariant node features start from radial basis features of ``|x_i| / s`` (``s`` the
    RMS radius); each layer computes messages ``m_ij = phi_e(h_i, h_j, rbf(|x_i - x_j| / s))`` and
    updates
    ``h_i <- h_i + phi_h(h_i, mean_j m_ij)``. The output vectors are

        v_k = mean_(i, j) psi_e(m_ij)_k (x_i - x_j) + mean_i (psi_h(h_i)_k - mean_l psi_h(h_l)_k) x_i,

    weighted sums of relative and centred positions with invariant weights, so
    ``v(X Q^T) = Q v(X)`` for every ``Q`` in O(d) (and the network is permutation-invariant).

    Args:
        n_vectors: ``m``.
        hidden: width of the invariant features.
        layers: number of message-passing layers.
    """

    def __init__(self, n_vectors: int, hidden: int = 32, layers: int = 2) -> None:
        super().__init__()
        self.register_buffer("centers", torch.linspace(0.0, 3.0, _RBF))
        self.embed = nn.Linear(_RBF, hidden)
        self.edges = nn.ModuleList(_mlp(2 * hidden + _RBF, hidden, hidden) for _ in range(layers))
        self.nodes = nn.ModuleList(_mlp(2 * hidden, hidden, hidden) for _ in range(layers))
        self.edge_out = _mlp(2 * hidden + _RBF, hidden, n_vectors)
        self.node_out = nn.Linear(hidden, n_vectors)

    def _rbf(self, r: torch.Tensor) -> torch.Tensor:
        return torch.exp(-4.0 * (r[..., None] - self.centers.to(r.dtype)).pow(2))

    def _pairs(self, h: torch.Tensor, d2: torch.Tensor) -> torch.Tensor:
        n = h.shape[1]
        hi = h[:, :, None].expand(-1, -1, n, -1)
        hj = h[:, None, :].expand(-1, n, -1, -1)
        return torch.cat([hi, hj, d2], dim=-1)

    def forward(self, xc: torch.Tensor) -> torch.Tensor:
        s2 = xc.pow(2).sum(-1).mean(-1).clamp_min(torch.finfo(xc.dtype).tiny)[:, None]  # (B, 1)
        rel = xc[:, :, None] - xc[:, None]  # (B, N, N, d): x_i - x_j
        d2 = self._rbf((rel.pow(2).sum(-1) / s2[..., None]).sqrt())  # (B, N, N, R): distance features
        h = self.embed(self._rbf((xc.pow(2).sum(-1) / s2).sqrt()))
        for edge, node in zip(self.edges, self.nodes):
            m = edge(self._pairs(h, d2))
            h = h + node(torch.cat([h, m.mean(dim=2)], dim=-1))
        w_e = self.edge_out(self._pairs(h, d2))  # (B, N, N, m)
        w_h = self.node_out(h)  # (B, N, m)
        w_h = w_h - w_h.mean(dim=1, keepdim=True)  # a weight shared by all points would add the
        # same multiple of the centroid to every vector (nearly collinear vectors at init)
        v = torch.einsum("bijk,bijd->bkd", w_e, rel) / rel.shape[1] ** 2
        return v + torch.einsum("bik,bid->bkd", w_h, xc) / xc.shape[1]


def _generalised_cross(u: torch.Tensor) -> torch.Tensor:
    """``(..., d, d-1)`` columns -> the vector ``n`` with ``n_k = (-1)^(k+d) det(U without row k)``,
    so that ``det([U, n]) = |n|^2`` (the cross product in 3D)."""
    d = u.shape[-2]
    cols = []
    for k in range(d):
        minor = torch.cat([u[..., :k, :], u[..., k + 1 :, :]], dim=-2)
        sign = -1.0 if (k + d) % 2 else 1.0  # 0-indexed k: (-1)^((k+1)+d)
        cols.append(-sign * torch.linalg.det(minor))
    return torch.stack(cols, dim=-1)


def gram_schmidt(v: torch.Tensor, *, special: bool = False, eps: float = 0.0):
    """Orthonormal frame from predicted vectors, equivariant: ``Q v -> Q R``.

    Args:
        v: ``(B, m, d)`` vectors (``m = d``, or ``m = d - 1`` with ``special=True``).
        special: complete the ``d - 1`` orthonormalised vectors with their generalised cross
            product, giving ``det R = +1``.
        eps: floor on the residual norms (keeps degenerate inputs finite).

    Returns:
        ``(R (B, d, d), residuals (B, m))``: ``R``'s columns are the orthonormalised vectors;
        ``residuals[:, k]`` is the distance of ``v_k`` to the span of the previous ones.

    Example:
        >>> import torch
        >>> R, r = gram_schmidt(torch.randn(4, 3, 3, dtype=torch.float64))
        >>> torch.allclose(R.transpose(-1, -2) @ R, torch.eye(3, dtype=torch.float64).expand(4, 3, 3))
        True
        >>> R, _ = gram_schmidt(torch.randn(4, 2, 3, dtype=torch.float64), special=True)
        >>> torch.linalg.det(R).round(decimals=8).tolist()
        [1.0, 1.0, 1.0, 1.0]
    """
    us, res = [], []
    tiny = max(eps, torch.finfo(v.dtype).tiny)
    for k in range(v.shape[1]):
        w = v[:, k]
        for u in us:
            w = w - (w * u).sum(-1, keepdim=True) * u
        norm = w.norm(dim=-1)
        res.append(norm)
        us.append(w / norm.clamp_min(tiny)[:, None])
    rot = torch.stack(us, dim=-1)  # (B, d, m)
    if special:
        rot = torch.cat([rot, _generalised_cross(rot)[..., None]], dim=-1)
    return rot, torch.stack(res, dim=-1)


class LearnedFrame(Frame):
    """A learned, exactly equivariant canonicalisation for O(d), SO(d), E(d), SE(d).

    Math (Kaba et al. 2023; module docstring): an equivariant network predicts vectors, Gram-
    Schmidt makes them an orthogonal frame ``R(X)``, and with the centroid ``c(X)`` the frame
    is ``{(R(X), c(X))}``, ``K = 1``: ``Phi(X) = rho_out(g) phi((X - c) R)``. Because
    ``R(X Q^T + t) = Q R(X)`` this is exact for *any* backbone, at every non-degenerate input,
    in training and evaluation alike, and differentiable in the network's parameters, so the
    canonicaliser trains end to end with the backbone.

    ``prior_loss(x)`` is the canonicalisation prior (Kaba et al. §4; Mondal et al. 2023):
    ``mean_b |R(x_b) - I|_F^2``, which pulls the frame of in-distribution (already aligned)
    data towards the identity, so a pretrained backbone keeps seeing its usual poses. Add it
    to the task loss with a small weight.

    Args:
        group: ``O(d)``, ``SO(d)`` (about the origin), ``E(d)`` or ``SE(d)``, ``d >= 2``.
        key: the positions' key for dict inputs (``None``: the input is the positions).
        hidden, layers: size of the default :class:`EquivariantVectors` network.
        network: optional replacement, any module mapping centred positions ``(B, N, d)`` to
            ``(B, m, d)`` O(d)-equivariant vectors (``m = d`` for O/E, ``d - 1`` for SO/SE).
        tol: relative Gram-Schmidt residual counted as degenerate (module docstring).
        on_degenerate: ``"flag"`` (default) or ``"raise"``.
        compute_dtype: dtype in which the network and Gram-Schmidt run (default float64, like
            :class:`PCAFrame`'s eigendecomposition: the frame amplifies rounding errors by the
            conditioning of the predicted vectors, too much for float32 at an untrained
            network); parameters are cast differentiably. ``None``: the parameters' dtype.

    Shapes: positions ``(B, N, d)``; elements ``(1, B, d, d)`` (O/SO) or ``(1, B, d+1, d+1)``
    (E/SE), returned in the input's dtype.

    Example:
        >>> import torch
        >>> from equikit.groups import E, PointCloud
        >>> from equikit.symmetrize import LearnedFrame, Symmetrize
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(15, 1)).double()
        >>> net = Symmetrize(mlp, LearnedFrame(E(3)), PointCloud(E(3)), mode="canonicalize")
        >>> x = torch.randn(4, 5, 3, dtype=torch.float64)
        >>> g = E(3).sample(1, generator=0, dtype=torch.float64)[0]
        >>> torch.allclose(net(PointCloud(E(3))(g, x)), net(x))
        True
    """

    def __init__(
        self,
        group: Group,
        key: str | None = None,
        *,
        hidden: int = 32,
        layers: int = 2,
        network: nn.Module | None = None,
        tol: float = 1e-6,
        on_degenerate: str = "flag",
        compute_dtype: torch.dtype | None = torch.float64,
    ) -> None:
        super().__init__()
        where = "LearnedFrame"
        if not isinstance(group, _GROUPS):
            raise TypeError(f"{where}: `group` must be O(d), SO(d), E(d) or SE(d), got {group!r}")
        if group.d < 2:
            raise ValueError(f"{where}: the dimension must be at least 2, got {group!r}")
        if on_degenerate not in ("flag", "raise"):
            raise ValueError(f"{where}: `on_degenerate` must be 'flag' or 'raise', got {on_degenerate!r}")
        if network is not None and not isinstance(network, nn.Module):
            raise TypeError(f"{where}: `network` must be an nn.Module, got {type(network).__name__}")
        self.group, self.key, self.on_degenerate = group, key, on_degenerate
        self.tol = check_positive(tol, "tol", where)
        if network is None:
            check_int(hidden, "hidden", where, minimum=1)
            check_int(layers, "layers", where, minimum=0)
            network = EquivariantVectors(self.n_vectors, hidden, layers)
        floating = isinstance(compute_dtype, torch.dtype) and compute_dtype.is_floating_point
        if compute_dtype is not None and not floating:
            raise ValueError(f"{where}: `compute_dtype` must be a floating torch.dtype or None, got {compute_dtype!r}")
        self.network, self.compute_dtype = network, compute_dtype

    @property
    def special(self) -> bool:
        return isinstance(self.group, (SO, SE))

    @property
    def translates(self) -> bool:
        return isinstance(self.group, (E, SE))

    @property
    def n_vectors(self) -> int:
        return self.group.d - 1 if self.special else self.group.d

    def _positions(self, x: Any, where: str) -> torch.Tensor:
        batch_size(x, where)
        pos = select(x, self.key, where)
        d = self.group.d
        if not isinstance(pos, torch.Tensor) or pos.ndim != 3 or pos.shape[-1] != d or not pos.is_floating_point():
            got = tuple(pos.shape) if isinstance(pos, torch.Tensor) else type(pos).__name__
            raise ValueError(f"{where}: positions must be a floating tensor (B, N, {d}) for {self.group!r}, got {got}")
        if pos.shape[1] < 1:
            raise ValueError(f"{where}: positions need at least one point, got shape {tuple(pos.shape)}")
        return check_finite(pos, "positions", where)

    def rotation(self, x: Any, where: str = "LearnedFrame.rotation"):
        """``(R (B, d, d), c (B, d), degenerate (B,))`` in the input's dtype."""
        pos = self._positions(x, where)
        if self.compute_dtype is None:
            param = next(self.network.parameters(), None)
            ndtype = param.dtype if param is not None and param.is_floating_point() else pos.dtype
        else:
            ndtype = self.compute_dtype
        xn = pos.to(ndtype)
        c = xn.mean(dim=1) if self.translates else torch.zeros_like(xn[:, 0])
        xc = xn - c[:, None]
        state = {**dict(self.network.named_parameters()), **dict(self.network.named_buffers())}
        state = {k: t.to(ndtype) if t.is_floating_point() else t for k, t in state.items()}
        v = functional_call(self.network, state, (xc,))  # differentiable casts: grads reach the params
        b, m, d = pos.shape[0], self.n_vectors, self.group.d
        if not isinstance(v, torch.Tensor) or tuple(v.shape) != (b, m, d):
            got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise ValueError(f"{where}: `network` must return vectors (B={b}, {m}, {d}), got {got}")
        scale = xc.pow(2).sum(-1).mean(-1).sqrt()
        rot, res = gram_schmidt(v, special=self.special, eps=torch.finfo(ndtype).eps * 1e-3)
        deg = (res.min(dim=-1).values <= self.tol * scale) | (scale <= 0)
        if self.on_degenerate == "raise" and bool(deg.any()):
            raise ValueError(
                f"{where}: {int(deg.sum())} input(s) give (nearly) zero or linearly dependent frame vectors "
                f"(Gram-Schmidt residual <= {self.tol:g} x RMS radius); their frame is ill-defined. Use "
                "on_degenerate='flag' or perturb them"
            )
        return rot.to(pos.dtype), c.to(pos.dtype), deg

    def _frame(self, x: Any, where: str) -> FrameOutput:
        rot, c, deg = self.rotation(x, where)
        g = self.group.from_affine(rot, c) if self.translates else rot
        weights = torch.ones(1, rot.shape[0], dtype=rot.dtype, device=rot.device)
        return FrameOutput(g[None], weights, deg)

    def forward(self, x: Any) -> FrameOutput:
        return self._frame(x, "LearnedFrame")

    def canonical(self, x: Any) -> FrameOutput:
        return self._frame(x, "LearnedFrame.canonical")

    def sample(self, x: Any, n: int, generator: torch.Generator | int | None = None) -> FrameOutput:
        check_int(n, "n", "LearnedFrame.sample", minimum=1)
        fr = self._frame(x, "LearnedFrame.sample")
        b = fr.weights.shape[1]
        g = fr.elements.expand(n, *fr.elements.shape[1:])
        return FrameOutput(g, torch.full((n, b), 1.0 / n, dtype=fr.weights.dtype, device=fr.weights.device),
                           fr.degenerate)

    def prior_loss(self, x: Any) -> torch.Tensor:
        """``mean_b |R(x_b) - I|_F^2``: pulls the frame of in-distribution data to the identity."""
        rot, _c, _deg = self.rotation(x, "LearnedFrame.prior_loss")
        eye = torch.eye(self.group.d, dtype=rot.dtype, device=rot.device)
        return (rot - eye).pow(2).sum(dim=(-1, -2)).mean()
