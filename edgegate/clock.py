"""The real clock of the gate PC."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
import time
import uuid
from pathlib import Path

_BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


def read_boot_id() -> str:
    """The kernel's boot id; monotonic times are only comparable within one boot."""
    try:
        return _BOOT_ID_PATH.read_text().strip()
    except OSError:
        # Not Linux: a per-process id keeps "same boot" comparisons conservative.
        return f"process-{uuid.uuid4()}"


class SystemClock:
    """``time.time_ns`` and ``time.monotonic_ns`` with the kernel's boot id."""

    def __init__(self) -> None:
        self._boot_id = read_boot_id()

    @property
    def boot_id(self) -> str:
        return self._boot_id

    # The builtins themselves, not methods wrapping them: the event log reads both for every
    # event it appends, and a Python-level call per read is measurable there.
    wall_ns = staticmethod(time.time_ns)
    mono_ns = staticmethod(time.monotonic_ns)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


_TIME_ERROR = 5  # adjtimex(2): the kernel's clock is not synchronised (STA_UNSYNC)


def system_clock_synchronised() -> bool | None:
    """Whether the kernel says its clock is synchronised (by NTP or PTP), as ``timedatectl``'s
    "System clock synchronized" does; None where the system does not say (not Linux, or no
    ``adjtimex``)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = _libc()
        # struct timex with modes = 0 (read only); 512 bytes cover it on every architecture.
        buffer = ctypes.create_string_buffer(512)
        state = int(libc.adjtimex(buffer))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR
