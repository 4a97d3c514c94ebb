"""Shared fixtures: the nodes' wall clock, held still (virtual time moves trio's clock)."""

import pytest

START = 1_730_678_400  # 2024-11-04T00:00:00Z, the start of a budget window


@pytest.fixture
def clock():
    return [float(START)]
