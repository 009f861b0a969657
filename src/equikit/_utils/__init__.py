"""Internal helpers shared by every layer: pytrees, argument validation, generators."""

from equikit._utils.pytree import tree_flatten, tree_leaves, tree_map, tree_unflatten
from equikit._utils.validate import (
    check_finite,
    check_int,
    check_positive,
    check_tensor,
    default_dtype,
    resolve_generator,
)

__all__ = [
    "check_finite",
    "check_int",
    "check_positive",
    "check_tensor",
    "default_dtype",
    "resolve_generator",
    "tree_flatten",
    "tree_leaves",
    "tree_map",
    "tree_unflatten",
]
