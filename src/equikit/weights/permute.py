"""Apply hidden-unit permutations (and positive scalings) to a state_dict.

``permute(spec, params, perms)`` returns the parameters of the network whose hidden unit
``i`` of group ``p`` sits in slot ``perms[p][i]``; the network computes the same function.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from equikit._utils import resolve_generator
from equikit.groups import Action, Permutation
from equikit.weights.spec import Params, PermAxis, PermutationSpec


def inverse(perm: torch.Tensor) -> torch.Tensor:
    """``sigma^{-1}`` of an int64 permutation ``(n,)``."""
    return Permutation(perm.shape[-1]).inverse(perm)


def check_perms(spec: PermutationSpec, perms: Mapping[str, torch.Tensor], where: str,
                name: str = "perms") -> dict[str, torch.Tensor]:
    """Validate a name -> permutation mapping against ``spec``: known names, int64 ``(n,)``,
    bijections. Missing names mean the identity."""
    if not isinstance(perms, Mapping):
        raise TypeError(f"{where}: `{name}` must be a mapping name -> int64 tensor, got {type(perms).__name__}")
    out = {}
    for key, p in perms.items():
        if key not in spec.units:
            raise ValueError(f"{where}: `{name}` names the unknown group {key!r}; known: {sorted(spec.units)}")
        n = spec.units[key].size
        if not isinstance(p, torch.Tensor) or p.dtype != torch.int64:
            got = p.dtype if isinstance(p, torch.Tensor) else type(p).__name__
            raise TypeError(f"{where}: `{name}[{key!r}]` must be an int64 tensor, got {got}")
        if tuple(p.shape) != (n,):
            raise ValueError(f"{where}: `{name}[{key!r}]` must have shape ({n},), got {tuple(p.shape)}")
        if not torch.equal(torch.sort(p).values, torch.arange(n, device=p.device)):
            raise ValueError(
                f"{where}: `{name}[{key!r}]` is not a bijection of 0..{n - 1} (repeated or "
                f"out-of-range entries: {p.tolist()[:10]}...)"
            )
        out[key] = p
    return out


def check_scales(spec: PermutationSpec, scales: Mapping[str, torch.Tensor] | None, where: str) -> dict:
    if scales is None:
        return {}
    out = {}
    for key, s in scales.items():
        if key not in spec.units:
            raise ValueError(f"{where}: `scales` names the unknown group {key!r}")
        if not spec.units[key].scalable:
            raise ValueError(
                f"{where}: `scales[{key!r}]` given, but group {key!r} is not scalable (its "
                "nonlinearity or a normalisation does not commute with positive scaling)"
            )
        n = spec.units[key].size
        if not isinstance(s, torch.Tensor) or not s.is_floating_point() or tuple(s.shape) != (n,):
            raise ValueError(f"{where}: `scales[{key!r}]` must be a float tensor of shape ({n},), got {s!r}")
        if not bool((s > 0).all()):
            raise ValueError(f"{where}: `scales[{key!r}]` must be positive everywhere")
        out[key] = s
    return out


def permute_axis(t: torch.Tensor, dim: int, ax: PermAxis, spec: PermutationSpec,
                 gathers: Mapping[str, torch.Tensor], scales: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Gather ``t`` along ``dim`` with the (factorised) indices ``gathers`` (``sigma^{-1}``),
    then apply the scale of a single-factor axis."""
    sizes = [spec.units[p].size for p in ax.perms]
    shape = t.shape
    t = t.reshape(*shape[:dim], *sizes, *shape[dim + 1:])
    for f, p in enumerate(ax.perms):
        if p in gathers:
            t = t.index_select(dim + f, gathers[p].to(t.device))
    t = t.reshape(shape)
    p = ax.perms[0]
    if ax.scale and p in scales:
        s = scales[p].to(t)
        if p in gathers:
            s = s[gathers[p]]
        s = s if ax.scale > 0 else 1.0 / s
        t = t * s.reshape(-1, *([1] * (t.ndim - dim - 1)))
    return t


def permute_tensor(spec: PermutationSpec, key: str, t: torch.Tensor, gathers, scales=None) -> torch.Tensor:
    for d, ax in enumerate(spec.axes[key]):
        if ax is not None:
            t = permute_axis(t, d, ax, spec, gathers, scales or {})
    return t


def permute(spec: PermutationSpec, params: Params, perms: Mapping[str, torch.Tensor],
            scales: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Permute (and optionally scale) the hidden units of a state_dict.

    For every group ``p`` and unit ``i``: unit ``i`` moves to slot ``sigma_p(i)``; its incoming
    weights are multiplied by ``s_p[i]`` and its outgoing weights divided by it. The result
    computes the same function as ``params`` (hidden vectors become
    ``h'[sigma(i)] = s_i h_i``).

    Args:
        spec: the network's :class:`PermutationSpec`.
        params: its ``state_dict`` (every key described by ``spec``).
        perms: group name -> int64 ``(n,)`` permutation; a missing name is the identity.
        scales: group name -> positive ``(n,)`` scales, for scalable groups only.

    Returns:
        A new ``dict`` (tensors are not modified in place).

    Example:
        >>> import torch
        >>> from equikit.weights import MLP, mlp_spec, permute
        >>> net = MLP(4, (8,), 2)
        >>> spec = mlp_spec(net)
        >>> sd = permute(spec, net.state_dict(), {"h0": torch.randperm(8)})
        >>> x = torch.randn(3, 4)
        >>> torch.allclose(torch.func.functional_call(net, sd, (x,)), net(x), atol=1e-6)
        True
    """
    where = "permute"
    spec.check_params(params, "params", where)
    perms = check_perms(spec, perms, where)
    scales = check_scales(spec, scales, where)
    gathers = {k: inverse(p) for k, p in perms.items()}
    return {k: permute_tensor(spec, k, t, gathers, scales) for k, t in params.items()}


def identity_perms(spec: PermutationSpec) -> dict[str, torch.Tensor]:
    return {k: torch.arange(u.size) for k, u in spec.units.items()}


def random_perms(spec: PermutationSpec, generator: torch.Generator | int | None = None) -> dict[str, torch.Tensor]:
    """A uniformly random permutation for every group of ``spec`` (reproducible from a seed)."""
    gen = resolve_generator(generator)
    return {k: torch.randperm(u.size, generator=gen) for k, u in spec.units.items()}


class WeightSpaceAction(Action):
    """The action of one permutation group of ``spec`` on state_dicts, so the public checker
    can test that a network is *invariant* under relabelling its hidden units.

    Example:
        >>> import torch
        >>> from equikit.check import equivariance_error
        >>> from equikit.weights import MLP, mlp_spec, WeightSpaceAction
        >>> net = MLP(4, (8,), 2).double()
        >>> x = torch.randn(5, 4, dtype=torch.float64)
        >>> f = lambda sd: torch.func.functional_call(net, sd, (x,))
        >>> act = WeightSpaceAction(mlp_spec(net), "h0")
        >>> equivariance_error(f, dict(net.state_dict()), act, batched=False).passed()
        True
    """

    batchable = False

    def __init__(self, spec: PermutationSpec, perm: str) -> None:
        if perm not in spec.units:
            raise ValueError(f"WeightSpaceAction: `perm` must be one of {sorted(spec.units)}, got {perm!r}")
        self.spec, self.perm = spec, perm
        self.group = Permutation(spec.units[perm].size)

    def _act(self, g, x):
        return permute(self.spec, x, {self.perm: g.to(torch.int64)})

    def __repr__(self) -> str:
        return f"WeightSpaceAction({self.perm!r}, n={self.group.n})"
