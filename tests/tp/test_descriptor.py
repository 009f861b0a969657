"""Descriptors: pure data (printable, comparable, hashable), builders, validation, normalisation."""

import math

import pytest
import torch

from equikit.o3 import Irreps
from equikit.tp import (
    Mode,
    Path,
    TensorProductDescriptor,
    channelwise,
    elementwise,
    fully_connected,
    linear,
    tensor_product,
    tensor_square,
)


def test_value_semantics():
    a = fully_connected("2x0e+1x1o", "1o", "0e+1e")
    b = fully_connected(Irreps("2x0e+1o"), "1x1o", "1x0e+1x1e")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != fully_connected("2x0e+1x1o", "1o", "0e+1e", path_normalization="path")
    with pytest.raises(AttributeError):
        a.paths = ()
    text = str(a)
    assert text.startswith(
        "TensorProductDescriptor(2x0e+1x1o x 1x1o -> 1x0e+1x1e, 2 paths, 2 weights, element/component)"
    )
    assert "uvw [1] 1x1o x [0] 1x1o -> [0] 1x0e" in text


def test_paths_and_weight_layout():
    d = channelwise("3x0e + 2x1o", "0e + 1o")
    assert all(p.mode == Mode.UVU for p in d.paths)
    assert d.irreps_out == Irreps(sorted(d.irreps_out, key=lambda m: (m.ir.l, -m.ir.p)))
    # 0e x {0e, 1o}, 1o x {0e -> 1o, 1o -> 0e + 1e + 2e}
    assert len(d.paths) == 6
    shapes = [d.weight_shape(p) for p in d.paths]
    assert shapes.count((3, 1)) == 2 and shapes.count((2, 1)) == 4
    sl = d.weight_slices()
    assert sl[0] == slice(0, 3) and sl[-1].stop == d.weight_numel == 3 * 2 + 2 * 4
    u = elementwise("2x1o", "2x1e")
    assert all(not p.weighted for p in u.paths) and u.weight_numel == 0
    assert elementwise("2x1o", "2x1e", weighted=True).weight_numel == 6


def test_channelwise_with_given_output():
    d = channelwise("4x0e + 4x1o", "0e + 1o", "4x0e + 4x1o + 3x1e")
    # 3x1e has the wrong multiplicity for uvu from 4 channels: no path into it
    assert {p.i_out for p in d.paths} == {0, 1}


def test_linear_and_square_builders():
    d = linear("4x0e + 2x1o + 1x2e", "3x0e + 1x1o + 2x1e")
    assert [(p.i1, p.i_out) for p in d.paths] == [(0, 0), (1, 1)]
    assert d.coefficient(0) == pytest.approx(1 / 2) and d.coefficient(1) == pytest.approx(1 / math.sqrt(2))
    s = tensor_square("2x1o + 1x2e")
    assert s.square and all(p.i1 <= p.i2 for p in s.paths)
    assert s.irreps_out.count("0e") == 3  # num_irreps channels per reachable irrep


def test_element_and_path_normalisation():
    """e3nn's definitions: element = 1/sqrt(total fan-in of the output block); path = per path,
    times the number of paths into the block."""
    d = fully_connected("2x0e + 3x1o", "4x0e + 1x1o", "5x1o", path_normalization="element")
    fan = 2 * 1 + 3 * 4  # 0e x 1o and 1o x 0e feed 1o
    assert [d.coefficient(i) for i in range(2)] == pytest.approx([fan**-0.5] * 2)
    p = fully_connected("2x0e + 3x1o", "4x0e + 1x1o", "5x1o", path_normalization="path")
    assert [p.coefficient(i) for i in range(2)] == pytest.approx([(2 * 2) ** -0.5, (12 * 2) ** -0.5])


@pytest.mark.parametrize("builder", [
    lambda: fully_connected("8x0e + 8x1o + 8x2e", "0e + 1o + 2e", "8x0e + 8x1o + 8x2e"),
    lambda: channelwise("8x0e + 8x1o + 8x2e", "0e + 1o + 2e"),
])
@pytest.mark.parametrize("norm", ["element", "path"])
def test_normalisation_gives_unit_variance(builder, norm):
    """Component-normalised inputs and N(0, 1) weights give outputs of mean square ~1 per path
    (element) or per output block (both): the documented purpose of the constants."""
    d = builder()
    d = TensorProductDescriptor(d.irreps1, d.irreps2, d.irreps_out, d.paths, path_normalization=norm)
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(4000, d.irreps1.dim, generator=g, dtype=torch.float64)
    x2 = torch.randn(4000, d.irreps2.dim, generator=g, dtype=torch.float64)
    w = torch.randn(d.weight_numel, generator=g, dtype=torch.float64)
    out = tensor_product(d, x1, x2, w)
    ms = out.pow(2).mean().item()
    assert 0.7 < ms < 1.4, ms


def test_validation_messages():
    with pytest.raises(ValueError, match=r"Path\(0, 0, 0, 'uvw'\) couples 1o x 1o -> 1o, which is not equivariant"):
        TensorProductDescriptor("1o", "1o", "1o", (Path(0, 0, 0),))
    with pytest.raises(ValueError, match="has i_out=1 but the irreps '1x0e' have 1 blocks"):
        TensorProductDescriptor("1o", "1o", "0e", (Path(0, 0, 1),))
    with pytest.raises(ValueError, match=r"channelwise .* needs mul_out == mul1, got 3 and 2"):
        TensorProductDescriptor("2x1o", "1o", "3x0e", (Path(0, 0, 0, "uvu"),))
    with pytest.raises(ValueError, match=r"elementwise .* needs mul1 == mul2 == mul_out, got 2, 1, 2"):
        TensorProductDescriptor("2x1o", "1o", "2x0e", (Path(0, 0, 0, "uuu"),))
    with pytest.raises(ValueError, match=r"unknown mode 'uvv'; expected one of \['uvw', 'uvu', 'uuu'\]"):
        Path(0, 0, 0, "uvv")
    with pytest.raises(TypeError, match="`i1` must be an int >= 0, got -1"):
        Path(-1, 0, 0)
    with pytest.raises(ValueError, match="`path_normalization` must be one of"):
        fully_connected("1o", "1o", "0e", path_normalization="elements")
    with pytest.raises(ValueError, match="channelwise: `irreps2` is not valid irreps"):
        channelwise("1o", "1q")
    with pytest.raises(ValueError, match="elementwise: `irreps1` and `irreps2` must have the same multiplicities"):
        elementwise("2x1o", "1o + 1o")
    with pytest.raises(ValueError, match="square=True needs irreps1 == irreps2"):
        TensorProductDescriptor("1o", "1e", "0o", (), square=True)
    with pytest.raises(TypeError, match="`paths` must be Path objects"):
        TensorProductDescriptor("1o", "1o", "0e", ((0, 0, 0, "uvw"),))
