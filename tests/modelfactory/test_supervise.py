"""`make run` keeps its processes alive: a killed child is restarted, a crash loop backs off, Ctrl-C
stops all; uploads and fine-tunes have workers of their own and one beat runs the reaper."""

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from modelfactory.launcher import commands
from modelfactory.supervise import Supervisor
from tests.waiting import wait_until

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
CRASHER = [sys.executable, "-c", "raise SystemExit(3)"]


def running(supervisor):
    stopping = threading.Event()
    thread = threading.Thread(target=supervisor.run, args=(stopping,), kwargs={"every_s": 0.02})
    thread.start()
    return stopping, thread


def test_a_killed_child_is_restarted_and_a_crash_loop_backs_off():
    lines = []
    supervisor = Supervisor(lines.append, backoff_s=0.05, max_backoff_s=0.2, stable_s=60)
    sleeper = supervisor.add("sleeper", lambda: subprocess.Popen(SLEEPER))
    crasher = supervisor.add("crasher", lambda: subprocess.Popen(CRASHER))
    first_pid = sleeper.process.pid
    stopping, thread = running(supervisor)
    try:
        os.kill(first_pid, signal.SIGKILL)
        wait_until(lambda: sleeper.process, lambda p: p.pid != first_pid and p.poll() is None, timeout=10)
        assert any(line.startswith("sleeper exited with -9; restarting it in 0.05 s") for line in lines)
        wait_until(lambda: crasher.restarts, lambda n: n >= 4, timeout=10)
    finally:
        stopping.set()
        thread.join()
        supervisor.stop_all()
    delays = [line.split("restarting it in ")[1] for line in lines if line.startswith("crasher exited")]
    assert delays[:4] == ["0.05 s.", "0.1 s.", "0.2 s.", "0.2 s."]  # doubling, up to the ceiling
    assert sleeper.process.poll() is not None  # stopped with the rest


def test_uploads_and_fine_tunes_have_their_own_workers_and_one_beat(tmp_path):
    started = commands(Path(tmp_path), "8000")
    queues = {name: command[command.index("-Q") + 1] for name, command in started.items() if "-Q" in command}
    assert sorted(queues.values()) == ["default", "gpu", "inference"]  # each queue its own process
    assert not any("--beat" in command or "-B" in command for command in started.values())
    assert [name for name, command in started.items() if "beat" in command] == ["beat"]
    assert "--pidfile" in started["beat"]  # a second beat refuses to start while this one lives


ORPHANS = """
import os, signal, subprocess, sys, time
from modelfactory.supervise import Supervisor
supervisor = Supervisor(print, backoff_s=60, adopt_orphans=True)
# A parent with a child of its own, like a Celery worker with its pool.
parent = supervisor.add("parent", lambda: subprocess.Popen(["sh", "-c", "sleep 600 & echo $!; wait"], stdout=subprocess.PIPE))
grandchild = int(parent.process.stdout.readline())
os.kill(parent.process.pid, signal.SIGKILL)
parent.process.wait()
time.sleep(0.2)  # the orphan is handed to us
supervisor.poll()
print("orphan alive" if os.path.exists(f"/proc/{grandchild}") else "orphan gone")
"""


def test_a_killed_childs_own_children_do_not_outlive_it():
    # In a process of its own: the test process must not become a subreaper of pytest's other children.
    out = subprocess.run([sys.executable, "-c", ORPHANS], capture_output=True, text=True, timeout=60, check=True)
    assert "parent exited with -9" in out.stdout
    assert out.stdout.strip().endswith("orphan gone"), out.stdout + out.stderr
