r"""Higher-order permutation-equivariant layers on dense padded graphs.

Order-1 tensors are node features ``(B, n, C)``, order-2 tensors pair features
``(B, n, n, C)`` (adjacency, edge features, channels last); ``mask (B, n)`` marks real nodes
(padding may sit anywhere, e.g. after a node permutation). A permutation ``P`` of the ``n``
slots acts by ``x -> P x`` and ``X -> P X P^T`` on every channel.

:class:`PermutationLinear` is the most general linear equivariant map between orders 1 and 2
(Maron et al. 2019, "Invariant and equivariant graph networks"): its basis has
``Bell(k + l)`` elements for ``k -> l`` (1->1: 2, 1->2: 5, 2->1: 5, 2->2: 15) plus ``Bell(l)``
biases, verified in the tests against the dimension of the solution space of
``L (P ⊗ P) = (P ⊗ P) L`` solved numerically for ``n = 4``.

:class:`PPGNBlock` is the block of "Provably powerful graph networks" (Maron et al. 2019):
two channelwise MLPs whose outputs are multiplied as matrices per channel, then merged with
the input; as expressive as 3-WL on graphs. :func:`pool_order2` is the invariant readout.

Everything is exactly equivariant up to float rounding of sums and matrix products.
"""

from __future__ import annotations

import torch
from torch import nn

from equikit._utils.validate import check_int
from equikit.nn._mlp import make_mlp

__all__ = ["PPGNBlock", "PermutationLinear", "dense_pair_mask", "pool_order2"]


def _check_dense(x, mask, order, where, channels=None):
    want = "(B, n, C)" if order == 1 else "(B, n, n, C)"
    ndim = 3 if order == 1 else 4
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != ndim \
            or (order == 2 and x.shape[1] != x.shape[2]):
        raise ValueError(f"{where}: order-{order} input must be a floating tensor {want}, got "
                         f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
    if channels is not None and x.shape[-1] != channels:
        raise ValueError(f"{where}: input must have {channels} channels (last dim), got {x.shape[-1]}")
    if mask is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    if not isinstance(mask, torch.Tensor) or mask.shape != x.shape[:2]:
        raise ValueError(f"{where}: `mask` must be (B, n) = {tuple(x.shape[:2])}, got "
                         f"{tuple(getattr(mask, 'shape', ()))}")
    return mask.bool()


def dense_pair_mask(mask: torch.Tensor) -> torch.Tensor:
    """``(B, n)`` node mask -> ``(B, n, n)`` pair mask ``m_i & m_j``."""
    return mask.unsqueeze(2) & mask.unsqueeze(1)


def pool_order2(x: torch.Tensor, mask: torch.Tensor | None = None, normalize: bool = False) -> torch.Tensor:
    r"""Invariant readout of pair features: ``[sum_i X_ii, sum_{i != j} X_ij]`` per channel,
    ``(B, n, n, C) -> (B, 2C)`` (the ``Bell(2) = 2`` invariant linear maps); ``normalize``
    divides by ``n`` and ``n (n - 1)``.

    Example:
        >>> import torch
        >>> from equikit.nn import pool_order2
        >>> pool_order2(torch.ones(1, 3, 3, 1)).tolist()
        [[3.0, 6.0]]
    """
    mask = _check_dense(x, mask, 2, "pool_order2")
    x = x * dense_pair_mask(mask).unsqueeze(-1).to(x.dtype)
    diag = x.diagonal(dim1=1, dim2=2).sum(-1)
    off = x.sum((1, 2)) - diag
    if normalize:
        n = mask.sum(1, keepdim=True).to(x.dtype)
        diag, off = diag / n.clamp(min=1), off / (n * (n - 1)).clamp(min=1)
    return torch.cat([diag, off], -1)


def _pieces(x: torch.Tensor, mask: torch.Tensor, order: int, normalize: bool):
    """Split an order-1/2 input into pair-, node- and graph-level invariant pieces, stacked
    on a last dim: pair ``(B, n, n, C, 2)`` [X, X^T], node ``(B, n, C, k1)``, graph
    ``(B, C, k0)``. Sums run over real nodes; ``normalize`` divides a sum over ``n`` indices
    by ``n`` (``n^2`` for a double sum)."""
    m = mask.to(x.dtype)
    n = m.sum(1).clamp(min=1).view(-1, 1) if normalize else None  # (B, 1)
    if order == 1:
        x = x * m.unsqueeze(-1)
        total = x.sum(1)
        if normalize:
            total = total / n
        return None, x.unsqueeze(-1), total.unsqueeze(-1)
    x = x * dense_pair_mask(mask).unsqueeze(-1).to(x.dtype)
    diag = x.diagonal(dim1=1, dim2=2).transpose(1, 2)  # (B, n, C)
    rows, cols = x.sum(2), x.sum(1)  # sum_k X_ik, sum_k X_ki
    trace, total = diag.sum(1), x.sum((1, 2))
    if normalize:
        rows, cols, trace, total = rows / n[:, :, None], cols / n[:, :, None], trace / n, total / n**2
    pair = torch.stack([x, x.transpose(1, 2)], -1)
    return pair, torch.stack([diag, rows, cols], -1), torch.stack([trace, total], -1)


class PermutationLinear(nn.Module):
    r"""The general permutation-equivariant linear map from order ``in_order`` to order
    ``out_order`` (each 1 or 2), channels mixed by a weight per basis element
    (Maron et al. 2019).

    The input is reduced to invariant pieces: pair-level ``X_ij, X_ji``; node-level
    ``X_ii, sum_k X_ik, sum_k X_ki`` (order 2) or ``x_i`` (order 1); graph-level
    ``sum_k X_kk, sum_kl X_kl`` (order 2) or ``sum_k x_k`` (order 1). Each piece is placed in
    the output in every equivariant way: a pair piece as ``Y_ij``; a node piece ``v`` as
    ``Y_ij = delta_ij v_i``, ``v_i`` or ``v_j`` (order 2) or ``y_i = v_i`` (order 1); a graph
    piece ``c`` as ``delta_ij c`` or ``c`` (order 2) or ``y_i = c`` (order 1). This gives
    ``2 + 3*3 + 2*2 = 15`` (2->2), ``3 + 2 = 5`` (2->1), ``3 + 2 = 5`` (1->2) and ``2`` (1->1)
    basis elements: ``Bell(in_order + out_order)``. The bias has ``Bell(out_order)`` terms
    (``delta_ij b_1 + b_2`` or ``b``). With ``normalize`` sums are means over the real nodes
    (still linear and equivariant for a fixed graph size).

    Shapes: ``x (B, n, C_in)`` or ``(B, n, n, C_in)``, ``mask (B, n)`` -> ``(B, n, C_out)`` or
    ``(B, n, n, C_out)``, zero at padding.

    Example:
        >>> import torch
        >>> from equikit.nn import PermutationLinear
        >>> layer = PermutationLinear(1, 1, in_order=2, out_order=2, bias=False)
        >>> layer.weight.numel(), layer(torch.randn(2, 4, 4, 1)).shape
        (15, torch.Size([2, 4, 4, 1]))
    """

    def __init__(self, in_channels: int, out_channels: int, *, in_order: int = 2, out_order: int = 2,
                 bias: bool = True, normalize: bool = True) -> None:
        super().__init__()
        check_int(in_channels, "in_channels", "PermutationLinear", minimum=1)
        check_int(out_channels, "out_channels", "PermutationLinear", minimum=1)
        for name, o in (("in_order", in_order), ("out_order", out_order)):
            if o not in (1, 2) or isinstance(o, bool):
                raise ValueError(f"PermutationLinear: `{name}` must be 1 or 2, got {o!r}")
        self.in_channels, self.in_order, self.out_order, self.normalize = \
            in_channels, in_order, out_order, normalize
        n_pair = 2 if in_order == 2 else 0
        n_node = 3 if in_order == 2 else 1
        n_graph = 2 if in_order == 2 else 1
        # placements: pair -> pair (1); node -> diag/row/col (3) or node (1); graph -> diag/all (2) or node (1)
        self.layout = (n_pair if out_order == 2 else 0,
                       n_node * (3 if out_order == 2 else 1),
                       n_graph * (2 if out_order == 2 else 1))
        n_basis = sum(self.layout)
        self.weight = nn.Parameter(torch.randn(n_basis, in_channels, out_channels) / (n_basis * in_channels) ** 0.5)
        self.bias = nn.Parameter(torch.zeros(out_order, out_channels)) if bias else None

    @property
    def num_basis(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = _check_dense(x, mask, self.in_order, "PermutationLinear", self.in_channels)
        pair, node, graph = _pieces(x, mask, self.in_order, self.normalize)
        w = self.weight.to(x.dtype)
        a, b, _ = self.layout
        w_pair, w_node, w_graph = w[:a], w[a : a + b], w[a + b :]
        if self.out_order == 1:
            out = torch.einsum("bnck,kcd->bnd", node, w_node)
            out = out + torch.einsum("bck,kcd->bd", graph, w_graph).unsqueeze(1)
            if self.bias is not None:
                out = out + self.bias[0].to(x.dtype)
            return out * mask.unsqueeze(-1).to(x.dtype)
        k1, k0 = node.shape[-1], graph.shape[-1]
        wn = w_node.view(k1, 3, *w.shape[1:])
        wg = w_graph.view(k0, 2, *w.shape[1:])
        on_diag = torch.einsum("bnck,kcd->bnd", node, wn[:, 0])  # delta_ij v_i
        on_rows = torch.einsum("bnck,kcd->bnd", node, wn[:, 1])  # v_i
        on_cols = torch.einsum("bnck,kcd->bnd", node, wn[:, 2])  # v_j
        g_diag = torch.einsum("bck,kcd->bd", graph, wg[:, 0])
        g_all = torch.einsum("bck,kcd->bd", graph, wg[:, 1])
        if self.bias is not None:
            g_diag = g_diag + self.bias[0].to(x.dtype)
            g_all = g_all + self.bias[1].to(x.dtype)
        out = on_rows.unsqueeze(2) + on_cols.unsqueeze(1) + g_all[:, None, None, :]
        if pair is not None:
            out = out + torch.einsum("bijck,kcd->bijd", pair, w_pair)
        diag = on_diag + g_diag.unsqueeze(1)
        out = out + torch.diag_embed(diag.transpose(1, 2)).permute(0, 2, 3, 1)
        return out * dense_pair_mask(mask).unsqueeze(-1).to(x.dtype)


class PPGNBlock(nn.Module):
    r"""A block of Provably Powerful Graph Networks (Maron et al. 2019):

    .. math::
        M^{(c)} = m_1(X)^{(c)}\, m_2(X)^{(c)} \;(\text{matrix product per channel } c), \qquad
        Y = m_3([X, M])

    with ``m_1, m_2, m_3`` MLPs on the channel dim (applied to every pair ``(i, j)``). Padded
    pairs are zeroed before the product, so it runs over real nodes only; ``normalize``
    divides the product by the number of real nodes (keeps scales bounded on large graphs).

    Shapes: ``X (B, n, n, C_in)``, ``mask (B, n)`` -> ``(B, n, n, C_out)``, zero at padding.

    Example:
        >>> import torch
        >>> from equikit.nn import PPGNBlock
        >>> PPGNBlock(3, 8)(torch.randn(2, 5, 5, 3)).shape
        torch.Size([2, 5, 5, 8])
    """

    def __init__(self, in_channels: int, out_channels: int, *, hidden: int | None = None,
                 depth: int = 2, normalize: bool = True, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        check_int(in_channels, "in_channels", "PPGNBlock", minimum=1)
        check_int(out_channels, "out_channels", "PPGNBlock", minimum=1)
        check_int(depth, "depth", "PPGNBlock", minimum=1)
        hidden = hidden or out_channels
        self.in_channels, self.normalize = in_channels, normalize
        sizes = [in_channels] + [hidden] * depth
        self.m1 = make_mlp(sizes, act, last_act=True)
        self.m2 = make_mlp(sizes, act, last_act=True)
        self.m3 = make_mlp([in_channels + hidden, hidden, out_channels], act)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = _check_dense(x, mask, 2, "PPGNBlock", self.in_channels)
        pm = dense_pair_mask(mask).unsqueeze(-1).to(x.dtype)
        a = (self.m1(x) * pm).permute(0, 3, 1, 2)  # (B, C, n, n)
        b = (self.m2(x) * pm).permute(0, 3, 1, 2)
        prod = (a @ b).permute(0, 2, 3, 1)
        if self.normalize:
            prod = prod / mask.sum(1).clamp(min=1).to(x.dtype).view(-1, 1, 1, 1)
        return self.m3(torch.cat([x, prod], -1)) * pm
