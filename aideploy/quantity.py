"""Parsing and formatting of resource quantities.

CPU and memory follow the Kubernetes quantity grammar (``"500m"``, ``"2Gi"``, ``"1e3"``) because
that is what users already write for every target; model sizes follow the byte-size notation
people put in requests (``"10MB"``, ``"1.5GiB"``). Arithmetic is done in :class:`~decimal.Decimal`
so that ``parse(format(x)) == x`` holds exactly.

Parsing is bounded, because these strings arrive in API requests: at most
:data:`MAX_QUANTITY_LENGTH` characters, exponents within +-:data:`MAX_EXPONENT` (Kubernetes
quantities fit an int64) and exact arithmetic in a fixed precision, so no input can make a parse
slow or raise anything but :class:`QuantityError`. Each parser also bounds the value to what a
deployment or a model can sensibly ask for, naming the limit.
"""

from __future__ import annotations

import re
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow, Underflow

__all__ = [
    "CPU_RANGE",
    "MAX_EXPONENT",
    "MAX_QUANTITY_LENGTH",
    "MAX_SIZE",
    "MEMORY_RANGE",
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
    """A quantity string that does not follow the expected notation or is out of range."""


MAX_QUANTITY_LENGTH = 64
"""Longest quantity or size string accepted, surrounding whitespace excluded."""
MAX_EXPONENT = 18
"""Largest exponent magnitude of ``1e18``-style quantities (int64 holds about 9.2e18)."""
_PRECISION = 40
_EXACT = Context(prec=_PRECISION, traps=[Inexact, InvalidOperation, Overflow, Underflow])
"""Arithmetic that would have to round is an error, not a silently different quantity."""

CPU_RANGE = (Decimal("0.001"), Decimal(512))
"""Cores one instance may request: one millicore up to the largest machines' vCPU count."""
MEMORY_RANGE = (2**20, 16 * 2**40)
"""Bytes one instance may request: 1Mi up to 16Ti."""
MAX_SIZE = 10**15
"""Largest model size target, in bytes (1000TB)."""

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
# ASCII only: ``\d`` would also take other scripts' digits, which Kubernetes rejects.
_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+))"
    r"(?:(?P<binary>Ki|Mi|Gi|Ti|Pi|Ei)|[eE](?P<exponent>[+-]?[0-9]+)|(?P<decimal>[numkMGTPE]?))",
    re.ASCII,
)


def _shown(text: str) -> str:
    """The input as an error message quotes it: shortened, so a huge input gives a short line."""
    return repr(text if len(text) <= 40 else f"{text[:37]}...")


def _bounded(text: str) -> str:
    """The stripped text, refused before any parsing when longer than any real quantity."""
    stripped = text.strip()
    if len(stripped) > MAX_QUANTITY_LENGTH:
        raise QuantityError(
            f"{_shown(text)} is too long (at most {MAX_QUANTITY_LENGTH} characters)"
        )
    return stripped


def _product(number: str, factor: Decimal | int, text: str) -> Decimal:
    """``number * factor`` exactly, or a :class:`QuantityError` when it cannot be exact."""
    try:
        return _EXACT.multiply(Decimal(number), Decimal(factor))
    except ArithmeticError:
        raise QuantityError(
            f"{_shown(text)} has more than {_PRECISION} significant digits"
        ) from None


def parse_quantity(text: str) -> Decimal:
    """Parse a Kubernetes resource quantity (``"1"``, ``"0.5"``, ``"500m"``, ``"2Gi"``, ``"1e3"``)."""
    match = _QUANTITY.fullmatch(_bounded(text))
    if match is None:
        raise QuantityError(
            f"{_shown(text)} is not a Kubernetes quantity (a number with an optional suffix such "
            "as m, k, M, G, Ki, Mi, Gi)"
        )
    if match["binary"]:
        return _product(match["number"], _BINARY_SUFFIXES[match["binary"]], text)
    if match["exponent"] is not None:
        exponent = int(match["exponent"])
        if abs(exponent) > MAX_EXPONENT:
            raise QuantityError(
                f"{_shown(text)} has an exponent outside -{MAX_EXPONENT}..{MAX_EXPONENT}"
            )
        return _product(match["number"], Decimal(10) ** exponent, text)
    return _product(match["number"], _DECIMAL_SUFFIXES[match["decimal"] or ""], text)


def parse_cpu(text: str) -> Decimal:
    """Parse a CPU quantity to cores: 1m to 512 cores, at most millicore precision."""
    cores = parse_quantity(text)
    low, high = CPU_RANGE
    if not low <= cores <= high:
        raise QuantityError(
            f"{_shown(text)} must be between 1m and {high} cores (for example '1', '0.5', '500m')"
        )
    millicores = _EXACT.multiply(cores, Decimal(1000))  # exact: x1000 adds no digit
    if millicores != millicores.to_integral_value():
        raise QuantityError(f"{_shown(text)} is finer than one millicore (1m = 0.001 cores)")
    return cores.normalize(_EXACT)


def format_cpu(cores: Decimal) -> str:
    """Format cores as Kubernetes writes them: whole cores plainly, the rest in millicores."""
    millicores = int(cores * 1000)
    if millicores % 1000 == 0:
        return str(millicores // 1000)
    return f"{millicores}m"


def parse_memory(text: str) -> int:
    """Parse a memory quantity (``"512Mi"``, ``"2Gi"``, ``"1G"``) to bytes, 1Mi to 16Ti."""
    amount = parse_quantity(text)
    low, high = MEMORY_RANGE
    if not low <= amount <= high:
        raise QuantityError(
            f"{_shown(text)} must be between {format_memory(low)} and {format_memory(high)} "
            "(for example '512Mi', '2Gi')"
        )
    if amount != amount.to_integral_value():
        raise QuantityError(f"{_shown(text)} is not a whole number of bytes")
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


_SIZE = re.compile(
    r"(?P<number>[0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*(?P<unit>[kKmMgGtT]i?[bB]?|[bB])?", re.ASCII
)
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
    powers of 1024; the unit's case does not matter, the trailing ``B`` is optional and spaces
    may separate it from the number. At most 1000TB.
    """
    match = _SIZE.fullmatch(_bounded(text))
    if match is None:
        raise QuantityError(
            f"{_shown(text)} is not a size (a number with an optional unit: B, KB, MB, GB, TB, "
            "KiB, MiB, GiB, TiB)"
        )
    unit = (match["unit"] or "").lower().removesuffix("b")
    factor = _SIZE_BINARY_FACTORS[unit[0]] if unit.endswith("i") else _SIZE_FACTORS[unit]
    count = _product(match["number"], factor, text)
    if not 0 < count <= MAX_SIZE:
        raise QuantityError(
            f"{_shown(text)} must be more than 0 bytes and at most {MAX_SIZE // 10**12}TB"
        )
    if count != count.to_integral_value():
        raise QuantityError(f"{_shown(text)} is not a whole number of bytes")
    return int(count)


def format_size(count: int) -> str:
    """Format bytes with the largest unit that divides them exactly (``"10MB"``, ``"3GiB"``)."""
    return _format_bytes(count, _SIZE_UNITS)
