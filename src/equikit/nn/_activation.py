"""Equivariant nonlinearities: :class:`Gate` and :class:`NormActivation`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from equikit.o3 import Irreps


def _parity(act: Callable[[torch.Tensor], torch.Tensor]) -> int:
    """+1 even, -1 odd, 0 neither (tested on a grid)."""
    t = torch.linspace(0.1, 3.0, 31, dtype=torch.float64)
    a, b = act(t), act(-t)
    if torch.allclose(a, b, atol=1e-10):
        return 1
    if torch.allclose(a, -b, atol=1e-10):
        return -1
    return 0


def _check_x(x: Any, irreps: Irreps, where: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim == 0 or x.shape[-1] != irreps.dim:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{where}: `x` must have shape (..., {irreps.dim}) for irreps '{irreps}', got {got}")


class Gate(nn.Module):
    r"""Gate nonlinearity: scalars through ``act``, every non-scalar irrep copy scaled by its own
    activated ``0e`` gate.

    .. math:: [s, g, v] \mapsto [\,\sigma(s),\; \sigma_g(g_i)\, v_i\,]

    Input irreps: ``irreps_scalars + (n x 0e gates) + irreps_gated`` with ``n =
    irreps_gated.num_irreps``; output irreps: ``irreps_scalars + irreps_gated``. ``0o`` scalars
    need an odd ``act`` (e.g. ``tanh``), else the output would not transform as ``0o``.

    Shapes: ``(..., irreps_in.dim) -> (..., irreps_out.dim)``.

    >>> gate = Gate("4x0e", "2x1o + 1x2e")
    >>> str(gate.irreps_in), str(gate.irreps_out)
    ('4x0e+3x0e+2x1o+1x2e', '4x0e+2x1o+1x2e')
    >>> gate(torch.randn(6, 18)).shape
    torch.Size([6, 15])
    """

    def __init__(self, irreps_scalars: Any, irreps_gated: Any,
                 act: Callable[[torch.Tensor], torch.Tensor] = torch.nn.functional.silu,
                 act_gates: Callable[[torch.Tensor], torch.Tensor] = torch.sigmoid) -> None:
        super().__init__()
        self.irreps_scalars, self.irreps_gated = Irreps(irreps_scalars), Irreps(irreps_gated)
        if any(m.ir.l != 0 for m in self.irreps_scalars):
            raise ValueError(f"Gate: `irreps_scalars` must contain only l = 0 irreps, got '{self.irreps_scalars}'")
        if any(m.ir.l == 0 for m in self.irreps_gated):
            raise ValueError(
                f"Gate: `irreps_gated` must contain only l > 0 irreps (put scalars in `irreps_scalars`), "
                f"got '{self.irreps_gated}'"
            )
        if any(m.ir.p == -1 for m in self.irreps_scalars) and _parity(act) != -1:
            raise ValueError("Gate: `irreps_scalars` has 0o irreps, so `act` must be odd (e.g. torch.tanh)")
        self.act, self.act_gates = act, act_gates
        n = self.irreps_gated.num_irreps
        self.irreps_in = self.irreps_scalars + Irreps(f"{n}x0e" if n else "") + self.irreps_gated
        self.irreps_out = self.irreps_scalars + self.irreps_gated

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_x(x, self.irreps_in, "Gate")
        ns, ng = self.irreps_scalars.dim, self.irreps_gated.num_irreps
        s, g, v = x[..., :ns], x[..., ns : ns + ng], x[..., ns + ng :]
        g = self.act_gates(g)
        out, i, start = [self.act(s)], 0, 0
        for mul, ir in self.irreps_gated:
            blk = v[..., start : start + mul * ir.dim].unflatten(-1, (mul, ir.dim))
            out.append((blk * g[..., i : i + mul, None]).flatten(-2))
            i, start = i + mul, start + mul * ir.dim
        return torch.cat(out, dim=-1)


class NormActivation(nn.Module):
    r"""Scale every irrep copy by an activated function of its norm:

    .. math:: x_u \mapsto x_u \, \sigma(\lVert x_u \rVert + b_u)

    Equivariant for any ``act``: the norm is O(3)-invariant. ``b`` is a learnable bias per copy
    (``bias=True``, initialised to 0). The norm is ``sqrt(|x|^2 + eps^2)``, smooth at 0.

    Shapes: ``(..., irreps.dim) -> (..., irreps.dim)``.

    >>> m = NormActivation("2x0e + 3x1o")
    >>> m(torch.randn(4, 11)).shape
    torch.Size([4, 11])
    """

    def __init__(self, irreps: Any, act: Callable[[torch.Tensor], torch.Tensor] = torch.sigmoid, *,
                 bias: bool = True, eps: float = 1e-8) -> None:
        super().__init__()
        self.irreps = Irreps(irreps)
        self.act, self.eps = act, float(eps)
        self.bias = nn.Parameter(torch.zeros(self.irreps.num_irreps)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_x(x, self.irreps, "NormActivation")
        out, i, start = [], 0, 0
        for mul, ir in self.irreps:
            blk = x[..., start : start + mul * ir.dim].unflatten(-1, (mul, ir.dim))
            norm = (blk.pow(2).sum(-1) + self.eps**2).sqrt()
            if self.bias is not None:
                norm = norm + self.bias[i : i + mul].to(x.dtype)
            out.append((blk * self.act(norm)[..., None]).flatten(-2))
            i, start = i + mul, start + mul * ir.dim
        return torch.cat(out, dim=-1) if out else x
