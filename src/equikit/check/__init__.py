"""Equivariance checking: the tool every other part of equikit is tested with."""

from equikit.check.equivariance import (
    EquivarianceError,
    EquivarianceReport,
    assert_equivariant,
    equivariance_error,
)

__all__ = ["EquivarianceError", "EquivarianceReport", "assert_equivariant", "equivariance_error"]
