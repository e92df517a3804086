"""Scalar events encoded without protobuf objects: the bytes ``Event.SerializeToString`` gives.

Building an ``Event`` holding a ``Summary`` for each per-batch scalar costs the writer thread
about 9 us of Python on the 2-core benchmark machine, and on a GPU that thread competes with
the training loop for the interpreter (docs/performance.md). A scalar event is a handful of
fields, so it is written here directly in the protobuf wire format (about 2 us), with each
tag's field encoded once. Tested byte for byte against the protos
(tests/unit/test_tensorboard_fastpath.py).

Wire format (proto3, fields in number order, defaults left out as protobuf does):
``Event{wall_time=1: double, step=2: int64, summary=5: Summary{value=1: repeated
Value{tag=1: string, simple_value=2: float}}}``.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Sequence

_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")
_SMALL = [bytes((n,)) for n in range(0x80)]  # one-byte varints


def _varint(value: int) -> bytes:
    """A protobuf varint (negative int64 values as their 64-bit two's complement)."""
    if 0 <= value < 0x80:
        return _SMALL[value]
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _float32(value: float) -> bytes:
    """``value`` as float32 bytes; beyond float32's range, infinity (as protobuf casts it)."""
    try:
        return _FLOAT.pack(value)
    except OverflowError:
        return _FLOAT.pack(math.copysign(math.inf, value))


@functools.lru_cache(maxsize=4096)
def _tag_field(tag: str) -> bytes:
    """``Value.tag`` (field 1) followed by ``simple_value``'s key (field 2, fixed32)."""
    raw = tag.encode()
    return b"\x0a" + _varint(len(raw)) + raw + b"\x15"


def scalars_event(wall_time: float, step: int, values: Sequence[tuple[str, float]]) -> bytes:
    """The serialized ``Event`` of ``values`` (``(tag, value)`` pairs) at ``step``."""
    summary = bytearray()
    for tag, value in values:
        field = _tag_field(tag) + _float32(value)
        summary += b"\x0a" + _varint(len(field)) + field
    event = bytearray()
    if wall_time:
        event += b"\x09" + _DOUBLE.pack(wall_time)
    if step:
        event += b"\x10" + _varint(step)
    event += b"\x2a" + _varint(len(summary)) + summary
    return bytes(event)

