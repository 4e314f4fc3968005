"""Quantity parsing: the notations users write, the ones they must not, bounds that name their
limit, exact round trips, and generated strings that either parse or raise QuantityError."""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal

import pytest
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st

from aideploy.quantity import (
    CPU_RANGE,
    MAX_QUANTITY_LENGTH,
    MAX_SIZE,
    MEMORY_RANGE,
    QuantityError,
    format_cpu,
    format_memory,
    format_size,
    parse_cpu,
    parse_memory,
    parse_quantity,
    parse_size,
)

Parser = Callable[[str], object]
PARSERS: list[Parser] = [parse_quantity, parse_cpu, parse_memory, parse_size]


@pytest.mark.parametrize(
    ("text", "cores"),
    [
        ("1", "1"),
        ("0.5", "0.5"),
        ("500m", "0.5"),
        ("2", "2"),
        ("1500m", "1.5"),
        ("1e0", "1"),
        ("1m", "0.001"),
        ("512", "512"),
        ("  250m\n", "0.25"),
    ],
)
def test_cpu_accepts_kubernetes_notation(text: str, cores: str) -> None:
    assert parse_cpu(text) == Decimal(cores)


@pytest.mark.parametrize(
    "text", ["", "abc", "1 core", "-1", "0", "0m", "0.0001", "500 m", "1x", "\u0661", "1e", "1.2.3"]
)
def test_cpu_rejects_what_kubernetes_would(text: str) -> None:
    with pytest.raises(QuantityError):
        parse_cpu(text)


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("512Mi", 512 * 2**20),
        ("2Gi", 2 * 2**30),
        ("1G", 10**9),
        ("1048576", 2**20),
        ("1.5Gi", 3 * 2**29),
        ("128M", 128_000_000),
        ("16Ti", 16 * 2**40),
        (" 1Gi ", 2**30),
    ],
)
def test_memory_accepts_kubernetes_notation(text: str, count: int) -> None:
    assert parse_memory(text) == count


@pytest.mark.parametrize("text", ["0", "-1Gi", "1.5", "2GB", "lots", "100m", "1Gi B"])
def test_memory_rejects_invalid(text: str) -> None:
    with pytest.raises(QuantityError):
        parse_memory(text)


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("10MB", 10_000_000),
        ("1.5GiB", 3 * 2**29),
        ("10mb", 10_000_000),
        ("512k", 512_000),
        ("2048", 2048),
        ("7 KiB", 7 * 1024),
        ("1TB", 10**12),
        ("3B", 3),
        ("1000TB", 10**15),
    ],
)
def test_size_accepts_common_notation(text: str, count: int) -> None:
    assert parse_size(text) == count


@pytest.mark.parametrize("text", ["", "10XB", "-1MB", "0MB", "1.5B", "ten MB", "10MBs", "\u0661MB"])
def test_size_rejects_invalid(text: str) -> None:
    with pytest.raises(QuantityError):
        parse_size(text)


def test_quantity_error_names_the_notation() -> None:
    with pytest.raises(QuantityError, match="Kubernetes quantity"):
        parse_quantity("two")


@pytest.mark.parametrize(
    ("parse", "text", "limit"),
    [
        (parse_cpu, "2Gi", "between 1m and 512 cores"),
        (parse_cpu, "513", "between 1m and 512 cores"),
        (parse_cpu, "0.0001", "between 1m and 512 cores"),
        (parse_cpu, "999999999999999999Ei", "between 1m and 512 cores"),
        (parse_memory, "1", "between 1Mi and 16Ti"),
        (parse_memory, "17Ti", "between 1Mi and 16Ti"),
        (parse_memory, "1e18", "between 1Mi and 16Ti"),
        (parse_size, "1001TB", "at most 1000TB"),
        (parse_size, "1" + "0" * 40 + "MB", "at most 1000TB"),
    ],
)
def test_values_out_of_range_name_the_limit(parse: Parser, text: str, limit: str) -> None:
    with pytest.raises(QuantityError, match=re.escape(limit)):
        parse(text)


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("1e999999", "exponent outside -18..18"),
        ("1e9999999", "exponent outside -18..18"),
        ("5e-19", "exponent outside -18..18"),
        ("1" * 10**6, "too long (at most 64 characters)"),
        ("1" * 10**6 + "x", "too long (at most 64 characters)"),
        ("1." + "1" * 50, "more than 40 significant digits"),
    ],
)
def test_bounds_refuse_work_before_it_starts(parse: Parser, text: str, problem: str) -> None:
    """What made parsing overflow or take half a minute (1e999999 bytes) is refused up front;
    the error quotes the input shortened."""
    if parse is parse_size and "e" in text:
        problem = "not a size"  # sizes have no exponent notation
    with pytest.raises(QuantityError, match=re.escape(problem)) as caught:
        parse(text)
    assert len(str(caught.value)) < 200


def test_longest_accepted_input_is_the_documented_one() -> None:
    text = "0" * (MAX_QUANTITY_LENGTH - 1) + "1"
    assert parse_quantity(text) == 1
    with pytest.raises(QuantityError, match="too long"):
        parse_quantity("0" + text)


# --- round trips: format then parse -----------------------------------------------------


@given(st.integers(min_value=1, max_value=int(CPU_RANGE[1] * 1000)))
def test_cpu_round_trips(millicores: int) -> None:
    cores = Decimal(millicores) / 1000
    text = format_cpu(cores)
    assert parse_cpu(text) == cores
    assert format_cpu(parse_cpu(text)) == text


@given(st.integers(min_value=MEMORY_RANGE[0], max_value=MEMORY_RANGE[1]))
def test_memory_round_trips(count: int) -> None:
    text = format_memory(count)
    assert parse_memory(text) == count
    assert format_memory(parse_memory(text)) == text


@given(st.integers(min_value=1, max_value=MAX_SIZE))
def test_size_round_trips(count: int) -> None:
    text = format_size(count)
    assert parse_size(text) == count
    assert format_size(parse_size(text)) == text


# --- generated strings: parse then format --------------------------------------------------
# Hypothesis's per-example deadline (200 ms) also fails any input that makes a parser slow.

_NUMBER = r"[+-]?([0-9]{0,30}\.?[0-9]{0,30}|\.[0-9]{1,30})"
QUANTITY_LIKE = st.from_regex(
    rf"\A\s?{_NUMBER}([eE][+-]?[0-9]{{1,8}}|Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?\s?\Z"
)
SIZE_LIKE = st.from_regex(
    r"\A\s?([0-9]{0,30}(\.[0-9]{0,30})?|\.[0-9]{1,30})\s{0,2}([kKmMgGtT]i?[bB]?|[bB])?\s?\Z"
)
ANY_TEXT = st.text(max_size=200) | st.binary(max_size=100).map(lambda raw: raw.decode("latin-1"))


@given(QUANTITY_LIKE)
def test_generated_cpu_strings_parse_within_bounds_or_raise_quantity_error(text: str) -> None:
    try:
        cores = parse_cpu(text)
    except QuantityError:
        return
    assert CPU_RANGE[0] <= cores <= CPU_RANGE[1]
    assert parse_cpu(format_cpu(cores)) == cores


@given(QUANTITY_LIKE)
def test_generated_memory_strings_parse_within_bounds_or_raise_quantity_error(text: str) -> None:
    try:
        count = parse_memory(text)
    except QuantityError:
        return
    assert MEMORY_RANGE[0] <= count <= MEMORY_RANGE[1]
    assert parse_memory(format_memory(count)) == count


@given(SIZE_LIKE)
def test_generated_size_strings_parse_within_bounds_or_raise_quantity_error(text: str) -> None:
    try:
        count = parse_size(text)
    except QuantityError:
        return
    assert 0 < count <= MAX_SIZE
    assert parse_size(format_size(count)) == count


@pytest.mark.parametrize("parse", PARSERS)
@given(text=ANY_TEXT | QUANTITY_LIKE | SIZE_LIKE)
def test_any_string_parses_or_raises_quantity_error(parse: Parser, text: str) -> None:
    """Nothing but QuantityError escapes: no decimal.Overflow, InvalidOperation or KeyError."""
    parses(parse, text)


@pytest.mark.parametrize(
    ("strategy", "parse"),
    [(QUANTITY_LIKE, parse_cpu), (QUANTITY_LIKE, parse_memory), (SIZE_LIKE, parse_size)],
)
def test_generated_strings_reach_both_outcomes(
    strategy: st.SearchStrategy[str], parse: Parser
) -> None:
    """The strategies are neither all junk nor all valid: each parser accepts some of their
    strings and refuses others, so the properties above test both paths."""
    search = settings(phases=[Phase.generate], database=None, max_examples=2000)
    assert parses(parse, find(strategy, lambda text: parses(parse, text), settings=search))
    assert not parses(parse, find(strategy, lambda text: not parses(parse, text), settings=search))


def parses(parse: Parser, text: str) -> bool:
    try:
        parse(text)
    except QuantityError:
        return False
    return True
