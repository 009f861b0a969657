"""Exact permutation learning with ensembles of wide two-layer networks.

After Giapitzakis, Back de Luca and Fountoulakis, "Exact Learning of Permutations for
Nonzero Binary Inputs with Logarithmic Training Size and Quadratic Ensemble Complexity"
(2025, arXiv:2502.16763). A target permutation ``perm`` of ``k`` coordinates acts on binary
vectors by ``y[perm[i]] = x[i]`` (so ``P e_i = e_{perm[i]}``). Each of ``m`` independently
initialised two-layer ReLU networks (NTK parameterisation)

.. math::
    f(x) = \\frac{1}{\\sqrt{n}} A\\, \\mathrm{relu}(W x + b), \\qquad
    W_{ij}, A_{ij} \\sim N(0, 1),\\; b_i \\sim N(0, \\sigma_b^2)

is trained by full-batch gradient descent on the ``k`` standard basis vectors only
(``e_i -> P e_i``, loss ``1/2 sum ||f(e_i) - P e_i||^2``, all weights trained); the ``m``
outputs are averaged and rounded. The ensemble is *exact* on ``x`` when the rounded average
equals ``P x``; the benchmark asks for the smallest ``m`` that is exact on one input and on
all ``2^k - 1`` nonzero binary inputs.

Rounding (:func:`round_outputs`): in the infinite-width limit the trained network's mean
output at an input with ``s >= 2`` ones is ``alpha(s) > 0`` on the target's ones and
``beta(s) < 0`` on its zeros (:func:`infinite_width_moments`; ``alpha`` falls below 1/2 for
large ``s``, so rounding to the nearest integer fails), hence the ``"sign"`` rule (our reading
of the paper's "sign-based features"; only its abstract was available to us): an output is 1
iff it is positive. On the ``k`` training inputs the networks interpolate, the zeros sit
at ``0 +- residual`` and their sign is noise, so there the rule rounds to the nearest integer
(threshold 1/2). ``"nearest"`` (threshold 1/2 everywhere) is kept as the naive comparison.

All ``m`` networks are trained at once with batched weights ``(m, ...)`` and ``matmul``;
gradients are written out (two layers) rather than taken by autograd per network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from equikit._utils.validate import check_int, check_positive

__all__ = [
    "EnsembleParams",
    "PermutationEnsemble",
    "PermutationEnsembleConfig",
    "ensemble_outputs",
    "exact_rows",
    "infinite_width_moments",
    "init_ensemble",
    "last_failing_sizes",
    "nonzero_binary_inputs",
    "permute_features",
    "relu_kernels",
    "round_outputs",
    "smallest_exact_sizes",
    "train_ensemble",
]

_RULES = ("sign", "nearest")


# --------------------------------------------------------------------------- validation
def _check_perm(perm, k: int | None, where: str) -> torch.Tensor:
    perm = torch.as_tensor(perm)
    if perm.ndim != 1 or perm.dtype.is_floating_point or perm.dtype == torch.bool:
        raise ValueError(f"{where}: `perm` must be a 1-d integer tensor, got dtype {perm.dtype} shape "
                         f"{tuple(perm.shape)}")
    n = perm.numel()
    if n < 1 or (k is not None and n != k):
        raise ValueError(f"{where}: `perm` must have {k if k is not None else '>= 1'} entries, got {n}")
    if not torch.equal(torch.sort(perm).values, torch.arange(n, device=perm.device)):
        raise ValueError(f"{where}: `perm` must be a permutation of 0..{n - 1}, got {perm.tolist()}")
    return perm.long()


def _check_binary(x, k: int, where: str, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where}: `{name}` must be a tensor, got {type(x).__name__}")
    if x.ndim < 1 or x.shape[-1] != k:
        raise ValueError(f"{where}: `{name}` must have shape (..., {k}), got {tuple(x.shape)}")
    if not bool(((x == 0) | (x == 1)).all()):
        raise ValueError(f"{where}: `{name}` must be binary (entries 0 or 1), got values "
                         f"{torch.unique(x)[:6].tolist()}; the exactness claim is about {{0,1}}^k")
    if x.numel() and not bool((x != 0).any(-1).all()):
        raise ValueError(f"{where}: `{name}` has an all-zero row; the claim covers nonzero binary inputs only")
    return x


# --------------------------------------------------------------------------- data
def nonzero_binary_inputs(k: int, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """All ``2^k - 1`` nonzero binary vectors of length ``k``, row ``r`` the bits of ``r + 1``
    (bit ``i`` in column ``i``), so the one-hot rows come first at ``r = 2^i - 1``.

    Example:
        >>> nonzero_binary_inputs(2).tolist()
        [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    """
    check_int(k, "k", "nonzero_binary_inputs", minimum=1)
    if k > 24:
        raise ValueError(f"nonzero_binary_inputs: `k` must be <= 24 (2^k rows), got {k}")
    codes = torch.arange(1, 2**k)
    return ((codes[:, None] >> torch.arange(k)) & 1).to(dtype)


def permute_features(x: torch.Tensor, perm) -> torch.Tensor:
    """``P x`` with ``(P x)[perm[i]] = x[i]`` along the last dim.

    Example:
        >>> permute_features(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([2, 0, 1])).tolist()
        [0.0, 0.0, 1.0]
    """
    perm = _check_perm(perm, x.shape[-1], "permute_features")
    return x[..., torch.argsort(perm).to(x.device)]


# --------------------------------------------------------------------------- networks
class EnsembleParams(NamedTuple):
    """Weights of ``m`` two-layer networks: ``W (m, n, k_in)``, ``b (m, n)``, ``A (m, k_out, n)``."""

    W: torch.Tensor
    b: torch.Tensor
    A: torch.Tensor


def init_ensemble(n_models: int, k_in: int, k_out: int, width: int, *, bias_std: float = 1.0,
                  generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> EnsembleParams:
    """Independent standard-normal initialisation of ``n_models`` networks (NTK parameterisation:
    the ``1/sqrt(width)`` factor lives in :func:`ensemble_outputs`).

    Example:
        >>> p = init_ensemble(3, 4, 4, 16, generator=torch.Generator().manual_seed(0))
        >>> tuple(p.W.shape), tuple(p.b.shape), tuple(p.A.shape)
        ((3, 16, 4), (3, 16), (3, 4, 16))
    """
    for name, v in (("n_models", n_models), ("k_in", k_in), ("k_out", k_out), ("width", width)):
        check_int(v, name, "init_ensemble", minimum=1)
    bias_std = float(bias_std)
    if not bias_std >= 0:
        raise ValueError(f"init_ensemble: `bias_std` must be >= 0, got {bias_std}")
    kw = {"generator": generator, "dtype": dtype}
    W = torch.randn(n_models, width, k_in, **kw)
    b = bias_std * torch.randn(n_models, width, **kw)
    A = torch.randn(n_models, k_out, width, **kw)
    return EnsembleParams(W, b, A)


def _forward(params: EnsembleParams, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pre = torch.matmul(x, params.W.transpose(-1, -2)) + params.b[..., None, :]      # (m, N, n)
    out = torch.matmul(torch.relu(pre), params.A.transpose(-1, -2)) / math.sqrt(params.W.shape[-2])
    return pre, out


def ensemble_outputs(params: EnsembleParams, x: torch.Tensor) -> torch.Tensor:
    """Outputs ``(m, N, k_out)`` of every network at inputs ``x (N, k_in)``.

    Example:
        >>> p = init_ensemble(2, 3, 3, 8, generator=torch.Generator().manual_seed(0))
        >>> tuple(ensemble_outputs(p, torch.eye(3)).shape)
        (2, 3, 3)
    """
    return _forward(params, x)[1]


def _gradients(params: EnsembleParams, x: torch.Tensor, y: torch.Tensor):
    """Gradients of ``1/2 sum_{networks, rows} ||f(x) - y||^2`` and the residual."""
    pre, out = _forward(params, x)
    r = out - y                                                                      # (m, N, k_out)
    scale = 1.0 / math.sqrt(params.W.shape[-2])
    h = torch.relu(pre)
    dA = torch.matmul(r.transpose(-1, -2), h) * scale                               # (m, k_out, n)
    dpre = torch.matmul(r, params.A) * scale * (pre > 0)                            # (m, N, n)
    dW = torch.matmul(dpre.transpose(-1, -2), x)                                    # (m, n, k_in)
    return EnsembleParams(dW, dpre.sum(-2), dA), r


def train_ensemble(params: EnsembleParams, x: torch.Tensor, y: torch.Tensor, *, steps: int,
                   lr: float) -> tuple[EnsembleParams, float]:
    """Full-batch gradient descent of all networks at once; returns the trained weights and the
    largest absolute training residual at the end.

    Example:
        >>> p = init_ensemble(4, 3, 3, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> x = torch.eye(3, dtype=torch.float64)
        >>> _, res = train_ensemble(p, x, permute_features(x, torch.tensor([1, 2, 0])), steps=100, lr=0.2)
        >>> res < 1e-4
        True
    """
    check_int(steps, "steps", "train_ensemble", minimum=0)
    lr = check_positive(lr, "lr", "train_ensemble")
    W, b, A = (t.clone() for t in params)
    for _ in range(steps):
        g, _ = _gradients(EnsembleParams(W, b, A), x, y)
        W.sub_(lr * g.W)
        b.sub_(lr * g.b)
        A.sub_(lr * g.A)
    trained = EnsembleParams(W, b, A)
    _, r = _gradients(trained, x, y)
    return trained, float(r.abs().max()) if r.numel() else 0.0


# --------------------------------------------------------------------------- infinite width
def relu_kernels(x1: torch.Tensor, x2: torch.Tensor, bias_std: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Infinite-width kernels of the network above (closed form, arc-cosine kernels):
    NNGP ``K(x, x') = E[relu(u) relu(u')]`` and NTK
    ``Theta(x, x') = K(x, x') + (x.x' + sigma_b^2) E[1(u > 0) 1(u' > 0)]`` with ``(u, u')``
    centred Gaussian of covariance ``x.x' + sigma_b^2``. Shapes ``(N1, k), (N2, k) -> (N1, N2)``.

    Example:
        >>> K, T = relu_kernels(torch.eye(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64), 0.0)
        >>> round(float(K[0, 0]), 6), round(float(T[0, 0]), 6)
        (0.5, 1.0)
    """
    c = x1 @ x2.T + bias_std**2
    n1 = (x1 * x1).sum(-1) + bias_std**2
    n2 = (x2 * x2).sum(-1) + bias_std**2
    norm = torch.sqrt(n1[:, None] * n2[None, :])
    cos = (c / norm).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    nngp = norm / (2 * math.pi) * (torch.sin(theta) + (math.pi - theta) * cos)
    return nngp, nngp + c * (math.pi - theta) / (2 * math.pi)


def infinite_width_moments(x: torch.Tensor, perm, bias_std: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Labelled comparison, not a trained network: the Gaussian-process limit of one network
    trained to convergence on the basis vectors (infinite width, NTK regime): mean
    ``mu(x) = Theta(x, X) Theta(X, X)^{-1} P`` ``(N, k)`` and the per-coordinate standard
    deviation ``(N,)`` (output coordinates are independent, same variance)
    ``Sigma = K(x,x) + t K(X,X) t^T - 2 t K(X,x)``, ``t = Theta(x,X) Theta(X,X)^{-1}``.

    Example:
        >>> x = nonzero_binary_inputs(3, dtype=torch.float64)
        >>> mu, sd = infinite_width_moments(x, torch.tensor([1, 2, 0]))
        >>> bool((round_outputs(mu, x) == permute_features(x, torch.tensor([1, 2, 0]))).all())
        True
    """
    k = x.shape[-1]
    perm = _check_perm(perm, k, "infinite_width_moments")
    X = torch.eye(k, dtype=x.dtype)
    K_xX, T_xX = relu_kernels(x, X, bias_std)
    K_XX, T_XX = relu_kernels(X, X, bias_std)
    t = torch.linalg.solve(T_XX, T_xX.T).T                                           # (N, k)
    mu = t @ permute_features(X, perm)
    k_xx = ((x * x).sum(-1) + bias_std**2) / 2                                       # K(x, x): angle 0
    var = k_xx + ((t @ K_XX) * t).sum(-1) - 2 * (t * K_xX).sum(-1)
    return mu, var.clamp(min=0).sqrt()


# --------------------------------------------------------------------------- rounding, exactness
def round_outputs(y: torch.Tensor, x: torch.Tensor, rule: str = "sign") -> torch.Tensor:
    """Round ensemble outputs ``y (..., k)`` at inputs ``x (..., k)`` to ``{0, 1}``: ``"sign"``
    (1 iff positive; threshold 1/2 on one-hot inputs, which the networks were trained on) or
    ``"nearest"`` (threshold 1/2 everywhere).

    Example:
        >>> x = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
        >>> y = torch.tensor([[0.3, -0.1, 0.2], [0.97, 0.01, -0.02]])
        >>> round_outputs(y, x).tolist()
        [[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    """
    if rule not in _RULES:
        raise ValueError(f"round_outputs: `rule` must be one of {_RULES}, got {rule!r}")
    if y.shape[-1] != x.shape[-1]:
        raise ValueError(f"round_outputs: `y` and `x` must share their last dim, got {tuple(y.shape)} and "
                         f"{tuple(x.shape)}")
    threshold = torch.full(x.shape[:-1], 0.5, dtype=y.dtype, device=y.device)
    if rule == "sign":
        threshold = torch.where(x.sum(-1) == 1, threshold, torch.zeros_like(threshold))
    return (y > threshold[..., None]).to(y.dtype)


def exact_rows(y: torch.Tensor, x: torch.Tensor, perm, rule: str = "sign") -> torch.Tensor:
    """``(...,)`` bool: rows where the rounded output equals ``P x`` in every coordinate."""
    target = permute_features(x, perm).to(y.dtype)
    return (round_outputs(y, x, rule) == target).all(-1)


def last_failing_sizes(outputs: torch.Tensor, x: torch.Tensor, perm, rule: str = "sign", *,
                       start_sum: torch.Tensor | None = None,
                       start_count: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per input, the largest ensemble size ``m`` whose average is **not** exact (0 if none),
    over the prefixes ``start_count + 1 .. start_count + M`` of a sequence of networks whose
    first ``start_count`` outputs sum to ``start_sum`` and whose next ``M`` are ``outputs
    (M, N, k)``. Returns ``(last_fail (N,) long, running sum (N, k))``, so long sequences are
    processed chunk by chunk (``max`` of the chunks' ``last_fail``)."""
    M = outputs.shape[0]
    csum = torch.cumsum(outputs, 0)
    if start_sum is not None:
        csum = csum + start_sum
    sizes = torch.arange(start_count + 1, start_count + M + 1, device=outputs.device)
    ok = exact_rows(csum / sizes.to(outputs.dtype)[:, None, None], x, perm, rule)   # (M, N)
    last_fail = torch.where(~ok, sizes[:, None], 0).max(0).values
    return last_fail, csum[-1]


def smallest_exact_sizes(outputs: torch.Tensor, x: torch.Tensor, perm, rule: str = "sign") -> torch.Tensor:
    """For outputs ``(M, N, k)`` of ``M`` networks, per input the smallest ``m`` such that the
    average of the first ``m'`` networks is exact for **every** ``m' >= m`` up to ``M`` (the
    last failing prefix + 1: 1 when no prefix fails, ``M + 1`` when the full ensemble fails).

    Example:
        >>> x = torch.tensor([[1.0, 1.0]])
        >>> outs = torch.tensor([[[1.0, -2.0]], [[-0.5, 0.5]], [[1.0, 3.0]]])  # target (1, 1)
        >>> smallest_exact_sizes(outs, x, torch.tensor([0, 1])).tolist()      # means: fail, fail, ok
        [3]
    """
    return last_failing_sizes(outputs, x, perm, rule)[0] + 1


# --------------------------------------------------------------------------- module
@dataclass(frozen=True)
class PermutationEnsembleConfig:
    """Ensemble of ``n_models`` two-layer ReLU networks of width ``width`` on ``k`` coordinates,
    trained ``steps`` full-batch GD steps with step ``lr`` (``None``: ``1 / lambda_max`` of the
    infinite-width NTK on the basis vectors, so the slowest mode contracts by
    ``1 - lambda_min / lambda_max`` per step)."""

    k: int
    n_models: int = 64
    width: int = 1024
    steps: int = 300
    lr: float | None = None
    bias_std: float = 1.0
    rule: str = "sign"

    def __post_init__(self) -> None:
        where = "PermutationEnsembleConfig"
        for name in ("k", "n_models", "width"):
            check_int(getattr(self, name), name, where, minimum=1)
        check_int(self.steps, "steps", where, minimum=0)
        if self.lr is not None:
            check_positive(self.lr, "lr", where)
        if not float(self.bias_std) >= 0:
            raise ValueError(f"{where}: `bias_std` must be >= 0, got {self.bias_std}")
        if self.rule not in _RULES:
            raise ValueError(f"{where}: `rule` must be one of {_RULES}, got {self.rule!r}")

    def step_size(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        X = torch.eye(self.k, dtype=torch.float64)
        return 1.0 / float(torch.linalg.eigvalsh(relu_kernels(X, X, self.bias_std)[1]).max())


class PermutationEnsemble(nn.Module):
    """An ensemble trained to realise ``perm`` from the ``k`` basis vectors; ``forward`` gives the
    averaged outputs, :meth:`predict` the rounded ones.

    Shapes: ``x (..., k)`` nonzero binary -> ``(..., k)``.

    Example:
        >>> cfg = PermutationEnsembleConfig(k=3, n_models=128, width=64, steps=40)
        >>> model = PermutationEnsemble(cfg, torch.tensor([2, 0, 1]), generator=torch.Generator().manual_seed(0))
        >>> x = nonzero_binary_inputs(3)
        >>> bool((model.predict(x) == permute_features(x, model.perm)).all())
        True
    """

    def __init__(self, config: PermutationEnsembleConfig, perm, *, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if not isinstance(config, PermutationEnsembleConfig):
            raise TypeError(f"PermutationEnsemble: `config` must be a PermutationEnsembleConfig, got "
                            f"{type(config).__name__}")
        self.config = config
        self.register_buffer("perm", _check_perm(perm, config.k, "PermutationEnsemble"))
        params = init_ensemble(config.n_models, config.k, config.k, config.width, bias_std=config.bias_std,
                               generator=generator, dtype=dtype)
        X = torch.eye(config.k, dtype=dtype)
        params, self.train_residual = train_ensemble(params, X, permute_features(X, self.perm),
                                                     steps=config.steps, lr=config.step_size())
        for name, t in zip(EnsembleParams._fields, params):
            self.register_buffer(name, t)

    @property
    def params(self) -> EnsembleParams:
        return EnsembleParams(self.W, self.b, self.A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_binary(x, self.config.k, "PermutationEnsemble")
        flat = x.reshape(-1, self.config.k).to(self.W.dtype)
        return ensemble_outputs(self.params, flat).mean(0).reshape(x.shape)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return round_outputs(self(x), x.to(self.W.dtype), self.config.rule)
