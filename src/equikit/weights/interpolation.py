"""Linear interpolation between two networks, the barrier metric, and merging of models.

The loss barrier of a path ``theta(t) = (1 - t) theta_A + t theta_B`` is

    B = max_t [ L(theta(t)) - ((1 - t) L(theta_A) + t L(theta_B)) ],

the largest rise of the loss above the straight line between the end points (Frankle et al.
2020; Entezari et al. 2022). For accuracy the sign flips (a dip below the line).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from equikit._utils import check_int
from equikit.weights.matching import MatchingConfig, weight_matching
from equikit.weights.permute import permute
from equikit.weights.spec import Params, PermutationSpec


def interpolate(params_a: Params, params_b: Params, t: float) -> dict[str, torch.Tensor]:
    """``(1 - t) A + t B`` for floating entries; integer buffers (BatchNorm's step counters)
    are taken from A.

    Example:
        >>> import torch
        >>> interpolate({"w": torch.zeros(2)}, {"w": torch.ones(2)}, 0.25)["w"]
        tensor([0.2500, 0.2500])
    """
    if set(params_a) != set(params_b):
        raise ValueError(
            f"interpolate: `params_a` and `params_b` must have the same keys; differing: "
            f"{sorted(set(params_a) ^ set(params_b))[:5]}"
        )
    return {k: torch.lerp(a, params_b[k].to(a), t) if a.is_floating_point() else a
            for k, a in params_a.items()}


def average(params: Sequence[Params]) -> dict[str, torch.Tensor]:
    """The mean of several state_dicts (integer buffers from the first)."""
    if not params:
        raise ValueError("average: `params` is empty")
    first = params[0]
    return {k: torch.stack([p[k] for p in params]).mean(0) if t.is_floating_point() else t
            for k, t in first.items()}


@dataclass
class Curve:
    """Metrics along an interpolation path: ``ts`` (``n_points``,) and metric name ->
    values at those ``ts``."""

    ts: list[float]
    metrics: dict[str, list[float]]

    def barrier(self, metric: str, higher_is_better: bool = False) -> float:
        """The barrier of ``metric`` along this curve (see :func:`barrier`)."""
        return barrier(self.metrics[metric], self.ts, higher_is_better)


def barrier(values: Sequence[float], ts: Sequence[float], higher_is_better: bool = False) -> float:
    """``max_t [v(t) - ((1 - t) v(0) + t v(1))]`` for losses; for metrics where higher is
    better (accuracy), ``max_t [((1 - t) v(0) + t v(1)) - v(t)]``.

    Args:
        values: metric values along the path, ``values[0]`` at ``t = 0`` and ``values[-1]``
            at ``t = 1``.
        ts: the interpolation coefficients, from 0 to 1.

    Example:
        >>> barrier([1.0, 3.0, 2.0], [0.0, 0.5, 1.0])
        1.5
    """
    if len(values) != len(ts) or len(ts) < 2:
        raise ValueError(f"barrier: need >= 2 values and as many ts, got {len(values)} and {len(ts)}")
    if ts[0] != 0.0 or ts[-1] != 1.0:
        raise ValueError(f"barrier: `ts` must run from 0 to 1, got {ts[0]} .. {ts[-1]}")
    v0, v1 = values[0], values[-1]
    sign = -1.0 if higher_is_better else 1.0
    return max(sign * (v - ((1 - t) * v0 + t * v1)) for v, t in zip(values, ts))


def interpolation_curve(model: nn.Module, params_a: Params, params_b: Params,
                        evaluate: Callable[[nn.Module], Mapping[str, float]], n_points: int = 25
                        ) -> Curve:
    """Evaluate ``model`` at ``n_points`` equally spaced points between A (t=0) and B (t=1).

    Args:
        model: a module of the right architecture; its weights are replaced in turn (and
            restored afterwards).
        params_a, params_b: the end points' state_dicts.
        evaluate: ``evaluate(model) -> {"loss": ..., "accuracy": ...}``; it may recompute
            BatchNorm statistics first (see :func:`reset_batchnorm`).
        n_points: number of points including both ends (25 in the papers' plots).

    Returns:
        A :class:`Curve`.
    """
    check_int(n_points, "n_points", "interpolation_curve", minimum=2)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    ts = [i / (n_points - 1) for i in range(n_points)]
    metrics: dict[str, list[float]] = {}
    try:
        for t in ts:
            model.load_state_dict(interpolate(params_a, params_b, t))
            for name, value in evaluate(model).items():
                metrics.setdefault(name, []).append(float(value))
    finally:
        model.load_state_dict(saved)
    return Curve(ts, metrics)


def reset_batchnorm(model: nn.Module, batches: Sequence[torch.Tensor]) -> None:
    """Recompute every BatchNorm's running statistics on ``batches`` (exact averages), as
    needed after interpolating networks with BatchNorm (their stored statistics do not
    interpolate)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for batch in batches:
            model(batch)
    model.train(training)


# --------------------------------------------------------------------------- merging
@dataclass(frozen=True)
class MergeConfig:
    """Merging settings: ``max_rounds`` rounds of re-aligning every model to the mean of the
    others (stops when no permutation changes), and the matching settings."""

    max_rounds: int = 20
    matching: MatchingConfig = field(default_factory=MatchingConfig)


def merge_models(spec: PermutationSpec, params: Sequence[Params], config: MergeConfig = MergeConfig()
                 ) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Merge two or more models by weight matching, then averaging.

    Two models: B is matched to A and ``(A + P B) / 2`` returned. Three or more
    ("MergeMany", Git Re-Basin App. A.10): every model is matched to the mean of the others
    (already aligned), in rounds, until no model's permutation changes.

    Returns:
        ``(merged state_dict, per-model permutations)``; with two models the first is never
        permuted, with more every model is moved into a common frame.

    Example:
        >>> import torch
        >>> from equikit.weights import MLP, mlp_spec, permute, random_perms
        >>> net = MLP(4, (16,), 3)
        >>> spec, a = mlp_spec(net), net.state_dict()
        >>> models = [a, permute(spec, a, random_perms(spec, 1)), permute(spec, a, random_perms(spec, 2))]
        >>> merged, _ = merge_models(spec, models)
        >>> x = torch.randn(5, 4)
        >>> torch.allclose(torch.func.functional_call(net, merged, (x,)), net(x), atol=1e-5)
        True
    """
    if len(params) < 2:
        raise ValueError(f"merge_models: `params` needs >= 2 state_dicts, got {len(params)}")
    for i, p in enumerate(params):
        spec.check_params(p, f"params[{i}]", "merge_models")
    perms = [{} for _ in params]
    aligned = [dict(p) for p in params]
    for _ in range(config.max_rounds):
        changed = False
        for i in range(1, len(params)) if len(params) == 2 else range(len(params)):
            target = average([aligned[j] for j in range(len(params)) if j != i])
            new = weight_matching(spec, target, params[i], config.matching).perms
            if not perms[i] or any(not torch.equal(new[k], perms[i][k]) for k in new):
                changed = True
            perms[i], aligned[i] = new, permute(spec, params[i], new)
        if not changed or len(params) == 2:
            break
    return average(aligned), perms
