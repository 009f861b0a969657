"""A PONITA-style dynamics model: features on positions x orientations ``R^3 x S^2``
(Bekkers et al. 2024, "Fast, Expressive SE(n) Equivariant Networks through Weight-Sharing in
Position-Orientation Space").

Every particle carries a signal on a grid of ``O`` orientations ``o`` on the sphere (see below),
``f_i(o) in R^C``. Layers are separable group convolutions whose kernels are functions of the
invariants of pairs of position-orientations:

.. math::
    a_{ij}(o) = \\big((x_j - x_i)\\cdot o,\\; \\|(x_j - x_i) - ((x_j - x_i)\\cdot o)\\,o\\|\\big), \\qquad
    b(o, o') = o \\cdot o'

1. spatial: ``g_i(o) = sum_{j in N(i) + i} k_s(a_ij(o)) * f_j(o)`` (channelwise, same ``o``);
2. orientations: ``h_i(o') = 1/O sum_o k_o(b(o, o')) * g_i(o)`` (channelwise);
3. ConvNeXt block: ``f <- f + W_2 GELU(W_1 LayerNorm(h + bias))``.

Kernels are linear maps of a shared basis, an MLP of polynomial features of the invariants.
Inputs are lifted to the sphere (scalars repeated, vectors ``v`` as ``v . o``); the output
vector is ``mean_o r(o) o`` of a per-layer read-out ``r`` averaged over layers, added to the
input positions.

**Equivariance.** The invariants make the network exactly equivariant to translations and to
relabelling particles, and exactly E(3)-equivariant *if the grid were rotated with the input*.
Two grid modes:

- ``grid="frame"`` (default): the grid is expressed per system (connected component of the
  graph) in an equivariant frame ``R_s`` (:func:`system_frames`: principal axes of the centred
  positions and the velocities, signs fixed by third moments), ``o = R_s g``. A rotation or
  reflection ``Q`` of the input maps ``R_s -> Q R_s``, so every invariant, hence every fibre
  value, is unchanged and the read-out ``sum_o r(o) R_s g(o)`` turns with ``Q``: exactly
  O(3)- (with translations, E(3)-) equivariant, reflections included, wherever the frame is
  unique (distinct eigenvalues, non-zero sign moments). At degenerate inputs (e.g. collinear
  positions with velocities along the same line) the frame is an arbitrary but finite choice
  of the eigensolver; the output stays finite, and is equivariant only as far as the fixed
  grid is. ``o . o'`` is frame-independent, so the orientation kernel is shared by all systems.
- ``grid="fixed"``: the previous model, one fixed grid for every system; a rotation of the
  input is not a permutation of a finite grid, so it is only approximately rotation-
  equivariant (the error shrinks as the grid gets finer; docs/dynamics.md).

``random_grid`` rotates the grid by a random rotation per forward pass in training mode (as
the published model does): for ``"fixed"`` that makes the map equivariant in distribution;
for ``"frame"`` the rotation acts inside the frame, so every draw is still exactly
equivariant (default: on for ``"fixed"``, off for ``"frame"``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from equikit._utils import check_int
from equikit.groups import SO
from equikit.models.dynamics import _check_graph


def fibonacci_sphere(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n`` nearly uniform unit vectors (the Fibonacci / golden-spiral lattice), ``(n, 3)``.
    Deterministic; for ``n >= 2`` the points have equal-area spacing in ``z``.

    Example:
        >>> g = fibonacci_sphere(20)
        >>> tuple(g.shape), bool(torch.allclose(g.norm(dim=-1), torch.ones(20, dtype=g.dtype)))
        ((20, 3), True)
    """
    check_int(n, "n", "fibonacci_sphere", minimum=1)
    k = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1.0 - 2.0 * k / n
    r = torch.sqrt((1.0 - z * z).clamp(min=0.0))
    phi = math.pi * (1.0 + math.sqrt(5.0)) * k
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=-1).to(dtype)


def polynomial_features(x: torch.Tensor, degree: int) -> torch.Tensor:
    """All products of up to ``degree`` entries of ``x`` (ordered tensor powers):
    ``[x, x (x) x, x (x) x (x) x, ...]`` flattened, ``(..., d) -> (..., d + d^2 + ... + d^degree)``.

    Example:
        >>> polynomial_features(torch.tensor([2.0, 3.0]), 2).tolist()
        [2.0, 3.0, 4.0, 6.0, 6.0, 9.0]
    """
    out, term = [x], x
    for _ in range(degree - 1):
        term = (term.unsqueeze(-1) * x.unsqueeze(-2)).flatten(-2)
        out.append(term)
    return torch.cat(out, dim=-1)


def pair_invariants(rel: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Invariants of ``(x_i, o)`` and ``(x_j, o)`` for every edge and orientation:
    ``rel (E, 3)`` (``x_j - x_i``), ``grid (O, 3)`` or per edge ``(E, O, 3)`` -> ``(E, O, 2)``
    holding ``rel . o`` and the length of ``rel``'s component orthogonal to ``o``.

    The orthogonal length is ``sqrt(|rel|^2 - (rel . o)^2)`` clamped at 0 and smoothed by
    ``1e-12`` under the root (finite gradients on self-loops, where ``rel = 0``)."""
    along = (rel.unsqueeze(-2) * grid).sum(-1)
    ortho2 = ((rel * rel).sum(-1, keepdim=True) - along * along).clamp(min=0.0)
    return torch.stack([along, torch.sqrt(ortho2 + 1e-12)], dim=-1)


def graph_components(edge_index: torch.Tensor, n: int) -> tuple[torch.Tensor, int]:
    """Connected components of the graph on ``n`` nodes (edges taken as undirected):
    ``(labels (N,), n_components)`` with labels ``0 .. n_components - 1`` numbered by each
    component's smallest node index. Vectorised label propagation (one ``scatter_reduce`` per
    sweep; a collated batch of complete graphs needs one sweep plus the check).

    Example:
        >>> graph_components(torch.tensor([[0, 1, 3], [1, 0, 4]]), 5)
        (tensor([0, 0, 1, 2, 2]), 3)
    """
    labels = torch.arange(n, device=edge_index.device)
    src, dst = edge_index[0], edge_index[1]
    while True:
        new = labels.scatter_reduce(0, dst, labels[src], reduce="amin")
        new = new.scatter_reduce(0, src, new[dst], reduce="amin")
        if torch.equal(new, labels):
            break
        labels = new
    uniq, inverse = torch.unique(labels, return_inverse=True)
    return inverse, int(uniq.numel())


def system_frames(pos: torch.Tensor, vel: torch.Tensor, system: torch.Tensor, n_systems: int,
                  tol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """An O(3)-equivariant orthonormal frame per system: ``(frames (S, 3, 3), degenerate (S,))``.

    .. math::
        C_s = \\sum_{i \\in s} c_i c_i^T + v_i v_i^T,\\quad c_i = x_i - \\bar x_s, \\qquad
        R_s = [\\sigma_1 e_1, \\sigma_2 e_2, \\sigma_3 e_3],\\quad
        \\sigma_k = \\mathrm{sign} \\sum_{i \\in s} (c_i \\cdot e_k)^3 + (v_i \\cdot e_k)^3

    with ``e_k`` the eigenvectors of ``C_s`` (ascending eigenvalues; columns of ``R_s``). For
    ``Q`` in O(3) and any translation, ``R_s -> Q R_s``, as long as the frame is unique.
    ``degenerate`` flags the systems where it is not: two eigenvalues closer than
    ``tol * lambda_max`` (e.g. collinear positions and velocities, or a single particle), or a
    sign moment below ``tol`` times its absolute counterpart; there the frame is the
    eigensolver's arbitrary (finite) choice. Computed in float64, returned in ``pos.dtype``.

    Args & shapes: ``pos, vel (N, 3)``, ``system (N,)`` ids in ``[0, n_systems)``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> pos, vel = torch.randn(2, 4, 3, generator=g, dtype=torch.float64)
        >>> r, bad = system_frames(pos, vel, torch.zeros(4, dtype=torch.long), 1)
        >>> bool(torch.allclose(r[0].T @ r[0], torch.eye(3, dtype=torch.float64))), bool(bad[0])
        (True, False)
    """
    x, v = pos.to(torch.float64), vel.to(torch.float64)
    count = x.new_zeros(n_systems).index_add_(0, system, x.new_ones(x.shape[0])).clamp(min=1.0)
    mean = x.new_zeros(n_systems, 3).index_add_(0, system, x) / count[:, None]
    c = x - mean[system]
    outer = c.unsqueeze(-1) * c.unsqueeze(-2) + v.unsqueeze(-1) * v.unsqueeze(-2)
    cov = x.new_zeros(n_systems, 3, 3).index_add_(0, system, outer)
    evals, evecs = torch.linalg.eigh(cov)
    pc = torch.einsum("ni,nik->nk", c, evecs[system])
    pv = torch.einsum("ni,nik->nk", v, evecs[system])
    moment = x.new_zeros(n_systems, 3).index_add_(0, system, pc**3 + pv**3)
    scale = x.new_zeros(n_systems, 3).index_add_(0, system, pc.abs() ** 3 + pv.abs() ** 3)
    sign = torch.where(moment < 0, -1.0, 1.0)
    frames = evecs * sign[:, None, :]
    top = evals[:, -1:].clamp(min=torch.finfo(torch.float64).tiny)
    degenerate = ((evals[:, 1:] - evals[:, :-1]) <= tol * top).any(-1) | (moment.abs() <= tol * scale).any(-1)
    return frames.to(pos.dtype), degenerate


class _Basis(nn.Module):
    """``invariants (..., d) -> (..., basis)``: an MLP of polynomial features (GELU)."""

    def __init__(self, d: int, hidden: int, basis: int, degree: int) -> None:
        super().__init__()
        self.degree = degree
        n_feat = sum(d**k for k in range(1, degree + 1))
        self.mlp = nn.Sequential(nn.Linear(n_feat, hidden), nn.GELU(), nn.Linear(hidden, basis), nn.GELU())

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.mlp(polynomial_features(a, self.degree))


class SeparableSphereConv(nn.Module):
    """The separable position-orientation convolution: a channelwise spatial kernel over
    edges at equal orientation, then a channelwise kernel over pairs of orientations.

    .. math::
        g_i(o) = k_s(\\text{loop}) \\odot f_i(o) + \\sum_{j \\to i} k_s(a_{ij}(o)) \\odot f_j(o), \\qquad
        h_i(o') = \\tfrac1O \\sum_o k_o(o \\cdot o') \\odot g_i(o) + \\text{bias}

    Shapes: ``f (N, O, C)``, ``basis_spatial (E, O, B)`` (the given edges),
    ``basis_loop (B,)`` (the added self-loop's basis: ``a_ii(o) = (0, 0)`` for every ``o``, so one
    vector serves every node), ``basis_sphere (O, O, B)``, ``edge_index (2, E)``
    (``j -> i``) -> ``(N, O, C)``.

    ``calibrated`` (a buffer): on the first forward pass in training mode the two kernels are
    rescaled so that each stage keeps the standard deviation of its input (as the published
    model does); later passes leave them alone.
    """

    def __init__(self, channels: int, basis: int) -> None:
        super().__init__()
        self.kernel_spatial = nn.Linear(basis, channels, bias=False)
        self.kernel_sphere = nn.Linear(basis, channels, bias=False)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("calibrated", torch.tensor(False))

    def forward(self, f, basis_spatial, basis_loop, basis_sphere, edge_index):
        src, dst = edge_index[0], edge_index[1]
        msg = self.kernel_spatial(basis_spatial) * f.index_select(0, src)
        g = (self.kernel_spatial(basis_loop) * f).index_add_(0, dst, msg)
        k = self.kernel_sphere(basis_sphere)  # (O, O', C)
        h = torch.einsum("noc,opc->npc", g, k) / k.shape[0]
        if self.training and not bool(self.calibrated):
            with torch.no_grad():
                s_in, s_g, s_h = f.std(), g.std(), h.std()
                self.kernel_spatial.weight.mul_(s_in / s_g.clamp(min=1e-12))
                self.kernel_sphere.weight.mul_(s_g / s_h.clamp(min=1e-12))
                self.calibrated.fill_(True)
            return self.forward(f, basis_spatial, basis_loop, basis_sphere, edge_index)
        return h + self.bias


class ConvNextBlock(nn.Module):
    """``f + W_2 GELU(W_1 LayerNorm(conv(f)))`` with a widening factor (ConvNeXt style).

    Shapes: as :class:`SeparableSphereConv`.
    """

    def __init__(self, channels: int, basis: int, widening: int = 4) -> None:
        super().__init__()
        self.conv = SeparableSphereConv(channels, basis)
        self.norm = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, widening * channels), nn.GELU(),
                                 nn.Linear(widening * channels, channels))

    def forward(self, f, basis_spatial, basis_loop, basis_sphere, edge_index):
        return f + self.mlp(self.norm(self.conv(f, basis_spatial, basis_loop, basis_sphere, edge_index)))


GRIDS = ("frame", "fixed")


class Ponita(nn.Module):
    """PONITA-style dynamics model on ``R^3 x S^2`` (see the module docstring).

    Inputs lifted to the sphere per particle: the node scalars ``h`` (default ``|v|``)
    repeated over the grid and the velocity as ``v . o``; the edge attributes (charge
    products) enter the spatial kernel basis beside the two pair invariants. Self-loops are
    part of every convolution (the published n-body setting is a complete graph with loops),
    with zero edge attributes; their basis is computed once (it does not depend on the node).

    Args:
        hidden: channels ``C`` (published n-body: 128).
        n_layers: ConvNeXt blocks (published: 5).
        n_orientations: grid size ``O`` on the sphere (published: 20).
        basis: width of the kernel basis (published: 256).
        degree: polynomial degree of the invariant features (published: 3).
        widening: ConvNeXt widening factor (published: 4).
        edge_features: ``F`` of ``edge_attr`` (1: the charge product).
        node_features: ``C`` of the node scalars ``h`` (default ``|v|``, 1).
        grid: ``"frame"`` (grid in each system's equivariant frame: exactly E(3)-equivariant
            away from degenerate frames) or ``"fixed"`` (one fixed grid: approximate).
        random_grid: rotate the grid by a random rotation per forward pass in training mode;
            ``None`` (default): ``True`` for ``"fixed"``, ``False`` for ``"frame"``.

    Shapes: ``pos, vel (N, 3)``, ``edge_index (2, E)``, ``edge_attr (E, F)``, optional
    ``h (N, node_features)`` -> ``(N, 3)``. With ``grid="frame"`` a system is a connected
    component of ``edge_index``.

    Example:
        >>> import torch
        >>> from equikit.models import Ponita
        >>> from equikit.data.nbody import complete_edge_index
        >>> model = Ponita(hidden=8, n_layers=2, n_orientations=6, basis=8).eval()
        >>> out = model(torch.randn(5, 3), torch.randn(5, 3), complete_edge_index(5), torch.ones(20, 1))
        >>> tuple(out.shape)
        (5, 3)
    """

    def __init__(
        self,
        hidden: int = 128,
        n_layers: int = 5,
        n_orientations: int = 20,
        basis: int = 256,
        degree: int = 3,
        widening: int = 4,
        edge_features: int = 1,
        node_features: int = 1,
        grid: str = "frame",
        random_grid: bool | None = None,
    ) -> None:
        super().__init__()
        for name, v, lo in (("hidden", hidden, 1), ("n_layers", n_layers, 1), ("n_orientations", n_orientations, 1),
                            ("basis", basis, 1), ("degree", degree, 1), ("widening", widening, 1),
                            ("edge_features", edge_features, 0), ("node_features", node_features, 1)):
            check_int(v, name, "Ponita", minimum=lo)
        if grid not in GRIDS:
            raise ValueError(f"Ponita: `grid` must be one of {GRIDS}, got {grid!r}")
        if random_grid is not None and not isinstance(random_grid, bool):
            raise TypeError(f"Ponita: `random_grid` must be a bool or None, got {type(random_grid).__name__}")
        self.node_features, self.edge_features = node_features, edge_features
        self.grid_mode = grid
        self.random_grid = (grid == "fixed") if random_grid is None else random_grid
        self.register_buffer("grid", fibonacci_sphere(n_orientations, torch.get_default_dtype()))
        self.basis_spatial = _Basis(2 + edge_features, hidden, basis, degree)
        self.basis_sphere = _Basis(1, hidden, basis, degree)
        self.embed = nn.Linear(node_features + 1, hidden, bias=False)
        self.blocks = nn.ModuleList(ConvNextBlock(hidden, basis, widening) for _ in range(n_layers))
        self.readouts = nn.ModuleList(nn.Linear(hidden, 1) for _ in range(n_layers))

    def _grid(self, dtype) -> torch.Tensor:
        grid = self.grid.to(dtype)
        if self.training and self.random_grid:
            grid = grid @ SO(3).sample(1, dtype=dtype, device=grid.device)[0].T
        return grid

    def node_grids(self, pos: torch.Tensor, vel: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """The orientations each particle uses, ``(N, O, 3)``: the (possibly randomly rotated)
        grid, turned into each system's frame for ``grid="frame"``."""
        grid = self._grid(pos.dtype)
        n = pos.shape[0]
        if self.grid_mode == "fixed":
            return grid.unsqueeze(0).expand(n, -1, -1)
        system, n_systems = graph_components(edge_index, n)
        frames, _ = system_frames(pos, vel, system, n_systems)
        return torch.einsum("nij,oj->noi", frames[system], grid)

    def forward(self, pos, vel, edge_index, edge_attr=None, h=None):
        _check_graph(pos, vel, edge_index, edge_attr, "Ponita")
        if (edge_attr is None) != (self.edge_features == 0):
            raise ValueError(f"Ponita: built for edge_features={self.edge_features}, got edge_attr "
                             f"{None if edge_attr is None else tuple(edge_attr.shape)}")
        n = pos.shape[0]
        if h is None:
            h = vel.norm(dim=-1, keepdim=True)
        if h.shape != (n, self.node_features):
            raise ValueError(f"Ponita: `h` must have shape (N, node_features) = {(n, self.node_features)}, "
                             f"got {tuple(h.shape)}")
        grids = self.node_grids(pos, vel, edge_index)  # (N, O, 3)
        o = grids.shape[1]
        # lift: scalars repeated over the grid, the velocity as v . o
        f = torch.cat([h.unsqueeze(1).expand(n, o, -1), (grids @ vel.unsqueeze(-1))], dim=-1)
        f = self.embed(f)
        ei = edge_index  # the self-loop of every node is added in the convolution (`b_loop`)
        rel = pos[ei[0]] - pos[ei[1]]
        attr = pair_invariants(rel, grids[0] if self.grid_mode == "fixed" else grids[ei[1]])
        loop = pair_invariants(pos.new_zeros(1, 3), grids[:1, :1])[0, 0]  # (0, 1e-6) for every o
        if edge_attr is not None:
            attr = torch.cat([attr, edge_attr.unsqueeze(1).expand(-1, o, -1)], dim=-1)
            loop = torch.cat([loop, loop.new_zeros(edge_attr.shape[1])])
        b_spatial = self.basis_spatial(attr)
        b_loop = self.basis_spatial(loop)
        b_sphere = self.basis_sphere((grids[0] @ grids[0].T).unsqueeze(-1))  # o . o': frame-independent
        readout = 0.0
        for block, read in zip(self.blocks, self.readouts):
            f = block(f, b_spatial, b_loop, b_sphere, ei)
            readout = readout + read(f)
        readout = readout / len(self.blocks)  # (N, O, 1)
        return pos + (readout * grids).mean(dim=1)
