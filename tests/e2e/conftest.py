"""The `lab` fixture: test hosts in network namespaces, removed after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.netlab import Lab, lab_available


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip `netns` tests, with the reason, where no lab can be built."""
    if item.get_closest_marker("netns") is not None:
        reason = lab_available()
        if reason is not None:
            pytest.skip(reason)


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A fresh lab (bridge joined by the test process at `.254`), closed afterwards."""
    reason = lab_available()
    if reason is not None:
        pytest.skip(reason)
    with Lab() as built:
        yield built
