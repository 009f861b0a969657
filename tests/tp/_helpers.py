"""Shared hypothesis strategies of the tensor-product tests."""

from hypothesis import strategies as st

from equikit.o3 import Irreps

LMAX = 4


@st.composite
def irreps_st(draw, max_blocks=3, max_mul=3, muls=None):
    n = len(muls) if muls is not None else draw(st.integers(1, max_blocks))
    blocks = []
    for i in range(n):
        mul = muls[i] if muls is not None else draw(st.integers(1, max_mul))
        blocks.append(f"{mul}x{draw(st.integers(0, LMAX))}{draw(st.sampled_from('eo'))}")
    return Irreps("+".join(blocks))
