"""Keep `make run`'s processes alive: start each one, restart one that dies (with a backoff that grows
while it keeps dying), and stop them all. No Django, so a test drives it with any processes."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Child:
    name: str
    start: Callable[[], subprocess.Popen | None]  # None: nothing of ours to run (e.g. a Redis already answering)
    process: subprocess.Popen | None = None
    restarts: int = 0  # in a row, without a stable run between them
    started_at: float = 0.0
    restart_at: float | None = None  # when a dead child is due to start again


class Supervisor:
    def __init__(
        self,
        log: Callable[[str], None],
        *,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        stable_s: float = 60.0,
        adopt_orphans: bool = False,
    ):
        self.log, self.backoff_s, self.max_backoff_s, self.stable_s = log, backoff_s, max_backoff_s, stable_s
        self.children: list[Child] = []
        # A child killed with -9 leaves its own children (a worker's pool) running: as their subreaper this
        # process gets them back and stops them. Only for a process that owns all its children (the launcher).
        self.adopt_orphans = adopt_orphans and sys.platform == "linux"
        if self.adopt_orphans:
            ctypes.CDLL(None, use_errno=True).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER

    def add(self, name: str, start: Callable[[], subprocess.Popen | None]) -> Child:
        child = Child(name, start, process=start(), started_at=time.monotonic())
        self.children.append(child)
        return child

    def poll(self) -> None:
        """One round: note children that died and start those whose backoff has passed."""
        now = time.monotonic()
        for child in self.children:
            if child.process is None or child.process.poll() is None:
                continue
            if child.restart_at is None:
                if now - child.started_at >= self.stable_s:
                    child.restarts = 0  # it had run well: a new crash starts the backoff again
                delay = min(self.max_backoff_s, self.backoff_s * 2**child.restarts)
                self.log(f"{child.name} exited with {child.process.returncode}; restarting it in {delay:g} s.")
                self.stop_orphans()
                child.restart_at = now + delay
            elif now >= child.restart_at:
                child.restarts, child.restart_at, child.started_at = child.restarts + 1, None, now
                try:
                    process = child.start()
                except Exception as error:  # it stays dead: the next round backs off further and tries again
                    self.log(f"{child.name} could not start again: {error}")
                    continue
                child.process = process
                if process is None:
                    self.log(f"{child.name}: another process now answers in its place; it is not restarted.")
                    continue
                self.log(f"{child.name} restarted (pid {child.process.pid}, restart {child.restarts}).")

    def run(self, stopping: threading.Event, every_s: float = 0.5) -> None:
        while not stopping.is_set():
            self.poll()
            stopping.wait(every_s)

    def stop_all(self, timeout_s: float = 10) -> None:
        running = [c.process for c in reversed(self.children) if c.process is not None and c.process.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + timeout_s
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.stop_orphans()

    def stop_orphans(self) -> None:
        """Kill and reap the processes that outlived their parent child and were handed to us."""
        if not self.adopt_orphans:
            return
        ours = {c.process.pid for c in self.children if c.process is not None}
        for pid in set(child_pids(os.getpid())) - ours:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def child_pids(parent: int) -> list[int]:
    """The processes whose parent is ``parent`` (Linux /proc; empty elsewhere)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(stat.parent.name))
    return found
