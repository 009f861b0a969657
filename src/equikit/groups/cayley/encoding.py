"""Compact integer encodings of states: ``length`` small non-negative integers packed into
``words`` int64 words of ``bits`` bits per entry.

A permutation of ``n <= 16`` items fits one int64 with 4 bits per entry (entry ``i`` in bits
``[4 i, 4 i + 4)``; for ``n = 16`` the top entry uses the sign bit, which is harmless because
states are only compared for equality and sorted, never used as numbers). Longer states
(permutations of ``n > 16``, Schreier states, matrices over Z/pZ) use several words; entries
never straddle two words.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from equikit._utils import check_int, check_tensor

__all__ = ["StateCodec", "bits_for", "to_int64"]


def to_int64(value: int) -> int:
    """Reinterpret a 64-bit unsigned Python int as a signed int64 (two's complement)."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def bits_for(max_value: int) -> int:
    """Bits needed to store integers in ``[0, max_value]`` (at least 1)."""
    return max(1, int(max_value).bit_length())


@dataclass(frozen=True)
class StateCodec:
    """Pack states of ``length`` entries in ``[0, 2**bits)`` into int64 words.

    Args:
        length: entries per state (``n`` for permutations of ``n`` items).
        bits: bits per entry, 1..16.

    Shapes: :meth:`encode` maps ``(N, length)`` int64 to ``(N, words)`` int64;
    :meth:`decode` inverts it. Single-word codecs (``words == 1``) are what the fast paths use.

    Example:
        >>> codec = StateCodec(length=5, bits=3)
        >>> x = torch.tensor([[4, 0, 3, 1, 2]])
        >>> codec.words, bool((codec.decode(codec.encode(x)) == x).all())
        (1, True)
    """

    length: int
    bits: int

    def __post_init__(self) -> None:
        check_int(self.length, "length", "StateCodec", minimum=1)
        check_int(self.bits, "bits", "StateCodec", minimum=1)
        if self.bits > 16:
            raise ValueError(f"StateCodec: `bits` must be <= 16, got {self.bits}")

    @classmethod
    def for_values(cls, length: int, max_value: int) -> StateCodec:
        """The smallest codec for ``length`` entries in ``[0, max_value]``."""
        return cls(length, bits_for(max_value))

    @property
    def per_word(self) -> int:
        return 64 // self.bits

    @property
    def words(self) -> int:
        return -(-self.length // self.per_word)

    @property
    def mask(self) -> int:
        return (1 << self.bits) - 1

    def slot(self, i: int) -> tuple[int, int]:
        """(word, bit offset) of entry ``i``."""
        return i // self.per_word, self.bits * (i % self.per_word)

    def encode(self, states: torch.Tensor) -> torch.Tensor:
        """Pack ``(N, length)`` integer states into ``(N, words)`` int64."""
        check_tensor(states, "states", "StateCodec.encode", shape=(self.length,), integer=True)
        if states.numel() and (int(states.min()) < 0 or int(states.max()) > self.mask):
            raise ValueError(
                f"StateCodec.encode: `states` entries must lie in [0, {self.mask}] for "
                f"{self.bits} bits, got range [{int(states.min())}, {int(states.max())}]"
            )
        flat = states.reshape(-1, self.length).to(torch.int64)
        out = torch.zeros(flat.shape[0], self.words, dtype=torch.int64, device=states.device)
        for i in range(self.length):
            w, off = self.slot(i)
            out[:, w] |= flat[:, i] << off
        return out.reshape(*states.shape[:-1], self.words)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Unpack ``(N, words)`` int64 codes into ``(N, length)`` int64 states."""
        check_tensor(codes, "codes", "StateCodec.decode", shape=(self.words,), integer=True)
        flat = codes.reshape(-1, self.words)
        out = torch.empty(flat.shape[0], self.length, dtype=torch.int64, device=codes.device)
        for i in range(self.length):
            w, off = self.slot(i)
            out[:, i] = (flat[:, w] >> off) & self.mask
        return out.reshape(*codes.shape[:-1], self.length)

    def shift_plan(self, perm: list[int]) -> list[tuple[int, int]] | None:
        """Shifts and masks that apply ``state -> state[perm]`` to single-word codes.

        Entry ``i`` of the result is entry ``perm[i]`` of the input, i.e. it moves by
        ``d = perm[i] - i`` slots. Entries with the same ``d`` share one shift and one mask, so
        a rotation costs 2 shift-and-mask steps and a transposition 3. Returns a list of
        ``(shift_in_bits, mask)`` (positive shift = right shift) or ``None`` when the codec
        has several words.
        """
        if self.words != 1:
            return None
        groups: dict[int, int] = {}
        for i, src in enumerate(perm):
            d = src - i
            groups[d] = groups.get(d, 0) | (self.mask << (self.bits * i))
        return [(self.bits * d, to_int64(m)) for d, m in sorted(groups.items())]


def apply_shift_plan(codes: torch.Tensor, plan: list[tuple[int, int]]) -> torch.Tensor:
    """Apply a :meth:`StateCodec.shift_plan` to ``(N,)`` single-word codes."""
    out = None
    for shift, mask in plan:
        if shift > 0:
            part = (codes >> shift) & mask
        elif shift < 0:
            part = (codes << -shift) & mask
        else:
            part = codes & mask
        out = part if out is None else out.bitwise_or_(part)
    return out
