"""Higher-order layers: the basis sizes of PermutationLinear equal the dimension of the space
of equivariant maps found by solving the commuting equations numerically (n = 4), each basis
map solves them, and they are independent; checker tests on padded dense batches (padding
permuted too) in both dtypes with negative controls; padding changes nothing."""

import pytest
import torch
from torch import nn

from equikit.check import assert_equivariant, equivariance_error
from equikit.groups import NodePermutation
from equikit.nn import PermutationLinear, PPGNBlock, pool_order2

BELL = {1: 1, 2: 2, 3: 5, 4: 15}


def _perm_matrix(p):
    n = len(p)
    m = torch.zeros(n, n, dtype=torch.float64)
    m[torch.tensor(p), torch.arange(n)] = 1.0  # e_i -> e_p(i)
    return m


def _tensor_power(m, k):
    out = m
    for _ in range(k - 1):
        out = torch.kron(out, m)
    return out


def _equivariant_space_dim(n, k, l):
    """Dimension of {L : rho_l(g) L = L rho_k(g)} for the generators of S_n, by solving the
    linear equations (rank of the stacked constraint matrix)."""
    gens = [_perm_matrix([1, 0, *range(2, n)]), _perm_matrix([*range(1, n), 0])]
    rows = []
    for g in gens:
        pk, pl = _tensor_power(g, k), _tensor_power(g, l)
        # vec(pl L - L pk) = (pl kron I - I kron pk^T) vec(L)  (row-major vec)
        rows.append(torch.kron(pl, torch.eye(n**k, dtype=torch.float64))
                    - torch.kron(torch.eye(n**l, dtype=torch.float64), pk.T.contiguous()))
    m = torch.cat(rows)
    return n ** (k + l) - int(torch.linalg.matrix_rank(m)), m


def _layer_matrix(layer, n, k, l):
    """The matrix of a 1-channel layer on R^{n^k} -> R^{n^l}, from unit inputs."""
    cols = []
    for idx in range(n**k):
        e = torch.zeros(n**k, dtype=torch.float64)
        e[idx] = 1.0
        x = e.view(1, *([n] * k), 1)
        cols.append(layer(x).reshape(-1))
    return torch.stack(cols, 1)


@pytest.mark.parametrize(("k", "l"), [(1, 1), (1, 2), (2, 1), (2, 2)])
def test_basis_count_equals_dimension_of_equivariant_maps(k, l):
    n = 4
    dim, constraints = _equivariant_space_dim(n, k, l)
    assert dim == BELL[k + l]
    layer = PermutationLinear(1, 1, in_order=k, out_order=l, bias=False, normalize=False).double()
    assert sum(p.numel() for p in layer.parameters()) == dim
    maps = []
    for b in range(layer.num_basis):
        with torch.no_grad():
            layer.weight.zero_()
            layer.weight[b] = 1.0
        lm = _layer_matrix(layer, n, k, l)
        assert (constraints @ lm.reshape(-1)).abs().max() < 1e-12  # each basis map is equivariant
        maps.append(lm.reshape(-1))
    assert int(torch.linalg.matrix_rank(torch.stack(maps))) == dim  # and they span the space
    # biases: the invariant vectors of the output representation, Bell(l) of them
    fixed = [_tensor_power(g, l) - torch.eye(n**l, dtype=torch.float64)
             for g in (_perm_matrix([1, 0, 2, 3]), _perm_matrix([1, 2, 3, 0]))]
    bias_dim = n**l - int(torch.linalg.matrix_rank(torch.cat(fixed)))
    with_bias = PermutationLinear(1, 1, in_order=k, out_order=l, bias=True)
    assert with_bias.bias.numel() == bias_dim == BELL[l]


B, N, C = 3, 6, 3


def _dense(dtype, order, seed=0):
    gen = torch.Generator().manual_seed(seed)
    sizes = torch.tensor([6, 4, 2])
    mask = torch.arange(N).unsqueeze(0) < sizes.unsqueeze(1)
    if order == 1:
        x = torch.randn(B, N, C, generator=gen, dtype=dtype) * mask.unsqueeze(-1)
    else:
        x = torch.randn(B, N, N, C, generator=gen, dtype=dtype)
        x = x * (mask.unsqueeze(2) & mask.unsqueeze(1)).unsqueeze(-1)
    return x, mask


def _io(order_in, order_out):
    """Checker glue: order-2 tensors travel channels-first (B, C, n, n) so that
    NodePermutation's `adjacency` rule P X P^T applies to the last two dims."""
    nodes = {"mask": -1} if order_in == 2 else {"mask": -1, "x": -2}
    act_in = NodePermutation(N, nodes=nodes, adjacency=("x",) if order_in == 2 else ())
    act_out = NodePermutation(N, nodes={}, adjacency=("y",)) if order_out == 2 else \
        NodePermutation(N, nodes={"y": -2})

    def wrap(fn):
        def f(d):
            x = d["x"].movedim(1, -1) if order_in == 2 else d["x"]
            y = fn(x, d["mask"])
            return {"y": y.movedim(-1, 1) if order_out == 2 else y}
        return f

    def data(x, mask):
        return {"x": x.movedim(-1, 1) if order_in == 2 else x, "mask": mask}

    return act_in, act_out, wrap, data


class SlotBroken(nn.Module):
    """Negative control: adds a per-slot embedding (depends on the node labelling)."""

    def __init__(self, inner, order):
        super().__init__()
        self.inner, self.order = inner, order
        self.emb = nn.Parameter(torch.randn(N, 1))

    def forward(self, x, mask):
        e = self.emb.to(x.dtype)
        return self.inner(x + (e if self.order == 1 else e.unsqueeze(-1)), mask)


@pytest.mark.parametrize(("k", "l"), [(1, 1), (1, 2), (2, 1), (2, 2)])
@pytest.mark.parametrize("normalize", [True, False])
def test_permutation_linear_equivariance(k, l, normalize, dtype):
    layer = PermutationLinear(C, 4, in_order=k, out_order=l, normalize=normalize).to(dtype)
    with torch.no_grad():
        layer.bias.normal_()
    act_in, act_out, wrap, data = _io(k, l)
    x, mask = _dense(dtype, k)
    assert_equivariant(wrap(layer), data(x, mask), act_in, act_out)
    bad = equivariance_error(wrap(SlotBroken(layer, k).to(dtype)), data(x, mask), act_in, act_out)
    assert not bad.passed() and bad.rel_max > 1e-3


def test_ppgn_equivariance_and_invariant_readout(dtype):
    block = PPGNBlock(C, 5, hidden=6).to(dtype)
    act_in, act_out, wrap, data = _io(2, 2)
    x, mask = _dense(dtype, 2)
    assert_equivariant(wrap(block), data(x, mask), act_in, act_out)
    bad = equivariance_error(wrap(SlotBroken(block, 2).to(dtype)), data(x, mask), act_in, act_out)
    assert not bad.passed() and bad.rel_max > 1e-3
    readout = lambda d: pool_order2(block(d["x"].movedim(1, -1), d["mask"]), d["mask"])  # noqa: E731
    assert_equivariant(readout, data(x, mask), act_in)


@pytest.mark.parametrize("make", [
    lambda: PPGNBlock(C, 4),
    lambda: PermutationLinear(C, 4, in_order=2, out_order=2),
    lambda: PermutationLinear(C, 4, in_order=2, out_order=1),
])
def test_padding_changes_nothing(make):
    layer = make().double()
    x, mask = _dense(torch.float64, 2)
    pm = (mask.unsqueeze(2) & mask.unsqueeze(1)).unsqueeze(-1)
    noisy = x + 50.0 * (~pm)
    out = layer(x, mask)
    assert torch.allclose(layer(noisy, mask), out, atol=1e-12)
    alone = layer(x[1:2, :4, :4], None)  # graph 1 has 4 real nodes
    ref = out[1:2, :4, :4] if out.ndim == 4 else out[1:2, :4]
    assert torch.allclose(alone, ref, atol=1e-12)


def test_pool_order2_and_mean_scaling():
    x = torch.arange(9.0).view(1, 3, 3, 1)
    assert pool_order2(x).tolist() == [[12.0, 24.0]]
    assert pool_order2(x, normalize=True).tolist() == [[4.0, 4.0]]
    # the 2->2 layer with normalize=True is unchanged when a graph is duplicated into a bigger
    # graph's mean statistics: total/n^2 of a constant matrix is the constant
    layer = PermutationLinear(1, 1, in_order=2, out_order=1, bias=False).double()
    ones3, ones5 = torch.ones(1, 3, 3, 1, dtype=torch.float64), torch.ones(1, 5, 5, 1, dtype=torch.float64)
    assert torch.allclose(layer(ones3)[0, 0], layer(ones5)[0, 0])


def test_higher_order_validation():
    with pytest.raises(ValueError, match=r"order-2 input must be a floating tensor \(B, n, n, C\)"):
        PermutationLinear(3, 4)(torch.randn(2, 5, 4, 3))
    with pytest.raises(ValueError, match="in_order"):
        PermutationLinear(3, 4, in_order=3)
    with pytest.raises(ValueError, match=r"`mask` must be \(B, n\)"):
        PPGNBlock(3, 4)(torch.randn(2, 5, 5, 3), torch.ones(2, 4, dtype=torch.bool))
