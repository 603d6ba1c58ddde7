"""Hostile field values, and any request message filled with them.

`Hostile` draws the values a careless or malicious client sends: empty, huge,
NUL-laden and exotic Unicode strings, integers at the edges of their types
(uint64 2^64-1 is what -1 becomes), NaN and infinities, unknown enum numbers,
repeated fields with duplicates or thousands of items. `fill` puts them into
any message by its descriptor, so every request type is covered without
knowing it; the API modules add values that mean something to that API (names
that exist, JSON bodies, manifests).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

U64 = (0, 1, 2, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1)
U32 = (0, 1, 2, 100, 2**31 - 1, 2**31, 2**32 - 1)
I64 = (-(2**63), -(2**31), -1, 0, 1, 2**31, 2**63 - 1)
I32 = (-(2**31), -1, 0, 1, 2**31 - 1)
FLOATS = (
    0.0, -0.0, math.nan, -math.nan, math.inf, -math.inf, 1e-45, 5e-324, -1.0, 0.5, 1.0,
    1.0000001, 2.0, 3.4e38, 3.5e38, 1e308,
)  # fmt: skip
ENUMS = (0, 1, 2, 5, 6, 99, -1, 2**31 - 1, -(2**31))

WEIRD_TEXT = (
    "", " ", "  x  ", "\t\n\r", "\x00", "a\x00b", "\x00" * 64, "\x7f\x1b[31m", "\u0085",
    "é", "名前", "🤖" * 40, "\u202eevil", "\u200b", "\ufeff", "e\u0301" * 50, "\U0010ffff",
    "a" * 63, "a" * 64, "a" * 128, "a" * 129, "a" * 4096,
    "../../../../etc/shadow", "/", ".", "..", "~root/x", "C:\\x", "\\\\server\\share",
    "%s%n%x{0}{}", "${HOME}", "$(id)", "'; DROP TABLE events; --", "<script>", "&amp;",
    "- x", "a: b", "&anchor", "*alias", "!!python/object/apply:os.system ['id']", "{",
    "[]", "null", "~", "true", "-1", "1e999", "NaN", "0x1f",
    "node/", "agent/", "deployment/", "node/../..", "model:x", "*", "%", "_",
)  # fmt: skip

SHORT_TEXT = tuple(text for text in WEIRD_TEXT if len(text) <= 64)

JSON_TEXT = (
    "", "{}", "[]", "null", "0", '"x"', "{not json", "{}" * 2, '{"a": 1}', '{"a": {}}',
    '{"time": {"x": 1}}', '{"time": null}', '{"database": {"path": "x.db", "max_rows": -1}}',
    '{"calendar": {"timezone": "Mars/Olympus"}}', '{"email": {"smtp": {"host": ""}}}',
    "[" * 100_000 + "]" * 100_000, '{"a":' * 5000 + "1" + "}" * 5000, "9" * 5000,
    "-" + "9" * 4301, "1e999999", '{"a": NaN, "b": Infinity}', '"\\ud800"', '{"\\u0000": {}}',
    "\x00", '{"a": 1}\x00', "\ufeff{}",
)  # fmt: skip
"""Texts for fields that carry JSON: valid, invalid, and the ones parsers choke on."""


class Hostile:
    """Draws hostile values; `names` are names that may exist on the server."""

    def __init__(self, rng: random.Random, names: Sequence[str] = ()) -> None:
        self.rng = rng
        self.names = list(names)
        self.short = False
        """Draw only short values (for the items of a field repeated thousands of times)."""

    def text(self) -> str:
        """A hostile string (sometimes a name that exists, or a near miss of one)."""
        rng = self.rng
        pick = rng.random()
        if self.names and pick < 0.25:
            name = rng.choice(self.names)
            if rng.random() < 0.5:
                return name
            return rng.choice([name.upper(), f" {name}", f"{name}\x00", name[:-1], name * 2])
        if pick < 0.75 or self.short:
            return rng.choice(SHORT_TEXT if self.short else WEIRD_TEXT)
        if pick < 0.9:
            return "".join(chr(self.code_point()) for _ in range(rng.randrange(1, 40)))
        if pick < 0.995:
            return rng.choice(["a", "é", "\x00", "🤖", "ab\n"]) * rng.choice([1000, 20_000])
        return "x" * rng.choice([1, 3]) * 1024 * 1024

    def code_point(self) -> int:
        """Any Unicode scalar value (no surrogates: they are not UTF-8)."""
        while True:
            point = self.rng.choice([self.rng.randrange(128), self.rng.randrange(0x110000)])
            if not 0xD800 <= point <= 0xDFFF:
                return point

    def json(self) -> str:
        """A JSON-ish text for a field documented to hold JSON."""
        if self.short:
            return self.rng.choice(JSON_TEXT[:15])
        if self.rng.random() < 0.8:
            return self.rng.choice(JSON_TEXT)
        return json.dumps({self.text(): {self.text(): self.text()}})

    def data(self) -> bytes:
        """A hostile `bytes` value."""
        if self.rng.random() < 0.6:
            return self.json().encode()
        return self.rng.randbytes(self.rng.choice([0, 1, 16, 1024]))

    def count(self) -> int:
        """How many items a repeated field gets."""
        return self.rng.choice([0, 1, 1, 2, 2, 3, 5, 20] * 20 + [300, 3000])

    def scalar(self, field: FieldDescriptor) -> object:
        """A hostile value of the field's type."""
        rng = self.rng
        kind = field.type
        if kind == FieldDescriptor.TYPE_STRING:
            return self.text()
        if kind == FieldDescriptor.TYPE_BYTES:
            return self.data()
        if kind == FieldDescriptor.TYPE_BOOL:
            return rng.random() < 0.5
        if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            return rng.choice(FLOATS)
        if kind == FieldDescriptor.TYPE_ENUM:
            return rng.choice(ENUMS)
        if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
            return rng.choice(U64)
        if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
            return rng.choice(U32)
        if kind in (
            FieldDescriptor.TYPE_INT64,
            FieldDescriptor.TYPE_SINT64,
            FieldDescriptor.TYPE_SFIXED64,
        ):
            return rng.choice(I64)
        return rng.choice(I32)

    def fill(self, message: Message, depth: int = 0) -> Message:
        """`message` with hostile values in a random selection of its fields."""
        for field in message.DESCRIPTOR.fields:
            if self.rng.random() < 0.3:
                continue
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                entries = getattr(message, field.name)
                value_field = field.message_type.fields_by_name["value"]
                for _ in range(self.count()):
                    key = self.scalar(field.message_type.fields_by_name["key"])
                    if value_field.message_type is None:
                        entries[key] = self.scalar(value_field)
                    elif depth < 4:
                        self.fill(entries[key], depth + 1)
            elif field.is_repeated:
                self._repeat(message, field, depth)
            elif field.message_type is not None:
                if depth < 4:
                    self.fill(getattr(message, field.name), depth + 1)
            else:
                setattr(message, field.name, self.scalar(field))
        return message

    def _repeat(self, message: Message, field: FieldDescriptor, depth: int) -> None:
        items = getattr(message, field.name)
        count = self.count() if depth == 0 else self.rng.choice([0, 1, 2, 3])
        # Thousands of items are copies of a few short ones: many, not large.
        short, self.short = self.short, self.short or count > 20
        try:
            for _ in range(min(count, 3)):
                if field.message_type is None:
                    items.append(self.scalar(field))
                else:
                    self.fill(items.add(), depth + 1)
        finally:
            self.short = short
        while items and (len(items) < count or self.rng.random() < 0.1):
            items.append(items[self.rng.randrange(min(len(items), 3))])
