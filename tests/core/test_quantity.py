"""Quantity parsing: the notations users write, the ones they must not, and exact round trips."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aideploy.quantity import (
    QuantityError,
    format_cpu,
    format_memory,
    format_size,
    parse_cpu,
    parse_memory,
    parse_quantity,
    parse_size,
)


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
    ],
)
def test_cpu_accepts_kubernetes_notation(text: str, cores: str) -> None:
    assert parse_cpu(text) == Decimal(cores)


@pytest.mark.parametrize("text", ["", "abc", "1 core", "-1", "0", "0m", "0.0001", "500 m", "1x"])
def test_cpu_rejects_what_kubernetes_would(text: str) -> None:
    with pytest.raises(QuantityError):
        parse_cpu(text)


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("512Mi", 512 * 2**20),
        ("2Gi", 2 * 2**30),
        ("1G", 10**9),
        ("1024", 1024),
        ("1.5Gi", 3 * 2**29),
        ("128k", 128_000),
    ],
)
def test_memory_accepts_kubernetes_notation(text: str, count: int) -> None:
    assert parse_memory(text) == count


@pytest.mark.parametrize("text", ["0", "-1Gi", "1.5", "2GB", "lots", "100m"])
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
    ],
)
def test_size_accepts_common_notation(text: str, count: int) -> None:
    assert parse_size(text) == count


@pytest.mark.parametrize("text", ["", "10XB", "-1MB", "0MB", "1.5B", "ten MB", "10MBs"])
def test_size_rejects_invalid(text: str) -> None:
    with pytest.raises(QuantityError):
        parse_size(text)


def test_quantity_error_names_the_notation() -> None:
    with pytest.raises(QuantityError, match="Kubernetes quantity"):
        parse_quantity("two")


@given(st.integers(min_value=1, max_value=10**9))
def test_cpu_round_trips(millicores: int) -> None:
    cores = Decimal(millicores) / 1000
    text = format_cpu(cores)
    assert parse_cpu(text) == cores
    assert format_cpu(parse_cpu(text)) == text


@given(st.integers(min_value=1, max_value=2**62))
def test_memory_round_trips(count: int) -> None:
    text = format_memory(count)
    assert parse_memory(text) == count
    assert format_memory(parse_memory(text)) == text


@given(st.integers(min_value=1, max_value=2**50))
def test_size_round_trips(count: int) -> None:
    text = format_size(count)
    assert parse_size(text) == count
    assert format_size(parse_size(text)) == text


@given(
    st.integers(min_value=1, max_value=10**6),
    st.sampled_from(["Ki", "Mi", "Gi", "k", "M", "G", ""]),
)
def test_memory_parses_any_suffix_it_formats(number: int, suffix: str) -> None:
    assert parse_memory(format_memory(parse_memory(f"{number}{suffix}"))) == parse_memory(
        f"{number}{suffix}"
    )
