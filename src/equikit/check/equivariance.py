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
    """Back to the input dtypes, contiguous (actions may return strided views, which slow down
    the model under test and would bias the overhead)."""
    fmt = torch.contiguous_format
    return [t.to(d, memory_format=fmt) if t.is_floating_point() else t.contiguous() for t, d in zip(leaves, dtypes)]


def _to_transform(leaves, transform_dtype):
    return [t.to(transform_dtype) if t.is_floating_point() else t for t in leaves]


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
            otherwise one call of ``f`` per element. Either way the actions are applied to a
            whole chunk of elements at once where the action allows it.
        chunk_size: elements per chunk (default: as many as keep the transformed copies of
            ``x`` within ~256 MB).
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
    n_el = group.batch_shape(elements)[0]
    if n_el == 0:
        raise ValueError("equivariance_error: `elements` is an empty batch")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"equivariance_error: `chunk_size` must be an int >= 1 or None, got {chunk_size!r}")
    elements = group._cast(elements, transform_dtype, in_leaves[0].device)
    x_t = _to_transform(in_leaves, transform_dtype)
    chunk = chunk_size or _default_chunk(x_t, n_el)

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
        for start in range(0, n_el, chunk):
            k = min(chunk, n_el - start)
            g = group.take(elements, slice(start, start + k))
            gx_leaves = _act_chunk(in_action, g, x_t, in_structure, k, "in_action")
            gx_cast = _cast_leaves(gx_leaves, in_dtypes)
            if vectorize:
                merged = [t.reshape(k * t.shape[1], *t.shape[2:]) for t in gx_cast]
                shapes = [(k * s[0], *s[1:]) for s in y_shapes]
                out_leaves, _ = _check_output(f(tree_unflatten(merged, in_structure)), y_structure, shapes, "f(g x)")
                out_leaves = [t.reshape(k, *s) for t, s in zip(out_leaves, y_shapes)]
            else:
                per = [
                    _check_output(f(tree_unflatten([t[j] for t in gx_cast], in_structure)), y_structure,
                                  y_shapes, "f(g x)")[0]
                    for j in range(k)
                ]
                out_leaves = [torch.stack([p[i] for p in per]) for i in range(len(y_shapes))]
            outs.append([t.detach().to(transform_dtype) for t in out_leaves])
            if out_action is None:
                refs.append([t.unsqueeze(0).expand(k, *t.shape) for t in y_t])
            else:
                refs.append(_act_chunk(out_action, g, y_t, y_structure, k, "out_action"))
            moved.append(_displacement(gx_leaves, x_t, k, n_rows))
    outs = [torch.cat([o[i] for o in outs]) for i in range(len(y_shapes))]
    refs = [torch.cat([r[i] for r in refs]) for i in range(len(y_shapes))]
    return _summarise(
        group, elements, x_t, outs, refs, torch.cat(moved), n_rows, y_leaves[0].dtype,
        out_action is None, seed, y_leaves, consistency,
    )


def _default_chunk(x_t: list[torch.Tensor], n_el: int, budget_bytes: int = 1 << 28) -> int:
    """Elements per chunk so that the transformed copies of ``x`` stay within ~256 MB."""
    size = sum(t.numel() * t.element_size() for t in x_t)
    return max(1, min(n_el, budget_bytes // max(size, 1)))


def _act_chunk(action: Action, g: Element, leaves, structure, k: int, name: str) -> list[torch.Tensor]:
    """Apply ``k`` elements to ``k`` copies of the data: one batched call when the action can
    take element batches, else one call per element. Returns leaves with a leading ``k``."""
    if action.batchable:
        expanded = [t.unsqueeze(0).expand(k, *t.shape) for t in leaves]
        out = action(g, tree_unflatten(expanded, structure))
        out_leaves, out_structure = tree_flatten(out)
    else:
        per = [tree_flatten(action(action.group.take(g, j), tree_unflatten(leaves, structure))) for j in range(k)]
        out_structure = per[0][1]
        out_leaves = [torch.stack([p[0][i] for p in per]) for i in range(len(per[0][0]))]
    if out_structure != structure:
        raise ValueError(f"equivariance_error: `{name}` changed the structure of the data it acts on")
    for i, (a, b) in enumerate(zip(out_leaves, leaves)):
        if tuple(a.shape[1:]) != tuple(b.shape):
            raise ValueError(
                f"equivariance_error: `{name}` changed the shape of leaf {i} from {tuple(b.shape)} to "
                f"{tuple(a.shape[1:])}"
            )
    return out_leaves


def _summarise(
    group, elements, x_t, outs, refs, moved, n_rows, out_dtype, invariance, seed, y_leaves,
    want_consistency,
):
    """``outs``/``refs``: per output leaf, ``(n_el, *shape)`` in the transform dtype;
    ``moved``: ``(n_el, n_rows)`` displacement of the input rows."""
    n_el = outs[0].shape[0]
    abs_err = torch.zeros(n_el, n_rows, dtype=torch.float64)
    ref_scale = torch.zeros(n_rows, dtype=torch.float64)
    for out_i, ref_i in zip(outs, refs):
        abs_err = torch.maximum(abs_err, _per_row_max(out_i - ref_i, n_el, n_rows))
        ref_scale = torch.maximum(ref_scale, _per_row_max(ref_i, n_el, n_rows).amax(dim=0))
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
        consistency = float((outs[0].argmax(-1) == refs[0].argmax(-1)).double().mean())

    degenerate = _count_degenerate(group, elements, x_t, moved, n_rows)
    worst_out = (
        _row([t[worst_k] for t in outs], worst_r, n_rows),
        _row([t[worst_k] for t in refs], worst_r, n_rows),
    )
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


def _per_row_max(a: torch.Tensor, n_el: int, n_rows: int) -> torch.Tensor:
    """(n_el, *shape) -> (n_el, n_rows): max |entry| over each row (float64, CPU)."""
    a = a.reshape(n_el, n_rows, -1)
    if a.shape[-1] == 0:
        return torch.zeros(n_el, n_rows, dtype=torch.float64)
    return a.abs().amax(dim=-1).to(torch.float64).cpu()  # (vector_norm(inf) is ~6x slower here)


def _row(leaves, r, n_rows):
    flat = [t.reshape(n_rows, -1)[r] if n_rows > 1 else t.reshape(-1) for t in leaves]
    return torch.cat(flat) if flat else torch.zeros(0)


def _displacement(gx_leaves, x_t, k: int, n_rows: int) -> torch.Tensor:
    """Per-row max ``|g x - x|`` over the floating leaves, shape ``(k, n_rows)``, float64."""
    idx = [i for i, t in enumerate(x_t) if t.is_floating_point()] or list(range(len(x_t)))
    out = torch.zeros(k, n_rows, dtype=torch.float64)
    for i in idx:
        if gx_leaves[i].numel() != k * x_t[i].numel():
            raise ValueError(
                f"equivariance_error: `in_action` changed the shape of input leaf {i} from "
                f"{tuple(x_t[i].shape)} to {tuple(gx_leaves[i].shape)}"
            )
        moved = gx_leaves[i].to(torch.float64).reshape(k, *x_t[i].shape)
        out = torch.maximum(out, _per_row_max(moved - x_t[i].to(torch.float64), k, n_rows))
    return out


def _count_degenerate(group, elements, x_t, moved, n_rows) -> int:
    """Rows of ``x`` left (numerically) unchanged by every sampled non-identity element."""
    n_el = moved.shape[0]
    ident = group.identity(n_el, dtype=torch.float64)
    parts = elements if isinstance(elements, tuple) else (elements,)
    iparts = ident if isinstance(ident, tuple) else (ident,)
    is_ident = torch.ones(n_el, dtype=torch.bool)
    for p, e in zip(parts, iparts):
        same = p.detach().cpu().to(e.dtype) == e
        is_ident &= same.reshape(n_el, -1).all(dim=1)
    if bool(is_ident.all()):
        return n_rows
    idx = [i for i, t in enumerate(x_t) if t.is_floating_point()] or list(range(len(x_t)))
    scale = torch.zeros(n_rows, dtype=torch.float64)
    for i in idx:
        scale = torch.maximum(scale, _per_row_max(x_t[i].to(torch.float64).unsqueeze(0), 1, n_rows)[0])
    diff = moved[~is_ident].amax(dim=0)
    return int((diff <= DEGENERATE_TOL * scale).sum())


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
