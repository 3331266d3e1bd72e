"""The one way a test waits for something: poll a condition, bounded in time and in count.

A test never sleeps to let an event happen; it names the event as a condition and waits for
it here, so a fast machine goes on at once and a slow one gets the whole timeout.
"""

from __future__ import annotations

import math
import time


def wait_until(
    condition,
    timeout: float,
    interval: float = 0.02,
    what: str = "the condition",
    ignoring: tuple = (),
):
    """Call `condition` until it returns something truthy, and return that value.

    An exception of a type in `ignoring` counts as "not yet" (a socket not bound yet, a file
    half written). After `timeout` seconds: AssertionError naming `what`, with the last value
    and the last ignored error.
    """
    deadline = time.monotonic() + timeout
    last_value = last_error = None
    # sleep() never returns early, so the count bound is reached no sooner than the deadline
    for _ in range(math.ceil(timeout / interval) + 1):
        try:
            last_value = condition()
        except ignoring as exc:
            last_value, last_error = None, exc
        if last_value:
            return last_value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    detail = f"; last error {last_error!r}" if last_error is not None else ""
    raise AssertionError(
        f"timed out after {timeout} s waiting for {what} (last value {last_value!r}{detail})"
    )
