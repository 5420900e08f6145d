"""The long-running processes' heap and Python's garbage collector.

A full collection walks every tracked object. What start-up builds (modules, the allow-list
index, profiles, the web applications) lives as long as the process, yet a full pass walks it
each time, pausing the event loop for tens of milliseconds on a small machine: a lane's next
input, a store's commit or a park API answer waits behind it.
"""

from __future__ import annotations

import gc


def freeze_startup() -> None:
    """Once start-up is done: collect its garbage, then keep every object alive now out of
    later collections (``gc.freeze``). Collect first: frozen garbage would never be freed."""
    gc.collect()
    gc.freeze()
