"""Exact permutation learning with ensembles of two-layer networks (issue 5): relabelling
equivariance of the trained ensemble through the public checker (with a negative control),
exactness on small k, the infinite-width closed form against analytic values, Monte Carlo and
trained networks, the prefix-size bookkeeping, and bad input."""

import math

import pytest
import torch

from equikit.check import assert_equivariant, equivariance_error
from equikit.groups import FeaturePermutation, NodePermutation
from equikit.models.permutation_learning import (
    EnsembleParams,
    PermutationEnsemble,
    PermutationEnsembleConfig,
    ensemble_outputs,
    exact_rows,
    infinite_width_moments,
    init_ensemble,
    last_failing_sizes,
    nonzero_binary_inputs,
    permute_features,
    relu_kernels,
    round_outputs,
    smallest_exact_sizes,
    train_ensemble,
)

RTOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- data, networks
def test_nonzero_binary_inputs_enumerates_every_nonzero_vector():
    x = nonzero_binary_inputs(5)
    assert x.shape == (31, 5)
    codes = (x * 2 ** torch.arange(5)).sum(-1).long()
    assert sorted(codes.tolist()) == list(range(1, 32))
    assert torch.equal(x[[0, 1, 3, 7, 15]], torch.eye(5))  # one-hot rows at 2^i - 1


def test_permute_features_sends_e_i_to_e_perm_i():
    perm = torch.tensor([3, 0, 2, 1])
    out = permute_features(torch.eye(4), perm)
    for i in range(4):
        assert out[i].argmax().item() == perm[i].item()
    x = torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert permute_features(x, perm).tolist() == [1.0, 0.0, 0.0, 1.0]


def test_gradients_match_autograd_and_training_interpolates():
    x = torch.eye(5, dtype=torch.float64)
    y = permute_features(x, torch.tensor([1, 2, 3, 4, 0]))
    p = init_ensemble(3, 5, 5, 32, generator=_gen(), dtype=torch.float64)
    lr = 0.05
    stepped, _ = train_ensemble(p, x, y, steps=1, lr=lr)
    leaves = [t.clone().requires_grad_() for t in p]
    (0.5 * ((ensemble_outputs(EnsembleParams(*leaves), x) - y) ** 2).sum()).backward()
    for before, after, leaf in zip(p, stepped, leaves):
        torch.testing.assert_close(after, before - lr * leaf.grad, rtol=1e-12, atol=1e-12)
    trained, residual = train_ensemble(p, x, y, steps=2000, lr=lr * 3)
    assert residual < 1e-9
    torch.testing.assert_close(ensemble_outputs(trained, x), y.expand(3, 5, 5), rtol=0, atol=1e-9)


# --------------------------------------------------------------------------- equivariance
def _trained_mean(data, steps=40, lr=0.15):
    k = data["Y"].shape[-1]
    X = torch.eye(k, dtype=data["Y"].dtype)
    params, _ = train_ensemble(EnsembleParams(data["W"], data["b"], data["A"]), X, data["Y"], steps=steps, lr=lr)
    return ensemble_outputs(params, data["x"]).mean(0)


def _relabelling_data(dtype, k=5, m=4, width=32):
    p = init_ensemble(m, k, k, width, generator=_gen(1), dtype=dtype)
    x = nonzero_binary_inputs(k, dtype=dtype)[:12]
    Y = permute_features(torch.eye(k, dtype=dtype), torch.tensor([2, 4, 1, 0, 3]))
    return {"x": x, "Y": Y, "W": p.W, "b": p.b, "A": p.A}


def test_trained_ensemble_is_relabelling_equivariant(dtype):
    """Relabelling the k coordinates by sigma in the test inputs, in the training pairs
    (e_i, y_i) -> (e_sigma(i), sigma y_i), i.e. Y -> P Y P^T, and in the initial weights (input
    columns of W, output rows of A) relabels the trained ensemble's outputs: GD commutes with
    the relabelling. (Over random initialisations this is the paper's statement in
    distribution.)"""
    data = _relabelling_data(dtype)
    act = NodePermutation(5, nodes={"x": -1, "W": -1, "A": -2}, adjacency=("Y",), invariant=("b",))
    assert_equivariant(_trained_mean, data, act, FeaturePermutation(5, dim=-1), batched=False,
                       rtol=RTOL[dtype], n_samples=8)


def test_relabelling_negative_control(dtype):
    """Negative control: keep one fixed initialisation (weights not relabelled): a single
    ensemble's outputs then depend on the coordinate labels, and the checker must flag it."""
    data = _relabelling_data(dtype)
    act = NodePermutation(5, nodes={"x": -1}, adjacency=("Y",), invariant=("W", "b", "A"))
    report = equivariance_error(_trained_mean, data, act, FeaturePermutation(5, dim=-1), batched=False,
                                n_samples=8)
    assert not report.passed(rtol=1e-2)


# --------------------------------------------------------------------------- exactness
def test_ensemble_is_exact_on_all_inputs_for_small_k_and_one_network_is_not():
    k, perm = 4, torch.tensor([2, 0, 3, 1])
    cfg = PermutationEnsembleConfig(k=k, n_models=384, width=128, steps=60)
    model = PermutationEnsemble(cfg, perm, generator=_gen(3))
    x = nonzero_binary_inputs(k)
    assert model.train_residual < 1e-2
    assert torch.equal(model.predict(x), permute_features(x, perm))
    singles = ensemble_outputs(model.params, x)  # (m, 15, 4): each network on its own
    single_exact = exact_rows(singles, x, perm).all(-1)
    assert single_exact.float().mean() < 0.5  # most single networks get some input wrong
    sizes = smallest_exact_sizes(singles, x, perm)
    assert int(sizes.max()) <= cfg.n_models and int(sizes.max()) > 1


def test_infinite_width_mean_has_the_sign_structure_and_nearest_rounding_fails():
    """Closed form: on an input with s >= 2 ones the mean is > 0 on the target's ones and < 0 on
    its zeros (so the sign rule is exact on the mean), 1 / 0 on the training inputs; for large
    s the ones fall below 1/2, so rounding to the nearest integer fails."""
    for k in range(2, 13):
        perm = torch.randperm(k, generator=_gen(k))
        x = nonzero_binary_inputs(k, dtype=torch.float64)
        mu, _ = infinite_width_moments(x, perm)
        target = permute_features(x, perm)
        s = x.sum(-1)
        unseen = s >= 2
        assert bool((mu[unseen][target[unseen] == 1] > 0).all())
        assert bool((mu[unseen][target[unseen] == 0] < 0).all())
        torch.testing.assert_close(mu[s == 1], target[s == 1], rtol=0, atol=1e-12)
        assert bool(exact_rows(mu, x, perm).all())
        if k >= 8:
            assert not bool(exact_rows(mu, x, perm, rule="nearest").all())


# --------------------------------------------------------------------------- infinite width
def test_relu_kernels_analytic_values():
    e = torch.eye(3, dtype=torch.float64)
    K, T = relu_kernels(e, torch.cat([e, -e]), bias_std=0.0)
    # same unit vector: angle 0, K = |x|^2 / 2, Theta = |x|^2
    torch.testing.assert_close(K[:, :3].diagonal(), torch.full((3,), 0.5, dtype=torch.float64))
    torch.testing.assert_close(T[:, :3].diagonal(), torch.ones(3, dtype=torch.float64))
    # orthogonal unit vectors: angle pi/2, K = 1 / (2 pi), Theta = K (x.x' = 0)
    torch.testing.assert_close(K[0, 1], torch.tensor(1 / (2 * math.pi), dtype=torch.float64))
    torch.testing.assert_close(T[0, 1], K[0, 1])
    # opposite vectors: angle pi, both zero
    torch.testing.assert_close(T[:, 3:].diagonal(), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-15)


def test_relu_kernels_match_monte_carlo():
    """Both kernels as expectations over 200000 hidden units (relative MC error ~0.3%, so 3%)."""
    g = _gen(5)
    x = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    n = 200_000
    W = torch.randn(n, 3, generator=g, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64)
    u = x @ W.T + b
    nngp = torch.relu(u) @ torch.relu(u).T / n
    step = (u > 0).double()
    ntk = nngp + (x @ x.T + 1) * (step @ step.T / n)
    K, T = relu_kernels(x, x, 1.0)
    torch.testing.assert_close(K, nngp, rtol=3e-2, atol=0)
    torch.testing.assert_close(T, ntk, rtol=3e-2, atol=0)


def test_gp_moments_match_trained_wide_networks():
    """Trained networks of width 256: the ensemble mean within 5 standard errors of the GP mean
    and the spread within 15% of the GP standard deviation (512 networks: the standard error
    of a spread is ~3%; the finite-width correction is O(1/width))."""
    k, perm, m = 4, torch.tensor([1, 3, 0, 2]), 512
    x = nonzero_binary_inputs(k, dtype=torch.float64)
    X = torch.eye(k)
    p = init_ensemble(m, k, k, 256, generator=_gen(7))
    p, residual = train_ensemble(p, X, permute_features(X, perm), steps=120, lr=0.2)
    assert residual < 1e-4
    out = ensemble_outputs(p, x.float()).double()
    mu, sd = infinite_width_moments(x, perm)
    unseen = x.sum(-1) >= 2
    se = sd[unseen, None] / math.sqrt(m)
    assert bool(((out.mean(0)[unseen] - mu[unseen]).abs() < 5 * se).all())
    ratio = out.std(0)[unseen].mean(-1) / sd[unseen]
    assert bool(((ratio - 1).abs() < 0.15).all())


# --------------------------------------------------------------------------- bookkeeping
def test_prefix_sizes_chunked_equal_whole_and_match_a_direct_loop():
    g = _gen(11)
    k, perm = 3, torch.tensor([2, 0, 1])
    x = nonzero_binary_inputs(k)
    target = permute_features(x, perm)
    outputs = (2 * target - 1) * 0.2 + torch.randn(40, 7, 3, generator=g)
    whole = smallest_exact_sizes(outputs, x, perm)
    lf1, s1 = last_failing_sizes(outputs[:15], x, perm)
    lf2, _ = last_failing_sizes(outputs[15:], x, perm, start_sum=s1, start_count=15)
    assert torch.equal(whole, torch.maximum(lf1, lf2) + 1)
    for j in range(7):  # direct definition: last m whose prefix mean is not exact, + 1
        fails = [m for m in range(1, 41)
                 if not torch.equal(round_outputs(outputs[:m, j].mean(0), x[j]), target[j])]
        assert whole[j].item() == (max(fails) + 1 if fails else 1)


def test_round_outputs_thresholds():
    x = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    y = torch.tensor([[0.4, 0.1, -0.1], [0.4, 0.1, -0.1]])
    assert round_outputs(y, x).tolist() == [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]]
    assert round_outputs(y, x, "nearest").tolist() == [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]


# --------------------------------------------------------------------------- bad input
def test_bad_config_raises():
    with pytest.raises(ValueError, match="PermutationEnsembleConfig: `k` must be >= 1, got 0"):
        PermutationEnsembleConfig(k=0)
    with pytest.raises(ValueError, match="PermutationEnsembleConfig: `n_models` must be >= 1, got 0"):
        PermutationEnsembleConfig(k=3, n_models=0)
    with pytest.raises(TypeError, match="`width` must be an int"):
        PermutationEnsembleConfig(k=3, width=2.5)
    with pytest.raises(ValueError, match="`rule` must be one of"):
        PermutationEnsembleConfig(k=3, rule="round")
    with pytest.raises(ValueError, match="`k` must be >= 1"):
        nonzero_binary_inputs(0)


def test_bad_permutation_and_inputs_raise():
    cfg = PermutationEnsembleConfig(k=3, n_models=2, width=8, steps=2)
    with pytest.raises(ValueError, match=r"PermutationEnsemble: `perm` must be a permutation of 0\.\.2"):
        PermutationEnsemble(cfg, torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="PermutationEnsemble: `perm` must have 3 entries"):
        PermutationEnsemble(cfg, torch.tensor([0, 1]))
    model = PermutationEnsemble(cfg, torch.tensor([1, 2, 0]), generator=_gen())
    with pytest.raises(ValueError, match=r"PermutationEnsemble: `x` must be binary \(entries 0 or 1\)"):
        model(torch.tensor([[0.5, 1.0, 0.0]]))
    with pytest.raises(ValueError, match="PermutationEnsemble: `x` has an all-zero row"):
        model(torch.tensor([[0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"PermutationEnsemble: `x` must have shape \(\.\.\., 3\)"):
        model(torch.ones(2, 4))
    with pytest.raises(TypeError, match="`config` must be a PermutationEnsembleConfig"):
        PermutationEnsemble({"k": 3}, torch.tensor([0, 1, 2]))
