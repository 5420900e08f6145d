"""freeze_startup: start-up's garbage is freed, what is alive is kept out of collections."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from edgegate.heap import freeze_startup


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def thawed() -> Iterator[None]:
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("thawed")
def test_startup_garbage_is_freed_and_the_living_frozen() -> None:
    a, b = _Node(), _Node()
    a.other, b.other = b, a  # a cycle: only the collector frees it
    garbage = weakref.ref(a)
    del a, b
    alive = _Node()
    before = gc.get_freeze_count()
    freeze_startup()
    assert garbage() is None, "start-up's garbage must be collected before the freeze"
    assert gc.get_freeze_count() > before
    assert not any(o is alive for o in gc.get_objects()), "the living are frozen"
