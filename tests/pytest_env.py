"""Loaded with `-p tests.pytest_env` before pytest-django imports the settings: test-only locations.

Read by modelfactory.settings when it is imported, and inherited by the worker processes the tests
start, so both sides use the same Redis socket, model folder and media folder.
"""

import os
import shutil
import uuid
from pathlib import Path

TEST_VAR = Path(__file__).resolve().parent.parent / "var" / "test"
TEST_VAR.mkdir(parents=True, exist_ok=True)

os.environ.setdefault("MF_REDIS_SOCKET", str(TEST_VAR / "redis.sock"))
os.environ["MODELS_DIR"] = str(TEST_VAR / "models")
os.environ["MEDIA_ROOT"] = str(TEST_VAR / "media")
os.environ.setdefault("CACHE_KEY_PREFIX", f"mf-test-{uuid.uuid4().hex[:8]}")
os.environ["HEALTH_WORKER_TIMEOUT"] = "1.0"
os.environ["JOB_HEARTBEAT_STALE_S"] = "3"
os.environ["JOB_WORK_DIR"] = str(TEST_VAR / "jobs")
shutil.rmtree(TEST_VAR / "jobs", ignore_errors=True)  # scratch of earlier runs
