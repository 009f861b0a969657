"""PCA frames for O(d), SO(d), E(d), SE(d) and the MDS canonicaliser (TinvNN).

For positions ``X (N, d)`` with centroid ``c`` (``c = 0`` for O(d)/SO(d), which fix the
origin) the covariance ``C = (X - c)^T (X - c) / N = V diag(lam) V^T`` has eigenvectors that
move with the input: ``X -> X Q^T + t`` gives ``V -> Q V S`` for an unknown sign matrix ``S``.
The PCA frame is therefore ``F(X) = {(V diag(s), c) : s in {+-1}^d}`` -- all ``2^d`` sign
choices (``2^(d-1)`` with ``det = +1`` for SO(d)/SE(d)) -- and averaging over it is exact.

Degenerate inputs (documented rule): when two eigenvalues are tied,
``lam_i - lam_(i+1) <= tol * lam_1``, the eigenvectors of the tied block are only defined up
to a rotation inside the block, which no finite sign set covers. Such inputs are *flagged*
(``FrameOutput.degenerate``, ``Symmetrize.last_degenerate``) and symmetrised with the
eigenvectors that ``torch.linalg.eigh`` returns, so their outputs are finite but not
guaranteed exact; ``on_degenerate="raise"`` refuses them instead. Highly symmetric inputs
(regular polygons, isotropic clouds) are the usual case.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch

from equikit._utils import check_finite, check_positive
from equikit.groups import SE, SO, E, Group, O
from equikit.symmetrize._frame import Frame, FrameOutput, batch_size, select

_GROUPS = (O, SO, E, SE)


def principal_axes(pos: torch.Tensor, *, center: bool = True, tol: float = 1e-6):
    """Centroid, principal axes and spectrum of point clouds, in float64.

    Math: ``C = (X - c)^T (X - c) / N``, ``C = V diag(lam) V^T`` with ``lam`` descending.

    Args:
        pos: ``(B, N, d)`` positions.
        center: subtract the centroid (translation groups) or not (groups fixing the origin).
        tol: relative eigenvalue gap below which two eigenvalues count as tied.

    Returns:
        ``(c (B, d), V (B, d, d), lam (B, d), degenerate (B,))``, float64.

    Example:
        >>> import torch
        >>> c, V, lam, deg = principal_axes(torch.randn(2, 10, 3))
        >>> V.shape, bool(deg.any())
        (torch.Size([2, 3, 3]), False)
    """
    x = pos.to(torch.float64)
    c = x.mean(dim=-2) if center else torch.zeros_like(x[:, 0])
    xc = x - c[:, None]
    cov = xc.transpose(-1, -2) @ xc / x.shape[-2]
    lam, vec = torch.linalg.eigh(cov)
    lam, vec = lam.flip(-1), vec.flip(-1)
    top = lam[:, :1].clamp_min(torch.finfo(torch.float64).tiny)
    gaps = lam[:, :-1] - lam[:, 1:]
    degenerate = (gaps <= tol * top).any(dim=-1) | (lam[:, 0] <= 0)
    return c, vec, lam, degenerate


def _sign_vectors(d: int, dtype, device) -> torch.Tensor:
    return torch.tensor(list(itertools.product((1.0, -1.0), repeat=d)), dtype=dtype, device=device)


def third_moment_signs(coords: torch.Tensor, tol: float = 1e-6):
    """Signs ``s_k = sign(sum_i y_ik^3)`` that make each coordinate's third moment positive.

    Args:
        coords: ``(B, N, d)`` coordinates in the principal axes.
        tol: a moment ``|m3| <= tol * sum_i |y_ik|^3`` counts as zero (sign undetermined).

    Returns:
        ``(signs (B, d), ambiguous (B, d))``.
    """
    m3 = coords.pow(3).sum(dim=-2)
    scale = coords.abs().pow(3).sum(dim=-2)
    ambiguous = m3.abs() <= tol * scale.clamp_min(torch.finfo(coords.dtype).tiny)
    signs = torch.where(m3 < 0, -1.0, 1.0).to(coords.dtype)
    return signs, ambiguous


class PCAFrame(Frame):
    """Frame from the principal axes of a point cloud, with all sign choices.

    Math: ``F(X) = {(V diag(s), c)}`` over ``s in {+-1}^d`` (``det = +1`` only for SO/SE), see
    the module docstring; ``Phi(X) = 1/|F| sum_g rho_out(g) phi(g^-1 X)``. ``canonical`` picks
    the single sign vector that makes every coordinate's third moment positive (the sign rule
    of the MDS canonicaliser).

    Args:
        group: ``O(d)``, ``SO(d)`` (about the origin), ``E(d)`` or ``SE(d)``.
        key: the positions' key for dict inputs (``None``: the input is the positions).
        tol: relative eigenvalue gap counted as a tie (module docstring).
        on_degenerate: ``"flag"`` (default) or ``"raise"``.

    Shapes: positions ``(B, N, d)``; elements ``(K, B, d, d)`` (O/SO) or ``(K, B, d+1, d+1)``.

    Example:
        >>> import torch
        >>> from equikit.groups import E, PointCloud
        >>> from equikit.symmetrize import PCAFrame, Symmetrize
        >>> mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(15, 1)).double()
        >>> net = Symmetrize(mlp, PCAFrame(E(3)), PointCloud(E(3)))
        >>> x = torch.randn(4, 5, 3, dtype=torch.float64)
        >>> g = E(3).sample(1, generator=0, dtype=torch.float64)[0]
        >>> torch.allclose(net(PointCloud(E(3))(g, x)), net(x))
        True
    """

    def __init__(self, group: Group, key: str | None = None, *, tol: float = 1e-6, on_degenerate: str = "flag"):
        super().__init__()
        if not isinstance(group, _GROUPS):
            raise TypeError(f"PCAFrame: `group` must be O(d), SO(d), E(d) or SE(d), got {group!r}")
        if on_degenerate not in ("flag", "raise"):
            raise ValueError(f"PCAFrame: `on_degenerate` must be 'flag' or 'raise', got {on_degenerate!r}")
        self.group, self.key, self.on_degenerate = group, key, on_degenerate
        self.tol = check_positive(tol, "tol", "PCAFrame")

    @property
    def special(self) -> bool:
        return isinstance(self.group, (SO, SE))

    @property
    def translates(self) -> bool:
        return isinstance(self.group, (E, SE))

    def _positions(self, x: Any, where: str) -> torch.Tensor:
        batch_size(x, where)
        pos = select(x, self.key, where)
        d = self.group.d
        if not isinstance(pos, torch.Tensor) or pos.ndim != 3 or pos.shape[-1] != d or not pos.is_floating_point():
            got = tuple(pos.shape) if isinstance(pos, torch.Tensor) else type(pos).__name__
            raise ValueError(f"{where}: positions must be a floating tensor (B, N, {d}) for {self.group!r}, got {got}")
        return check_finite(pos, "positions", where)

    def _axes(self, x: Any, where: str):
        pos = self._positions(x, where)
        c, vec, _lam, deg = principal_axes(pos, center=self.translates, tol=self.tol)
        if self.on_degenerate == "raise" and bool(deg.any()):
            raise ValueError(
                f"{where}: {int(deg.sum())} input(s) have tied covariance eigenvalues (relative gap <= "
                f"{self.tol:g}); their principal axes are not unique. Use on_degenerate='flag' or perturb them"
            )
        return pos, c, vec, deg

    def _elements(self, rot: torch.Tensor, c: torch.Tensor, like: torch.Tensor):
        rot, c = rot.to(like.dtype), c.to(like.dtype)
        if self.translates:
            return self.group.from_affine(rot, c.expand(*rot.shape[:-2], c.shape[-1]))
        return rot

    def forward(self, x: Any) -> FrameOutput:
        pos, c, vec, deg = self._axes(x, "PCAFrame")
        d, b = self.group.d, pos.shape[0]
        signs = _sign_vectors(d - 1 if self.special else d, torch.float64, pos.device)  # (K, d')
        signs = signs[:, None].expand(-1, b, -1)
        if self.special:  # the last sign makes det(V diag(s)) = +1
            last = torch.linalg.det(vec)[None] * signs.prod(dim=-1)
            signs = torch.cat([signs, last[..., None]], dim=-1)
        rot = vec[None] * signs[..., None, :]  # (K, B, d, d): column j scaled by s_j
        k = rot.shape[0]
        weights = torch.full((k, b), 1.0 / k, dtype=pos.dtype, device=pos.device)
        return FrameOutput(self._elements(rot, c[None], pos), weights, deg)

    def canonical(self, x: Any) -> FrameOutput:
        return self._canonical(x, "PCAFrame.canonical")

    def _canonical(self, x: Any, where: str) -> FrameOutput:
        pos, c, vec, deg = self._axes(x, where)
        coords = (pos.to(torch.float64) - c[:, None]) @ vec
        signs, ambiguous = third_moment_signs(coords, self.tol)
        if self.special:
            signs[:, -1] = torch.linalg.det(vec) * signs[:, :-1].prod(dim=-1)
            ambiguous = ambiguous[:, :-1]
        deg = deg | ambiguous.any(dim=-1)
        rot = vec * signs[:, None, :]
        weights = torch.ones(1, pos.shape[0], dtype=pos.dtype, device=pos.device)
        return FrameOutput(self._elements(rot[None], c[None], pos), weights, deg)


class MDSCanonicalizer(PCAFrame):
    """Canonicalise point clouds by (modified) multi-dimensional scaling, as in TinvNN
    ("Revisiting Transformation Invariant Geometric Deep Learning: Are Initial Representations
    All You Need?").

    Math: classical MDS of the distance matrix, ``-1/2 J D^2 J = Y Y^T``, gives coordinates
    ``Y = (X - c) V`` (the principal-axis coordinates), unique up to the signs of the axes;
    the sign of each axis is fixed so that its third moment ``sum_i Y_ik^3`` is positive.
    ``Y`` is invariant to rotations, reflections, translations (and, with ``scale=True`` in
    :meth:`coordinates`, scalings), and preserves all pairwise distances. As a frame it is the
    one element ``g = (V diag(s), c)`` with ``g^-1 X = Y``. Inputs with a zero third moment on
    some axis (mirror-symmetric clouds) or tied eigenvalues are flagged as degenerate.

    Args: as :class:`PCAFrame`.

    Example:
        >>> import torch
        >>> from equikit.groups import E, PointCloud
        >>> mds = MDSCanonicalizer(E(3))
        >>> x = torch.randn(2, 6, 3, dtype=torch.float64)
        >>> g = E(3).sample(1, generator=0, dtype=torch.float64)[0]
        >>> torch.allclose(mds.coordinates(PointCloud(E(3))(g, x)), mds.coordinates(x))
        True
    """

    def forward(self, x: Any) -> FrameOutput:
        return self._canonical(x, "MDSCanonicalizer")

    def canonical(self, x: Any) -> FrameOutput:
        return self._canonical(x, "MDSCanonicalizer.canonical")

    def coordinates(self, x: Any, *, scale: bool = False) -> torch.Tensor:
        """Invariant coordinates ``Y (B, N, d)``; ``scale=True`` divides by the RMS radius."""
        pos = self._positions(x, "MDSCanonicalizer.coordinates")
        fr = self._canonical(x, "MDSCanonicalizer.coordinates")
        if self.translates:
            rot, t = self.group.as_affine(fr.elements[0])
        else:
            rot, t = fr.elements[0], torch.zeros_like(pos[:, 0])
        y = (pos - t[:, None]) @ rot
        if scale:
            rms = y.pow(2).sum(dim=-1).mean(dim=-1).sqrt().clamp_min(torch.finfo(y.dtype).tiny)
            y = y / rms[:, None, None]
        return y


def classical_mds(dist: torch.Tensor, d: int, *, tol: float = 1e-6):
    """Coordinates from a distance matrix by classical MDS with the third-moment sign rule.

    Math: ``G = -1/2 J (D o D) J`` (``J = I - 11^T/N``), ``G = U diag(lam) U^T``;
    ``Y = U_d diag(sqrt(lam_d))``, then each column's sign makes ``sum_i Y_ik^3 > 0``. For
    Euclidean distances ``Y`` reproduces the distances and is invariant to E(d) and to nothing
    else; it is permutation-equivariant in the points.

    Args:
        dist: ``(B, N, N)`` symmetric distances.
        d: output dimension.

    Returns:
        ``(Y (B, N, d), degenerate (B,))`` in ``dist.dtype``.

    Example:
        >>> import torch
        >>> x = torch.randn(1, 5, 2, dtype=torch.float64)
        >>> y, _ = classical_mds(torch.cdist(x, x), 2)
        >>> torch.allclose(torch.cdist(y, y), torch.cdist(x, x))
        True
    """
    where = "classical_mds"
    if not isinstance(dist, torch.Tensor) or dist.ndim != 3 or dist.shape[-1] != dist.shape[-2]:
        got = tuple(dist.shape) if isinstance(dist, torch.Tensor) else type(dist).__name__
        raise ValueError(f"{where}: `dist` must be a (B, N, N) tensor, got {got}")
    check_finite(dist, "dist", where)
    n = dist.shape[-1]
    if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= n:
        raise ValueError(f"{where}: `d` must be an int in [1, N={n}], got {d!r}")
    sq = dist.to(torch.float64).pow(2)
    gram = -0.5 * (sq - sq.mean(-1, keepdim=True) - sq.mean(-2, keepdim=True) + sq.mean((-1, -2), keepdim=True))
    lam, vec = torch.linalg.eigh(gram)
    lam, vec = lam.flip(-1)[:, :d], vec.flip(-1)[:, :, :d]
    y = vec * lam.clamp_min(0).sqrt()[:, None, :]
    signs, ambiguous = third_moment_signs(y, tol)
    top = lam[:, :1].abs().clamp_min(torch.finfo(torch.float64).tiny)
    tied = ((lam[:, :-1] - lam[:, 1:]) <= tol * top).any(-1) if d > 1 else torch.zeros_like(ambiguous[:, 0])
    return (y * signs[:, None, :]).to(dist.dtype), ambiguous.any(-1) | tied
