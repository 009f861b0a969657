"""``Symmetrize``: make any backbone invariant or equivariant with a frame."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from equikit._utils import check_finite, tree_flatten, tree_unflatten
from equikit.groups import Action, Element
from equikit.symmetrize._frame import Frame, FrameOutput, batch_size

MODES = ("average", "canonicalize", "sample")


def _check_action(action: Any, name: str, frame: Frame) -> None:
    where = "Symmetrize"
    if not isinstance(action, Action):
        raise TypeError(f"{where}: `{name}` must be an equikit Action, got {type(action).__name__}")
    if action.group != frame.group:
        raise ValueError(
            f"{where}: `{name}` acts by {action.group!r} but the frame produces elements of "
            f"{frame.group!r}; use a frame for the action's group"
        )
    if not action.batchable:
        raise TypeError(
            f"{where}: `{name}` ({type(action).__name__}) cannot act with a batch of elements "
            "(e.g. edge lists); use dense data (node features, adjacency matrices)"
        )


def _check_frame_output(fr: Any, frame: Frame, b: int) -> FrameOutput:
    where = "Symmetrize"
    name = type(frame).__name__
    if not isinstance(fr, FrameOutput):
        raise TypeError(f"{where}: frame {name} must return a FrameOutput, got {type(fr).__name__}")
    frame.group.check_element(fr.elements, f"{name} elements", where)
    shape = frame.group.batch_shape(fr.elements)
    k = fr.weights.shape[0] if fr.weights.ndim == 2 else -1
    if shape != (k, b) or tuple(fr.weights.shape) != (k, b):
        raise ValueError(
            f"{where}: frame {name} must return elements of batch shape (K, B={b}) and weights (K, B); got "
            f"elements {shape} and weights {tuple(fr.weights.shape)}"
        )
    return fr


def _take(elements: Element, sl: slice) -> Element:
    if isinstance(elements, tuple):
        return tuple(t[sl] for t in elements)
    return elements[sl]


class Symmetrize(nn.Module):
    """Make a backbone exactly invariant/equivariant by averaging it over a frame.

    Math (frame averaging, Puny et al.): with ``F(x)`` a weighted frame,

        Phi(x) = sum_{g in F(x)} w_g rho_out(g) phi(rho_in(g)^-1 x)

    is invariant (``out_action=None``: ``rho_out`` trivial) or equivariant whenever
    ``F(g x) = g F(x)``. Modes:

    - ``"average"``: the whole frame (exact);
    - ``"canonicalize"``: one element per input, ``frame.canonical(x)`` (exact except at
      degenerate inputs; cheapest);
    - ``"sample"``: ``n_samples`` elements drawn from the frame per call (exact only in
      expectation; for large frames or Monte Carlo group averaging).

    The mode is an attribute and may be switched between training and evaluation.

    Args:
        backbone: any module/callable on batched inputs ``(B', ...)`` (the frame copies are
            folded into the batch dim, ``B' = chunk * B``).
        frame: a :class:`Frame` for ``in_action.group``.
        in_action: how the group moves inputs (must accept a batch of elements).
        out_action: how it moves outputs; ``None`` for an invariant output.
        mode: ``"average"``, ``"canonicalize"`` or ``"sample"``.
        chunk_size: frame elements per backbone call (bounds memory to ``chunk_size * B``
            copies); ``None`` runs the whole frame in one call.
        n_samples: elements per input in ``"sample"`` mode.
        generator: seed/Generator for ``"sample"`` mode (``None``: torch's global RNG).

    Shapes: input a tensor or dict of tensors with one leading batch dim ``B``; the output is
    whatever the backbone returns for a batch, per input. ``last_degenerate`` holds the
    ``(B,)`` degenerate-input mask of the latest call.

    Example:
        >>> import torch
        >>> from equikit.groups import NodePermutation, Permutation
        >>> from equikit.symmetrize import SortFrame, Symmetrize
        >>> mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 3))
        >>> net = Symmetrize(mlp, SortFrame(4), NodePermutation(4))
        >>> x = torch.randn(5, 4, 2)
        >>> p = Permutation(4).sample(1, generator=0)[0]
        >>> torch.allclose(net(NodePermutation(4)(p, x)), net(x))
        True
    """

    def __init__(
        self,
        backbone: Callable[[Any], Any],
        frame: Frame,
        in_action: Action,
        out_action: Action | None = None,
        mode: str = "average",
        chunk_size: int | None = None,
        *,
        n_samples: int = 1,
        generator: torch.Generator | int | None = None,
    ) -> None:
        super().__init__()
        where = "Symmetrize"
        if not callable(backbone):
            raise TypeError(f"{where}: `backbone` must be callable (an nn.Module), got {type(backbone).__name__}")
        if not isinstance(frame, Frame):
            raise TypeError(f"{where}: `frame` must be an equikit.symmetrize Frame, got {type(frame).__name__}")
        _check_action(in_action, "in_action", frame)
        if out_action is not None:
            _check_action(out_action, "out_action", frame)
        bad_chunk = isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        if chunk_size is not None and bad_chunk:
            raise ValueError(f"{where}: `chunk_size` must be an int >= 1 or None, got {chunk_size!r}")
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"{where}: `n_samples` must be an int >= 1, got {n_samples!r}")
        self.backbone, self.frame = backbone, frame
        self.in_action, self.out_action = in_action, out_action
        self.mode = mode
        self.chunk_size, self.n_samples = chunk_size, n_samples
        self.generator = generator if not isinstance(generator, int) else torch.Generator().manual_seed(generator)
        self.last_degenerate: torch.Tensor | None = None

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"Symmetrize: `mode` must be one of {MODES}, got {value!r}")
        self._mode = value

    def frame_of(self, x: Any) -> FrameOutput:
        """The weighted frame used for ``x`` in the current mode."""
        b = batch_size(x, "Symmetrize")
        if self.mode == "average":
            fr = self.frame(x)
        elif self.mode == "canonicalize":
            fr = self.frame.canonical(x)
        else:
            fr = self.frame.sample(x, self.n_samples, self.generator)
        return _check_frame_output(fr, self.frame, b)

    def forward(self, x: Any) -> Any:
        leaves, structure = tree_flatten(x)
        for i, leaf in enumerate(leaves):
            if isinstance(leaf, torch.Tensor):
                check_finite(leaf, f"x (leaf {i})", "Symmetrize")
        fr = self.frame_of(x)
        self.last_degenerate = fr.degenerate
        k, _b = fr.weights.shape
        step = self.chunk_size or k
        total = None
        for start in range(0, k, step):
            sl = slice(start, min(start + step, k))
            part = self._evaluate(_take(fr.elements, sl), leaves, structure, fr.weights[sl])
            total = part if total is None else [a + p for a, p in zip(total, part)]
        return tree_unflatten(total, self._out_structure)

    def _evaluate(self, g: Element, leaves: list, structure: Any, w: torch.Tensor) -> list:
        """``sum_k w_k rho_out(g_k) phi(g_k^-1 x)`` over one chunk of ``k`` elements."""
        k, b = w.shape
        group = self.frame.group
        g_inv = group.inverse(g)
        expanded = tree_unflatten([t.unsqueeze(0).expand(k, *t.shape) for t in leaves], structure)
        moved_leaves, moved_structure = tree_flatten(self.in_action(_cast(g_inv, leaves), expanded))
        flat = [t.reshape(k * b, *t.shape[2:]) for t in moved_leaves]
        y_leaves, self._out_structure = tree_flatten(self.backbone(tree_unflatten(flat, moved_structure)))
        for i, t in enumerate(y_leaves):
            if not isinstance(t, torch.Tensor) or t.ndim == 0 or t.shape[0] != k * b:
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(
                    f"Symmetrize: the backbone must return tensors with the batch dim first ({k * b} = "
                    f"{k} frame elements x {b} inputs), output leaf {i} has shape {got}"
                )
        y_leaves = [t.reshape(k, b, *t.shape[1:]) for t in y_leaves]
        if self.out_action is not None:
            moved = self.out_action(_cast(g, y_leaves), tree_unflatten(y_leaves, self._out_structure))
            y_leaves, _ = tree_flatten(moved)
        return [(t * w.to(t.dtype).reshape(k, b, *([1] * (t.ndim - 2)))).sum(dim=0) for t in y_leaves]


def _cast(g: Element, leaves: list) -> Element:
    """Cast floating elements to the data's floating dtype."""
    dtype = next((t.dtype for t in leaves if isinstance(t, torch.Tensor) and t.is_floating_point()), None)
    if dtype is None:
        return g
    if isinstance(g, tuple):
        return tuple(t.to(dtype) if t.is_floating_point() else t for t in g)
    return g.to(dtype) if g.is_floating_point() else g
