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


def _mix_degrees(z: torch.Tensor, weight: torch.Tensor, group: torch.Tensor | None,
                 ldeg: torch.Tensor) -> torch.Tensor:
    """Per-degree (and per-group) channel mixing of harmonic coefficients.

    ``z (B, C_in, n)`` in ``(channel, lm)`` layout, ``weight (K, D, C_in, C_out)`` for the degrees
    ``l < D``, ``ldeg (n,)`` the degree of each ``lm`` (``n <= D^2``), ``group (B,)`` int in ``[0, K)``
    (None when ``K == 1``); returns ``(B, C_out, n)``: ``out[b, c', lm] = sum_c weight[group_b,
    ldeg[lm], c, c'] z[b, c, lm]``. One batched GEMM over the ``lm`` for all ``K`` groups, then a
    gather (``K`` is small: the elements of a data set).

    >>> w = torch.randn(1, 2, 3, 4)
    >>> z = torch.randn(5, 3, 4)
    >>> out = _mix_degrees(z, w, None, torch.tensor([0, 1, 1, 1]))
    >>> torch.allclose(out[:, :, 1:], torch.einsum("bcm,cd->bdm", z[:, :, 1:], w[0, 1]))
    True
    """
    k, _, c_in, c_out = weight.shape
    b, n = z.shape[0], z.shape[2]
    w = weight.to(z.dtype).permute(1, 2, 0, 3).index_select(0, ldeg)  # (n, C_in, K, C_out)
    y = torch.bmm(z.permute(2, 0, 1), w.reshape(n, c_in, k * c_out))  # (n, B, K C_out)
    if k == 1:
        return y.permute(1, 2, 0)
    y = y.view(n, b, k, c_out).gather(2, group.view(1, b, 1, 1).expand(n, b, 1, c_out))
    return y.squeeze(2).permute(1, 2, 0)


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
        self._grid_cache: dict = {}  # _scaled_grid
        self._fold_cache: dict = {}  # _pre_fold, per `pre` structure
        ldeg = [l for l in range(self.lmax_out + 1) for _ in range(2 * l + 1)]
        self.register_buffer("ldeg_out", torch.tensor(ldeg, dtype=torch.long), persistent=False)
        y, proj = _grid_mats(self.lmax_in, self.lmax_out, self.resolution)
        self.register_buffer("y", y, persistent=False)
        self.register_buffer("proj", proj, persistent=False)
        idx_in = torch.from_numpy(_layout(self.irreps_in, c_in, self.lmax_in))
        self._complete = bool((idx_in < self.irreps_in.dim).all())
        self.register_buffer("idx_in", idx_in, persistent=False)
        out = _layout(self.irreps_out, c_out, self.lmax_out)  # features column -> position in (c, lm)
        inv = np.zeros(self.irreps_out.dim, dtype=np.int64)
        inv[out[out < self.irreps_out.dim]] = np.nonzero(out < self.irreps_out.dim)[0]
        self.register_buffer("idx_out", torch.from_numpy(inv), persistent=False)

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, irreps_in.dim)`` as ``(B, C_in, (L_in+1)^2)`` (channel, lm), zeros for missing degrees."""
        if self._complete:  # every degree present: no zero column to gather from
            return x.index_select(1, self.idx_in).view(x.shape[0], self.c_in, -1)
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
                group: torch.Tensor | None = None, pre: nn.Module | None = None,
                pre_scale: float = 1.0) -> torch.Tensor:
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
        sample uses. ``pre`` (optional): an equivariant :class:`~equikit.nn.Linear` to
        ``irreps_in`` applied to ``x`` first (``x`` is then ``(..., pre.irreps_in.dim)``): the
        result is ``m(pre(x))``. When ``pre`` maps one block per degree (``C' x l -> C x l``, as
        the potential's ``linear_a``), it is folded into the first layer: per degree ``l`` the
        composed ``C' -> hidden[0]`` matrix ``W1 P_l^T`` mixes the harmonic coefficients before the
        grid evaluation, so neither ``pre``'s map of the features nor the first layer at every grid
        point runs (the same function and gradients; fewer multiply-adds when ``G > (L+1)^2``).
        ``pre_scale`` (with ``pre``): a constant factor on ``x`` before ``pre`` (folded too).

        >>> m = SphereGridMLP("2x0e + 2x1o", "2x0e", hidden=(4,))
        >>> m(torch.randn(3, 8), bias=torch.randn(3, 4)).shape
        torch.Size([3, 2])
        """
        fold = None
        if pre is not None:
            fold = self._pre_fold(pre)
            if fold is None:  # not foldable: apply it
                x = pre(x * pre_scale if pre_scale != 1.0 else x)
        dim_in = self.irreps_in.dim if fold is None else pre.irreps_in.dim
        if not isinstance(x, torch.Tensor) or x.ndim == 0 or x.shape[-1] != dim_in:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            irreps = self.irreps_in if fold is None else pre.irreps_in
            raise ValueError(f"SphereGridMLP: `x` must have shape (..., {dim_in}) for irreps "
                             f"'{irreps}', got {got}")
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
        x = x.reshape(-1, x.shape[-1])
        rows = x.shape[0]
        y, proj = self._scaled_grid(x.dtype, x.device)
        if fold is None:
            coeffs = self.coefficients(x)  # (B, C_in, (L_in+1)^2)
            v = self._hidden(coeffs @ y, bias, act)  # (B, width, G): channels before grid points
        else:
            coeffs = None
            v = self._hidden_folded(x, pre, fold, y * pre_scale, bias, act)
        if self.output == "grid":  # the last layer at every grid point, then the projection
            w, b = self.layers[-1].weight.to(v.dtype), self.layers[-1].bias.to(v.dtype)
            z = torch.baddbmm(b.unsqueeze(-1), w.expand(rows, -1, -1), v) @ proj
        else:  # the projection, then the last layer per output degree (and group)
            z = _mix_degrees(v @ proj, self.out_weight, group, self.ldeg_out)
            b0 = (self.out_bias[0] if group is None else self.out_bias[group]) * self.output_scale
            z = z + nn.functional.pad(b0.unsqueeze(-1), (0, z.shape[-1] - 1))
        if self.lin_weight is not None:
            if coeffs is None:
                coeffs = self.coefficients(pre(x * pre_scale))
            d = self.lin_weight.shape[1]
            lin = _mix_degrees(coeffs[:, :, : d * d], self.lin_weight, group, self.ldeg_out[: d * d])  # (B, C_out, d^2)
            lin = lin * (self.input_scale * self.output_scale)
            z = z + nn.functional.pad(lin, (0, z.shape[-1] - d * d))
        return z.reshape(rows, -1).index_select(1, self.idx_out).reshape(*batch, self.irreps_out.dim)

    def _scaled_grid(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_scale y, output_scale proj)`` in ``dtype`` (cached: the buffers are constant)."""
        key = (dtype, device, self.y.data_ptr(), self.proj.data_ptr(), self.input_scale, self.output_scale)
        hit = self._grid_cache.get(key)
        if hit is None or torch.compiler.is_compiling():
            hit = (self.y.to(dtype) * self.input_scale, self.proj.to(dtype) * self.output_scale)
            if not torch.compiler.is_compiling():
                self._grid_cache.clear()
                self._grid_cache[key] = hit
        return hit

    def _hidden(self, f: torch.Tensor, bias: torch.Tensor | None,
                act: Callable[[torch.Tensor], torch.Tensor] | None, first: torch.Tensor | None = None) -> torch.Tensor:
        """The hidden layers at every grid point, in the ``(B, width, G)`` layout (the channel
        mixing is a batched GEMM on the left, no transposes); ``f (B, C_in, G)``, or ``first (B,
        hidden[0], G)``: the first layer's output already computed (:meth:`_hidden_folded`)."""
        n_hidden = len(self.layers) - (self.output == "grid")
        v = f if first is None else first
        rows, dtype = v.shape[0], v.dtype
        for i, layer in enumerate(self.layers[:n_hidden]):
            if i > 0 or first is None:
                shift = layer.bias.to(dtype)
                shift = shift if i > 0 or bias is None else shift + bias
                v = torch.baddbmm(shift.unsqueeze(-1), layer.weight.to(dtype).expand(rows, -1, -1), v)
            # a per-call act sees (B, G, width) as documented: a transposed view, no copy
            v = self.act(v) if act is None else act(v.transpose(1, 2)).transpose(1, 2)
        return v

    def _pre_fold(self, pre: nn.Module) -> tuple | None:
        """For a ``pre`` Linear that maps one ``C' x l`` block to the ``C x l`` block of each degree
        of ``irreps_in`` (and nothing else): ``(idx, ldeg, order, contiguous, C')``, its input layout
        ``(c', lm)`` (as :meth:`coefficients`), the degree of each ``lm``, the path of each degree,
        whether the weights are ``(L+1, C', C)`` in one view, and ``C'``; None when not foldable
        (cached by ``pre``'s irreps and paths)."""
        irreps_in = getattr(pre, "irreps_in", None)
        if getattr(pre, "irreps_out", None) != self.irreps_in or not hasattr(pre, "descriptor"):
            raise ValueError(f"SphereGridMLP: `pre` must be an equikit Linear to irreps_in '{self.irreps_in}', "
                             f"got {type(pre).__name__} to {getattr(pre, 'irreps_out', None)}")
        key = (irreps_in, tuple((p.i1, p.i_out) for p in pre.descriptor.paths), self.idx_in.device)
        if key in self._fold_cache:
            return self._fold_cache[key]
        fold = None
        try:
            src, c_src, lmax = _function_irreps(irreps_in, "pre.irreps_in", "SphereGridMLP")
        except ValueError:
            src = None
        paths = pre.descriptor.paths
        n_hidden = len(self.layers) - (self.output == "grid")
        if src is not None and n_hidden > 0 and lmax == self.lmax_in and len(src) == len(self.irreps_in) == len(paths):
            by_l = {src[p.i1].ir.l: k for k, p in enumerate(paths) if src[p.i1].ir == self.irreps_in[p.i_out].ir}
            if sorted(by_l) == sorted(ir.l for _, ir in self.irreps_in):
                order = [by_l[l] for l in range(lmax + 1)] if len(by_l) == lmax + 1 else None
                if order is not None:
                    sl = list(pre.descriptor.weight_slices())
                    coefs = {float(pre.descriptor.coefficient(k)) for k in range(len(paths))}
                    contiguous = (order == list(range(len(order))) and len(coefs) == 1
                                  and all(sl[k].start == k * c_src * self.c_in for k in order))
                    idx = torch.from_numpy(_layout(src, c_src, lmax)).to(self.idx_in.device)
                    ldeg = torch.tensor([l for l in range(lmax + 1) for _ in range(2 * l + 1)], device=idx.device)
                    fold = (idx, ldeg, order, contiguous, c_src)
        self._fold_cache[key] = fold
        return fold

    def _hidden_folded(self, x: torch.Tensor, pre: nn.Module, fold: tuple, y: torch.Tensor,
                       bias: torch.Tensor | None, act: Any) -> torch.Tensor:
        """:meth:`_hidden` of ``pre(x)`` with ``pre``'s per-degree maps ``P_l (C', C)`` folded into the
        first layer ``W1 (H, C)``: ``z[h, lm] = sum_c' (W1 P_l^T)[h, c'] x[c', lm]``, then the grid."""
        idx, ldeg, order, contiguous, c_src = fold
        d, rows = pre.descriptor, x.shape[0]
        if contiguous:
            p = pre.weight.to(x.dtype).view(len(order), c_src, self.c_in) * d.coefficient(0)
        else:
            sl = list(d.weight_slices())
            p = torch.stack([pre.weight[sl[k]].to(x.dtype).view(c_src, self.c_in) * d.coefficient(k) for k in order])
        first = self.layers[0]
        v_l = torch.matmul(first.weight.to(x.dtype), p.transpose(1, 2))  # (L+1, H, C')
        coeffs = x.index_select(1, idx).view(rows, c_src, -1)  # (B, C', (L+1)^2)
        z = torch.bmm(coeffs.permute(2, 0, 1), v_l.index_select(0, ldeg).transpose(1, 2))  # ((L+1)^2, B, H)
        shift = first.bias.to(x.dtype) if bias is None else first.bias.to(x.dtype) + bias
        first_out = torch.baddbmm(shift.unsqueeze(-1), z.permute(1, 2, 0), y.expand(rows, -1, -1))  # (B, H, G)
        return self._hidden(None, None, act, first=first_out)

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
