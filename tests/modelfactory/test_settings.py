"""Settings come from the environment; production refuses to start without its secrets."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def start_django(tmp_path, show="DATABASES['default']['ENGINE']", **env):
    """Start Django in a fresh process with only the given settings variables; print a setting."""
    drop = {"SECRET_KEY", "ALLOWED_HOSTS", "DEBUG", "DATABASE_URL"}
    clean = {k: v for k, v in os.environ.items() if k not in drop}
    clean.update(MF_VAR_DIR=str(tmp_path / "var"), DJANGO_SETTINGS_MODULE="modelfactory.settings", **env)
    code = f"import django; django.setup(); from django.conf import settings; print(settings.{show})"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True)


def test_production_without_secret_key_or_hosts_stops_with_a_clear_message(tmp_path):
    result = start_django(tmp_path, DEBUG="0")
    assert result.returncode != 0
    assert "SECRET_KEY and ALLOWED_HOSTS must be set" in result.stderr

    result = start_django(tmp_path, DEBUG="0", SECRET_KEY="s" * 50)
    assert result.returncode != 0
    assert "ALLOWED_HOSTS must be set" in result.stderr

    result = start_django(tmp_path, DEBUG="0", SECRET_KEY="s" * 50, ALLOWED_HOSTS="example.org")
    assert result.returncode == 0, result.stderr


def test_embedded_default_keeps_one_generated_secret_and_sqlite(tmp_path):
    assert start_django(tmp_path).stdout.strip() == "django.db.backends.sqlite3"
    first, second = start_django(tmp_path, show="SECRET_KEY"), start_django(tmp_path, show="SECRET_KEY")
    assert first.returncode == 0, first.stderr
    secret = first.stdout.strip()
    assert len(secret) >= 50
    assert second.stdout.strip() == secret
    assert (tmp_path / "var" / "secret_key").read_text().strip() == secret


def test_database_url_switches_to_postgresql(tmp_path):
    result = start_django(tmp_path, DATABASE_URL="postgres://u@127.0.0.1:5432/modelfactory")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "django.db.backends.postgresql"


def test_a_new_embedded_database_has_8_kib_pages_and_wal(tmp_path):
    """Readers never wait for an ingest (WAL), and a bulk ingest splits half as many pages (8 KiB)."""
    code = (
        "import django; django.setup(); from django.db import connection; cursor = connection.cursor(); "
        "print([cursor.execute(f'PRAGMA {name}').fetchone()[0] for name in ('page_size', 'journal_mode')])"
    )
    clean = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    clean.update(MF_VAR_DIR=str(tmp_path / "var"), DJANGO_SETTINGS_MODULE="modelfactory.settings")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[8192, 'wal']"


def deploy_check(tmp_path, **env):
    drop = {"SECRET_KEY", "ALLOWED_HOSTS", "DEBUG", "DATABASE_URL", "DJANGO_ALLOW_ASYNC_UNSAFE"}  # the last: tests
    clean = {k: v for k, v in os.environ.items() if k not in drop}
    clean.update(
        MF_VAR_DIR=str(tmp_path / "var"),
        DJANGO_SETTINGS_MODULE="modelfactory.settings",
        DEBUG="0",
        SECRET_KEY="k" * 20 + "-Zq8&x!" * 8,
        ALLOWED_HOSTS="mf.example.org",
        **env,
    )
    command = [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"]
    return subprocess.run(command, cwd=ROOT, env=clean, capture_output=True, text=True)


def test_check_deploy_is_clean_behind_a_tls_proxy_and_without_one(tmp_path):
    behind_proxy = deploy_check(tmp_path)
    assert behind_proxy.returncode == 0, behind_proxy.stderr
    assert "no issues" in behind_proxy.stdout
    direct = deploy_check(tmp_path, SECURE_SSL_REDIRECT="1", SECURE_HSTS_SECONDS="31536000")
    assert direct.returncode == 0, direct.stderr
    redirect = start_django(
        tmp_path,
        show="SECURE_SSL_REDIRECT, settings.SECURE_HSTS_SECONDS",
        DEBUG="0",
        SECRET_KEY="s" * 50,
        ALLOWED_HOSTS="x.org",
        SECURE_SSL_REDIRECT="1",
        SECURE_HSTS_SECONDS="600",
    )
    assert redirect.stdout.strip() == "True 600", redirect.stderr
