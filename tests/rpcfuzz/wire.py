"""Raw request bytes: valid encodings broken on purpose, and bytes that were never valid.

Every mutation takes a valid encoding of the method's request (the seed) and the
request's descriptor, and returns bytes the server must either decode or refuse
cleanly: truncations, bit flips, wrong wire types, huge and overlong varints,
lengths past the end, deep group nesting, invalid UTF-8 in string fields,
unknown and invalid field numbers, and fields far larger than any real request.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from google.protobuf.descriptor import Descriptor, FieldDescriptor

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5
MAX_FIELD = 2**29 - 1
U64_MAX = 2**64 - 1

Mutation = Callable[[random.Random, bytes, Descriptor], bytes]


def varint(value: int) -> bytes:
    """`value` as a base-128 varint (negative numbers as their 64-bit two's complement)."""
    value &= U64_MAX
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    """The key of a field."""
    return varint(field << 3 | wire_type)


def length_delimited(field: int, data: bytes) -> bytes:
    """A LEN field: tag, length, bytes."""
    return tag(field, LEN) + varint(len(data)) + data


def fields_of(data: bytes) -> list[tuple[int, int, bytes]]:
    """The top-level (field, wire type, payload) of an encoding, as far as it parses."""
    found: list[tuple[int, int, bytes]] = []
    at = 0
    while at < len(data):
        key, at = _read_varint(data, at)
        field, wire_type = key >> 3, key & 7
        if wire_type == VARINT:
            start = at
            _, at = _read_varint(data, at)
            payload = data[start:at]
        elif wire_type == LEN:
            size, at = _read_varint(data, at)
            payload, at = data[at : at + size], at + size
        elif wire_type in (I64, I32):
            size = 8 if wire_type == I64 else 4
            payload, at = data[at : at + size], at + size
        else:
            break
        found.append((field, wire_type, payload))
    return found


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while at < len(data):
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return value, at


def _field(rng: random.Random, descriptor: Descriptor) -> int:
    """A field number of the message, or an unknown one when it has none."""
    numbers = [f.number for f in descriptor.fields]
    return rng.choice(numbers) if numbers else rng.choice([1, 2, 3])


def _strings(descriptor: Descriptor) -> list[int]:
    return [f.number for f in descriptor.fields if f.type == FieldDescriptor.TYPE_STRING]


# -- mutations -----------------------------------------------------------------------------


def random_bytes(rng: random.Random, seed: bytes, descriptor: Descriptor) -> bytes:
    """Noise of a random, mostly small, length."""
    size = rng.choice([0, 1, 2, 3, 5, 8, 16, 64, 256, rng.randrange(4096)])
    return rng.randbytes(size)


def truncate(rng: random.Random, seed: bytes, descriptor: Descriptor) -> bytes:
    """A valid encoding cut short (inside a varint, a length or a payload)."""
    return seed[: rng.randrange(len(seed))] if seed else b"\x0a"


def flip_bits(rng: random.Random, seed: bytes, descriptor: Descriptor) -> bytes:
    """A valid encoding with one to eight bits flipped."""
    data = bytearray(seed or b"\x00")
    for _ in range(rng.choice([1, 1, 1, 2, 3, 8])):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data)


def splice(rng: random.Random, seed: bytes, descriptor: Descriptor) -> bytes:
    """A valid encoding with a slice replaced by noise, or deleted, or noise inserted."""
    start = rng.randrange(len(seed) + 1)
    end = min(len(seed), start + rng.randrange(8))
    return seed[:start] + rng.randbytes(rng.choice([0, 1, 4])) + seed[end:]


def wrong_wire_type(rng: random.Random, seed: bytes, descriptor: Descriptor) -> bytes:
    """A known field sent with a wire type its type does not have (6 and 7 are invalid)."""
    field = _field(rng, descriptor)
    wire_type = rng.choice([VARINT, I64, LEN, SGROUP, EGROUP, I32, 6, 7])
    payload = {
        VARINT: varint(rng.choice([0, 1, U64_MAX])),
        I64: rng.randbytes(8),
        LEN: varint(3) + b"abc",
        SGROUP: b"",
        EGROUP: b"",
        I32: rng.randbytes(4),
    }.get(wire_type, rng.randbytes(rng.randrange(4)))
    return seed + tag(field, wire_type) + payload


def retype(rng: random.Random, seed: bytes, descriptor: Descriptor) -> bytes:
    """The seed's own fields re-keyed with another wire type, payloads kept."""
    parts = fields_of(seed)
    if not parts:
        return wrong_wire_type(rng, seed, descriptor)
    out = b""
    for field, wire_type, payload in parts:
        if rng.random() < 0.5:
            wire_type = rng.choice([t for t in (VARINT, I64, LEN, I32) if t != wire_type])
        out += tag(field, wire_type) + (varint(len(payload)) if wire_type == LEN else b"")
        out += payload
    return out


def huge_varint(rng: random.Random, seed: bytes, descriptor: Descriptor) -> bytes:
    """Varints at and past their limits: 2^64-1, eleven bytes long, never ending, or a key
    whose field number is out of range."""
    field = _field(rng, descriptor)
    return seed + rng.choice(
        [
            tag(field, VARINT) + varint(U64_MAX),
            tag(field, VARINT) + b"\xff" * 10 + b"\x01",
            tag(field, VARINT) + b"\x80" * rng.choice([3, 10, 64]),
            varint((MAX_FIELD + 1) << 3),
            varint(U64_MAX),
            tag(0, VARINT) + b"\x01",
        ]
    )


def bad_length(rng: random.Random, seed: bytes, descriptor: Descriptor) -> bytes:
    """A length prefix past the end of the message, up to 2^64-1."""
    length = rng.choice([len(seed) + 1, 2**31 - 1, 2**31, 2**32, U64_MAX])
    return seed + tag(_field(rng, descriptor), LEN) + varint(length) + b"x" * rng.randrange(4)


def deep_groups(rng: random.Random, seed: bytes, descriptor: Descriptor) -> bytes:
    """Groups nested past any recursion limit, closed, unclosed, or closed wrongly."""
    depth = rng.choice([64, 101, 1000, 100_000])
    field = rng.choice([1, 99, MAX_FIELD])
    opened = tag(field, SGROUP) * depth
    ending = rng.choice([tag(field, EGROUP) * depth, b"", tag(field + 1, EGROUP)])
    return seed + opened + ending


def deep_lengths(rng: random.Random, seed: bytes, descriptor: Descriptor) -> bytes:
    """LEN fields inside LEN fields, many levels deep."""
    inner = b""
    for _ in range(rng.choice([50, 200, 2000])):
        inner = length_delimited(_field(rng, descriptor), inner)
    return seed + inner


def bad_utf8(rng: random.Random, seed: bytes, descriptor: Descriptor) -> bytes:
    """A string field that is not UTF-8: stray bytes, overlong forms, encoded surrogates."""
    numbers = _strings(descriptor) or [_field(rng, descriptor)]
    junk = rng.choice([b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"a\xe2\x82", b"\xf8\x88\x80\x80"])
    return seed + length_delimited(rng.choice(numbers), junk)


def unknown_fields(rng: random.Random, seed: bytes, descriptor: Descriptor) -> bytes:
    """Fields the message does not declare, of every wire type."""
    field = rng.choice([15, 16, 99, 1000, 19000, MAX_FIELD])
    return seed + rng.choice(
        [
            tag(field, VARINT) + varint(rng.getrandbits(64)),
            length_delimited(field, rng.randbytes(rng.randrange(32))),
            tag(field, I32) + rng.randbytes(4),
            tag(field, I64) + rng.randbytes(8),
            tag(field, SGROUP) + tag(field, EGROUP),
        ]
    )


def repeated(rng: random.Random, seed: bytes, descriptor: Descriptor) -> bytes:
    """The encoding twice or many times over: fields merge, repeated ones grow."""
    return seed * rng.choice([2, 3, 100])


def oversized(rng: random.Random, seed: bytes, descriptor: Descriptor) -> bytes:
    """One string field of 1-9 MiB (valid UTF-8 or not; 9 MiB is past what servers take)."""
    numbers = _strings(descriptor) or [_field(rng, descriptor)]
    size = rng.choice([1, 2, 4, 9]) * 1024 * 1024
    unit = rng.choice([b"a", b"\xc3\xa9", b"\x00", b"\xff"])
    filler = unit * (size // len(unit))
    return seed + length_delimited(rng.choice(numbers), filler)


MUTATIONS: dict[str, Mutation] = {
    "random": random_bytes,
    "truncate": truncate,
    "bitflip": flip_bits,
    "splice": splice,
    "wiretype": wrong_wire_type,
    "retype": retype,
    "varint": huge_varint,
    "length": bad_length,
    "groups": deep_groups,
    "nesting": deep_lengths,
    "utf8": bad_utf8,
    "unknown": unknown_fields,
    "repeat": repeated,
}
"""Cheap mutations, chosen at random for most raw cases."""

RARE_MUTATIONS: dict[str, Mutation] = {"oversized": oversized}
"""Mutations too heavy to run often (a few per run)."""
