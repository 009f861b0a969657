"""The fused GIN / GINE neighbour-sum kernel (equikit.nn._graph_native): against a dense
incidence-matrix oracle in float64 (isolated nodes, self loops, repeated edges, unsorted
edges, int32 / int64 ids, empty edge sets), against GINConv's pure-PyTorch path (outputs,
gradients of every parameter, double backward), gradcheck / gradgradcheck, thread-count
independence, the content-checked CSR cache, bad ids, and the layer's permutation
equivariance through the checker on both paths with a negative control."""

import numpy as np
import pytest
import torch

from equikit.check import assert_equivariant, equivariance_error
from equikit.data.graph import GraphBatch
from equikit.groups import NodePermutation
from equikit.nn import GINConv
from equikit.nn import _graph_native as gn

pytestmark = pytest.mark.skipif(not gn.available(), reason="no C compiler: the kernel cannot be built")

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-12)}


def _graph(n=9, seed=0, index_dtype=torch.int64):
    """Unsorted random edges with repeats and self loops; nodes 7 and 8 are isolated (no edge
    in or out), node 6 only sends."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, 7, (23,), generator=gen)
    dst = torch.randint(0, 6, (23,), generator=gen)
    src = torch.cat([src, torch.tensor([3, 3, 0, 6])])
    dst = torch.cat([dst, torch.tensor([3, 3, 0, 2])])  # self loops (one repeated), 6 -> 2
    return torch.stack([src, dst]).to(index_dtype)


def _oracle(x, edge_index, eps, a=None):
    """(1 + eps) x + T m with the dense (N, E) target-incidence matrix T and the messages m."""
    src, dst = edge_index.long()
    T = torch.zeros(x.shape[0], src.shape[0], dtype=x.dtype)
    T[dst, torch.arange(src.shape[0])] = 1.0
    m = x[src] if a is None else torch.relu(x[src] + a)
    return (1 + eps) * x + T @ m


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("edges", ["gin", "gine"])
def test_kernel_matches_dense_oracle(index_dtype, edges, dtype):
    ei = _graph(index_dtype=index_dtype)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(9, 5, generator=gen, dtype=dtype)
    a = torch.randn(ei.shape[1], 5, generator=gen, dtype=dtype) if edges == "gine" else None
    eps = torch.tensor([0.3], dtype=dtype)
    csr = gn.edge_csr(ei, 9)
    out = gn.gin_aggregate(x, eps, csr) if a is None else gn.gine_aggregate(x, a, eps, csr)
    want = _oracle(x, ei, 0.3, a)
    torch.testing.assert_close(out, want, **TOL[dtype])
    assert torch.equal(out[7:], (1.3 * x[7:]).to(dtype))  # isolated nodes: only (1 + eps) x


def test_csr_rows_are_stable_and_complete():
    ei = torch.tensor([[2, 0, 2, 1, 0], [1, 1, 0, 1, 2]])
    csr = gn.edge_csr(ei, 4)
    assert csr.in_ptr.tolist() == [0, 1, 4, 5, 5]  # target 3 receives nothing
    assert csr.in_eid.tolist() == [2, 0, 1, 3, 4]  # edges into 1 keep their input order
    assert csr.in_src.tolist() == [2, 2, 0, 1, 0]
    assert csr.out_ptr.tolist() == [0, 2, 3, 5, 5]
    assert csr.out_eid.tolist() == [1, 4, 3, 0, 2]
    assert csr.out_dst.tolist() == [1, 2, 1, 1, 0]


@pytest.mark.parametrize("n", [0, 4])
def test_empty_edge_set(n, dtype):
    ei = torch.zeros(2, 0, dtype=torch.long)
    x = torch.randn(n, 3, dtype=dtype, requires_grad=True)
    eps = torch.tensor([-0.5], dtype=dtype)
    csr = gn.edge_csr(ei, n)
    out = gn.gine_aggregate(x, torch.zeros(0, 3, dtype=dtype), eps, csr)
    assert torch.equal(out, 0.5 * x.detach())
    assert torch.equal(gn.gin_aggregate(x, eps, csr), 0.5 * x.detach())
    layer = GINConv(3, 2).to(dtype)
    assert layer(x, ei).shape == (n, 2)


def _spy(monkeypatch):
    """Record which fused aggregation GINConv calls ("gin" / "gine")."""
    calls = []
    gin, gine = gn.gin_aggregate, gn.gine_aggregate
    monkeypatch.setattr(gn, "gin_aggregate", lambda *a: calls.append("gin") or gin(*a))
    monkeypatch.setattr(gn, "gine_aggregate", lambda *a: calls.append("gine") or gine(*a))
    return calls


def _layers(edges, dtype):
    torch.manual_seed(3)
    layer = GINConv(5, 4, edge_dim=3 if edges == "gine" else None, eps=0.25, train_eps=True).to(dtype)
    return layer


def _run(layer, x, ei, ea, create_graph=False):
    """Output, gradients of sum(out^2) w.r.t. x and every parameter (and, with create_graph,
    the gradient of the squared norm of dL/dx w.r.t. x and the parameters)."""
    x = x.clone().requires_grad_(True)
    params = [x, *layer.parameters()]
    out = layer(x, ei) if ea is None else layer(x, ei, ea)
    grads = torch.autograd.grad((out**2).sum(), params, create_graph=create_graph)
    if not create_graph:
        return [out.detach(), *grads]
    second = torch.autograd.grad(grads[0].pow(2).sum(), params, allow_unused=True)
    return [out.detach(), *[g.detach() for g in grads], *[torch.zeros(()) if s is None else s for s in second]]


@pytest.mark.parametrize("edges", ["gin", "gine"])
@pytest.mark.parametrize("create_graph", [False, True], ids=["backward", "double_backward"])
def test_native_path_matches_pytorch_path(edges, create_graph, dtype, monkeypatch):
    ei = _graph()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(9, 5, generator=gen, dtype=dtype)
    ea = torch.randn(ei.shape[1], 3, generator=gen, dtype=dtype) if edges == "gine" else None
    layer = _layers(edges, dtype)
    calls = _spy(monkeypatch)
    native = _run(layer, x, ei, ea, create_graph)
    assert calls == [edges]  # the kernel ran
    monkeypatch.setattr(gn, "available", lambda: False)
    fallback = _run(layer, x, ei, ea, create_graph)
    assert calls == [edges]  # and now it did not
    assert len(native) == len(fallback)
    for a, b in zip(native, fallback, strict=True):
        torch.testing.assert_close(a, b, **TOL[dtype])
    first_order = native[1:2 + len(list(layer.parameters()))]
    assert all(float(g.abs().max()) > 0 for g in first_order)  # every gradient is exercised


def test_non_contiguous_inputs():
    ei = _graph()
    x = torch.randn(5, 18, dtype=torch.float64)[:, ::2].t()  # (9, 5), strides (1, 36)
    a = torch.randn(5, ei.shape[1] * 2, dtype=torch.float64)[:, ::2].t()
    eps = torch.tensor([0.1], dtype=torch.float64)
    csr = gn.edge_csr(ei.t().contiguous().t(), 9)  # edge_index (2, E) with strides (1, 2)
    torch.testing.assert_close(gn.gine_aggregate(x, a, eps, csr), _oracle(x, ei, 0.1, a), rtol=1e-12, atol=1e-12)


def test_gradcheck_and_gradgradcheck():
    ei = _graph()
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(9, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    a = torch.randn(ei.shape[1], 3, generator=gen, dtype=torch.float64, requires_grad=True)
    eps = torch.tensor([0.2], dtype=torch.float64, requires_grad=True)
    csr = gn.edge_csr(ei, 9)
    # the relu kinks are > 1e-6 from every pre-activation x_j + a_e here, so differences are smooth
    assert float((x.detach()[ei[0]] + a.detach()).abs().min()) > 1e-3
    assert torch.autograd.gradcheck(lambda x, e: gn.gin_aggregate(x, e, csr), (x, eps))
    assert torch.autograd.gradgradcheck(lambda x, e: gn.gin_aggregate(x, e, csr), (x, eps))
    assert torch.autograd.gradcheck(lambda x, a, e: gn.gine_aggregate(x, a, e, csr), (x, a, eps))
    assert torch.autograd.gradgradcheck(lambda x, a, e: gn.gine_aggregate(x, a, e, csr), (x, a, eps))


def test_results_do_not_depend_on_the_thread_count():
    gen = torch.Generator().manual_seed(5)
    ei = torch.randint(0, 3000, (2, 20000), generator=gen)
    x = torch.randn(3000, 16, generator=gen)
    a = torch.randn(20000, 16, generator=gen)
    eps = torch.zeros(1)
    csr = gn.edge_csr(ei, 3000)
    one = gn.gin_aggregate(x, eps, csr), gn.gine_aggregate(x, a, eps, csr)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two = gn.gin_aggregate(x, eps, csr), gn.gine_aggregate(x, a, eps, csr)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])  # each row summed by one thread


def test_cache_reuses_rows_and_never_serves_stale_ones():
    gn.clear_cache()
    ei = _graph()
    x = torch.randn(9, 5, dtype=torch.float64)
    eps = torch.zeros(1, dtype=torch.float64)
    first = gn.cached_edge_csr(ei, 9)
    assert gn.cached_edge_csr(ei, 9) is first  # same indices: reused
    assert gn.cached_edge_csr(ei, 10) is not first  # another node count: rebuilt
    ei[1, 0] = 8  # in place
    torch.testing.assert_close(gn.gin_aggregate(x, eps, gn.cached_edge_csr(ei, 9)), _oracle(x, ei, 0.0))
    shared = np.asarray(_graph())
    ei_np = torch.from_numpy(shared)
    cached = gn.cached_edge_csr(ei_np, 9)
    shared[0, :5] = 8  # through numpy: torch's version counter does not see it
    assert gn.cached_edge_csr(ei_np, 9) is not cached
    torch.testing.assert_close(gn.gin_aggregate(x, eps, gn.cached_edge_csr(ei_np, 9)), _oracle(x, ei_np, 0.0))
    for seed in range(2 * gn.CACHE_SIZE):
        gn.cached_edge_csr(_graph(seed=seed), 9)
    assert len(gn._CACHE) <= gn.CACHE_SIZE
    gn.clear_cache()
    assert not gn._CACHE


def test_cache_entry_dropped_with_its_edge_index():
    gn.clear_cache()
    ei = _graph(seed=11)
    gn.cached_edge_csr(ei, 9)
    assert len(gn._CACHE) == 1
    del ei
    assert not gn._CACHE


@pytest.mark.parametrize("bad", [[[0, 9], [1, 2]], [[0, 1], [-1, 2]]], ids=["too_large", "negative"])
def test_out_of_range_ids_raise(bad):
    x = torch.randn(9, 5)
    with pytest.raises(ValueError, match=r"GINConv: `edge_index` must hold node ids in \[0, 9\)"):
        GINConv(5, 4)(x, torch.tensor(bad))
    with pytest.raises(ValueError, match="edge_csr"):
        gn.edge_csr(torch.tensor(bad), 9)


def test_unusable_inputs_take_the_pytorch_path(monkeypatch):
    assert not gn.usable(torch.randn(3, 2, dtype=torch.float16))
    assert not gn.usable(torch.randn(3, 2), torch.randn(3, 2, dtype=torch.float64))
    assert gn.usable(torch.randn(3, 2), None)
    monkeypatch.setattr(gn, "available", lambda: False)
    assert not gn.usable(torch.randn(3, 2))


@pytest.mark.parametrize("path", ["native", "pytorch"])
@pytest.mark.parametrize("edges", ["gin", "gine"])
def test_layer_permutation_equivariance_both_paths(path, edges, dtype, monkeypatch):
    calls = _spy(monkeypatch)
    if path == "pytorch":
        monkeypatch.setattr(gn, "available", lambda: False)
    gen = torch.Generator().manual_seed(6)
    ei = _graph(n=9)
    b = GraphBatch(x=torch.randn(9, 5, generator=gen, dtype=dtype), edge_index=ei,
                   edge_attr=torch.randn(ei.shape[1], 3, generator=gen, dtype=dtype))
    layer = _layers(edges, dtype)

    def f(d, broken=False):
        g = GraphBatch.from_dict(d, num_graphs=1)
        x = g.x + torch.arange(9, dtype=dtype).unsqueeze(-1) / 9 if broken else g.x
        return layer(x, g.edge_index, g.edge_attr) if edges == "gine" else layer(x, g.edge_index)

    out_act = NodePermutation(9, node_dim=-2)
    assert_equivariant(f, b.to_dict(), b.permutation_action(), out_act)
    bad = equivariance_error(lambda d: f(d, broken=True), b.to_dict(), b.permutation_action(), out_act)
    assert not bad.passed() and bad.rel_max > 1e-3
    assert bool(calls) == (path == "native")


@pytest.mark.slow
def test_torch_compile_fullgraph_uses_the_pytorch_path():
    """Under torch.compile the layer traces its PyTorch ops (the kernel is a ctypes call)."""
    layer = _layers("gine", torch.float32)
    ei = _graph()
    gen = torch.Generator().manual_seed(7)
    x, ea = torch.randn(9, 5, generator=gen), torch.randn(ei.shape[1], 3, generator=gen)
    compiled = torch.compile(layer, fullgraph=True)
    torch.testing.assert_close(compiled(x, ei, ea), layer(x, ei, ea), rtol=1e-5, atol=1e-5)
