r"""``SphereGridMLP``: Facet-style mixing on a sphere grid (irreps -> grid -> pointwise MLP -> irreps).

Each channel ``c`` of ``C x (0e + 1o + 2e + ...)`` features is a spherical function
``f_c(x) = sum_l x[c, l] . Y_l(x)``. The layer evaluates all of them on a Gauss-Legendre x
equiangular grid (:func:`equikit.o3.sphere_grid`), applies one MLP over the channels at every
grid point (the same MLP everywhere) and projects the ``C_out`` resulting functions back onto
harmonics of degree ``<= L_out`` by quadrature:

.. math:: z[c', l m] = \frac{1}{4\pi} \sum_g w_g\, \mathrm{MLP}(f(x_g))_{c'}\, Y_{lm}(x_g)

A rotation or reflection ``g`` moves the functions (``f -> f o g^{-1}``) and commutes with a
pointwise MLP, so the layer is O(3)-equivariant **as far as the quadrature is exact**. With a
polynomial activation of degree ``k`` (and ``depth`` hidden layers) the MLP output has band
limit ``k^depth L_in``; the integrand then has degree ``k^depth L_in + L_out`` and the grid of
``exact_degree = k^depth`` (``n_theta = ceil((deg + 1) / 2)``, ``n_phi = deg + 1``) makes the
layer exactly equivariant. A non-polynomial activation (SiLU, tanh) has unbounded band limit:
equivariance holds up to the aliasing error, which falls as the grid is refined (measured in
``docs/tp.md`` and ``tests/nn/test_grid_mlp.py``). This is a nonlinear layer, not a bilinear
tensor product, so it is a module here and not a ``tp`` backend.

Only natural-parity features (``p = (-1)^l``: ``0e, 1o, 2e, ...``) are functions on the sphere
that transform this way under reflections; other parities are refused.

Options (session 7) for MACE-like per-element weights, each exactly equivariant:
``output="degree"`` applies the MLP's last (linear) layer after the projection, with its own
``hidden[-1] x C_out`` weights per output degree ``l`` (a linear map of each degree's
coefficients commutes with rotations; the bias reaches degree 0 only, the projection of a
constant); ``num_groups=K`` makes those weights (and the linear path's) one set per group,
chosen per sample by ``group`` (e.g. the element of each atom, as the per-element weights of
MACE's symmetric contraction); ``linear=True`` adds a linear path ``x -> C_out`` per degree
``l <= min(L_in, L_out)`` (zero at initialisation); ``input_scale`` / ``output_scale`` multiply
the input functions / the output by constants (scalars: equivariance unchanged). With
``input_scale = s`` and ``output_scale = 1 / s`` the linear part of the layer keeps its scale
while the polynomial's order ``k`` grows by ``s^(k-1)`` relative to it, and a ``bias`` shift
shrinks relative to the input's part (docs/potentials.md, session 7: in trained ``facet_cond``
models the input's part of the pre-activation was ~0.3-0.5 against a per-atom shift of ~0.9,
its cubic terms a few percent of the linear ones).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from equikit.o3 import Irreps, sphere_grid, spherical_harmonics


def _function_irreps(value: Any, name: str, where: str) -> tuple[Irreps, int, int]:
    """Validate ``C x (natural-parity blocks, distinct l)``; return ``(irreps, C, lmax)``."""
    try:
        irreps = Irreps(value)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{where}: `{name}` is not valid irreps ({err})") from None
    if len(irreps) == 0:
        raise ValueError(f"{where}: `{name}` is empty")
    ls = [ir.l for _, ir in irreps]
    if any(ir.p != (-1) ** ir.l for _, ir in irreps) or len(set(ls)) < len(ls) or len({m for m, _ in irreps}) > 1:
        raise ValueError(
            f"{where}: `{name}` must be C x (blocks of distinct l with natural parity 0e, 1o, 2e, 3o, ...), "
            f"one multiplicity C, e.g. '8x0e + 8x1o + 8x2e'; got '{irreps}'"
        )
    return irreps, irreps[0].mul, max(ls)


def _layout(irreps: Irreps, mul: int, lmax: int) -> np.ndarray:
    """For each ``(c, lm)`` of a ``(mul, (lmax+1)^2)`` array, its column in the features (or
    ``irreps.dim``: a zero pad for missing degrees)."""
    n = (lmax + 1) ** 2
    idx = np.full(mul * n, irreps.dim, dtype=np.int64)
    for (m, ir), sl in zip(irreps, irreps.slices()):
        for c in range(m):
            idx[c * n + ir.l**2 + np.arange(ir.dim)] = sl.start + c * ir.dim + np.arange(ir.dim)
    return idx


def grid_resolution(lmax_in: int, lmax_out: int, exact_degree: int) -> tuple[int, int]:
    """Gauss-Legendre grid ``(n_theta, n_phi)`` exact for an MLP output of band limit
    ``exact_degree * lmax_in`` projected onto degrees ``<= lmax_out``.

    >>> grid_resolution(2, 2, 2)
    (4, 7)
    """
    deg = exact_degree * lmax_in + lmax_out
    return deg // 2 + 1, deg + 1


@functools.lru_cache(maxsize=64)
def _grid_mats(lmax_in: int, lmax_out: int, resolution: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    g = sphere_grid(0, resolution, dtype=torch.float64)
    pts, w = g.points.reshape(-1, 3), g.weights.reshape(-1, 1)
    y = spherical_harmonics(max(lmax_in, lmax_out), pts, backend="torch")
    return y[:, : (lmax_in + 1) ** 2].T.contiguous(), (w * y[:, : (lmax_out + 1) ** 2] / (4 * math.pi)).contiguous()


def _mix_degrees(z: torch.Tensor, weight: torch.Tensor, group: torch.Tensor | None) -> torch.Tensor:
    """Per-degree (and per-group) channel mixing of harmonic coefficients.

    ``z (B, C_in, (L+1)^2)`` in ``(channel, lm)`` layout, ``weight (K, D, C_in, C_out)`` for the
    degrees ``l < D <= L + 1``, ``group (B,)`` int in ``[0, K)`` (None when ``K == 1``); returns
    ``(B, C_out, D^2)``: ``out[b, c', lm] = sum_c weight[group_b, l, c, c'] z[b, c, lm]``. One GEMM
    per degree over all ``K`` groups, then a gather (``K`` is small: the elements of a data set).

    >>> w = torch.randn(1, 2, 3, 4)
    >>> z = torch.randn(5, 3, 4)
    >>> torch.allclose(_mix_degrees(z, w, None)[:, :, 1:], torch.einsum("bcm,cd->bdm", z[:, :, 1:], w[0, 1]))
    True
    """
    k, d, c_in, c_out = weight.shape
    b = z.shape[0]
    out = []
    for l in range(d):
        zl = z[:, :, l * l : (l + 1) * (l + 1)].transpose(1, 2).reshape(-1, c_in)  # (B (2l+1), C_in)
        y = (zl @ weight[:, l].permute(1, 0, 2).reshape(c_in, k * c_out)).reshape(b, 2 * l + 1, k, c_out)
        if k == 1:
            y = y[:, :, 0]
        else:
            y = y.gather(2, group.view(b, 1, 1, 1).expand(b, 2 * l + 1, 1, c_out)).squeeze(2)
        out.append(y.transpose(1, 2))
    return torch.cat(out, dim=2)


class SphereGridMLP(nn.Module):
    r"""Facet-style mixing: features -> sphere grid -> MLP over channels per point -> features.

    Args:
        irreps_in: ``C_in x (0e + 1o + ...)`` (natural parity, distinct ``l``, one multiplicity).
        irreps_out: ``C_out x (...)``, same rules.
        hidden: widths of the hidden layers of the pointwise MLP.
        act: activation between layers (any callable; a polynomial one makes the layer exact).
        resolution: grid ``(n_theta, n_phi)``; default :func:`grid_resolution` ``(L_in, L_out,
            exact_degree)``.
        exact_degree: band-limit factor the default grid is exact for (``k^depth`` for a
            degree-``k`` polynomial activation; 2 by default).
        output: ``"grid"`` (default): the last layer runs at every grid point, then the projection;
            ``"degree"``: the projection first, then the last layer with its own weights per output
            degree ``l`` (``out_weight (num_groups, L_out + 1, hidden[-1], C_out)``, ``out_bias
            (num_groups, C_out)`` on degree 0). With equal weights for every degree it is the same
            function as ``"grid"`` (the projection is linear); it runs the last layer on
            ``(L_out+1)^2`` coefficients instead of the grid's points. Needs a hidden layer.
        num_groups: ``K`` sets of the per-degree weights (``output="degree"``, ``linear``), one per
            group; ``forward(..., group=...)`` picks one per sample (e.g. per element, as MACE's
            per-element contraction weights). All groups start equal.
        linear: add a linear path, per degree ``l <= min(L_in, L_out)`` (and group) a ``C_in x C_out``
            map of ``x`` (``lin_weight (num_groups, min(L_in, L_out) + 1, C_in, C_out)``, zero at
            initialisation, so the layer starts as without it).
        input_scale: a constant factor on ``x`` (default 1): ``m(x) == plain(input_scale * x)``
            with the same weights; with a polynomial activation it shifts the weight of the
            orders ``t^k`` by ``input_scale^k`` at given weights (and scales the first layer's
            effective learning rate).
        output_scale: a constant factor on the output (default 1); ``1 / input_scale`` keeps the
            output's scale at initialisation near the unscaled layer's (without it a large
            ``input_scale`` makes the first steps of training unstable, measured).

    Shapes: ``x (..., irreps_in.dim) -> (..., irreps_out.dim)``; ``group (...)`` int.

    >>> m = SphereGridMLP("4x0e + 4x1o + 4x2e", "3x0e + 3x1o", hidden=(8,))
    >>> m(torch.randn(5, 36)).shape, m.resolution
    (torch.Size([5, 12]), (3, 6))
    >>> m = SphereGridMLP("4x0e + 4x1o", "3x0e + 3x1o", hidden=(8,), output="degree", num_groups=2, linear=True)
    >>> m(torch.randn(5, 16), group=torch.tensor([0, 1, 1, 0, 1])).shape, tuple(m.out_weight.shape)
    (torch.Size([5, 12]), (2, 2, 8, 3))
    """

    def __init__(self, irreps_in: Any, irreps_out: Any, hidden: Sequence[int] = (32,),
                 act: Callable[[torch.Tensor], torch.Tensor] = nn.functional.silu,
                 resolution: tuple[int, int] | None = None, exact_degree: int = 2,
                 output: str = "grid", num_groups: int = 1, linear: bool = False,
                 input_scale: float = 1.0, output_scale: float = 1.0) -> None:
        super().__init__()
        where = "SphereGridMLP"
        if output not in ("grid", "degree"):
            raise ValueError(f"{where}: `output` must be 'grid' or 'degree', got {output!r}")
        if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1:
            raise ValueError(f"{where}: `num_groups` must be an int >= 1, got {num_groups!r}")
        for name, v in (("input_scale", input_scale), ("output_scale", output_scale)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{where}: `{name}` must be a finite number > 0, got {v!r}")
        if not isinstance(linear, bool):
            raise TypeError(f"{where}: `linear` must be a bool, got {type(linear).__name__}")
        if num_groups > 1 and output == "grid" and not linear:
            raise ValueError(f"{where}: `num_groups` = {num_groups} has no per-group weights to select; "
                             "use output='degree' and/or linear=True, or num_groups=1")
        if output == "degree" and len(tuple(hidden)) == 0:
            raise ValueError(f"{where}: output='degree' needs a hidden layer (its last layer moves after the "
                             "projection), got hidden=()")
        self.irreps_in, c_in, self.lmax_in = _function_irreps(irreps_in, "irreps_in", where)
        self.irreps_out, c_out, self.lmax_out = _function_irreps(irreps_out, "irreps_out", where)
        if not callable(act):
            raise TypeError(f"{where}: `act` must be callable, got {type(act).__name__}")
        if isinstance(exact_degree, bool) or not isinstance(exact_degree, int) or exact_degree < 1:
            raise ValueError(f"{where}: `exact_degree` must be an int >= 1, got {exact_degree!r}")
        widths = [c_in, *hidden, c_out]
        if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in widths):
            raise ValueError(f"{where}: `hidden` must be positive ints, got {tuple(hidden)!r}")
        if resolution is None:
            resolution = grid_resolution(self.lmax_in, self.lmax_out, exact_degree)
        if not (isinstance(resolution, (tuple, list)) and len(resolution) == 2
                and all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in resolution)):
            raise TypeError(f"{where}: `resolution` must be (n_theta, n_phi) positive ints, got {resolution!r}")
        self.resolution = (int(resolution[0]), int(resolution[1]))
        self.act = act
        self.output, self.num_groups = output, num_groups
        self.input_scale, self.output_scale = float(input_scale), float(output_scale)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        if output == "degree":  # the last layer's weights, copied for every group and degree
            last = self.layers.pop(len(self.layers) - 1)
            w = last.weight.detach().T.expand(num_groups, self.lmax_out + 1, -1, -1)
            self.out_weight = nn.Parameter(w.clone())
            self.out_bias = nn.Parameter(last.bias.detach().expand(num_groups, -1).clone())
        self.lin_weight = None
        if linear:
            self.lin_weight = nn.Parameter(torch.zeros(num_groups, min(self.lmax_in, self.lmax_out) + 1, c_in, c_out))
        self.c_in, self.c_out = c_in, c_out
        y, proj = _grid_mats(self.lmax_in, self.lmax_out, self.resolution)
        self.register_buffer("y", y, persistent=False)
        self.register_buffer("proj", proj, persistent=False)
        self.register_buffer("idx_in", torch.from_numpy(_layout(self.irreps_in, c_in, self.lmax_in)), persistent=False)
        out = _layout(self.irreps_out, c_out, self.lmax_out)  # features column -> position in (c, lm)
        inv = np.zeros(self.irreps_out.dim, dtype=np.int64)
        inv[out[out < self.irreps_out.dim]] = np.nonzero(out < self.irreps_out.dim)[0]
        self.register_buffer("idx_out", torch.from_numpy(inv), persistent=False)

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, irreps_in.dim)`` as ``(B, C_in, (L_in+1)^2)`` (channel, lm), zeros for missing degrees."""
        pad = torch.cat([x, x.new_zeros(x.shape[0], 1)], -1)
        return pad.index_select(1, self.idx_in).reshape(x.shape[0], self.c_in, -1)

    def to_grid(self, x: torch.Tensor) -> torch.Tensor:
        """Values of the ``C_in`` functions on the grid, ``(B, G, C_in)`` for ``x (B, irreps_in.dim)``."""
        return (self.coefficients(x) @ self.y.to(x.dtype)).transpose(1, 2)

    def mlp(self, v: torch.Tensor, bias: torch.Tensor | None = None,
            act: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """The pointwise MLP over the last (channel) dim; ``bias (B, hidden[0])`` (or None) is
        added to the first layer's output at every grid point of sample ``b``; ``act`` (or None:
        ``self.act``) is the activation of this call."""
        act = self.act if act is None else act
        n_act = len(self.layers) - (self.output == "grid")  # with output="degree" every layer here is hidden
        for i, layer in enumerate(self.layers):
            v = layer(v)
            if i == 0 and bias is not None:
                v = v + bias.unsqueeze(-2)
            if i < n_act:
                v = act(v)
        return v

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None,
                act: Callable[[torch.Tensor], torch.Tensor] | None = None,
                group: torch.Tensor | None = None) -> torch.Tensor:
        """``x (..., irreps_in.dim) -> (..., irreps_out.dim)``. ``bias`` (optional, ``(...,
        hidden[0])``): a per-sample shift of the first hidden layer's pre-activation, the same at
        every grid point, e.g. computed from invariant features (an element embedding): a constant
        function on the sphere, so equivariance and the exactness of the grid are unchanged, and
        with a polynomial activation it gives every sample its own mix of the powers of the
        first layer's output. ``act`` (optional) replaces the activation for this call, applied
        to ``(B, G, width)`` tensors (``B`` samples, ``G`` grid points), e.g. one with per-sample
        parameters shaped ``(B, 1, width)``; it must act pointwise (the same function at every
        grid point) for the layer to stay equivariant. ``group`` (int, the batch shape of ``x``;
        required when ``num_groups > 1``, ignored otherwise): which set of per-group weights each
        sample uses.

        >>> m = SphereGridMLP("2x0e + 2x1o", "2x0e", hidden=(4,))
        >>> m(torch.randn(3, 8), bias=torch.randn(3, 4)).shape
        torch.Size([3, 2])
        """
        if not isinstance(x, torch.Tensor) or x.ndim == 0 or x.shape[-1] != self.irreps_in.dim:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"SphereGridMLP: `x` must have shape (..., {self.irreps_in.dim}) for irreps "
                             f"'{self.irreps_in}', got {got}")
        batch = x.shape[:-1]
        if bias is not None:
            width = self.layers[0].out_features
            if len(self.layers) < 2 and self.output == "grid":
                raise ValueError("SphereGridMLP: `bias` needs a hidden layer (hidden=() has none)")
            if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (*batch, width):
                got = tuple(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__
                raise ValueError(f"SphereGridMLP: `bias` must have shape {(*batch, width)} (the batch shape of `x` "
                                 f"and hidden[0]), got {got}")
            bias = bias.reshape(-1, width)
        if act is not None and not callable(act):
            raise TypeError(f"SphereGridMLP: `act` must be callable or None, got {type(act).__name__}")
        group = self._check_group(group, batch)
        x = x * self.input_scale if self.input_scale != 1.0 else x
        coeffs = self.coefficients(x.reshape(-1, x.shape[-1]))  # (B, C_in, (L_in+1)^2)
        v = self.mlp((coeffs @ self.y.to(x.dtype)).transpose(1, 2), bias, act)  # (B, G, C_out or hidden[-1])
        z = v.transpose(1, 2) @ self.proj.to(v.dtype)  # (B, C_out or hidden[-1], (L+1)^2)
        if self.output == "degree":
            z = _mix_degrees(z, self.out_weight, group)
            b0 = self.out_bias[0] if group is None else self.out_bias[group]  # (C_out,) or (B, C_out)
            z = torch.cat([z[:, :, :1] + b0.unsqueeze(-1), z[:, :, 1:]], dim=2)
        if self.lin_weight is not None:
            d = self.lin_weight.shape[1]
            lin = _mix_degrees(coeffs, self.lin_weight, group)  # (B, C_out, d^2)
            z = torch.cat([z[:, :, : d * d] + lin, z[:, :, d * d :]], dim=2)
        z = z.reshape(v.shape[0], -1)  # (B, C_out * (L+1)^2)
        z = z * self.output_scale if self.output_scale != 1.0 else z
        return z.index_select(1, self.idx_out).reshape(*batch, self.irreps_out.dim)

    def _check_group(self, group: Any, batch: torch.Size) -> torch.Tensor | None:
        """``group`` flattened to ``(B,)`` (None when there is one group), validated."""
        if self.num_groups == 1:
            return None
        where = "SphereGridMLP"
        if group is None:
            raise ValueError(f"{where}: `group` is required with num_groups={self.num_groups} (an int tensor of "
                             f"shape {tuple(batch)} picking each sample's weights), got None")
        if not isinstance(group, torch.Tensor) or group.dtype.is_floating_point or group.dtype == torch.bool \
                or tuple(group.shape) != tuple(batch):
            got = f"{tuple(group.shape)} {group.dtype}" if isinstance(group, torch.Tensor) else type(group).__name__
            raise ValueError(f"{where}: `group` must be an int tensor of shape {tuple(batch)} (the batch shape of "
                             f"`x`), got {got}")
        group = group.reshape(-1).long()
        if not torch.compiler.is_compiling() and group.numel() and (int(group.min()) < 0
                                                                    or int(group.max()) >= self.num_groups):
            raise ValueError(f"{where}: `group` values must be in [0, {self.num_groups}), got "
                             f"[{int(group.min())}, {int(group.max())}]")
        return group

    def extra_repr(self) -> str:
        opts = "" if self.output == "grid" else f", output={self.output!r}"
        opts += "" if self.num_groups == 1 else f", num_groups={self.num_groups}"
        opts += "" if self.lin_weight is None else ", linear=True"
        opts += "" if self.input_scale == 1.0 else f", input_scale={self.input_scale:g}"
        opts += "" if self.output_scale == 1.0 else f", output_scale={self.output_scale:g}"
        return f"{self.irreps_in} -> {self.irreps_out}, resolution={self.resolution}{opts}"
