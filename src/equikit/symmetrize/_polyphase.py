"""Polyphase frames and anchoring for circular shifts with a stride (APS / polyphase anchoring).

For an image ``x (..., H, W)`` and stride ``s = (s0, s1)`` the *polyphase components* are
``x[..., i::s0, j::s1]`` for phases ``(i, j) in [0, s0) x [0, s1)``. A circular shift by ``t``
permutes the components' energies: ``E_{t x}(p) = E_x(p - t mod s)``. Picking the phase of
largest energy therefore moves with the input, and shifting the input back by that phase
(*anchoring*) leaves only a shift by a multiple of the stride, i.e. a whole-token shift of a
strided layer (patch embedding, downsampling). With ``stride = shape`` the component is a
single pixel and the anchor removes the whole shift: a canonicalisation of ``CyclicShift``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from equikit._utils import check_finite, check_int
from equikit.groups import CyclicShift
from equikit.symmetrize._frame import Frame, FrameOutput, batch_size, select


def _pair(v: int | tuple[int, int], name: str, where: str) -> tuple[int, int]:
    pair = (v, v) if isinstance(v, int) and not isinstance(v, bool) else tuple(v)
    if len(pair) != 2:
        raise ValueError(f"{where}: `{name}` must be an int or a pair, got {v!r}")
    for i, s in enumerate(pair):
        check_int(s, f"{name}[{i}]", where, minimum=1)
    return pair  # type: ignore[return-value]


def polyphase_energy(x: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """Energy of each polyphase component: ``E[b, i, j] = sum |x[b, ..., i::s0, j::s1]|^2``.

    Args:
        x: ``(B, ..., H, W)`` with ``s0 | H`` and ``s1 | W``.
        stride: ``(s0, s1)``.

    Returns:
        ``(B, s0, s1)`` in float64 (summed in float64 so that shifts permute it exactly up to
        summation order).

    Example:
        >>> import torch
        >>> polyphase_energy(torch.ones(1, 4, 4), (2, 2)).tolist()
        [[[4.0, 4.0], [4.0, 4.0]]]
    """
    s0, s1 = stride
    h, w = x.shape[-2:]
    b = x.shape[0]
    t = x.to(torch.float64).reshape(b, -1, h // s0, s0, w // s1, s1)
    return t.pow(2).sum(dim=(1, 2, 4))


def _tiebreak_filters(n: int, channels: int) -> torch.Tensor:
    """``n`` fixed random 3x3 filters (seeded), ``(n, channels, 3, 3)`` float64."""
    g = torch.Generator().manual_seed(20230501)
    return torch.randn(n, channels, 3, 3, generator=g, dtype=torch.float64)


def _circular_filter(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W) -> (B, H, W)``: circular 3x3 correlation as a sum of rolls, so every
    output pixel is computed by the same operations in the same order wherever it sits (the
    result moves with circular shifts bit for bit)."""
    out = torch.zeros(x.shape[0], *x.shape[-2:], dtype=torch.float64, device=x.device)
    for i in range(3):
        for j in range(3):
            rolled = torch.roll(x, (1 - i, 1 - j), (-2, -1))
            out = out + (rolled * w[:, i, j, None, None].to(x.device)).sum(1)
    return out


def phase_keys(x: torch.Tensor, stride: tuple[int, int], tiebreak: int) -> list[torch.Tensor]:
    """Shift-covariant keys of the polyphase phases, most significant first: the energy of each
    component of ``x`` and then of ``tiebreak`` fixed random 3x3 circular filterings of ``x``
    (which break the ties of quantised images, e.g. many pixels at the maximum)."""
    x64 = x.to(torch.float64).reshape(x.shape[0], -1, *x.shape[-2:])
    keys = [polyphase_energy(x64, stride)]
    if tiebreak:
        filters = _tiebreak_filters(tiebreak, x64.shape[1])
        keys += [polyphase_energy(_circular_filter(x64, w), stride) for w in filters]
    return keys


def _best_phases(keys: list[torch.Tensor], rtol: float) -> torch.Tensor:
    """``(B, s0*s1)`` mask of the phases that maximise the keys lexicographically, counting
    values within ``rtol`` of the best as equal."""
    alive = None
    for energy in keys:
        flat = energy.reshape(energy.shape[0], -1)
        masked = flat if alive is None else torch.where(alive, flat, torch.full_like(flat, -torch.inf))
        top = masked.max(dim=-1, keepdim=True).values
        best = masked >= top - rtol * top.abs()
        alive = best if alive is None else alive & best
    return alive


class PolyphaseFrame(Frame):
    """Frame of the max-energy polyphase phases for ``CyclicShift((H, W))``.

    Math: ``F(x) = {p : E_x(p) = max_q E_x(q)}`` as shifts in ``[0, s0) x [0, s1)``; every
    tied phase is kept with equal weight (``rtol`` decides ties). ``g^-1 x`` moves the
    chosen phase to ``(0, 0)``. For ``stride = (H, W)`` this is an exact frame of the whole
    shift group (``Symmetrize`` is then exact for any backbone); for a smaller stride it is a
    frame modulo shifts by multiples of the stride, so the backbone must itself be
    equivariant to those (token shifts: a strided patch embedding followed by a
    translation-equivariant token mixer and pooling, see :class:`AnchoredPatchEmbed`).

    Args:
        shape: image size ``(H, W)``.
        stride: ``(s0, s1)`` dividing ``(H, W)``; default ``shape``.
        key: dict key of the image for dict inputs.
        rtol: relative energy gap counted as a tie.
        tiebreak: number of fixed random 3x3 circular filters whose polyphase energies break
            ties of the plain energy (0: energy only). Ties left after them (periodic images)
            are kept in the frame (``forward``) or flagged (``canonical``).

    Shapes: images ``(B, ..., H, W)``; elements ``(K, B, 2)`` int64.

    Example:
        >>> import torch
        >>> from equikit.groups import ImageShift
        >>> from equikit.symmetrize import PolyphaseFrame, Symmetrize
        >>> net = Symmetrize(torch.nn.Flatten(), PolyphaseFrame((6, 6)), ImageShift((6, 6)))
        >>> x = torch.randn(3, 6, 6)
        >>> torch.equal(net(torch.roll(x, (2, 5), (-2, -1))), net(x))
        True
    """

    def __init__(
        self,
        shape: tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        *,
        key: str | None = None,
        rtol: float = 1e-9,
        tiebreak: int = 2,
    ) -> None:
        super().__init__()
        where = "PolyphaseFrame"
        self.shape = _pair(shape, "shape", where)
        self.stride = self.shape if stride is None else _pair(stride, "stride", where)
        for h, s in zip(self.shape, self.stride):
            if h % s:
                raise ValueError(f"{where}: `stride` {self.stride} must divide `shape` {self.shape}")
        self.group = CyclicShift(self.shape)
        self.key, self.rtol = key, float(rtol)
        self.tiebreak = check_int(tiebreak, "tiebreak", where, minimum=0)

    def _keys(self, x: Any, where: str) -> list[torch.Tensor]:
        batch_size(x, where)
        img = select(x, self.key, where)
        if img.ndim < 3 or tuple(img.shape[-2:]) != self.shape:
            h, w = self.shape
            raise ValueError(f"{where}: images must be (B, ..., {h}, {w}), got {tuple(img.shape)}")
        check_finite(img, "image", where)
        return phase_keys(img, self.stride, self.tiebreak)

    def _phases(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.stack([idx // self.stride[1], idx % self.stride[1]], dim=-1)

    def forward(self, x: Any) -> FrameOutput:
        best = _best_phases(self._keys(x, "PolyphaseFrame"), self.rtol)  # (B, P)
        b = best.shape[0]
        counts = best.sum(-1)
        k = int(counts.max())
        # the tied phases of each input first (stable), padded by repeating the first one
        ranks = torch.sort((~best).to(torch.int8), dim=-1, stable=True).indices[:, :k]  # (B, k)
        first = ranks[:, :1].expand_as(ranks)
        valid = torch.arange(k, device=best.device)[None] < counts[:, None]
        idx = torch.where(valid, ranks, first)
        fdtype = _float(x)
        weights = (valid.to(fdtype) / counts[:, None].to(fdtype)).T
        return FrameOutput(self._phases(idx.T), weights, torch.zeros(b, dtype=torch.bool, device=best.device))

    def canonical(self, x: Any) -> FrameOutput:
        """The first (row-major) phase of largest energy; ties are flagged as degenerate."""
        best = _best_phases(self._keys(x, "PolyphaseFrame.canonical"), self.rtol)
        idx = best.to(torch.int8).argmax(dim=-1)
        deg = best.sum(-1) > 1
        w = torch.ones(1, best.shape[0], dtype=_float(x), device=best.device)
        return FrameOutput(self._phases(idx[None]), w, deg)


def _float(x: Any) -> torch.dtype:
    from equikit._utils import tree_leaves

    for t in tree_leaves(x):
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


def anchor(x: torch.Tensor, stride: tuple[int, int], *, tiebreak: int = 2, rtol: float = 1e-9) -> torch.Tensor:
    """Circularly shift each image so its max-energy polyphase component sits at phase (0, 0).

    ``anchor(shift_t x) = shift_{m s} anchor(x)`` for some integer ``m``: after anchoring only
    whole-stride shifts remain. Ties of the energy are broken by ``tiebreak`` fixed random
    filterings (:func:`phase_keys`); remaining ties (periodic images) take the first phase in
    row-major order.

    Args:
        x: ``(B, C, H, W)``.
        stride: ``(s0, s1)`` dividing ``(H, W)``.

    Example:
        >>> import torch
        >>> x = torch.zeros(1, 1, 4, 4); x[0, 0, 1, 3] = 1.0
        >>> anchor(x, (2, 2))[0, 0].nonzero().tolist()
        [[0, 2]]
    """
    s = _pair(stride, "stride", "anchor")
    if x.ndim != 4 or x.shape[-2] % s[0] or x.shape[-1] % s[1]:
        raise ValueError(f"anchor: `x` must be (B, C, H, W) with the stride {s} dividing (H, W), got {tuple(x.shape)}")
    best = _best_phases(phase_keys(x, s, tiebreak), rtol).to(torch.int8).argmax(dim=-1)
    p0, p1 = best // s[1], best % s[1]
    h, w = x.shape[-2:]
    rows = (torch.arange(h, device=x.device)[None] + p0[:, None]) % h  # (B, H)
    cols = (torch.arange(w, device=x.device)[None] + p1[:, None]) % w
    x = torch.gather(x, 2, rows[:, None, :, None].expand(-1, x.shape[1], -1, w))
    return torch.gather(x, 3, cols[:, None, None, :].expand(-1, x.shape[1], h, -1))


class AnchoredPatchEmbed(nn.Module):
    """Patch embedding with adaptive polyphase anchoring ("Reviving Shift Equivariance in
    Vision Transformers"): anchor the input (:func:`anchor`) and embed non-overlapping
    ``patch x patch`` patches with a strided convolution.

    Math: tokens ``T(x) = Conv_stride=p(anchor(x))``; a circular shift of the input becomes a
    circular shift of the token grid, ``T(shift_t x) = shift_m T(x)``, so a token mixer that
    is equivariant to circular token shifts (attention without absolute position
    embeddings, or with circular relative ones) followed by mean pooling is exactly
    shift-invariant. ``anchoring=False`` gives the usual (not shift-equivariant) embedding.

    Args:
        in_channels, dim, patch: channels in, embedding width, patch size.
        anchoring: use polyphase anchoring.
        tiebreak: tie-breaking filters for the anchor (see :func:`anchor`).

    Shapes: ``(B, C, H, W) -> (B, H/p, W/p, dim)``.

    Example:
        >>> import torch
        >>> emb = AnchoredPatchEmbed(1, 8, 4)
        >>> x = torch.randn(2, 1, 16, 16)
        >>> a, b = emb(x), emb(torch.roll(x, (5, 3), (-2, -1)))
        >>> torch.allclose(a.mean((1, 2)), b.mean((1, 2)), atol=1e-6)
        True
    """

    def __init__(self, in_channels: int, dim: int, patch: int, *, anchoring: bool = True, tiebreak: int = 2) -> None:
        super().__init__()
        check_int(patch, "patch", "AnchoredPatchEmbed", minimum=1)
        self.patch, self.anchoring = patch, bool(anchoring)
        self.tiebreak = check_int(tiebreak, "tiebreak", "AnchoredPatchEmbed", minimum=0)
        self.proj = nn.Conv2d(in_channels, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[-1] % self.patch or x.shape[-2] % self.patch:
            raise ValueError(
                f"AnchoredPatchEmbed: input must be (B, C, H, W) with H, W multiples of patch={self.patch}, "
                f"got {tuple(x.shape)}"
            )
        if self.anchoring:
            x = anchor(x, (self.patch, self.patch), tiebreak=self.tiebreak)
        return self.proj(x).permute(0, 2, 3, 1)
