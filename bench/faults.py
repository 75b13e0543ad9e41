"""Benchmark: faults and load on the embedded stack that `make run` starts.

    .venv/bin/python bench/faults.py                   # 5 kills of each kind, then 20 clients for 60 s
    .venv/bin/python bench/faults.py --rounds 2 --load-seconds 20

Starts the launcher on a scratch var folder (the bundled model is imported there once), with short
reaper periods so that a round takes seconds, not minutes. Then, per round and kind, it kills a
process with SIGKILL while it works and counts what came back without a hand:

- web: gunicorn's master, under a stream of page requests; back when /healthz answers 200 again.
- gpu worker during training: a fine-tune of a tiny model; back when the job succeeds (the reaper
  re-queues it and the restarted worker resumes from its checkpoint).
- default worker during ingest: a 100,000-line upload; back when the upload is done with every record,
  or failed with none stored and the same file, uploaded again, is stored whole.
- redis during training: back when /healthz is green and the job still succeeds.

Lost or half-stored records must be 0. Then a bounded load run: N parallel clients for S seconds on
the Datanet list, an adapter page and /api/v1/adapters: requests/s, p95 latency and errors (429s at the
configured limit are counted apart). Last, `verify_ledger` and `check_versions` must pass.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FAST_REAPERS = {"JOB_HEARTBEAT_STALE_S": "6", "UPLOAD_STALE_S": "6", "REAP_EVERY_S": "3", "HEALTH_CACHE_S": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(condition, timeout: float, every: float = 0.25, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")


def get(url: str, headers: dict | None = None, timeout: float = 10) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def child_pid(parent: int, marker: str) -> int:
    """The launcher's child whose command line holds ``marker``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and marker in cmdline:
            return int(entry.name)
    raise LookupError(f"no child of {parent} runs {marker!r}")


class Stack:
    """`python -m modelfactory.launcher` on a scratch var folder, in a session of its own."""

    def __init__(self, var_dir: Path):
        self.var_dir = var_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        drop = {"DATABASE_URL", "REDIS_URL", "MF_REDIS_SOCKET", "MODELS_DIR", "MEDIA_ROOT", "DJANGO_SETTINGS_MODULE"}
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env.update(MF_VAR_DIR=str(var_dir), PORT=str(self.port), **FAST_REAPERS)
        self.log = open(var_dir.parent / "launcher.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "modelfactory.launcher"],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def healthy(self) -> bool:
        return get(self.url + "/healthz", timeout=5) == 200

    def kill(self, marker: str) -> float:
        os.kill(child_pid(self.process.pid, marker), signal.SIGKILL)
        return time.monotonic()

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)
        self.process.wait(timeout=60)
        self.log.close()


def start(prefix: str) -> Stack:
    """The stack on a scratch var folder, up and green, with this process's Django on the same database
    and Redis (to make users, Datanets and jobs through the services)."""
    var_dir = Path(tempfile.mkdtemp(prefix=prefix)) / "var"
    var_dir.mkdir()
    for key, value in {"MF_VAR_DIR": str(var_dir), **FAST_REAPERS}.items():
        os.environ[key] = value
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)
    stack = Stack(var_dir)
    try:
        wait(stack.healthy, 600, 1, "the launcher to come up green")
    except BaseException:
        stack.stop()
        raise
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelfactory.settings")
    django.setup()
    return stack


def setup_data():
    """A user with a token, a team, a tiny base model, a published Datanet version, an adapter."""
    from django.db import transaction

    from publishing import services as publishing_services
    from testkit.tiny_model import build_tiny_model
    from tests.factories import MembershipFactory, UserFactory, make_version
    from training import services as training_services

    user = UserFactory(username="bench")
    team = MembershipFactory(user=user, role="owner").team
    source = build_tiny_model(Path(tempfile.mkdtemp(prefix="tiny-")))
    model = training_services.base_model_register(name="Tiny Llama", source=str(source), license="apache-2.0")
    model = training_services.base_model_import(base_model=model)
    version = make_version(user, n=40)
    with transaction.atomic():
        job = start_job(user, model, version, max_steps=20)
    wait(lambda: job_state(job) in ("succeeded", "failed"), 300, what="the first fine-tune")
    job.refresh_from_db()
    adapter = publishing_services.adapter_publish(job=job, by=user, team=team, name="Bench Expert", visibility="public")
    _, secret = publishing_services.token_create(user=user, name="bench", scope="read")
    return {"user": user, "team": team, "model": model, "version": version, "adapter": adapter, "secret": secret}


def start_job(user, model, version, max_steps: int):
    from training import jobs

    job = jobs.job_create(
        owner=user,
        name="",
        base_model=model,
        versions=[version],
        method="lora",
        preset="quick",
        overrides={"learning_rate": 0.005, "max_seq_length": 64},
    )
    job.config = {**job.config, "max_steps": max_steps, "checkpoint_every": 25, "influence_methods": []}
    job.save(update_fields=["config"])
    return job


def job_state(job) -> str:
    job.refresh_from_db()
    return job.status


def kill_during_training(stack: Stack, data: dict, marker: str) -> dict:
    from django.db import transaction

    with transaction.atomic():
        job = start_job(data["user"], data["model"], data["version"], max_steps=300)
    wait(lambda: job_state(job) == "running" and job.step >= 30, 300, what="training to pass step 30")
    killed = stack.kill(marker)
    back = wait(stack.healthy, 300, what="a green /healthz") and time.monotonic() - killed
    wait(lambda: job_state(job) in ("succeeded", "failed", "cancelled"), 600, what="the job to end")
    return {"recovered": job.status == "succeeded", "healthz_s": back, "lost": 0 if job.status == "succeeded" else 1}


def upload(data: dict, lines: int):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from datanets import services as datanet_services
    from tests.factories import DatanetFactory

    datanet = DatanetFactory(team=data["team"], created_by=data["user"], visibility="public")
    text = "".join(
        json.dumps({"instruction": f"Bench question {i} of {datanet.slug}?", "output": f"Answer {i}."}) + "\n"
        for i in range(lines)
    )
    file = SimpleUploadedFile("bench.jsonl", text.encode(), content_type="application/octet-stream")
    return datanet_services.upload_create(datanet=datanet, contributor=data["user"], file=file)


def kill_during_ingest(stack: Stack, data: dict, lines: int = 100_000) -> dict:
    from datanets.models import Record, Upload

    first = upload(data, lines)
    wait(lambda: Upload.objects.get(pk=first.pk).status == Upload.Status.VALIDATING, 120, 0.05, "the ingest to start")
    killed = stack.kill("-n default@")
    back = wait(stack.healthy, 300, what="a green /healthz") and time.monotonic() - killed
    done = wait(lambda: (u := Upload.objects.get(pk=first.pk)).finished and u, 600, what="the upload to end")
    stored = Record.objects.filter(upload=first).count()
    half = stored not in (0, lines) or (done.status == Upload.Status.DONE) != (stored == lines)
    recovered = done.status == Upload.Status.DONE and stored == lines
    if done.status == Upload.Status.FAILED and stored == 0:  # failed whole, with a message: upload it again
        again = upload(data, lines)
        again = wait(lambda: (u := Upload.objects.get(pk=again.pk)).finished and u, 600, what="the re-upload")
        recovered = again.status == Upload.Status.DONE and Record.objects.filter(upload=again).count() == lines
    return {"recovered": recovered, "healthz_s": back, "lost": int(half), "outcome": done.status}


def kill_web(stack: Stack, data: dict) -> dict:
    killed = stack.kill("gunicorn")
    back = wait(stack.healthy, 300, what="a green /healthz") and time.monotonic() - killed
    pages = get(f"{stack.url}/datanets/") == 200
    return {"recovered": pages, "healthz_s": back, "lost": 0}


def load(stack: Stack, data: dict, clients: int, seconds: float) -> dict:
    adapter = data["adapter"]
    targets = [
        (f"{stack.url}/datanets/", {}),
        (f"{stack.url}/adapters/{adapter.slug}/v{adapter.version}/", {}),
        (f"{stack.url}/api/v1/adapters", {"Authorization": f"Bearer {data['secret']}"}),
    ]
    latencies, codes, lock = [], {}, threading.Lock()
    deadline = time.monotonic() + seconds

    def client(index: int) -> None:
        n = index
        while time.monotonic() < deadline:
            url, headers = targets[n % len(targets)]
            started = time.monotonic()
            code = get(url, headers)
            with lock:
                latencies.append(time.monotonic() - started)
                codes[code] = codes.get(code, 0) + 1
            n += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(statistics.median(ordered) * 1000),
        "p95_ms": round(ordered[int(len(ordered) * 0.95)] * 1000),
        "codes": codes,
        "errors": sum(n for code, n in codes.items() if code not in (200, 429)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--load-seconds", type=float, default=60)
    args = parser.parse_args()
    stack = start("mf-faults-")
    try:
        data = setup_data()
        kinds = {
            "web": lambda: kill_web(stack, data),
            "gpu worker during training": lambda: kill_during_training(stack, data, "-n gpu@"),
            "default worker during ingest": lambda: kill_during_ingest(stack, data),
            "redis during training": lambda: kill_during_training(stack, data, "redis-server"),
        }
        rows = {}
        for kind, fault in kinds.items():
            results = []
            for round_ in range(args.rounds):
                result = fault()
                results.append(result)
                print(json.dumps({"kind": kind, "round": round_ + 1, **result}), flush=True)
            rows[kind] = results
        figures = load(stack, data, args.clients, args.load_seconds)
        print(json.dumps({"load": figures}), flush=True)
        from django.core.management import call_command

        call_command("verify_ledger")
        call_command("check_versions")
    finally:
        stack.stop()
    print(f"\n{'kill -9 of':<30} {'rounds':>6} {'recovered':>9} {'lost/half':>9} {'healthz s (max)':>16}")
    for kind, results in rows.items():
        back = max(r["healthz_s"] for r in results)
        recovered = sum(r["recovered"] for r in results)
        lost = sum(r["lost"] for r in results)
        print(f"{kind:<30} {len(results):>6} {recovered:>9} {lost:>9} {back:>16.1f}")
    print(
        f"\nload: {args.clients} clients, {args.load_seconds:.0f} s: {figures['per_s']} requests/s, "
        f"p50 {figures['p50_ms']} ms, p95 {figures['p95_ms']} ms, errors {figures['errors']}, codes {figures['codes']}"
    )
    return 0 if all(r["recovered"] and not r["lost"] for rs in rows.values() for r in rs) else 1


if __name__ == "__main__":
    sys.exit(main())
