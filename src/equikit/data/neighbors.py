"""Radius graphs of atomic structures with periodic boundary conditions, in pure torch.

A pair ``(i, j, S)`` is an edge when ``|pos[j] - pos[i] + S @ cell| < cutoff`` (strictly, as
ASE): ``i`` is the centre atom, ``j`` the neighbour, and ``S`` the integer image of ``j`` (a
row vector, so ``S @ cell = S_0 a_0 + S_1 a_1 + S_2 a_2`` with the lattice vectors as the
rows of ``cell``, ASE's convention). ``S`` is zero along non-periodic directions. With
``self_interaction=False`` only ``(i, i, 0)`` is left out: an atom's own periodic images
are neighbours when they are closer than the cutoff (cells smaller than the cutoff).

Conventions (DESIGN §4): ``edge_index[0] = j`` (the neighbour, where the message comes
from), ``edge_index[1] = i`` (the centre, which receives it); messages flow
``edge_index[0] -> edge_index[1]``; ``vectors = pos[j] - pos[i] + shifts @ cell`` point from
the centre to the neighbour's image. The edge set is symmetric: ``(i, j, S)`` is an edge iff
``(j, i, -S)`` is.

Algorithm (all vectorised, no Python loop over atoms or structures):

1. Periodic coordinates are wrapped into the cell; the integer offsets are remembered so
   that the returned shifts refer to the positions as given.
2. Each atom gets the images ``S`` with ``|S_k| <= floor(cutoff / d_k) + 1`` along each
   periodic direction ``k`` (``d_k``: the spacing of the lattice planes), kept when the
   image lies within ``cutoff`` of the cell along ``k`` (in fractional coordinates). Cells
   smaller than twice the cutoff simply get more images.
3. Centres and images are sorted into cubic bins of edge ``cutoff / 2`` per structure
   (hash keys, so empty space costs nothing); each centre scans the 5 x 5 x 5 bins around
   it, read as 25 contiguous runs of the sorted keys. Cost O(N) at fixed density. For
   small systems (``method="brute"``, or ``"auto"`` below ~16k candidate pairs) every
   image of the structure is a candidate instead.
4. The scan over candidates runs in a small C kernel (compiled on first use with OpenMP over
   centres, :func:`equikit._utils.native.load_library`) or, without a compiler or with
   ``EQUIKIT_NO_NATIVE=1``, in PyTorch (chunked); both give the same edges in the same order.

The search runs in float64 whatever the input dtype, so the edge set is the set of the
given (rounded) positions, identical for float32 and float64 inputs up to that rounding.
The returned ``vectors`` are recomputed from ``pos`` and ``cell`` with autograd, so
gradients reach positions (forces) and the cell (stress through the strain derivative).
"""

from __future__ import annotations

import ctypes
import functools
import math
from pathlib import Path
from typing import NamedTuple

import torch

from equikit._utils import check_tensor
from equikit._utils.native import load_library

__all__ = ["Neighbors", "edge_vectors", "radius_graph"]

#: bins per cutoff length: 2 means bins of edge cutoff/2 and a 5x5x5 stencil
_BINS_PER_CUTOFF = 2
#: "auto" uses brute force up to this many candidate (centre, image) pairs
_BRUTE_LIMIT = 1 << 14
#: candidate pairs examined at once (bounds the memory of large systems)
_CHUNK_PAIRS = 1 << 22


class Neighbors(NamedTuple):
    """The edges of a radius graph (see :func:`radius_graph`).

    Shapes: ``edge_index (2, E)`` int64 ``[j, i]`` (neighbour, centre); ``shifts (E, 3)``
    int64 image of ``j``; ``vectors (E, 3)`` ``pos[j] - pos[i] + shifts @ cell`` in the
    dtype of ``pos``.
    """

    edge_index: torch.Tensor
    shifts: torch.Tensor
    vectors: torch.Tensor


# --------------------------------------------------------------------------- validation
def _check_cutoff(cutoff, where: str) -> float:
    if isinstance(cutoff, torch.Tensor) and cutoff.numel() == 1:
        cutoff = float(cutoff)
    if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)):
        raise TypeError(f"{where}: `cutoff` must be a number (Angstrom), got {type(cutoff).__name__}")
    if not (math.isfinite(cutoff) and cutoff > 0):
        raise ValueError(f"{where}: `cutoff` must be a finite number > 0 (Angstrom), got {cutoff}")
    return float(cutoff)


def _check_batch(batch, n: int, device, where: str) -> torch.Tensor:
    if batch is None:
        return torch.zeros(n, dtype=torch.long, device=device)
    check_tensor(batch, "batch", where, integer=True)
    if batch.shape != (n,):
        raise ValueError(f"{where}: `batch` must have shape (N,) = ({n},) like pos, got {tuple(batch.shape)}")
    if n and int(batch.min()) < 0:
        raise ValueError(f"{where}: `batch` must hold structure ids >= 0, got min {int(batch.min())}")
    return batch.long()


def _check_cell_pbc(cell, pbc, n_struct: int, pos: torch.Tensor, where: str):
    """Return ``cell (B, 3, 3)`` (``pos``'s dtype, or ``None``) and ``pbc (B, 3)`` bool."""
    if cell is not None:
        check_tensor(cell, "cell", where, floating=True)
        if cell.shape == (3, 3):
            cell = cell.expand(n_struct, 3, 3)
        elif cell.ndim != 3 or cell.shape[1:] != (3, 3):
            raise ValueError(
                f"{where}: `cell` must have shape (3, 3) or (B, 3, 3) (lattice vectors as rows), "
                f"got {tuple(cell.shape)}"
            )
        elif cell.shape[0] != n_struct:
            raise ValueError(
                f"{where}: `cell` holds {cell.shape[0]} cells but `batch` names {n_struct} structures; "
                f"pass one (3, 3) cell per structure"
            )
        if cell.dtype != pos.dtype:
            raise TypeError(f"{where}: `cell` must have the dtype of `pos` ({pos.dtype}), got {cell.dtype}")
        if not torch.isfinite(cell).all():
            raise ValueError(f"{where}: `cell` contains NaN or inf")
    if pbc is None:
        flags = torch.full((n_struct, 3), cell is not None, dtype=torch.bool, device=pos.device)
    else:
        flags = torch.as_tensor(pbc, device=pos.device)
        if flags.dtype != torch.bool:
            raise TypeError(f"{where}: `pbc` must be bools (3,) or (B, 3), got dtype {flags.dtype}")
        if flags.ndim == 0:
            flags = flags.expand(3)
        if flags.shape == (3,):
            flags = flags.expand(n_struct, 3)
        if flags.shape != (n_struct, 3):
            raise ValueError(
                f"{where}: `pbc` must have shape (3,) or (B, 3) = ({n_struct}, 3), got {tuple(flags.shape)}"
            )
    if cell is None and bool(flags.any()):
        raise ValueError(f"{where}: `pbc` is True along some direction but no `cell` was given; pass cell=")
    return cell, flags


def _search_cell(cell: torch.Tensor | None, pbc: torch.Tensor, where: str) -> torch.Tensor:
    """A float64 cell whose periodic rows are the given lattice vectors and whose
    non-periodic rows are an orthonormal basis of their complement (those rows never shift,
    so any choice is exact; this one is never singular). Raises if the periodic rows are
    linearly dependent."""
    n_struct = pbc.shape[0]
    eye = torch.eye(3, dtype=torch.float64, device=pbc.device)
    if cell is None or not bool(pbc.any()):
        return eye.expand(n_struct, 3, 3).clone()
    out = cell.detach().to(torch.float64).clone()
    norms = out.norm(dim=2)
    gram = out @ out.transpose(1, 2)
    sub = torch.where(pbc[:, :, None] & pbc[:, None, :], gram, eye)
    scale = torch.where(pbc, norms**2, torch.ones_like(norms)).prod(1)
    bad = (torch.linalg.det(sub) <= 1e-12 * scale) | ((norms == 0) & pbc).any(1)
    if bool(bad.any()):
        b = int(torch.nonzero(bad)[0])
        raise ValueError(
            f"{where}: the periodic lattice vectors of structure {b} are linearly dependent (singular "
            f"cell {cell[b].tolist()} with pbc {pbc[b].tolist()}); give independent rows or set pbc "
            f"False along the degenerate direction"
        )
    if bool(pbc.all()):
        return out  # fully periodic: the cell itself (the common case, no QR)
    # QR of the periodic rows (moved first, non-periodic rows zeroed): Q is orthogonal and its
    # first n_per columns span the periodic rows, the others their orthogonal complement
    order = torch.argsort((~pbc).to(torch.int8), dim=1, stable=True)
    rows = torch.gather(out, 1, order[..., None].expand(-1, -1, 3))
    rows = rows * torch.gather(pbc, 1, order)[..., None].to(torch.float64)
    q, _ = torch.linalg.qr(rows.transpose(1, 2))
    n_per = pbc.sum(1)
    complement = q.transpose(1, 2)  # rows: orthonormal, the first n_per span the periodic rows
    for k in range(3):
        # non-periodic row k gets the (n_per + rank among non-periodic rows)-th basis vector
        rank = (~pbc[:, :k]).sum(1)
        pick = torch.gather(complement, 1, (n_per + rank).clamp(max=2)[:, None, None].expand(-1, 1, 3))[:, 0]
        out[:, k] = torch.where(pbc[:, k, None], out[:, k], pick)
    return out


# --------------------------------------------------------------------------- helpers
def _expand_ranges(starts: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For ranges ``[starts[k], starts[k] + counts[k])`` return ``(owner, index)``: the range
    of each element and the element, concatenated in order."""
    owner = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    first = torch.cumsum(counts, 0) - counts
    index = torch.arange(int(counts.sum()), device=counts.device) - first[owner] + starts[owner]
    return owner, index


def _images(pos_w, frac, batch, pbc, ranges, cell, cutoff_frac):
    """Periodic images of the wrapped atoms within ``cutoff`` of their cell.

    Returns ``atom (G,)``, ``shift (G, 3)`` int64 and ``xyz (G, 3)`` float64."""
    width = 2 * ranges + 1  # (B, 3)
    per_atom = width.prod(1)[batch]
    atom, local = _expand_ranges(torch.zeros_like(per_atom), per_atom)
    w = width[batch[atom]]
    r = ranges[batch[atom]]
    s2 = local % w[:, 2]
    s1 = (local // w[:, 2]) % w[:, 1]
    s0 = local // (w[:, 2] * w[:, 1])
    shift = torch.stack([s0, s1, s2], dim=1) - r
    f = frac[atom] + shift.to(torch.float64)
    lim = cutoff_frac[batch[atom]]
    keep = (((f >= -lim) & (f <= 1 + lim)) | ~pbc[batch[atom]]).all(1)
    atom, shift = atom[keep], shift[keep]
    xyz = pos_w[atom] + torch.einsum("gk,gkd->gd", shift.to(torch.float64), cell[batch[atom]])
    return atom, shift, xyz


class _Bins(NamedTuple):
    """Images sorted by bin key, and each centre's bin: what both scans need."""

    order: torch.Tensor  # (G,) image ids sorted by key
    keys: torch.Tensor  # (G,) sorted keys
    centre_bin: torch.Tensor  # (C, 3)
    centre_b: torch.Tensor  # (C,)
    extent: torch.Tensor  # (3,) global bins per direction
    k: int  # stencil half-width in bins


def _binning(centre_xyz, centre_b, img_xyz, img_b, cutoff: float, brute: bool) -> _Bins:
    """Hash centres and images into cubic bins of edge ``cutoff / k`` per structure (key:
    structure, z, y, x bin; x fastest). Brute force is one bin per structure."""
    if brute:
        order = torch.argsort(img_b, stable=True)
        ones = torch.ones(3, dtype=torch.long, device=img_b.device)
        zero_bins = torch.zeros(len(centre_b), 3, dtype=torch.long, device=img_b.device)
        return _Bins(order, img_b[order], zero_bins, centre_b, ones, 0)
    k = _BINS_PER_CUTOFF
    size = cutoff / k
    n_struct = int(torch.maximum(centre_b.max(), img_b.max())) + 1
    lo_xyz = torch.full((n_struct, 3), math.inf, dtype=torch.float64, device=img_xyz.device)
    lo_xyz = lo_xyz.scatter_reduce(0, img_b[:, None].expand(-1, 3), img_xyz, "amin")
    lo_xyz = lo_xyz.scatter_reduce(0, centre_b[:, None].expand(-1, 3), centre_xyz, "amin")
    bin_img = torch.floor((img_xyz - lo_xyz[img_b]) / size).long()
    bin_c = torch.floor((centre_xyz - lo_xyz[centre_b]) / size).long()
    nb = torch.maximum(bin_img.max(0).values, bin_c.max(0).values) + 1
    key = ((img_b * nb[2] + bin_img[:, 2]) * nb[1] + bin_img[:, 1]) * nb[0] + bin_img[:, 0]
    order = torch.argsort(key)
    return _Bins(order, key[order], bin_c, centre_b, nb, k)


def _candidates(bins: _Bins):
    """For each centre, the ``(starts, counts)`` of the ``(2k + 1)^2`` runs of sorted keys
    (x-rows of the stencil) that may hold its neighbours."""
    k, nb, bin_c = bins.k, bins.extent, bins.centre_bin
    offsets = torch.arange(-k, k + 1, device=bin_c.device)
    dy, dz = torch.meshgrid(offsets, offsets, indexing="ij")
    dy, dz = dy.reshape(-1), dz.reshape(-1)  # (R,) runs along x
    by = bin_c[:, 1:2] + dy  # (C, R)
    bz = bin_c[:, 2:3] + dz
    x_lo = (bin_c[:, 0:1] - k).clamp(min=0).expand_as(by)
    x_hi = (bin_c[:, 0:1] + k).clamp(max=int(nb[0]) - 1).expand_as(by)
    valid = (by >= 0) & (by < nb[1]) & (bz >= 0) & (bz < nb[2])
    base = ((bins.centre_b[:, None] * nb[2] + bz.clamp(0, int(nb[2]) - 1)) * nb[1]
            + by.clamp(0, int(nb[1]) - 1)) * nb[0]
    lo = torch.searchsorted(bins.keys, base + x_lo, right=False)
    hi = torch.searchsorted(bins.keys, base + x_hi, right=True)
    counts = torch.where(valid, hi - lo, torch.zeros_like(lo))
    return lo, counts


def _pairs_native(lib, bins: _Bins, centre_xyz, img_xyz, cutoff: float):
    """The candidate scan in C (same arithmetic as :func:`_pairs`); two passes, count then
    fill, parallel over centres with torch's intra-op thread count."""
    gxyz = img_xyz[bins.order].contiguous()
    cxyz = centre_xyz.contiguous()
    cbin = bins.centre_bin.contiguous()
    cb = bins.centre_b.contiguous()
    keys = bins.keys.contiguous()
    nb = bins.extent.contiguous()
    n_c, n_g = len(cb), len(keys)
    threads = torch.get_num_threads()
    args = (n_c, cxyz.data_ptr(), cbin.data_ptr(), cb.data_ptr(), keys.data_ptr(), gxyz.data_ptr(), n_g,
            nb.data_ptr(), bins.k, cutoff * cutoff)
    counts = torch.empty(n_c, dtype=torch.long)
    lib.eq_nl_count(*args, counts.data_ptr(), threads)
    offsets = torch.cumsum(counts, 0) - counts
    out = torch.empty(int(counts.sum()), dtype=torch.long)
    lib.eq_nl_fill(*args, offsets.data_ptr(), out.data_ptr(), threads)
    centre = torch.repeat_interleave(torch.arange(n_c), counts)
    return centre, bins.order[out]


@functools.cache
def _native():
    """The C scan (compiled on first use), or ``None``: no compiler, or ``EQUIKIT_NO_NATIVE``."""
    lib = load_library(Path(__file__).with_name("_neighbors_kernel.c"), "data")
    if lib is None:
        return None
    p, i64, f64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int
    common = [i64, p, p, p, p, p, i64, p, i64, f64]
    lib.eq_nl_count.argtypes = [*common, p, i32]
    lib.eq_nl_fill.argtypes = [*common, p, p, i32]
    lib.eq_nl_count.restype = lib.eq_nl_fill.restype = None
    return lib


def _pairs(bins: _Bins, centre_xyz, img_xyz, cutoff: float):
    """Candidate pairs run by run, chunked over centres (pure PyTorch); returns
    ``(centre, image)`` of the pairs closer than ``cutoff``."""
    order = bins.order
    starts, counts = _candidates(bins)
    n_c, n_r = counts.shape
    per_centre = counts.sum(1)
    ends = torch.cumsum(per_centre, 0)
    cut2 = cutoff * cutoff
    found_c, found_g = [], []
    c0 = 0
    while c0 < n_c:
        done = int(ends[c0 - 1]) if c0 else 0
        c1 = int(torch.searchsorted(ends, torch.tensor(done + _CHUNK_PAIRS, device=ends.device), right=True))
        c1 = max(c1, c0 + 1)
        owner, idx = _expand_ranges(starts[c0:c1].reshape(-1), counts[c0:c1].reshape(-1))
        centre = owner // n_r + c0
        image = order[idx]
        d = img_xyz[image] - centre_xyz[centre]
        keep = (d * d).sum(1) < cut2
        found_c.append(centre[keep])
        found_g.append(image[keep])
        c0 = c1
    if not found_c:
        empty = torch.zeros(0, dtype=torch.long, device=order.device)
        return empty, empty
    return torch.cat(found_c), torch.cat(found_g)


# --------------------------------------------------------------------------- public
def edge_vectors(
    pos: torch.Tensor,
    edge_index: torch.Tensor,
    shifts: torch.Tensor | None = None,
    cell: torch.Tensor | None = None,
    batch: torch.Tensor | None = None,
) -> torch.Tensor:
    """Edge vectors ``pos[j] - pos[i] + shifts @ cell[batch[i]]`` with ``(j, i) = edge_index``,
    differentiable in ``pos`` and ``cell``.

    Stress through the strain derivative: with ``pos' = pos (1 + eps)``, ``cell' = cell (1 +
    eps)`` the vectors become ``r (1 + eps)``, so ``dE/deps / V`` is ASE's stress.

    Args:
        pos: ``(N, 3)`` positions.
        edge_index: ``(2, E)`` int ``[j, i]``.
        shifts: ``(E, 3)`` integer images (``None``: no periodic images).
        cell: ``(3, 3)`` or ``(B, 3, 3)`` lattice vectors as rows.
        batch: ``(N,)`` structure of each atom (for a batched ``cell``).

    Returns:
        ``(E, 3)`` in the dtype of ``pos``.

    Example:
        >>> import torch
        >>> from equikit.data.neighbors import edge_vectors
        >>> pos = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0]])
        >>> edge_vectors(pos, torch.tensor([[1], [0]]), torch.tensor([[-1, 0, 0]]), torch.eye(3) * 2)
        tensor([[-1.5000,  0.0000,  0.0000]])
    """
    src, dst = edge_index[0], edge_index[1]
    vec = pos[src] - pos[dst]
    if shifts is None or cell is None:
        return vec
    s = shifts.to(pos.dtype)
    if cell.ndim == 2:
        return vec + s @ cell
    if cell.shape[0] == 1:
        return vec + s @ cell[0]
    b = torch.zeros_like(dst) if batch is None else batch[dst]
    return vec + torch.einsum("ek,ekd->ed", s, cell[b])


def radius_graph(
    pos: torch.Tensor,
    cutoff: float,
    batch: torch.Tensor | None = None,
    cell: torch.Tensor | None = None,
    pbc=None,
    self_interaction: bool = False,
    *,
    method: str = "auto",
) -> Neighbors:
    r"""All pairs closer than ``cutoff``, with periodic images, for a batch of structures.

    .. math::
        \mathcal{E} = \{(i, j, S) : b_i = b_j,\ |x_j - x_i + S\,C_{b_i}| < r_c,\
        S \in \mathbb{Z}^3,\ S_k = 0 \text{ unless periodic along } k\}
        \setminus \{(i, i, 0)\}

    Args:
        pos: ``(N, 3)`` positions (Angstrom), float32 or float64.
        cutoff: the radius ``r_c`` (> 0, Angstrom).
        batch: ``(N,)`` int structure of each atom (``None``: one structure). Atoms of
            different structures are never neighbours.
        cell: ``(3, 3)`` or ``(B, 3, 3)`` lattice vectors as rows (``None``: no cell). Rows
            along non-periodic directions are ignored (they may be zero).
        pbc: periodic directions, bools ``(3,)`` or ``(B, 3)`` (``None``: all periodic when
            a cell is given, none otherwise). Mixed, e.g. ``(True, True, False)`` for a slab.
        self_interaction: keep the ``(i, i, 0)`` pairs.
        method: ``"auto"``, ``"brute"`` (all image pairs of a structure) or ``"cells"``
            (binning, O(N)); the same edges either way.

    Returns:
        :class:`Neighbors` ``(edge_index, shifts, vectors)``: ``edge_index[0] = j``
        (neighbour, message source), ``edge_index[1] = i`` (centre, receiver), grouped by
        ``i`` in increasing order (the order within a centre depends on ``method``, not on
        the native/PyTorch path); ``shifts (E, 3)`` int64;
        ``vectors = pos[j] - pos[i] + shifts @ cell`` (differentiable, see
        :func:`edge_vectors`).

    Example:
        >>> import torch
        >>> from equikit.data.neighbors import radius_graph
        >>> pos = torch.zeros(1, 3)  # one atom in a 1 A cubic cell, cutoff 1.5 A
        >>> nbrs = radius_graph(pos, 1.5, cell=torch.eye(3), pbc=(True, True, True))
        >>> nbrs.edge_index.shape[1]  # 6 faces + 12 edges of the cube (the 8 corners are at 1.73)
        18
        >>> sorted({round(d, 3) for d in nbrs.vectors.norm(dim=1).tolist()})
        [1.0, 1.414]
    """
    where = "radius_graph"
    check_tensor(pos, "pos", where, floating=True)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"{where}: `pos` must have shape (N, 3), got {tuple(pos.shape)}")
    if not torch.isfinite(pos).all():
        raise ValueError(f"{where}: `pos` contains NaN or inf")
    cutoff = _check_cutoff(cutoff, where)
    if method not in ("auto", "brute", "cells"):
        raise ValueError(f"{where}: `method` must be 'auto', 'brute' or 'cells', got {method!r}")
    if not isinstance(self_interaction, bool):
        raise TypeError(f"{where}: `self_interaction` must be a bool, got {type(self_interaction).__name__}")
    n = pos.shape[0]
    batch = _check_batch(batch, n, pos.device, where)
    n_struct = int(batch.max()) + 1 if n else 1
    if cell is not None and cell.ndim == 3:
        if cell.shape[0] < n_struct:
            raise ValueError(
                f"{where}: `batch` names {n_struct} structures but `cell` holds {cell.shape[0]}; "
                f"pass one (3, 3) cell per structure"
            )
        n_struct = cell.shape[0]
    cell, pbc = _check_cell_pbc(cell, pbc, n_struct, pos, where)
    if n == 0:
        empty = torch.zeros(2, 0, dtype=torch.long, device=pos.device)
        return Neighbors(empty, torch.zeros(0, 3, dtype=torch.long, device=pos.device), pos.new_zeros(0, 3))
    edge_index, shifts = _search(pos.detach(), cutoff, batch, cell, pbc, self_interaction, method, where)
    return Neighbors(edge_index, shifts, edge_vectors(pos, edge_index, shifts, cell, batch))


@torch.no_grad()
def _search(pos, cutoff, batch, cell, pbc, self_interaction, method, where):
    scell = _search_cell(cell, pbc, where)  # (B, 3, 3) float64
    x = pos.to(torch.float64)
    if bool(pbc.any()):
        inv = torch.linalg.inv(scell)
        frac = torch.einsum("nd,ndk->nk", x, inv[batch])
        wrap = torch.where(pbc[batch], torch.floor(frac), torch.zeros_like(frac))
        frac = frac - wrap
        x_w = x - torch.einsum("nk,nkd->nd", wrap, scell[batch])
        spacing = 1.0 / inv.norm(dim=1)  # (B, 3): 1 / |reciprocal vector k| (columns of inv)
        cutoff_frac = torch.where(pbc, cutoff / spacing, torch.zeros_like(spacing)) + 1e-9
        ranges = torch.where(pbc, torch.floor(cutoff / spacing).long() + 1, torch.zeros_like(pbc, dtype=torch.long))
        atom, shift, xyz = _images(x_w, frac, batch, pbc, ranges, scell, cutoff_frac)
    else:  # open structures: the atoms are their only images
        x_w, wrap = x, torch.zeros_like(x)
        atom = torch.arange(len(x), device=x.device)
        shift, xyz = torch.zeros(len(x), 3, dtype=torch.long, device=x.device), x
    img_b = batch[atom]
    if method == "auto":
        per_struct = torch.bincount(batch, minlength=pbc.shape[0])
        imgs = torch.bincount(img_b, minlength=pbc.shape[0])
        method = "brute" if int((per_struct * imgs).sum()) <= _BRUTE_LIMIT else "cells"
    bins = _binning(x_w, batch, xyz, img_b, cutoff, method == "brute")
    lib = _native() if x_w.device.type == "cpu" else None
    if lib is not None:
        centre, image = _pairs_native(lib, bins, x_w, xyz, cutoff)
    else:
        centre, image = _pairs(bins, x_w, xyz, cutoff)
    j = atom[image]
    s = shift[image] + wrap[centre].long() - wrap[j].long()
    if not self_interaction:
        keep = (j != centre) | (s != 0).any(1)
        centre, j, s = centre[keep], j[keep], s[keep]
    # centres come in increasing order from both scans (no sort needed)
    return torch.stack([j, centre]), s
