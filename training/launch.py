"""A run on several processes (GPUs) of this machine: the trainer under torchrun, its events passed on as
they come. No Django.

torchrun starts ``config.devices`` ranks (training/distributed.py) and stops them all when one dies (a
kill -9, an out-of-memory kill). This process then starts them again under a new torchrun, with a new
rendezvous, up to ``restarts`` times: each start resumes from the run's last checkpoint. (torchrun's own
restarts reuse its rendezvous store, where the dead ranks' addresses linger: the new ranks' gloo mesh
failed to connect.) Past that, or when a run fails before its first step, the run fails and its
checkpoint stays for the job's retry. Rank 0 appends its events to ``OUTPUT/events.jsonl``.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from training.config import Cancelled, ProgressFn, TrainConfig

POLL_S = 0.2
PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child between fork and exec loads nothing


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """torchrun gets SIGTERM when the worker that started it dies, and stops its ranks: a killed worker's
    job, handed to another worker, never has two runs writing one folder (Linux)."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def command(spec: Path, events: Path, devices: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a rendezvous of its own on a free port, each attempt
        f"--nproc-per-node={devices}",
        "--max-restarts=0",
        "-m",
        "training.trainer",
        str(spec),
        "--events",
        str(events),
    ]


class Events:
    """The whole lines rank 0 has appended to the events file so far."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        whole = data[: data.rfind(b"\n") + 1]
        self.offset += len(whole)
        return [json.loads(line) for line in whole.splitlines() if line.strip()]


def train(
    config: TrainConfig,
    data_path: Path | str,
    output_dir: Path | str,
    progress: ProgressFn,
    should_stop,
    eval_path: Path | str | None = None,
    restarts: int = 2,
) -> dict:
    """Train on ``config.devices`` processes; the metrics as trainer.train returns them."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    spec, events, log = output_dir / "run.json", output_dir / "events.jsonl", output_dir / "processes.log"
    log.unlink(missing_ok=True)
    spec.write_text(
        json.dumps(
            {
                **asdict(config),
                "data_path": str(data_path),
                "output_dir": str(output_dir),
                "eval_path": str(eval_path) if eval_path else None,
            }
        )
    )
    events.unlink(missing_ok=True)
    (output_dir / "metrics.json").unlink(missing_ok=True)
    reader = Events(events)
    restarted = 0
    while True:
        code, trained = _attempt(config, spec, reader, log, progress, should_stop)
        if code == 0:
            return json.loads((output_dir / "metrics.json").read_text())
        if restarted == restarts or not trained:  # a run that fails before its first step fails again
            tail = log.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"the {config.devices} training processes failed (exit {code}): {tail}")
        restarted += 1
        message = (
            f"A process of the run failed (exit {code}): all {config.devices} start again from the last checkpoint "
            f"(restart {restarted} of at most {restarts})"
        )
        progress({"event": "log", "message": message})


def _attempt(config: TrainConfig, spec: Path, reader: Events, log: Path, progress, should_stop) -> tuple[int, bool]:
    """One torchrun of the ranks, its events passed on; its exit code, and whether it trained a step."""
    trained = False
    with log.open("a") as stream:
        process = subprocess.Popen(
            command(spec, reader.path, config.devices),
            stdout=stream,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(_threads(config.devices)))},
            preexec_fn=_die_with_parent,
            start_new_session=True,
        )
        try:
            while True:
                done = process.poll() is not None
                for event in reader.read():
                    trained = trained or event["event"] == "step"
                    progress(event)
                if done:
                    return process.returncode, trained
                if should_stop():
                    raise Cancelled
                time.sleep(POLL_S)
        finally:
            if process.poll() is None:  # cancelled, or this process is being torn down
                os.killpg(process.pid, signal.SIGTERM)
                process.wait()


def _threads(devices: int) -> int:
    """CPU threads a rank: the cores shared out (torchrun would set 1)."""
    return max(1, (os.cpu_count() or 1) // devices)
