"""A run on several processes (GPUs), of this machine or of several: the trainer under torchrun, its events
passed on as they come. No Django.

torchrun starts ``config.devices`` ranks (training/distributed.py) and stops them all when one dies (a
kill -9, an out-of-memory kill). This process then starts them again under a new torchrun, with a new
rendezvous, up to ``restarts`` times: each start resumes from the run's last checkpoint. (torchrun's own
restarts reuse its rendezvous store, where the dead ranks' addresses linger: the new ranks' gloo mesh
failed to connect.) Past that, or when a run fails before its first step, the run fails and its
checkpoint stays for the job's retry. Rank 0 appends its events to ``OUTPUT/events.jsonl``.

Several nodes (``config.nodes``): this machine is node 0 and hosts the rendezvous (torchrun's static
rendezvous on ``address:port``, a new port each attempt); before each attempt ``companions(address, port)``
asks the other nodes to join, and each of them runs ``follow``. The output folder must be one shared
folder: rank 0 writes the checkpoints every node resumes from.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
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


def command(spec: Path, events: Path, config: TrainConfig, node: int = 0, rendezvous: tuple | None = None) -> list[str]:
    """torchrun for one node: a rendezvous of its own on a free port (one node), else node ``node`` of the
    static rendezvous at ``rendezvous`` (address, port)."""
    if config.nodes == 1:
        where = ["--standalone"]
    else:
        address, port = rendezvous
        where = [f"--nnodes={config.nodes}", f"--node-rank={node}", f"--master-addr={address}", f"--master-port={port}"]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *where,
        f"--nproc-per-node={config.devices}",
        "--max-restarts=0",
        "-m",
        "training.trainer",
        str(spec),
        "--events",
        str(events),
    ]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


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
    address: str = "127.0.0.1",
    companions: Callable[[str, int], None] | None = None,
) -> dict:
    """Train on ``config.devices`` processes of each of ``config.nodes`` nodes, this one node 0 (its
    rendezvous on ``address``); the metrics as trainer.train returns them."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    spec, events, log = output_dir / "run.json", output_dir / "events.jsonl", output_dir / "processes.log"
    log.unlink(missing_ok=True)
    paths = {"data_path": str(data_path), "output_dir": str(output_dir), "eval_path": str(eval_path or "") or None}
    spec.write_text(json.dumps({**asdict(config), **paths}))
    events.unlink(missing_ok=True)
    (output_dir / "metrics.json").unlink(missing_ok=True)
    reader, processes = Events(events), config.devices * config.nodes
    restarted = 0
    while True:
        rendezvous = None
        if config.nodes > 1:
            rendezvous = (address, free_port())
            (output_dir / "rendezvous.json").write_text(json.dumps(rendezvous))
            companions(*rendezvous)
        argv = command(spec, events, config, 0, rendezvous)
        code, trained = _attempt(argv, config.devices, log, should_stop, reader, progress)
        if (output_dir / "metrics.json").exists():  # rank 0 wrote the results: the run is whole
            if code:  # a rank that ended early died on its way out (seen once: "terminate called" at exit)
                message = f"The run finished; a process then failed on its way out (exit {code}), changing nothing"
                progress({"event": "log", "message": message})
            return json.loads((output_dir / "metrics.json").read_text())
        if restarted == restarts or not trained:  # a run that fails before its first step fails again
            tail = log.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"the {processes} training processes failed (exit {code}): {tail}")
        restarted += 1
        message = (
            f"A process of the run failed (exit {code}): all {processes} start again from the last checkpoint "
            f"(restart {restarted} of at most {restarts})"
        )
        progress({"event": "log", "message": message})


def follow(output_dir: Path | str, node: int, rendezvous: tuple[str, int], should_stop) -> int:
    """Node ``node`` of the run node 0 started in the shared ``output_dir``: its ranks train and report
    nothing. Returns its torchrun's exit code."""
    output_dir = Path(output_dir)
    spec, current = output_dir / "run.json", output_dir / "rendezvous.json"
    if not current.exists() or tuple(json.loads(current.read_text())) != tuple(rendezvous):
        return -1  # a call for an attempt that has ended (or an output folder this node does not share)
    settings = {k: v for k, v in json.loads(spec.read_text()).items() if k in TrainConfig.__dataclass_fields__}
    config = TrainConfig.from_dict(settings)
    argv = command(spec, output_dir / "events.jsonl", config, node, rendezvous)
    return _attempt(argv, config.devices, output_dir / f"processes-node{node}.log", should_stop)[0]


def _attempt(argv, devices: int, log: Path, should_stop, reader: Events | None = None, progress=None):
    """One torchrun of this node's ranks, rank 0's events passed on; its exit code, and whether it trained a
    step."""
    trained = False
    with log.open("a") as stream:
        process = subprocess.Popen(
            argv,
            stdout=stream,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(_threads(devices)))},
            preexec_fn=_die_with_parent,
            start_new_session=True,
        )
        try:
            while True:
                done = process.poll() is not None
                for event in reader.read() if reader else []:
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
