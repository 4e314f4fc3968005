"""Parsing and formatting of resource quantities.

CPU and memory follow the Kubernetes quantity grammar (``"500m"``, ``"2Gi"``, ``"1e3"``) because
that is what users already write for every target; model sizes follow the byte-size notation
people put in requests (``"10MB"``, ``"1.5GiB"``). Arithmetic is done in :class:`~decimal.Decimal`
so that ``parse(format(x)) == x`` holds exactly.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

__all__ = [
    "QuantityError",
    "format_cpu",
    "format_memory",
    "format_size",
    "parse_cpu",
    "parse_memory",
    "parse_quantity",
    "parse_size",
]


class QuantityError(ValueError):
    """A quantity string that does not follow the expected notation."""


_BINARY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL_SUFFIXES = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))"
    r"(?:(?P<binary>Ki|Mi|Gi|Ti|Pi|Ei)|(?P<exponent>[eE][+-]?\d+)|(?P<decimal>[numkMGTPE]?))$"
)


def parse_quantity(text: str) -> Decimal:
    """Parse a Kubernetes resource quantity (``"1"``, ``"0.5"``, ``"500m"``, ``"2Gi"``, ``"1e3"``)."""
    match = _QUANTITY.match(text.strip())
    if match is None:
        raise QuantityError(
            f"{text!r} is not a Kubernetes quantity (a number with an optional suffix such as "
            "m, k, M, G, Ki, Mi, Gi)"
        )
    number = Decimal(match["number"])
    if match["binary"]:
        return number * _BINARY_SUFFIXES[match["binary"]]
    if match["exponent"]:
        return number * Decimal(f"1{match['exponent'].lower()}")
    return number * _DECIMAL_SUFFIXES[match["decimal"] or ""]


def parse_cpu(text: str) -> Decimal:
    """Parse a CPU quantity to cores; at least 1m, at most millicore precision."""
    cores = parse_quantity(text)
    if cores <= 0:
        raise QuantityError(f"{text!r} must be more than 0 cores (for example '1', '0.5', '500m')")
    millicores = cores * 1000
    if millicores != millicores.to_integral_value():
        raise QuantityError(f"{text!r} is finer than one millicore (1m = 0.001 cores)")
    return cores.normalize()


def format_cpu(cores: Decimal) -> str:
    """Format cores as Kubernetes writes them: whole cores plainly, the rest in millicores."""
    millicores = int(cores * 1000)
    if millicores % 1000 == 0:
        return str(millicores // 1000)
    return f"{millicores}m"


def parse_memory(text: str) -> int:
    """Parse a memory quantity (``"512Mi"``, ``"2Gi"``, ``"1G"``) to a whole number of bytes."""
    amount = parse_quantity(text)
    if amount <= 0:
        raise QuantityError(f"{text!r} must be more than 0 bytes (for example '512Mi', '2Gi')")
    if amount != amount.to_integral_value():
        raise QuantityError(f"{text!r} is not a whole number of bytes")
    return int(amount)


def _format_bytes(count: int, units: list[tuple[str, int]]) -> str:
    """Write ``count`` with the largest unit that divides it exactly."""
    for suffix, factor in units:
        if count % factor == 0:
            return f"{count // factor}{suffix}"
    raise AssertionError("the unit list must end with a factor of 1")


_K8S_MEMORY_UNITS = [
    *((suffix, factor) for suffix, factor in reversed(_BINARY_SUFFIXES.items())),
    ("E", 10**18),
    ("P", 10**15),
    ("T", 10**12),
    ("G", 10**9),
    ("M", 10**6),
    ("k", 10**3),
    ("", 1),
]


def format_memory(count: int) -> str:
    """Format bytes as a Kubernetes memory quantity, preferring binary suffixes."""
    return _format_bytes(count, _K8S_MEMORY_UNITS)


_SIZE = re.compile(r"^(?P<number>\d+(?:\.\d+)?|\.\d+)\s*(?P<unit>[kKmMgGtT]i?[bB]?|[bB])?$")
_SIZE_FACTORS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_SIZE_BINARY_FACTORS = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_SIZE_UNITS = [
    ("TiB", 2**40),
    ("GiB", 2**30),
    ("MiB", 2**20),
    ("KiB", 2**10),
    ("TB", 10**12),
    ("GB", 10**9),
    ("MB", 10**6),
    ("KB", 10**3),
    ("B", 1),
]


def parse_size(text: str) -> int:
    """Parse a byte size such as ``"10MB"``, ``"1.5GiB"``, ``"512k"`` or ``"2048"`` to bytes.

    Decimal units (KB, MB, GB, TB) are powers of 1000 and binary units (KiB, MiB, GiB, TiB)
    powers of 1024; the unit's case does not matter and the trailing ``B`` is optional.
    """
    match = _SIZE.match(text.strip())
    if match is None:
        raise QuantityError(
            f"{text!r} is not a size (a number with an optional unit: B, KB, MB, GB, TB, "
            "KiB, MiB, GiB, TiB)"
        )
    try:
        number = Decimal(match["number"])
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only valid numbers
        raise QuantityError(f"{text!r} is not a size") from exc
    unit = (match["unit"] or "").lower().removesuffix("b")
    factor = _SIZE_BINARY_FACTORS[unit[0]] if unit.endswith("i") else _SIZE_FACTORS[unit]
    count = number * factor
    if count <= 0:
        raise QuantityError(f"{text!r} must be more than 0 bytes")
    if count != count.to_integral_value():
        raise QuantityError(f"{text!r} is not a whole number of bytes")
    return int(count)


def format_size(count: int) -> str:
    """Format bytes with the largest unit that divides them exactly (``"10MB"``, ``"3GiB"``)."""
    return _format_bytes(count, _SIZE_UNITS)
