"""Waiting for work that a worker process does: poll until a condition holds or a deadline passes.
A deadline, not a speed check: tests never assert on how long anything takes."""

import time


def wait_until(refresh, condition, *, timeout: float = 120, every: float = 0.1, describe=lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        value = refresh()
        if condition(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up waiting after {timeout} s: {describe()}")
        time.sleep(every)
