"""Hash slots and their depth (DESIGN §12.1): naming, split and merge, and the walk that
resolves a key in a table where some slots are split and others are not.

With ``--hash-slots N`` a key's hash is ``crc32(key)`` and its slot at modulus ``M`` is
``h mod M``. ``slot-<i>`` (i < N) is the base slot; ``slot-<i>-of-<M>`` (M = N·2^d, d ≥ 1)
is a slot at depth d. A name means one key set for ever, so a stamp can never be read
against another depth. Because ``h mod 2M`` is ``h mod M`` or ``h mod M + M``, slot i of M
splits into slots i and i+M of 2M, and those two merge back into it.

The table keeps its present slots a partition of the key space (T1, DESIGN §12.1); the walk
tries ``slot-(h mod N)``, then ``slot-(h mod 2N)-of-2N``, … and the first present one is the
key's slot. An unsplit table costs one lookup, which the sidecar does anyway.
"""

from __future__ import annotations

import re
import zlib
from typing import Any, Callable, Iterable, Mapping, NamedTuple, TypeVar

from ._exceptions import ConfigError

#: how deep a slot may be split: M ≤ N·2^16, and never past 2^32 (crc32 has 32 bits)
MAX_DEPTH = 16
_HASH_RANGE = 1 << 32
_NAME = re.compile(r"slot-(0|[1-9][0-9]{0,9})(?:-of-([1-9][0-9]{0,10}))?")

T = TypeVar("T")


def key_hash(key: str) -> int:
    """The hash a key's slot is taken from (stable across processes and versions)."""
    return zlib.crc32(key.encode("utf-8"))


class Slot(NamedTuple):
    """Slot ``number`` of ``modulus``: the keys with ``key_hash(key) % modulus == number``."""

    number: int
    modulus: int

    def name(self, base: int) -> str:
        return slot_name(self.number, self.modulus, base)

    def holds(self, h: int) -> bool:
        return h % self.modulus == self.number

    def halves(self) -> tuple["Slot", "Slot"]:
        """The two slots a split makes: ``(index of 2M, index+M of 2M)``."""
        m = self.modulus
        if 2 * m > _HASH_RANGE:
            raise ConfigError("slot", f"slot {self.number} of {m} cannot be split further")
        return Slot(self.number, 2 * m), Slot(self.number + m, 2 * m)

    def merged(self, base: int) -> "Slot":
        """The slot this one merges into with its sibling (refused for a base slot)."""
        if self.modulus <= base:
            raise ConfigError("slot", f"{self.name(base)} is a base slot: there is nothing to merge it into")
        half = self.modulus // 2
        return Slot(self.number % half, half)

    def sibling(self, base: int) -> "Slot":
        """The other half of the slot this one was split from."""
        parent = self.merged(base)
        return Slot(parent.number + parent.modulus if self.number == parent.number else parent.number, self.modulus)


def slot_name(index: int, modulus: int, base: int) -> str:
    """``slot-<index>`` at the base modulus, ``slot-<index>-of-<modulus>`` deeper."""
    return f"slot-{index}" if modulus == base else f"slot-{index}-of-{modulus}"


def parse_slot(name: str, base: int, field: str = "slot") -> Slot:
    """The slot a name stands for with ``base`` = N; ``ConfigError`` naming ``field`` for a
    name that is not a slot of this table (``slot-9`` with N = 8, ``slot-3-of-12`` …)."""
    if base < 1:
        raise ConfigError(field, f"hash slots are off (N = {base}); start with --hash-slots N")
    m = _NAME.fullmatch(name) if isinstance(name, str) else None
    if m is None:
        raise ConfigError(field, f"expected slot-I or slot-I-of-M, got {name!r}")
    index = int(m.group(1))
    modulus = base if m.group(2) is None else int(m.group(2))
    if m.group(2) is not None:
        q, r = divmod(modulus, base)
        if r or q < 2 or q & (q - 1) or q > 1 << MAX_DEPTH or modulus > _HASH_RANGE:
            raise ConfigError(field, f"{name!r}: the modulus must be N·2^d with 1 ≤ d ≤ {MAX_DEPTH} (N = {base})")
    if index >= modulus:
        raise ConfigError(field, f"{name!r}: slot index must be below {modulus}")
    return Slot(index, modulus)


def resolve_slot(h: int, base: int, lookup: Callable[[str], T | None]) -> tuple[str, T] | None:
    """The key's present slot: ``(name, lookup(name))`` for the first name along the walk
    whose ``lookup`` is not None, or None when no slot holding the key is present."""
    m = base
    for _ in range(MAX_DEPTH + 1):
        name = f"slot-{h % m}" if m == base else f"slot-{h % m}-of-{m}"
        found = lookup(name)
        if found is not None:
            return name, found
        m *= 2
        if m > _HASH_RANGE:
            break
    return None


#: the export/delta answer echoes the key filter it applied (DESIGN §12.4); the mover refuses one without
FILTER_HEADER = "X-Epochgate-Filter"


def filter_text(slot: Slot) -> str:
    """The hooks' key filter as query text and as the echo: ``slot=I&of=M``."""
    return f"slot={slot.number}&of={slot.modulus}"


def slot_filter(query: Mapping[str, str]) -> Slot | None:
    """The key filter a hook call asks for (``slot=I&of=M``), or None without one;
    ``ConfigError`` naming the parameter when it is half given or out of range."""
    i, m = query.get("slot"), query.get("of")
    if i is None and m is None:
        return None
    for field, v in (("slot", i), ("of", m)):
        if v is None or not v.isdigit() or len(v) > 11:
            raise ConfigError(field, f"the key filter needs slot=I&of=M (non-negative integers), got {field}={v!r}")
    assert i is not None and m is not None
    i_, m_ = int(i), int(m)
    if not 1 <= m_ <= _HASH_RANGE:
        raise ConfigError("of", f"the modulus must be between 1 and 2^32, got {m_}")
    if i_ >= m_:
        raise ConfigError("slot", f"slot index {i_} must be below the modulus {m_}")
    return Slot(i_, m_)


def tiling_problem(names: Iterable[str], base: int) -> str | None:
    """Why the slots ``names`` do not tile the key space (T1, DESIGN §12.1) — a name that is
    not a slot, two slots sharing keys, keys no slot holds — or None when they do."""
    slots: dict[Slot, str] = {}
    for name in names:
        try:
            slots[parse_slot(name, base)] = name
        except ConfigError as exc:
            return str(exc).split(": ", 1)[-1]
    for slot, name in slots.items():
        up = slot
        while up.modulus > base:
            up = up.merged(base)
            if up in slots:
                return f"{name} and {slots[up]} share keys (one is part of the other)"
    top = max((sl.modulus for sl in slots), default=base)
    covered = sum(top // sl.modulus for sl in slots)
    if covered != top:
        return f"some keys are in no slot: the slots cover {covered}/{top} of the key space"
    return None


class SlotKey(str):
    """A slot name that remembers the request key's hash, so a request whose slot was
    split or merged since it was routed can walk again (the sidecar's router returns these
    in hash-slot mode; they compare and hash as the plain name)."""

    h: int
    base: int

    def __new__(cls, name: str, h: int, base: int) -> "SlotKey":
        self = str.__new__(cls, name)
        self.h = h
        self.base = base
        return self

    @classmethod
    def of(cls, h: int, base: int) -> "SlotKey":
        """The key's base slot (what an unsplit table holds)."""
        return cls(f"slot-{h % base}", h, base)

    def __reduce__(self) -> tuple[Any, ...]:   # str's own would drop h and base
        return (SlotKey, (str(self), self.h, self.base))
