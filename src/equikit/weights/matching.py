"""Aligning the hidden units of two networks: weight matching, activation matching, and the
straight-through estimator (Ainsworth, Hayase & Srinivasa, "Git Re-Basin", 2023).

All three return permutations ``perms`` for model B such that ``permute(spec, b, perms)``
is close to model A, so that the straight line between A and the permuted B stays in a
low-loss region (linear mode connectivity).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from equikit._utils import check_int, resolve_generator
from equikit.weights.permute import check_perms, inverse, permute, permute_tensor
from equikit.weights.spec import Params, PermutationSpec


@dataclass(frozen=True)
class MatchingConfig:
    """Weight matching settings.

    Attributes:
        max_sweeps: upper bound on sweeps over all groups (stops earlier once a sweep
            improves nothing).
        seed: seed for the random order in which groups are visited in each sweep (and for
            the starting points of restarts).
        perms: groups to match (default: every group except ``"input"``/``"output"``).
        restarts: runs of coordinate descent; the first starts at the identity (or
            ``init``), the others at random permutations; the best objective wins.
            Coordinate descent can stop in a local optimum when groups are nested
            (attention heads and the dims inside them); a few restarts help there.
    """

    max_sweeps: int = 100
    seed: int = 0
    perms: tuple[str, ...] | None = None
    restarts: int = 1

    def __post_init__(self) -> None:
        check_int(self.max_sweeps, "max_sweeps", "MatchingConfig", minimum=1)
        check_int(self.restarts, "restarts", "MatchingConfig", minimum=1)


@dataclass
class Matching:
    """A matching result: ``perms`` to apply to model B; ``objective`` after every sweep
    (``sum_l <W_A^l, P W_B^l>``); ``sweeps`` run (the last one improved nothing unless
    ``max_sweeps`` was reached)."""

    perms: dict[str, torch.Tensor]
    objective: list[float] = field(default_factory=list)
    sweeps: int = 0


def _unit_matrix(t: torch.Tensor, dim: int, factor: int, sizes: list[int]) -> torch.Tensor:
    """Rows = the units of factor ``factor`` of axis ``dim``; columns = everything else."""
    t = t.reshape(*t.shape[:dim], *sizes, *t.shape[dim + 1:])
    return t.movedim(dim + factor, 0).reshape(sizes[factor], -1)


def _default_groups(spec: PermutationSpec, config: MatchingConfig) -> list[str]:
    names = config.perms if config.perms is not None else tuple(
        k for k in spec.units if k not in ("input", "output"))
    for k in names:
        if k not in spec.units:
            raise ValueError(f"weight_matching: `config.perms` names the unknown group {k!r}")
    return list(names)


def _cost(spec: PermutationSpec, perm: str, a: Params, b: Params, gathers: dict) -> torch.Tensor:
    """``C[i, j] = sum over every axis ``perm`` acts on of <row i of A, row j of B>``, where B
    has all *other* groups already applied."""
    others = {k: g for k, g in gathers.items() if k != perm}
    n = spec.units[perm].size
    cost = torch.zeros(n, n, dtype=torch.float64)
    for key, dim, factor in spec.occurrences(perm):
        sizes = [spec.units[p].size for p in spec.axes[key][dim].perms]
        tb = permute_tensor(spec, key, b[key].to(torch.float64), others)
        ma = _unit_matrix(a[key].to(torch.float64), dim, factor, sizes)
        mb = _unit_matrix(tb, dim, factor, sizes)
        cost += ma @ mb.T
    return cost


def _assign(cost: torch.Tensor) -> torch.Tensor:
    """The gather index ``g`` maximising ``sum_i cost[i, g[i]]``."""
    _, col = linear_sum_assignment(cost.numpy(), maximize=True)
    return torch.from_numpy(np.asarray(col, dtype=np.int64))


def weight_matching(spec: PermutationSpec, params_a: Params, params_b: Params,
                    config: MatchingConfig = MatchingConfig(), init: Mapping[str, torch.Tensor] | None = None
                    ) -> Matching:
    """Permute B's hidden units to maximise ``sum_l <W_A^l, W_B^l permuted>`` (Git Re-Basin,
    Alg. 1).

    Coordinate descent: for one group ``p`` at a time, with every other group fixed, the
    objective is linear in ``P_p``: ``<P_p, C_p>`` with
    ``C_p = sum_{axes of p} W_A W_B'^T``, solved exactly by a linear assignment
    (``scipy.optimize.linear_sum_assignment``). Sweeps over all groups in random order until
    one sweep changes no assignment for the better.

    Args:
        spec: the shared :class:`PermutationSpec` of both models.
        params_a, params_b: their state_dicts (B is the one to be permuted).
        config: :class:`MatchingConfig`.
        init: optional starting permutations for B.

    Returns:
        :class:`Matching`; ``permute(spec, params_b, result.perms)`` is B aligned to A.

    Example:
        >>> import torch
        >>> from equikit.weights import MLP, mlp_spec, permute, random_perms, weight_matching
        >>> net = MLP(4, (16,), 3)
        >>> spec = mlp_spec(net)
        >>> a = net.state_dict()
        >>> b = permute(spec, a, random_perms(spec, 0))
        >>> m = weight_matching(spec, a, b)
        >>> all(torch.equal(permute(spec, b, m.perms)[k], a[k]) for k in a)
        True
    """
    where = "weight_matching"
    spec.check_params(params_a, "params_a", where)
    spec.check_params(params_b, "params_b", where)
    groups = _default_groups(spec, config)
    init = check_perms(spec, init or {}, where, "init")
    gen = resolve_generator(config.seed)
    best = None
    for r in range(config.restarts):
        if r == 0:
            gathers = {k: inverse(init[k]) if k in init else torch.arange(spec.units[k].size) for k in groups}
        else:
            gathers = {k: torch.randperm(spec.units[k].size, generator=gen) for k in groups}
        result = _descend(spec, params_a, params_b, groups, gathers, config.max_sweeps, gen)
        if best is None or result.objective[-1] > best.objective[-1] + 1e-12 * abs(best.objective[-1]):
            best = result
    return best


def _descend(spec, params_a, params_b, groups, gathers, max_sweeps, gen) -> Matching:
    """Coordinate descent from ``gathers`` until a sweep improves nothing."""
    result = Matching(perms={})
    for sweep in range(max_sweeps):
        improved = False
        for i in torch.randperm(len(groups), generator=gen).tolist():
            p = groups[i]
            cost = _cost(spec, p, params_a, params_b, gathers)
            new = _assign(cost)
            idx = torch.arange(len(new))
            old_value, new_value = cost[idx, gathers[p]].sum(), cost[idx, new].sum()
            if new_value > old_value + 1e-12 * max(1.0, abs(float(old_value))):
                gathers[p], improved = new, True
        result.objective.append(_objective(spec, params_a, params_b, gathers))
        result.sweeps = sweep + 1
        if not improved:
            break
    result.perms = {k: inverse(g) for k, g in gathers.items()}
    return result


def _objective(spec: PermutationSpec, a: Params, b: Params, gathers: dict) -> float:
    return float(sum((a[k].double() * permute_tensor(spec, k, b[k].double(), gathers)).sum()
                     for k in spec.axes if a[k].is_floating_point()))


# --------------------------------------------------------------------------- activations
def collect_activations(model: nn.Module, spec: PermutationSpec, inputs: torch.Tensor | list
                        ) -> dict[str, torch.Tensor]:
    """Hidden activations at every :class:`~equikit.weights.Site` of ``spec``, as
    ``(samples, units)`` matrices (all other dims flattened into samples).

    Args:
        model: the network (run in eval mode under ``no_grad``).
        spec: its spec, with ``sites``.
        inputs: one input batch or a list of batches.
    """
    if not spec.sites:
        raise ValueError("collect_activations: `spec` has no `sites`; build it with a spec builder "
                         "or pass Site entries")
    modules = dict(model.named_modules())
    store: dict[str, list[torch.Tensor]] = {k: [] for k in spec.sites}
    hooks = []
    for name, site in spec.sites.items():
        if site.module not in modules:
            raise ValueError(f"collect_activations: site {name!r} names the missing submodule {site.module!r}")

        def hook(_m, _i, out, name=name, dim=site.dim):
            store[name].append(out.detach().movedim(dim, -1).reshape(-1, out.shape[dim]))

        hooks.append(modules[site.module].register_forward_hook(hook))
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in inputs if isinstance(inputs, list) else [inputs]:
                model(batch)
    finally:
        model.train(training)
        for h in hooks:
            h.remove()
    return {k: torch.cat(v) for k, v in store.items()}


def activation_matching(spec: PermutationSpec, acts_a: Mapping[str, torch.Tensor],
                        acts_b: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Match units by the correlation of their activations on the same inputs (Git Re-Basin,
    Sec. 3.1): per group, maximise ``sum_i corr(a_i, b_{g(i)})`` by linear assignment.

    Args:
        spec: the models' spec.
        acts_a, acts_b: group -> ``(samples, units)`` activations, e.g. from
            :func:`collect_activations` on the same inputs.

    Returns:
        group -> permutation for model B (use with :func:`~equikit.weights.permute`).
    """
    perms = {}
    for name, a in acts_a.items():
        if name not in spec.units or name not in acts_b:
            raise ValueError(f"activation_matching: group {name!r} missing from `spec` or `acts_b`")
        b = acts_b[name]
        if a.shape != b.shape or a.shape[-1] != spec.units[name].size:
            raise ValueError(
                f"activation_matching: activations of {name!r} must both be (samples, "
                f"{spec.units[name].size}), got {tuple(a.shape)} and {tuple(b.shape)}"
            )
        perms[name] = inverse(_assign(_correlation(a.double(), b.double())))
    return perms


def _correlation(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    a = (a - a.mean(0)) / (a.std(0) + eps)
    b = (b - b.mean(0)) / (b.std(0) + eps)
    return a.T @ b / a.shape[0]


# --------------------------------------------------------------------------- STE
@dataclass(frozen=True)
class STEConfig:
    """Straight-through estimator settings: ``steps`` Adam steps of ``lr`` on the midpoint
    loss, ``seed`` for the batch order."""

    steps: int = 200
    lr: float = 1e-3
    seed: int = 0
    matching: MatchingConfig = MatchingConfig(max_sweeps=20)


def ste_matching(spec: PermutationSpec, model: nn.Module, params_a: Params, params_b: Params,
                 loss_fn: Callable[[nn.Module, int], torch.Tensor], config: STEConfig = STEConfig()
                 ) -> Matching:
    """Learn the permutation of B by the straight-through estimator (Git Re-Basin, Alg. 2).

    Keep continuous weights ``W~`` (initialised at A). At every step project them onto B's
    permutation orbit, ``P = weight_matching(W~, B)``, and minimise the loss of the midpoint
    ``(A + P B) / 2`` where the projected weights carry the gradient of ``W~``:
    ``P B + W~ - stopgrad(W~)``. Returns the projection with the lowest midpoint loss seen.

    Args:
        spec: the models' spec.
        model: a module with the architecture (its own weights are not used).
        params_a, params_b: the two state_dicts.
        loss_fn: ``loss_fn(module, step) -> scalar``: the training loss of ``module`` on the
            batch for ``step`` (the module is called through ``functional_call``).
        config: :class:`STEConfig`.
    """
    where = "ste_matching"
    spec.check_params(params_a, "params_a", where)
    float_keys = [k for k, t in params_a.items() if t.is_floating_point()]
    tilde = {k: params_a[k].detach().clone().requires_grad_(True) for k in float_keys}
    opt = torch.optim.Adam(tilde.values(), lr=config.lr)
    best, best_loss = Matching(perms={}), float("inf")
    for step in range(config.steps):
        current = {**params_a, **{k: v.detach() for k, v in tilde.items()}}
        perms = weight_matching(spec, current, params_b, config.matching).perms
        pb = permute(spec, params_b, perms)
        mid = {k: (params_a[k] + pb[k] + tilde[k] - tilde[k].detach()) / 2 if k in tilde else params_a[k]
               for k in params_a}
        loss = loss_fn(_Functional(model, mid), step)
        if float(loss.detach()) < best_loss:
            best_loss, best.perms = float(loss.detach()), perms
        opt.zero_grad()
        loss.backward()
        opt.step()
    best.objective, best.sweeps = [best_loss], config.steps
    return best


class _Functional(nn.Module):
    """``model`` run with the given parameters (a thin shell over ``functional_call``)."""

    def __init__(self, model: nn.Module, params: Params) -> None:
        super().__init__()
        self.model, self.params = model, params

    def forward(self, *args):
        return torch.func.functional_call(self.model, dict(self.params), args)
