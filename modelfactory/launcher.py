"""`make run`: bring up ModelFactory on one machine with embedded defaults, and stop it all on Ctrl-C.

Migrates, imports the bundled base model once, creates a first admin with a generated password,
starts an embedded Redis (unless REDIS_URL is set), one Celery worker on the default and gpu queues, the
inference worker (queue inference: the playground and /v1/ API) and gunicorn on
127.0.0.1:$PORT. A second run reuses everything that already exists.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelfactory.settings")


def log(message: str) -> None:
    print(f"[modelfactory] {message}", flush=True)


def ensure_admin() -> None:
    from django.contrib.auth import get_user_model

    User = get_user_model()
    if User.objects.filter(is_superuser=True).exists():
        log("An admin already exists (reset a password with `.venv/bin/python manage.py changepassword admin`).")
        return
    password = secrets.token_urlsafe(12)
    User.objects.create_superuser(username="admin", email="", password=password)
    log("Created the first admin. Log in at /accounts/login/ with")
    log(f"    username: admin    password: {password}")
    log("This password is shown once; change it after logging in.")


def main() -> int:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from modelfactory import embedded_redis
    from training.model_import import BUNDLED_MODEL_NAME
    from training.models import BaseModel

    started: list[subprocess.Popen] = []

    def stop_all(*_):
        for process in reversed(started):
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 10
        for process in reversed(started):
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
        log("Stopped.")

    stopping = threading.Event()

    def request_stop(*_):
        stopping.set()

    def interrupt(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # while setting up, SIGTERM stops like Ctrl-C
    try:
        log("Migrating the database")
        call_command("migrate", interactive=False, verbosity=0)
        ensure_admin()
        if not BaseModel.objects.filter(name=BUNDLED_MODEL_NAME, status=BaseModel.Status.READY).exists():
            log("Importing the bundled base model (first run only; about 30 s)")
            # In its own process, so the launcher does not keep the model's memory for its lifetime.
            subprocess.run(
                [sys.executable, str(settings.BASE_DIR / "manage.py"), "import_base_model", "--bundled"], check=True
            )

        if not settings.REDIS_URL:
            redis_process = embedded_redis.start(settings.REDIS_SOCKET, settings.VAR_DIR / "redis")
            if redis_process:
                started.append(redis_process)
                log(f"Embedded Redis on {settings.REDIS_SOCKET}")
            else:
                log(f"Reusing the Redis already answering on {settings.REDIS_SOCKET}")

        python = sys.executable
        worker = [
            python, "-m", "celery", "-A", "modelfactory", "worker",
            "-Q", "default,gpu", "--concurrency", "1", "--prefetch-multiplier", "1",
            "--loglevel", "INFO", "-n", "embedded@%h",
            # Beat in the same process runs the reaper that re-queues jobs whose worker died.
            "--beat", "--schedule", str(settings.VAR_DIR / "celerybeat-schedule"),
        ]  # fmt: skip
        started.append(subprocess.Popen(worker))
        # The inference worker loads base models once and keeps them for its lifetime; threads let
        # concurrent chats share one model (serving/engine.py interleaves their decoding steps).
        inference = [
            python, "-m", "celery", "-A", "modelfactory", "worker", "-Q", "inference", "--pool", "threads",
            "--concurrency", "4", "--prefetch-multiplier", "1", "--loglevel", "INFO", "-n", "inference@%h",
        ]  # fmt: skip
        started.append(subprocess.Popen(inference))
        port = os.environ.get("PORT", "8000")
        web = [
            python, "-m", "gunicorn", "modelfactory.wsgi", "--bind", f"127.0.0.1:{port}",
            "--workers", "2", "--threads", "4", "--timeout", "120", "--access-logfile", "-",
        ]  # fmt: skip
        started.append(subprocess.Popen(web))
        log(f"ModelFactory is up at http://127.0.0.1:{port}/ (health: /healthz). Ctrl-C stops everything.")
        # Ctrl-C reaches every process of the terminal's group at once: note it before any child's
        # exit is taken for a crash.
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        while not stopping.is_set() and all(process.poll() is None for process in started):
            stopping.wait(0.5)
        if stopping.is_set():
            return 0
        failed = next(process for process in started if process.poll() is not None)
        log(f"{' '.join(failed.args[:5])} exited with {failed.returncode}; stopping the rest.")
        return 1
    except KeyboardInterrupt:
        return 0
    except subprocess.CalledProcessError as error:
        log(f"{' '.join(error.cmd)} failed with exit code {error.returncode}.")
        return 1
    finally:
        stop_all()


if __name__ == "__main__":
    sys.exit(main())
