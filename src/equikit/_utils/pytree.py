"""Minimal pytrees: nested dicts, lists and tuples of tensors.

We keep our own instead of ``torch.utils._pytree`` (private API) so that structure
comparison and error messages are under our control.  A *structure* is a hashable
description of the containers; two pytrees are compatible when their structures are equal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

LEAF = "*"


def tree_flatten(tree: Any) -> tuple[list[Any], Any]:
    """Return ``(leaves, structure)``; dict keys are kept in insertion order."""
    leaves: list[Any] = []

    def walk(node: Any) -> Any:
        if isinstance(node, Mapping):
            return ("dict", tuple((k, walk(v)) for k, v in node.items()))
        if isinstance(node, tuple) and hasattr(node, "_fields"):  # namedtuple
            return ("namedtuple", type(node), tuple(walk(v) for v in node))
        if isinstance(node, (list, tuple)):
            return (type(node).__name__, tuple(walk(v) for v in node))
        leaves.append(node)
        return LEAF

    structure = walk(tree)
    return leaves, structure


def tree_unflatten(leaves: list[Any], structure: Any) -> Any:
    """Inverse of :func:`tree_flatten`."""
    it = iter(leaves)

    def build(spec: Any) -> Any:
        if spec == LEAF:
            return next(it)
        kind = spec[0]
        if kind == "dict":
            return {k: build(v) for k, v in spec[1]}
        if kind == "namedtuple":
            return spec[1](*(build(v) for v in spec[2]))
        children = [build(v) for v in spec[1]]
        return children if kind == "list" else tuple(children)

    return build(structure)


def tree_leaves(tree: Any) -> list[Any]:
    return tree_flatten(tree)[0]


def tree_map(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    """Apply ``fn`` leafwise to one or more pytrees of identical structure."""
    leaves, structure = tree_flatten(tree)
    others = []
    for other in rest:
        other_leaves, other_structure = tree_flatten(other)
        if other_structure != structure:
            raise ValueError(
                "tree_map: pytrees have different structures: "
                f"{describe_structure(structure)} vs {describe_structure(other_structure)}"
            )
        others.append(other_leaves)
    out = [fn(*args) for args in zip(leaves, *others)]
    return tree_unflatten(out, structure)


def describe_structure(structure: Any) -> str:
    """Human-readable form of a structure for error messages."""
    if structure == LEAF:
        return "tensor"
    kind = structure[0]
    if kind == "dict":
        inner = ", ".join(f"{k!r}: {describe_structure(v)}" for k, v in structure[1])
        return "{" + inner + "}"
    if kind == "namedtuple":
        inner = ", ".join(describe_structure(v) for v in structure[2])
        return f"{structure[1].__name__}({inner})"
    inner = ", ".join(describe_structure(v) for v in structure[1])
    return f"[{inner}]" if kind == "list" else f"({inner})"
