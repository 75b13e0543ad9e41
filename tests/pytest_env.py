"""Loaded with `-p tests.pytest_env` before pytest-django imports the settings: test-only locations.

Read by modelfactory.settings when it is imported, and inherited by the worker processes the tests
start, so both sides use the same Redis socket, model folder and media folder. Under pytest-xdist
(`make test` runs two processes) each process has folders, an embedded Redis and a Redis database of its
own, so one process's Celery workers never take another's tasks.
"""

import os
import shutil
import urllib.parse
import uuid
from pathlib import Path

XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1"… in pytest-xdist's processes
TEST_ROOT = Path(__file__).resolve().parent.parent / "var" / "test"  # shared: the bundled model, imported once
TEST_VAR = TEST_ROOT / XDIST_WORKER
TEST_VAR.mkdir(parents=True, exist_ok=True)

if XDIST_WORKER:
    os.environ["MF_REDIS_SOCKET"] = str(TEST_VAR / "redis.sock")
    # One thread of math a process: two processes on two cores, never four threads spinning on two.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if url := os.environ.get("REDIS_URL"):  # redis://host:6379/15: gw0 on database 15, gw1 on 14…
        parts = urllib.parse.urlsplit(url)
        database = (int(parts.path.strip("/") or 0) - int(XDIST_WORKER.removeprefix("gw"))) % 16
        os.environ["REDIS_URL"] = parts._replace(path=f"/{database}").geturl()
os.environ.setdefault("MF_REDIS_SOCKET", str(TEST_VAR / "redis.sock"))
os.environ["MODELS_DIR"] = str(TEST_VAR / "models")
os.environ["MEDIA_ROOT"] = str(TEST_VAR / "media")
os.environ.setdefault("CACHE_KEY_PREFIX", f"mf-test-{uuid.uuid4().hex[:8]}")
os.environ["HEALTH_WORKER_TIMEOUT"] = "1.0"
os.environ["JOB_HEARTBEAT_STALE_S"] = "3"
os.environ["JOB_WORK_DIR"] = str(TEST_VAR / "jobs")
os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(TEST_ROOT / "torchinductor")  # compiled layers: shared, kept
shutil.rmtree(TEST_VAR / "jobs", ignore_errors=True)  # scratch of earlier runs
