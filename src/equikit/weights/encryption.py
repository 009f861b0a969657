"""Equivariant encryption of a network's hidden representations ("Encrypted Large Model
Inference: The Equivariant Encryption Paradigm", 2025), with permutations and positive
scalings, and an attack on it.

A *key* holds a secret permutation ``sigma_p`` for every group ``p`` of a
:class:`~equikit.weights.PermutationSpec` and, for groups whose nonlinearity commutes with
positive scaling (ReLU, linear inputs and outputs), secret scales ``s_p > 0``. The encrypted
network has the same architecture and computes

    f_enc(E_in(x)) = E_out(f(x)),    h_enc^p = E_p(h^p),    E_p(h)[sigma_p(i)] = s_p[i] h[i]

for every hidden representation ``h^p``: the server running ``f_enc`` only ever sees inputs,
hidden vectors and outputs in shuffled, rescaled coordinates, at no extra cost beyond the
client's ``E_in`` and ``E_out^{-1}`` (one gather and one multiply each). When the spec has
no ``"input"``/``"output"`` groups only the hidden representations are hidden and
``f_enc == f``.

Threat model and attack: see ``docs/weights.md``. :func:`activation_statistics_attack`
recovers ``sigma_p`` from scale-invariant statistics of the encrypted activations.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from equikit._utils import resolve_generator
from equikit.weights.matching import _assign
from equikit.weights.permute import check_perms, check_scales, inverse, permute
from equikit.weights.spec import PermutationSpec

_FORMAT = "equikit.weights.EncryptionKey"


@dataclass(frozen=True)
class EncryptionKey:
    """The secret of an encrypted model: the spec it belongs to (public), one permutation
    per group and positive scales for the scalable groups (secret)."""

    spec: PermutationSpec
    perms: Mapping[str, torch.Tensor]
    scales: Mapping[str, torch.Tensor]

    def __post_init__(self) -> None:
        check_perms(self.spec, self.perms, "EncryptionKey")
        check_scales(self.spec, self.scales, "EncryptionKey")

    def transform(self, group: str, h: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """``E_p(h)``: ``h'[sigma(i)] = s[i] h[i]`` along ``dim``."""
        if group not in self.perms:
            raise ValueError(f"EncryptionKey.transform: unknown group {group!r}; known {sorted(self.perms)}")
        h = _scale(h, self.scales.get(group), dim, +1)
        return h.index_select(dim, inverse(self.perms[group]).to(h.device))

    def untransform(self, group: str, h: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """``E_p^{-1}(h)``."""
        if group not in self.perms:
            raise ValueError(f"EncryptionKey.untransform: unknown group {group!r}; known {sorted(self.perms)}")
        h = h.index_select(dim, self.perms[group].to(h.device))
        return _scale(h, self.scales.get(group), dim, -1)

    def encrypt_input(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """Client side: ``E_in(x)`` (identity when the spec has no ``"input"`` group)."""
        return self.transform("input", x, dim) if "input" in self.perms else x

    def decrypt_output(self, y: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """Client side: ``E_out^{-1}(y)`` (identity when the spec has no ``"output"`` group)."""
        return self.untransform("output", y, dim) if "output" in self.perms else y


def _scale(h: torch.Tensor, s: torch.Tensor | None, dim: int, sign: int) -> torch.Tensor:
    if s is None:
        return h
    s = s.to(h)
    s = s if sign > 0 else 1.0 / s
    return h * s.reshape(-1, *([1] * (h.ndim - (dim % h.ndim) - 1)))


def generate_key(spec: PermutationSpec, generator: torch.Generator | int | None = None,
                 scale_range: tuple[float, float] | None = (0.5, 2.0)) -> EncryptionKey:
    """A fresh key: uniform permutations, log-uniform scales in ``scale_range`` for the
    scalable groups (``None``: permutations only).

    Use an unpredictable ``generator`` (``None`` draws a fresh seed) for real keys; a fixed
    seed is for tests only.

    Example:
        >>> import torch
        >>> from equikit.weights import MLP, mlp_spec, generate_key, encrypt
        >>> net = MLP(4, (8,), 3).double()
        >>> key = generate_key(mlp_spec(net, io=True), generator=0)
        >>> x = torch.randn(2, 4, dtype=torch.float64)
        >>> y = key.decrypt_output(encrypt(net, key)(key.encrypt_input(x)))
        >>> torch.allclose(y, net(x))
        True
    """
    gen = resolve_generator(generator)
    perms = {k: torch.randperm(u.size, generator=gen) for k, u in spec.units.items()}
    scales = {}
    if scale_range is not None:
        lo, hi = scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"generate_key: `scale_range` must satisfy 0 < lo <= hi, got {scale_range}")
        for k, u in spec.units.items():
            if u.scalable:
                r = torch.rand(u.size, generator=gen, dtype=torch.float64)
                scales[k] = torch.exp(torch.log(torch.tensor(lo, dtype=torch.float64)) * (1 - r)
                                      + torch.log(torch.tensor(hi, dtype=torch.float64)) * r)
    return EncryptionKey(spec, perms, scales)


def encrypt(model: nn.Module, key: EncryptionKey) -> nn.Module:
    """A copy of ``model`` with every hidden representation encrypted by ``key``.

    Args:
        model: the plain network; its ``state_dict`` must fit ``key.spec``.
        key: an :class:`EncryptionKey` from :func:`generate_key`.

    Returns:
        A deep copy with permuted (and scaled) parameters; ``model`` is untouched.

    Raises:
        ValueError: when the key belongs to another architecture.
    """
    if not isinstance(key, EncryptionKey):
        raise TypeError(f"encrypt: `key` must be an EncryptionKey, got {type(key).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"encrypt: `model` must be an nn.Module, got {type(model).__name__}")
    sd = model.state_dict()
    key.spec.check_params(sd, "model.state_dict() (for this key)", "encrypt")
    enc = copy.deepcopy(model)
    enc.load_state_dict(permute(key.spec, sd, key.perms, key.scales))
    return enc


def save_key(key: EncryptionKey, path: str | os.PathLike) -> Path:
    """Write ``key`` to ``path`` (torch format, plain data only, owner-readable only)."""
    path = Path(path)
    payload = {"format": _FORMAT, "version": 1, "spec": key.spec.to_dict(),
               "perms": dict(key.perms), "scales": dict(key.scales)}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def load_key(path: str | os.PathLike) -> EncryptionKey:
    """Read a key written by :func:`save_key` (``weights_only`` loading: no code runs)."""
    data = torch.load(path, weights_only=True)
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise ValueError(f"load_key: {str(path)!r} is not an equikit encryption key file")
    return EncryptionKey(PermutationSpec.from_dict(data["spec"]), data["perms"], data["scales"])


# --------------------------------------------------------------------------- attack
def unit_statistics(acts: torch.Tensor, quantiles: int = 9) -> torch.Tensor:
    """Per-unit statistics that do not change under a positive rescaling of the unit:
    the share of positive values and quantiles divided by the root mean square.

    Args:
        acts: ``(samples, units)``.

    Returns:
        ``(units, quantiles + 2)``.
    """
    acts = acts.double()
    rms = acts.pow(2).mean(0).sqrt().clamp_min(1e-12)
    q = torch.linspace(0.1, 0.9, quantiles, dtype=torch.float64)
    qs = torch.quantile(acts, q, dim=0) / rms
    return torch.cat([(acts > 0).double().mean(0)[None], (acts.mean(0) / rms)[None], qs]).T


def activation_statistics_attack(plain_acts: torch.Tensor, encrypted_acts: torch.Tensor) -> torch.Tensor:
    """Guess the secret permutation of one group from activation statistics.

    The attacker runs the public plain model on public data of the same distribution
    (``plain_acts``) and observes the encrypted hidden vectors of the victim's queries
    (``encrypted_acts``). Positive scalings do not change :func:`unit_statistics`, so units
    are matched by the linear assignment that minimises the distance between their
    statistics.

    Args:
        plain_acts: ``(N, units)`` plain activations.
        encrypted_acts: ``(M, units)`` encrypted activations (different inputs).

    Returns:
        The estimated ``sigma`` (int64 ``(units,)``): plain unit ``i`` -> encrypted slot.
    """
    if plain_acts.ndim != 2 or encrypted_acts.ndim != 2 or plain_acts.shape[1] != encrypted_acts.shape[1]:
        raise ValueError(
            "activation_statistics_attack: activations must be (samples, units) with equal units, "
            f"got {tuple(plain_acts.shape)} and {tuple(encrypted_acts.shape)}"
        )
    sp, se = unit_statistics(plain_acts), unit_statistics(encrypted_acts)
    cost = -torch.cdist(sp, se)
    return _assign(cost)
