"""CRC-64 as Go's ``hash/crc64`` with the ISO table, in pure Python at C speed where it counts.

A byte-at-a-time table loop would run at a few MB/s in Python. Instead each chunk becomes one big
integer and is reduced modulo the CRC polynomial with shifts and XORs on that integer, which
CPython does in C. The reflected CRC over bytes equals the plain (non-reflected) CRC over the
bit-reversed bytes with the register reversed at the end, so the work is done in the plain
domain: ``state' = (state * x^N + chunk * x^64) mod P`` with ``P = x^64 + x^4 + x^3 + x + 1``.
Reducing a long polynomial folds its high part down with ``x^k mod P`` for ``k = 64 * 2^j``,
precomputed; those remainders are sparse, so each fold costs a few dozen shift-XORs.
"""

from __future__ import annotations

__all__ = ["Crc64", "crc64"]

_MASK64 = (1 << 64) - 1
_POLY_LOW = 0x1B  # x^64 = x^4 + x^3 + x + 1 (mod P)
_CHUNK = 1 << 16  # bytes per reduction: the measured sweet spot (about 70 MB/s)
_REVERSED_BITS = bytes(int(f"{value:08b}"[::-1], 2) for value in range(256))


def _carryless_multiply(value: int, sparse: int) -> int:
    product = 0
    while sparse:
        lowest = sparse & -sparse
        product ^= value << (lowest.bit_length() - 1)
        sparse ^= lowest
    return product


def _reduce_small(value: int) -> int:
    while value >> 64:
        value = (value & _MASK64) ^ _carryless_multiply(value >> 64, _POLY_LOW)
    return value


def _fold_table() -> dict[int, int]:
    table = {64: _POLY_LOW}
    exponent = 64
    while exponent < 1 << 24:
        table[2 * exponent] = _reduce_small(_carryless_multiply(table[exponent], table[exponent]))
        exponent *= 2
    return table


_FOLDS = _fold_table()


def _reduce(value: int) -> int:
    length = value.bit_length()
    while length > 64:
        exponent = 64
        while exponent * 2 < length:
            exponent *= 2
        high = value >> exponent
        value = (value & ((1 << exponent) - 1)) ^ _carryless_multiply(high, _FOLDS[exponent])
        length = value.bit_length()
    return value


def _reflect64(value: int) -> int:
    return int(f"{value:064b}"[::-1], 2)


class Crc64:
    """Incremental CRC-64/GO-ISO; ``digest()`` gives the 8 big-endian bytes tar-split stores."""

    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state = _MASK64  # the initial value (all ones) is its own reflection

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        state = self._state
        for start in range(0, len(view), _CHUNK):
            chunk = bytes(view[start : start + _CHUNK]).translate(_REVERSED_BITS)
            bits = 8 * len(chunk)
            state = _reduce((state << bits) ^ (int.from_bytes(chunk, "big") << 64))
        self._state = state

    def value(self) -> int:
        return _reflect64(self._state) ^ _MASK64

    def digest(self) -> bytes:
        return self.value().to_bytes(8, "big")


def crc64(data: bytes | bytearray | memoryview) -> int:
    """CRC-64/GO-ISO of ``data`` (``crc64(b"123456789") == 0xB90956C775A41001``)."""
    crc = Crc64()
    crc.update(data)
    return crc.value()
