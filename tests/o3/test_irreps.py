import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from equikit.o3 import Irrep, Irreps, irrep

e3nn_o3 = pytest.importorskip("e3nn.o3")

mul_ir = st.tuples(st.integers(0, 5), st.tuples(st.integers(0, 6), st.sampled_from([1, -1])))
irreps_st = st.lists(mul_ir, max_size=6).map(Irreps)


def test_parse_and_print():
    x = Irreps("32x0e + 16x1o+8x2e")
    assert str(x) == "32x0e+16x1o+8x2e"
    assert Irreps(str(x)) == x
    assert x == "32x0e+16x1o+8x2e"
    assert x.dim == 32 + 16 * 3 + 8 * 5
    assert x.num_irreps == 56
    assert x.lmax == 2
    assert list(x) == [(32, (0, 1)), (16, (1, -1)), (8, (2, 1))]
    assert [s.stop - s.start for s in x.slices()] == [32, 48, 40]
    assert Irreps("1o") == Irreps([(1, Irrep(1, -1))]) == Irreps(Irrep(1, -1))
    assert Irreps("") == Irreps() and Irreps().dim == 0
    assert Irreps("2y") == Irreps("2e") and Irreps("3y") == Irreps("3o")
    assert irrep("1o") in Irreps("2x1o") and "1e" not in Irreps("2x1o")


def test_immutable_and_hashable():
    x = Irreps("2x0e + 1o")
    assert hash(x) == hash(Irreps("2x0e+1x1o"))
    assert {x: 1}[Irreps("2x0e+1o")] == 1
    with pytest.raises((TypeError, AttributeError)):
        x[0] = (1, irrep("0e"))  # type: ignore[index]
    assert isinstance(x + "1e", Irreps) and str(x + "1e") == "2x0e+1x1o+1x1e"
    assert str(2 * Irreps("1o")) == "1x1o+1x1o"
    assert isinstance(x[1:], Irreps)


@given(irreps_st)
@settings(max_examples=30)
def test_sort_permutation(x):
    s = x.sort()
    assert [x[i] for i in s.inv] == list(s.irreps)
    assert all(s.irreps[s.p[i]] == x[i] for i in range(len(x)))
    keys = [(m.ir.l, -m.ir.p) for m in s.irreps]
    assert keys == sorted(keys)
    assert s.irreps.dim == x.dim


@given(irreps_st)
@settings(max_examples=30)
def test_simplify_preserves_layout(x):
    y = x.simplify()
    assert y.dim == x.dim and y.num_irreps == x.num_irreps
    assert all(m.mul > 0 for m in y)
    assert all(a.ir != b.ir for a, b in itertools.pairwise(y))
    flat = [ir for m in x for ir in [m.ir] * m.mul]
    assert flat == [ir for m in y for ir in [m.ir] * m.mul]


@given(irreps_st)
@settings(max_examples=20)
def test_e3nn_round_trip(x):
    e = x.to_e3nn()
    assert isinstance(e, e3nn_o3.Irreps)
    assert (e.dim == x.dim and str(e).replace(" ", "") == str(x)) or len(x) == 0
    assert Irreps(e) == x and Irreps.from_e3nn(e) == x
    assert [s for s in e.slices()] == x.slices()


def test_filter_and_count():
    x = Irreps("2x0e + 3x1o + 2e + 1x1o")
    assert x.filter(lmax=1) == "2x0e+3x1o+1x1o"
    assert x.filter("1o") == "3x1o+1x1o"
    assert x.filter(drop="1o") == "2x0e+1x2e"
    assert x.filter(lambda m: m.mul > 1) == "2x0e+3x1o"
    assert x.count("1o") == 4 and x.count("3e") == 0
    assert x.regroup() == "2x0e+4x1o+1x2e"
    assert x.ls == [0, 0, 1, 1, 1, 2, 1]


def test_irrep_product():
    assert list(irrep("1o") * irrep("2o")) == [Irrep(1, 1), Irrep(2, 1), Irrep(3, 1)]
    assert Irreps.spherical_harmonics(2) == "0e+1o+2e"
    assert Irreps.spherical_harmonics(2, p=1) == "0e+1e+2e"


@pytest.mark.parametrize("bad", ["1x", "x1e", "1q", "2x1e +", "-1e", "1e + 2", "1.5e", "3x-1o"])
def test_invalid_strings(bad):
    with pytest.raises(ValueError, match=r"Irreps.*'16x0e"):
        Irreps(bad)


def test_invalid_values():
    with pytest.raises(ValueError, match=r"irrep: degree `l` must be >= 0, got -1"):
        irrep(-1, 1)
    with pytest.raises(ValueError, match=r"parity `p` must be \+1 or -1, got 0"):
        irrep(1, 0)
    with pytest.raises(ValueError, match="multiplicity"):
        Irreps([(-1, "0e")])
    with pytest.raises(TypeError, match="Irreps"):
        Irreps(3.5)
    with pytest.raises(ValueError, match="empty"):
        _ = Irreps("").lmax
    with pytest.raises(TypeError, match=r"one irrep|Irrep"):
        irrep(3.0)
