"""Measure how far a callable is from equivariant under a group action.

For sampled group elements ``g`` and an input ``x`` we compare ``f(g . x)`` with
``g . f(x)`` (or with ``f(x)`` for invariance). Transformations are applied in
``transform_dtype`` (float64 by default) and cast back to the input's dtype, so the measured
error is the model's own, not the rounding of the transformation.

Error definitions (per group element ``k`` and per *row* ``r``; a row is one input of a batch
when inputs and outputs share a leading batch dim, else the whole output is one row):

- ``abs[k, r] = max |f(g_k x) - g_k f(x)|`` over the row's entries (all output leaves);
- ``scale[r] = max |g_k f(x)|`` over the row, floored at ``1e-3`` times the mean scale over
  rows (so outputs that are zero on some rows do not give infinite relative errors);
- ``rel[k, r] = abs[k, r] / scale[r]``.

A report passes when every ``abs[k, r] <= atol + rtol * scale[r]``; defaults: ``rtol`` from
the output dtype (float64: 1e-10, float32: 1e-5, half types: 1e-2) and ``atol = 0``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from equikit._utils import check_finite, resolve_generator, tree_flatten, tree_unflatten
from equikit._utils.pytree import describe_structure
from equikit.groups import Action, Element, Group

DEFAULT_RTOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}
QUANTILES = (0.5, 0.9, 0.99, 1.0)
DEGENERATE_TOL = 1e-9


@dataclass
class EquivarianceReport:
    """What :func:`equivariance_error` measured. Errors are Python floats in float64."""

    abs_max: float
    abs_mean: float
    rel_max: float
    rel_mean: float
    quantiles: dict[float, float]
    per_element_rel: torch.Tensor  # (n_elements,) max relative error over rows
    worst_index: int
    worst_element: Element
    worst_row: int
    consistency: float | None
    degenerate_inputs: int
    n_elements: int
    n_rows: int
    output_dtype: torch.dtype
    group: Group
    invariance: bool
    seed: int | None = None
    worst_outputs: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)
    _abs: torch.Tensor | None = field(default=None, repr=False)
    _scale: torch.Tensor | None = field(default=None, repr=False)

    def default_rtol(self) -> float:
        return DEFAULT_RTOL.get(self.output_dtype, 1e-5)

    def margin(self, rtol: float | None = None, atol: float | None = None) -> float:
        """Largest ``abs / (atol + rtol * scale)`` over elements and rows: <= 1 passes."""
        rtol = self.default_rtol() if rtol is None else rtol
        atol = 0.0 if atol is None else atol
        assert self._abs is not None and self._scale is not None
        bound = atol + rtol * self._scale.unsqueeze(0)
        ratio = torch.where(bound > 0, self._abs / bound, torch.where(self._abs > 0, math.inf, 0.0))
        return float(ratio.max())

    def passed(self, rtol: float | None = None, atol: float | None = None) -> bool:
        """True when every error is within ``atol + rtol * scale`` (see module docs)."""
        return self.margin(rtol, atol) <= 1.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "group": repr(self.group),
            "kind": "invariance" if self.invariance else "equivariance",
            "abs_max": self.abs_max,
            "abs_mean": self.abs_mean,
            "rel_max": self.rel_max,
            "rel_mean": self.rel_mean,
            "quantiles": {str(q): v for q, v in self.quantiles.items()},
            "worst_index": self.worst_index,
            "worst_element": _element_to_list(self.worst_element),
            "consistency": self.consistency,
            "degenerate_inputs": self.degenerate_inputs,
            "n_elements": self.n_elements,
            "n_rows": self.n_rows,
            "output_dtype": str(self.output_dtype).replace("torch.", ""),
            "default_rtol": self.default_rtol(),
            "passed": self.passed(),
            "seed": self.seed,
        }

    def __str__(self) -> str:
        d = self.to_dict()
        lines = [
            f"{d['kind']} under {d['group']} ({self.n_elements} elements x {self.n_rows} rows, "
            f"output {d['output_dtype']})",
            f"  rel error: max {self.rel_max:.3e}  mean {self.rel_mean:.3e}  "
            + "  ".join(f"q{int(q * 100)} {v:.2e}" for q, v in self.quantiles.items()),
            f"  abs error: max {self.abs_max:.3e}  mean {self.abs_mean:.3e}",
        ]
        if self.consistency is not None:
            lines.append(f"  argmax consistency: {100 * self.consistency:.2f}%")
        if self.degenerate_inputs:
            lines.append(f"  degenerate inputs (fixed by every sampled element): {self.degenerate_inputs}")
        verdict = "PASS" if self.passed() else "FAIL"
        lines.append(f"  verdict at rtol={self.default_rtol():g}: {verdict}")
        return "\n".join(lines)


def _element_to_list(g: Element) -> Any:
    if isinstance(g, tuple):
        return [t.tolist() for t in g]
    return g.tolist()


# ----------------------------------------------------------------------------- validation
def _check_args(f, in_action, out_action, n_samples, elements):
    where = "equivariance_error"
    if not callable(f):
        raise TypeError(f"{where}: `f` must be callable, got {type(f).__name__}")
    if not isinstance(in_action, Action):
        raise TypeError(f"{where}: `in_action` must be an equikit Action, got {type(in_action).__name__}")
    if out_action is not None:
        if not isinstance(out_action, Action):
            raise TypeError(
                f"{where}: `out_action` must be an Action or None (invariance), got "
                f"{type(out_action).__name__}"
            )
        if out_action.group != in_action.group:
            raise ValueError(
                f"{where}: `in_action` and `out_action` must act by the same group, got "
                f"{in_action.group!r} and {out_action.group!r}"
            )
    if elements is None and (isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1):
        raise ValueError(f"{where}: `n_samples` must be an int >= 1, got {n_samples!r}")


def _check_input(x) -> tuple[list, Any]:
    where = "equivariance_error"
    leaves, structure = tree_flatten(x)
    if not leaves:
        raise ValueError(f"{where}: `x` holds no tensors")
    for i, leaf in enumerate(leaves):
        if not isinstance(leaf, torch.Tensor):
            raise TypeError(
                f"{where}: every leaf of `x` must be a torch.Tensor, leaf {i} of "
                f"{describe_structure(structure)} is {type(leaf).__name__}"
            )
        if leaf.numel() == 0:
            raise ValueError(
                f"{where}: `x` has an empty tensor (leaf {i}, shape {tuple(leaf.shape)}); an empty "
                "batch cannot show equivariance"
            )
        check_finite(leaf, f"x (leaf {i})", where)
    return leaves, structure


def _check_output(out, ref_structure, ref_shapes, what: str):
    where = "equivariance_error"
    leaves, structure = tree_flatten(out)
    if ref_structure is not None and structure != ref_structure:
        raise ValueError(
            f"{where}: {what} has structure {describe_structure(structure)} but f(x) has "
            f"{describe_structure(ref_structure)}; f must return the same structure for every input"
        )
    for i, leaf in enumerate(leaves):
        if not isinstance(leaf, torch.Tensor):
            raise TypeError(f"{where}: {what} must be tensors, leaf {i} is {type(leaf).__name__}")
        if ref_shapes is not None and tuple(leaf.shape) != ref_shapes[i]:
            raise ValueError(
                f"{where}: leaf {i} of {what} has shape {tuple(leaf.shape)} but f(x) gave "
                f"{ref_shapes[i]}; f must keep output shapes under the group action"
            )
        check_finite(leaf, f"{what} (leaf {i})", where)
    return leaves, structure


# ----------------------------------------------------------------------------- helpers
def _cast_leaves(leaves: list[torch.Tensor], dtypes: list[torch.dtype]) -> list[torch.Tensor]:
    return [t.to(d) if t.is_floating_point() else t for t, d in zip(leaves, dtypes)]


def _to_transform(leaves, transform_dtype):
    return [t.to(transform_dtype) if t.is_floating_point() else t for t in leaves]


def _row_max(leaves: list[torch.Tensor], n_rows: int) -> torch.Tensor:
    """Max |entry| per row over all leaves, float64, shape (n_rows,)."""
    out = torch.zeros(n_rows, dtype=torch.float64)
    for t in leaves:
        a = t.detach().to(torch.float64).abs().cpu()
        a = a.reshape(n_rows, -1) if n_rows > 1 else a.reshape(1, -1)
        if a.shape[1]:
            out = torch.maximum(out, a.max(dim=1).values)
    return out


def _rows(in_leaves, out_leaves, batched: bool | None) -> int:
    def lead(leaves):
        sizes = {t.shape[0] if t.ndim else None for t in leaves}
        return sizes.pop() if len(sizes) == 1 else None

    n_in, n_out = lead(in_leaves), lead(out_leaves)
    auto = n_in is not None and n_in == n_out
    if batched is None:
        return n_out if auto else 1
    if batched and not auto:
        raise ValueError(
            "equivariance_error: `batched=True` needs every input and output leaf to share the "
            f"leading batch dim; got inputs {[tuple(t.shape) for t in in_leaves]} and outputs "
            f"{[tuple(t.shape) for t in out_leaves]}"
        )
    return n_out if batched else 1


@contextlib.contextmanager
def _eval_mode(f, no_grad: bool):
    was_training = f.training if isinstance(f, torch.nn.Module) else None
    if was_training:
        f.eval()
    try:
        with torch.no_grad() if no_grad else contextlib.nullcontext():
            yield
    finally:
        if was_training:
            f.train()


def _repeat_batch(leaves, k):
    """(N, ...) -> (k*N, ...) with the block structure [x; x; ...]."""
    return [t.unsqueeze(0).expand(k, *t.shape).reshape(k * t.shape[0], *t.shape[1:]) for t in leaves]


def _repeat_elements(group: Group, g: Element, n: int) -> Element:
    """(k, *e) -> (k*n, *e), each element repeated n times consecutively."""
    def rep(t):
        return t.repeat_interleave(n, dim=0)

    return tuple(rep(t) for t in g) if isinstance(g, tuple) else rep(g)


# ----------------------------------------------------------------------------- main entry
def equivariance_error(
    f: Callable[[Any], Any],
    x: Any,
    in_action: Action,
    out_action: Action | None = None,
    *,
    n_samples: int = 16,
    elements: Element | None = None,
    generator: torch.Generator | int | None = 0,
    transform_dtype: torch.dtype = torch.float64,
    vectorize: bool = False,
    chunk_size: int | None = None,
    batched: bool | None = None,
    no_grad: bool = True,
    consistency: bool | None = None,
) -> EquivarianceReport:
    """Measure the equivariance error of ``f`` at ``x`` under ``in_action``/``out_action``.

    Args:
        f: any callable on a tensor or pytree; an ``nn.Module`` is put in eval mode for the
            check and restored afterwards.
        x: the input (tensor or dict/tuple/list of tensors).
        in_action: how group elements move inputs.
        out_action: how they move outputs; ``None`` checks invariance.
        n_samples: number of group elements sampled (ignored when ``elements`` is given).
        elements: an explicit batch of group elements, e.g. ``group.elements()`` for a small
            finite group.
        generator: seed or ``torch.Generator`` for the sampled elements (default 0:
            reproducible).
        transform_dtype: dtype in which actions are applied and errors computed.
        vectorize: evaluate ``chunk_size`` elements in one call of ``f`` by stacking copies of
            ``x`` along the leading batch dim (``f`` must treat batch entries independently);
            otherwise one call per element.
        chunk_size: elements per call when vectorising (default: all).
        batched: whether the leading dim of inputs and outputs indexes independent inputs
            (default: inferred from the shapes).
        no_grad: run ``f`` under ``torch.no_grad()``; set False for models that differentiate
            internally (forces as ``-dE/dpos``).
        consistency: compute the argmax consistency over the last output dim (the share of
            rows where ``argmax f(g x) == argmax g f(x)``, the shift-consistency metric of
            "Reviving Shift Equivariance in Vision Transformers"). Default: only for
            invariance checks of a single logits tensor ``(..., classes)``.

    Returns:
        An :class:`EquivarianceReport`.

    Example:
        >>> import torch
        >>> from equikit.groups import E, PointCloud
        >>> from equikit.check import equivariance_error
        >>> centroid = lambda pos: pos.mean(dim=-2)
        >>> x = torch.randn(8, 20, 3, dtype=torch.float64)
        >>> equivariance_error(centroid, x, PointCloud(E(3)), PointCloud(E(3))).passed()
        True
    """
    _check_args(f, in_action, out_action, n_samples, elements)
    group = in_action.group
    in_leaves, in_structure = _check_input(x)
    in_dtypes = [t.dtype for t in in_leaves]
    seed = None
    if elements is None:
        gen = resolve_generator(generator)
        seed = generator if isinstance(generator, int) else None
        elements = group.sample(n_samples, generator=gen, dtype=transform_dtype)
    else:
        group.check_element(elements, "elements", "equivariance_error")
        if len(group.batch_shape(elements)) != 1:
            raise ValueError(
                "equivariance_error: `elements` must be a batch with one batch dim, got batch "
                f"shape {group.batch_shape(elements)}"
            )
        elements = group._cast(elements, transform_dtype, None)
    n_el = group.batch_shape(elements)[0]
    if n_el == 0:
        raise ValueError("equivariance_error: `elements` is an empty batch")
    device = in_leaves[0].device
    elements = group._cast(elements, transform_dtype, device)
    x_t = _to_transform(in_leaves, transform_dtype)

    with _eval_mode(f, no_grad):
        y = f(x)
        y_leaves, y_structure = _check_output(y, None, None, "f(x)")
        y_shapes = [tuple(t.shape) for t in y_leaves]
        y_t = _to_transform([t.detach() for t in y_leaves], transform_dtype)
        n_rows = _rows(in_leaves, y_leaves, batched)
        if vectorize and n_rows == 1 and batched is not True:
            raise ValueError(
                "equivariance_error: `vectorize=True` stacks inputs along their leading batch dim, "
                "but inputs and outputs of f do not share one; pass vectorize=False"
            )
        outs, refs, moved = [], [], []
        chunk = n_el if (not vectorize or chunk_size is None) else chunk_size
        starts = range(0, n_el, chunk) if vectorize else range(n_el)
        for start in starts:
            if vectorize:
                k = min(chunk, n_el - start)
                g = group.take(elements, slice(start, start + k))
                g_rep = _repeat_elements(group, g, n_rows)
                gx = in_action(g_rep, tree_unflatten(_repeat_batch(x_t, k), in_structure))
                gy = None if out_action is None else out_action(
                    g_rep, tree_unflatten(_repeat_batch(y_t, k), y_structure))
            else:
                k = 1
                g = group.take(elements, start)
                gx = in_action(g, tree_unflatten(x_t, in_structure))
                gy = None if out_action is None else out_action(g, tree_unflatten(y_t, y_structure))
            gx_leaves, gx_structure = tree_flatten(gx)
            if gx_structure != in_structure:
                raise ValueError("equivariance_error: `in_action` changed the structure of `x`")
            f_gx = f(tree_unflatten(_cast_leaves(gx_leaves, in_dtypes), in_structure))
            shapes = y_shapes if not vectorize else [(k * s[0], *s[1:]) for s in y_shapes]
            out_leaves, _ = _check_output(f_gx, y_structure, shapes, "f(g x)")
            ref_leaves = (
                _repeat_batch(y_t, k) if (vectorize and gy is None)
                else y_t if gy is None else tree_flatten(gy)[0]
            )
            for j in range(k):
                sl = slice(j * n_rows, (j + 1) * n_rows) if vectorize else slice(None)
                outs.append([t[sl].detach().to(transform_dtype) for t in out_leaves])
                refs.append([t[sl] for t in ref_leaves])
                moved.append([t[sl] for t in gx_leaves])
    return _summarise(
        group, elements, x_t, outs, refs, moved, n_rows, y_leaves[0].dtype if y_leaves else None,
        out_action is None, seed, y_leaves, consistency,
    )


def _summarise(
    group, elements, x_t, outs, refs, moved, n_rows, out_dtype, invariance, seed, y_leaves,
    want_consistency,
):
    n_el = len(outs)
    abs_err = torch.stack(
        [_row_max([o - r for o, r in zip(out, ref)], n_rows) for out, ref in zip(outs, refs)]
    )  # (n_el, n_rows)
    ref_scale = torch.stack([_row_max(ref, n_rows) for ref in refs]).amax(dim=0)
    mean_scale = float(ref_scale.mean())
    scale = torch.clamp(ref_scale, min=1e-3 * mean_scale)
    rel = torch.where(scale > 0, abs_err / scale, torch.where(abs_err > 0, math.inf, 0.0))
    per_element = rel.amax(dim=1)
    flat_idx = int(torch.argmax(rel.reshape(-1)))
    worst_k, worst_r = divmod(flat_idx, n_rows)
    q = torch.quantile(rel.reshape(-1), torch.tensor(QUANTILES, dtype=torch.float64))

    consistency = None
    logits = (
        len(y_leaves) == 1 and y_leaves[0].is_floating_point() and y_leaves[0].ndim >= 1
        and y_leaves[0].shape[-1] >= 2
    )
    if want_consistency and not logits:
        raise ValueError(
            "equivariance_error: `consistency=True` needs f to return one floating tensor "
            f"(..., classes) with classes >= 2, got shapes {[tuple(t.shape) for t in y_leaves]}"
        )
    if logits and (want_consistency or (want_consistency is None and invariance)):
        agree = [(o[0].argmax(-1) == r[0].argmax(-1)).double().mean() for o, r in zip(outs, refs)]
        consistency = float(torch.stack(agree).mean())

    degenerate = _count_degenerate(group, elements, x_t, moved, n_rows)
    worst_out = (_row(outs[worst_k], worst_r, n_rows), _row(refs[worst_k], worst_r, n_rows))
    return EquivarianceReport(
        abs_max=float(abs_err.max()),
        abs_mean=float(abs_err.mean()),
        rel_max=float(rel.max()),
        rel_mean=float(rel.mean()),
        quantiles={qq: float(v) for qq, v in zip(QUANTILES, q)},
        per_element_rel=per_element,
        worst_index=worst_k,
        worst_element=group.take(elements, worst_k),
        worst_row=worst_r,
        consistency=consistency,
        degenerate_inputs=degenerate,
        n_elements=n_el,
        n_rows=n_rows,
        output_dtype=out_dtype,
        group=group,
        invariance=invariance,
        seed=seed,
        worst_outputs=worst_out,
        _abs=abs_err,
        _scale=scale,
    )


def _row(leaves, r, n_rows):
    flat = [t.reshape(n_rows, -1)[r] if n_rows > 1 else t.reshape(-1) for t in leaves]
    return torch.cat(flat) if flat else torch.zeros(0)


def _count_degenerate(group, elements, x_t, moved, n_rows) -> int:
    """Rows of ``x`` left (numerically) unchanged by every sampled non-identity element."""
    ident = group.identity(None, dtype=torch.float64)
    nontrivial = []
    for k in range(len(moved)):
        g = group.take(elements, k)
        g64 = group._cast(g, torch.float64, "cpu")
        if not group.allclose(g64, ident, atol=0.0):
            nontrivial.append(k)
    float_idx = [i for i, t in enumerate(x_t) if t.is_floating_point()] or list(range(len(x_t)))
    x_sel = [x_t[i].to(torch.float64) for i in float_idx]
    scale = torch.clamp(_row_max(x_sel, n_rows), min=torch.finfo(torch.float64).tiny)
    if not nontrivial:
        return n_rows
    fixed = torch.ones(n_rows, dtype=torch.bool)
    for k in nontrivial:
        diff = [moved[k][i].to(torch.float64) - x_t[i].to(torch.float64) for i in float_idx]
        if any(d.shape != x.shape for d, x in zip(diff, x_sel)):
            return 0
        fixed &= _row_max(diff, n_rows) <= DEGENERATE_TOL * scale
    return int(fixed.sum())


# ----------------------------------------------------------------------------- assertion
class EquivarianceError(AssertionError):
    """Raised by :func:`assert_equivariant`; carries the report as ``.report``."""

    def __init__(self, message: str, report: EquivarianceReport):
        super().__init__(message)
        self.report = report


def assert_equivariant(
    f: Callable[[Any], Any],
    x: Any,
    in_action: Action,
    out_action: Action | None = None,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    **kwargs: Any,
) -> EquivarianceReport:
    """Like :func:`equivariance_error`, but raise :class:`EquivarianceError` (an
    ``AssertionError``) when the tolerance is exceeded; the message names the worst group
    element, both outputs at the worst row and the tolerance. Returns the report otherwise.

    Example:
        >>> import torch
        >>> from equikit.groups import Permutation, FeaturePermutation, Trivial
        >>> from equikit.check import assert_equivariant
        >>> act = FeaturePermutation(5, dim=-2)
        >>> rep = assert_equivariant(lambda x: x.sum(-2), torch.randn(3, 5, 2), act)
        >>> rep.passed()
        True
    """
    report = equivariance_error(f, x, in_action, out_action, **kwargs)
    if not report.passed(rtol, atol):
        rtol_used = report.default_rtol() if rtol is None else rtol
        out, ref = report.worst_outputs
        name = getattr(f, "__name__", type(f).__name__)
        kind = "invariant" if out_action is None else "equivariant"
        raise EquivarianceError(
            f"{name} is not {kind} under {in_action.group!r}: relative error {report.rel_max:.3e} "
            f"(abs {report.abs_max:.3e}) exceeds rtol={rtol_used:g}, atol={atol or 0:g}\n"
            f"  worst element (#{report.worst_index}): {_short(report.worst_element)}\n"
            f"  worst row {report.worst_row}:\n"
            f"    f(g x)  = {_short(out)}\n"
            f"    {'f(x)  ' if out_action is None else 'g f(x)'}  = {_short(ref)}\n"
            f"{report}",
            report,
        )
    return report


def _short(t: Element, n: int = 8) -> str:
    if isinstance(t, tuple):
        return "(" + ", ".join(_short(a, n) for a in t) + ")"
    flat = t.reshape(-1)
    vals = ", ".join(f"{v:.6g}" if t.is_floating_point() else str(int(v)) for v in flat[:n].tolist())
    more = f", ... ({flat.numel()} values, shape {tuple(t.shape)})" if flat.numel() > n else ""
    return f"[{vals}{more}]"
