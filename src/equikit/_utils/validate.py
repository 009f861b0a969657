"""Validation at the boundary: every message names the function, the argument, what was
expected and what came in (STYLE principle 8)."""

from __future__ import annotations

from typing import Any

import torch


def default_dtype(dtype: torch.dtype | None) -> torch.dtype:
    return torch.get_default_dtype() if dtype is None else dtype


def check_int(value: Any, name: str, where: str, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where}: `{name}` must be an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{where}: `{name}` must be >= {minimum}, got {value}")
    return value


def check_positive(value: Any, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{where}: `{name}` must be a number, got {type(value).__name__}")
    if not value > 0:
        raise ValueError(f"{where}: `{name}` must be > 0, got {value}")
    return float(value)


def check_tensor(
    value: Any,
    name: str,
    where: str,
    *,
    shape: tuple[int | None, ...] | None = None,
    min_ndim: int | None = None,
    floating: bool | None = None,
    integer: bool | None = None,
) -> torch.Tensor:
    """Check a tensor argument. ``shape`` entries of ``None`` are free; a leading ``...`` is
    expressed by giving only the trailing dims and ``min_ndim``."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{where}: `{name}` must be a torch.Tensor, got {type(value).__name__}")
    if floating and not value.is_floating_point():
        raise TypeError(f"{where}: `{name}` must be a floating tensor, got dtype {value.dtype}")
    if integer and (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool):
        raise TypeError(f"{where}: `{name}` must be an integer tensor, got dtype {value.dtype}")
    if min_ndim is not None and value.ndim < min_ndim:
        raise ValueError(
            f"{where}: `{name}` must have at least {min_ndim} dims, got shape {tuple(value.shape)}"
        )
    if shape is not None:
        trailing = tuple(value.shape[value.ndim - len(shape) :]) if value.ndim >= len(shape) else None
        ok = trailing is not None and all(s is None or s == t for s, t in zip(shape, trailing))
        if not ok:
            want = "(..., " + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(
                f"{where}: `{name}` must have shape {want}, got {tuple(value.shape)}"
            )
    return value


def check_finite(value: torch.Tensor, name: str, where: str) -> torch.Tensor:
    if value.is_floating_point() and not torch.isfinite(value).all():
        n_nan = int(torch.isnan(value).sum())
        n_inf = int(torch.isinf(value).sum())
        raise ValueError(
            f"{where}: `{name}` contains {n_nan} NaN and {n_inf} inf values "
            f"(shape {tuple(value.shape)}); equivariance cannot be measured on non-finite numbers"
        )
    return value


def resolve_generator(generator: torch.Generator | int | None) -> torch.Generator:
    """Accept a torch.Generator, an int seed or None (fresh seed from torch's global RNG)."""
    if isinstance(generator, torch.Generator):
        return generator
    gen = torch.Generator()
    if generator is None:
        gen.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
    elif isinstance(generator, int) and not isinstance(generator, bool):
        gen.manual_seed(generator)
    else:
        raise TypeError(
            f"`generator` must be a torch.Generator, an int seed or None, got {type(generator).__name__}"
        )
    return gen
