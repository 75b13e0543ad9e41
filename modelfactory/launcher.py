"""`make run`: bring up ModelFactory on one machine with embedded defaults, and stop it all on Ctrl-C.

Migrates, imports the bundled base model once, creates a first admin with a generated password,
starts an embedded Redis (unless REDIS_URL is set), a Celery worker for the default queue (uploads,
imports) beside one for the gpu queue (fine-tunes), the beat scheduler (the job reaper), the inference
worker (queue inference: the playground and /v1/ API) and gunicorn on 127.0.0.1:$PORT. A process that
dies is restarted with a growing backoff (modelfactory/supervise.py). A second run reuses everything
that already exists.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading

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


def commands(var_dir, port: str) -> dict[str, list[str]]:
    """What runs beside Redis, by name: separate workers, so an upload never waits behind a fine-tune,
    and one beat process of its own (never a worker's child that could outlive it: one reaper)."""
    python = sys.executable
    celery = [python, "-m", "celery", "-A", "modelfactory"]
    return {
        "default worker": [
            *celery,
            "worker",
            "-Q",
            "default",
            "--concurrency",
            "2",
            "--loglevel",
            "INFO",
            "-n",
            "default@%h",
        ],
        "gpu worker": [
            *celery,
            "worker",
            "-Q",
            "gpu",
            "--concurrency",
            "1",
            "--prefetch-multiplier",
            "1",
            "--loglevel",
            "INFO",
            "-n",
            "gpu@%h",
        ],
        "beat": [
            *celery,
            "beat",
            "--schedule",
            str(var_dir / "celerybeat-schedule"),
            "--pidfile",
            str(var_dir / "celerybeat.pid"),
            "--loglevel",
            "INFO",
        ],
        # The inference worker loads base models once and keeps them for its lifetime; threads let
        # concurrent chats share one model (serving/engine.py decodes them in one batch, up to SERVING_MAX_BATCH).
        "inference worker": [
            *celery,
            "worker",
            "-Q",
            "inference",
            "--pool",
            "threads",
            "--concurrency",
            "16",
            "--prefetch-multiplier",
            "1",
            "--loglevel",
            "INFO",
            "-n",
            "inference@%h",
        ],
        "web": [
            python,
            "-m",
            "gunicorn",
            "modelfactory.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--threads",
            "4",
            "--timeout",
            "120",
            "--access-logfile",
            "-",
        ],
    }


def prepare() -> None:
    """Migrate, create the first admin, import the bundled model: what a second run finds done."""
    from django.conf import settings
    from django.core.management import call_command

    from training.model_import import BUNDLED_MODEL_NAME
    from training.models import BaseModel

    log("Migrating the database")
    call_command("migrate", interactive=False, verbosity=0)
    ensure_admin()
    if not BaseModel.objects.filter(name=BUNDLED_MODEL_NAME, status=BaseModel.Status.READY).exists():
        log("Importing the bundled base model (first run only; about 30 s)")
        # In its own process, so the launcher does not keep the model's memory for its lifetime.
        subprocess.run(
            [sys.executable, str(settings.BASE_DIR / "manage.py"), "import_base_model", "--bundled"], check=True
        )


def main() -> int:
    import django

    django.setup()
    from django.conf import settings

    from modelfactory import embedded_redis
    from modelfactory.supervise import Supervisor

    supervisor = Supervisor(log, adopt_orphans=True)
    stopping = threading.Event()

    def request_stop(*_):
        stopping.set()

    def interrupt(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # while setting up, SIGTERM stops like Ctrl-C
    try:
        prepare()
        if not settings.REDIS_URL:
            redis = supervisor.add(
                "redis", lambda: embedded_redis.start(settings.REDIS_SOCKET, settings.VAR_DIR / "redis")
            )
            log(
                f"Embedded Redis on {settings.REDIS_SOCKET}"
                if redis.process
                else f"Reusing the Redis already answering on {settings.REDIS_SOCKET}"
            )
        port = os.environ.get("PORT", "8000")
        for name, command in commands(settings.VAR_DIR, port).items():
            supervisor.add(name, lambda command=command: subprocess.Popen(command))
        log(f"ModelFactory is up at http://127.0.0.1:{port}/ (health: /healthz). Ctrl-C stops everything.")
        # Ctrl-C reaches every process of the terminal's group at once: note it before any child's
        # exit is taken for a crash.
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        supervisor.run(stopping)
        return 0
    except KeyboardInterrupt:
        return 0
    except subprocess.CalledProcessError as error:
        log(f"{' '.join(error.cmd)} failed with exit code {error.returncode}.")
        return 1
    finally:
        supervisor.stop_all()
        log("Stopped.")


if __name__ == "__main__":
    sys.exit(main())
