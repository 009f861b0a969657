"""Hypothesis strategies for property tests of equivariant code.

Requires the ``dev`` extra (``pip install 'equikit[dev]'``) for ``hypothesis``.

Example:
    >>> from hypothesis import given, settings
    >>> from equikit.groups import SO
    >>> from equikit.check.strategies import group_elements
    >>> @settings(max_examples=5)
    ... @given(group_elements(SO(3), batch=4))
    ... def test_orthogonal(g):
    ...     assert g.shape == (4, 3, 3)
    >>> test_orthogonal()
"""

from __future__ import annotations

import torch

from equikit.groups import Group

try:
    from hypothesis import strategies as st
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "equikit.check.strategies needs hypothesis: pip install 'equikit[dev]'"
    ) from err


def seeds() -> st.SearchStrategy[int]:
    return st.integers(min_value=0, max_value=2**62)


def group_elements(
    group: Group, batch: int | None = None, dtype: torch.dtype = torch.float64
) -> st.SearchStrategy:
    """Elements of ``group`` drawn by its own sampler from a hypothesis-chosen seed (so
    hypothesis can shrink to a simpler seed), shape ``(batch, *element_shape)`` or one element
    when ``batch`` is None."""

    def draw(seed: int):
        g = group.sample(1 if batch is None else batch, generator=seed, dtype=dtype)
        return group.take(g, 0) if batch is None else g

    return seeds().map(draw)


def point_clouds(
    n_points: int | tuple[int, int] = (1, 32),
    dim: int = 3,
    batch: int | None = None,
    dtype: torch.dtype = torch.float64,
    scale: float = 1.0,
) -> st.SearchStrategy[torch.Tensor]:
    """Gaussian point clouds ``(batch, n, dim)`` (or ``(n, dim)``) with ``n`` drawn from the
    given range."""
    lo, hi = (n_points, n_points) if isinstance(n_points, int) else n_points
    shape_batch = () if batch is None else (batch,)

    def draw(args):
        n, seed = args
        gen = torch.Generator().manual_seed(seed)
        return scale * torch.randn(*shape_batch, n, dim, generator=gen, dtype=torch.float64).to(dtype)

    return st.tuples(st.integers(lo, hi), seeds()).map(draw)
