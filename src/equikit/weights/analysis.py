"""The analysis of "Analysis of Linear Mode Connectivity via Permutation-Based Weight
Matching" (Ito, Yamada & Kumagai, 2024): singular values and singular-vector alignment of
every layer before and after matching, and the L2 distance before and after.

A permutation ``W -> P_out W P_in^T`` leaves the singular values of every layer unchanged
and permutes the entries of its singular vectors (``u -> P_out u``, ``v -> P_in v``). The
paper's claims, which :func:`layer_alignment` and :func:`l2_distance` let one test:

1. matching shrinks the L2 distance between two models only a little;
2. it aligns the singular vectors that belong to *large* singular values, the ones that
   carry the function;
3. the straight-through estimator does not align them as much.

Alignment of singular pair ``i`` of A with B (both SVDs sorted by singular value):
``align_i = max_j |<u^A_i, u^B_j>| * |<v^A_i, v^B_j>|`` in ``[0, 1]`` (1: B has the same
rank-one component direction; the max over ``j`` tolerates reordering of close singular
values, the absolute values the sign ambiguity of an SVD).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from equikit.weights.spec import Params, PermutationSpec


def weight_matrix(t: torch.Tensor) -> torch.Tensor:
    """A parameter as a matrix ``(out, in * kernel)`` (linear and conv weights)."""
    return t.reshape(t.shape[0], -1)


def matrix_keys(spec: PermutationSpec, params: Params) -> list[str]:
    """The weight matrices of ``params`` (>= 2 dims, floating): the layers analysed."""
    return [k for k in spec.axes if params[k].ndim >= 2 and params[k].is_floating_point()]


@dataclass
class LayerAlignment:
    """One layer: singular values of A and B (descending) and ``align`` (per singular index
    of A, see the module docstring)."""

    key: str
    sv_a: torch.Tensor
    sv_b: torch.Tensor
    align: torch.Tensor

    def weighted(self) -> float:
        """Singular-value-weighted mean alignment ``sum_i s_i align_i / sum_i s_i``."""
        return float((self.sv_a * self.align).sum() / self.sv_a.sum())

    def top(self, k: int) -> float:
        """Mean alignment of the ``k`` largest singular values."""
        return float(self.align[:k].mean())


def svd_alignment(wa: torch.Tensor, wb: torch.Tensor) -> LayerAlignment:
    """Singular values and singular-vector alignment of two matrices of equal shape.

    Example:
        >>> import torch
        >>> w = torch.randn(6, 4, dtype=torch.float64)
        >>> bool(svd_alignment(w, w).align.min() > 1 - 1e-9)
        True
    """
    if wa.shape != wb.shape:
        raise ValueError(f"svd_alignment: matrices must have equal shapes, got {tuple(wa.shape)} and {tuple(wb.shape)}")
    ua, sa, vha = torch.linalg.svd(wa.double(), full_matrices=False)
    ub, sb, vhb = torch.linalg.svd(wb.double(), full_matrices=False)
    overlap = (ua.T @ ub).abs() * (vha @ vhb.T).abs()
    return LayerAlignment("", sa, sb, overlap.max(dim=1).values)


def layer_alignment(spec: PermutationSpec, params_a: Params, params_b: Params) -> list[LayerAlignment]:
    """:func:`svd_alignment` for every weight matrix in ``spec`` (conv kernels flattened)."""
    spec.check_params(params_a, "params_a", "layer_alignment")
    spec.check_params(params_b, "params_b", "layer_alignment")
    out = []
    for key in matrix_keys(spec, params_a):
        la = svd_alignment(weight_matrix(params_a[key]), weight_matrix(params_b[key]))
        la.key = key
        out.append(la)
    return out


def l2_distance(params_a: Params, params_b: Params) -> float:
    """``||theta_A - theta_B||_2`` over all floating entries."""
    return float(sum(((params_a[k].double() - params_b[k].double()) ** 2).sum()
                     for k in params_a if params_a[k].is_floating_point()) ** 0.5)
