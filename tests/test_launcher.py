"""`make run`'s launcher on embedded defaults: comes up green with the bundled model, stops on Ctrl-C."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def session_processes(session: int, marker: str) -> list[int]:
    """Processes of the launcher's session (its children and theirs) whose command line holds ``marker``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if int(fields[3]) == session and marker in cmdline:  # fields[3]: the session id
            found.append(int(stat.parent.name))
    return found


def survivors(session: int) -> list[str]:
    """The command lines of the processes still in the launcher's session."""
    return [
        (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
        for pid in session_processes(session, "")
    ]


def child_pid(parent: int, marker: str) -> int:
    """The launcher's direct child whose command line holds ``marker`` (not a worker's pool processes)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if ppid == parent and marker in cmdline:
            return int(stat.parent.name)
    raise AssertionError(f"no child of {parent} runs {marker!r}")


class Launch:
    def __init__(self, var_dir: Path, port: int):
        drop = {"DATABASE_URL", "REDIS_URL", "MF_REDIS_SOCKET", "MODELS_DIR", "MEDIA_ROOT", "DJANGO_SETTINGS_MODULE"}
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env.update(MF_VAR_DIR=str(var_dir), PORT=str(port), HEALTH_CACHE_S="0")  # every /healthz checks afresh
        self.log_path = var_dir.parent / f"launch-{uuid.uuid4().hex[:8]}.log"
        self.log = open(self.log_path, "w")
        self.url = f"http://127.0.0.1:{port}"
        # A session of its own, so Ctrl-C can be sent to the whole group the way a terminal does.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "modelfactory.launcher"],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def output(self) -> str:
        return self.log_path.read_text()

    def wait_healthy(self, timeout: float) -> dict:
        last = {"body": None}

        def probe() -> dict | None:
            assert self.process.poll() is None, self.output[-3000:]
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=5) as response:
                    return json.load(response)
            except urllib.error.HTTPError as error:
                last["body"] = error.read().decode()
            except OSError:
                pass
            return None

        return wait_until(
            probe,
            lambda health: health is not None,
            timeout=timeout,
            every=1,
            describe=lambda: f"not healthy: {last['body']}\n{self.output[-3000:]}",
        )

    def ctrl_c(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)
        self.process.wait(timeout=60)
        with contextlib.suppress(AssertionError):  # the test says which process outlived Ctrl-C
            wait_until(lambda: group_alive(self.process.pid), lambda alive: not alive, timeout=30, every=0.2)
        self.log.close()


def test_run_comes_up_green_stops_on_ctrl_c_and_reuses_what_exists(tmp_path):
    var_dir = tmp_path / "var"
    first = Launch(var_dir, free_port())
    try:
        health = first.wait_healthy(timeout=300)
        # A dying part is restarted, not fatal: kill -9 the uploads' worker and the embedded Redis.
        for marker in ("-n default@", "redis-server"):
            os.kill(child_pid(first.process.pid, marker), signal.SIGKILL)
        wait_until(
            lambda: first.output,
            lambda out: "default worker restarted" in out and "redis restarted" in out,
            timeout=60,
            every=0.5,
            describe=lambda: first.output[-3000:],
        )
        assert first.wait_healthy(timeout=120)["status"] == "ok"
        assert len(session_processes(first.process.pid, "modelfactory beat")) == 1  # one scheduler: one reaper
    finally:
        first.ctrl_c()
    assert health["status"] == "ok"
    assert health["checks"]["database"] == health["checks"]["base_models"] == {"status": "up"}  # detail: staff only
    assert not group_alive(first.process.pid), f"outlived Ctrl-C: {survivors(first.process.pid)}"
    assert "username: admin    password: " in first.output
    assert (var_dir / "modelfactory.sqlite3").exists()
    model_dir = var_dir / "models" / "smollm2-135m-instruct"
    assert (model_dir / "model.safetensors").stat().st_size > 500_000_000

    second = Launch(var_dir, free_port())
    try:
        second.wait_healthy(timeout=120)
    finally:
        second.ctrl_c()
    assert "An admin already exists" in second.output
    assert "Importing the bundled base model" not in second.output
    assert "password: " not in second.output
    assert not group_alive(second.process.pid)

    # The imported model is the real SmolLM2: it answers a chat prompt sensibly.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0][prompt["input_ids"].shape[1] :], skip_special_tokens=True)
