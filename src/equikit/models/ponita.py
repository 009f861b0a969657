"""A PONITA-style dynamics model: features on positions x orientations ``R^3 x S^2``
(Bekkers et al. 2024, "Fast, Expressive SE(n) Equivariant Networks through Weight-Sharing in
Position-Orientation Space").

Every particle carries a signal on a fixed grid of ``O`` orientations ``o`` on the sphere,
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
With a fixed finite grid, a rotation of the input is not a permutation of the grid, so the
model is only approximately rotation-equivariant; the error shrinks as the grid gets finer
(measured in tests/models/test_ponita.py and docs/dynamics.md). The published model rotates
the grid randomly per graph and forward pass (``random_grid=True`` here, in training mode only),
which makes the map equivariant in distribution and acts as augmentation; in eval mode the
fixed grid gives a deterministic map.
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

    Shapes: ``f (N, O, C)``, ``basis_spatial (E, O, B)``, ``basis_sphere (O, O, B)``,
    ``edge_index (2, E)`` (``j -> i``) -> ``(N, O, C)``.

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

    def forward(self, f, basis_spatial, basis_sphere, edge_index):
        src, dst = edge_index[0], edge_index[1]
        msg = self.kernel_spatial(basis_spatial) * f[src]
        g = f.new_zeros(f.shape).index_add_(0, dst, msg)
        k = self.kernel_sphere(basis_sphere)  # (O, O', C)
        h = torch.einsum("noc,opc->npc", g, k) / k.shape[0]
        if self.training and not bool(self.calibrated):
            with torch.no_grad():
                s_in, s_g, s_h = f.std(), g.std(), h.std()
                self.kernel_spatial.weight.mul_(s_in / s_g.clamp(min=1e-12))
                self.kernel_sphere.weight.mul_(s_g / s_h.clamp(min=1e-12))
                self.calibrated.fill_(True)
            return self.forward(f, basis_spatial, basis_sphere, edge_index)
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

    def forward(self, f, basis_spatial, basis_sphere, edge_index):
        return f + self.mlp(self.norm(self.conv(f, basis_spatial, basis_sphere, edge_index)))


def _with_self_loops(edge_index: torch.Tensor, n: int) -> torch.Tensor:
    loops = torch.arange(n, device=edge_index.device).unsqueeze(0).expand(2, n)
    return torch.cat([edge_index, loops], dim=1)


class Ponita(nn.Module):
    """PONITA-style dynamics model on ``R^3 x S^2`` (see the module docstring).

    Inputs lifted to the sphere per particle: the node scalars ``h`` (default ``|v|``)
    repeated over the grid and the velocity as ``v . o``; the edge attributes (charge
    products) enter the spatial kernel basis beside the two pair invariants. Self-loops are
    added (the published n-body setting is a complete graph with loops), with zero edge
    attributes.

    Args:
        hidden: channels ``C`` (published n-body: 128).
        n_layers: ConvNeXt blocks (published: 5).
        n_orientations: grid size ``O`` on the sphere (published: 20).
        basis: width of the kernel basis (published: 256).
        degree: polynomial degree of the invariant features (published: 3).
        widening: ConvNeXt widening factor (published: 4).
        edge_features: ``F`` of ``edge_attr`` (1: the charge product).
        node_features: ``C`` of the node scalars ``h`` (default ``|v|``, 1).
        random_grid: rotate the grid by a random rotation per forward pass in training mode.

    Shapes: ``pos, vel (N, 3)``, ``edge_index (2, E)``, ``edge_attr (E, F)``, optional
    ``h (N, node_features)`` -> ``(N, 3)``.

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
        random_grid: bool = True,
    ) -> None:
        super().__init__()
        for name, v, lo in (("hidden", hidden, 1), ("n_layers", n_layers, 1), ("n_orientations", n_orientations, 1),
                            ("basis", basis, 1), ("degree", degree, 1), ("widening", widening, 1),
                            ("edge_features", edge_features, 0), ("node_features", node_features, 1)):
            check_int(v, name, "Ponita", minimum=lo)
        self.node_features, self.edge_features = node_features, edge_features
        self.random_grid = bool(random_grid)
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
        grid = self._grid(pos.dtype)
        o = grid.shape[0]
        # lift: scalars repeated over the grid, the velocity as v . o
        f = torch.cat([h.unsqueeze(1).expand(n, o, -1), (vel @ grid.T).unsqueeze(-1)], dim=-1)
        f = self.embed(f)
        ei = _with_self_loops(edge_index, n)
        rel = pos[ei[0]] - pos[ei[1]]
        attr = pair_invariants(rel, grid)
        if edge_attr is not None:
            ea = torch.cat([edge_attr, edge_attr.new_zeros(n, edge_attr.shape[1])], dim=0)
            attr = torch.cat([attr, ea.unsqueeze(1).expand(-1, o, -1)], dim=-1)
        b_spatial = self.basis_spatial(attr)
        b_sphere = self.basis_sphere((grid @ grid.T).unsqueeze(-1))
        readout = 0.0
        for block, read in zip(self.blocks, self.readouts):
            f = block(f, b_spatial, b_sphere, ei)
            readout = readout + read(f)
        readout = readout / len(self.blocks)  # (N, O, 1)
        return pos + (readout * grid).mean(dim=1)
