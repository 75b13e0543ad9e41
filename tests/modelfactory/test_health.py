"""/healthz reports each part, goes red when the worker stops, is cheap for many callers, and shows
detail only to staff."""

import threading

import pytest
from django.core.cache import cache
from django.test import Client

from modelfactory import health
from tests.factories import BaseModelFactory, UserFactory
from tests.waiting import wait_until


@pytest.fixture(autouse=True)
def no_earlier_check():
    """Each test starts with no worker check reused from another."""
    cache.delete_many([health.FRESH_KEY, health.LAST_KEY, health.LOCK_KEY])


def test_health_is_green_with_a_worker_and_red_once_it_stops(celery_worker_process, admin_client, settings):
    settings.HEALTH_CACHE_S = 1
    BaseModelFactory()

    response = admin_client.get("/healthz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    assert {name: check["status"] for name, check in body["checks"].items()} == {
        "database": "up",
        "broker": "up",
        "storage": "up",
        "workers": "up",
        "base_models": "up",
    }
    worker_names = list(body["checks"]["workers"]["workers"])
    assert any(name.startswith(celery_worker_process.name.split("@")[0]) for name in worker_names)
    assert all(queues == ["default", "gpu"] for queues in body["checks"]["workers"]["workers"].values())

    celery_worker_process.stop()

    # The worker check is reused for HEALTH_CACHE_S; then it goes red.
    response = wait_until(lambda: admin_client.get("/healthz"), lambda r: r.status_code == 503, timeout=10)
    body = response.json()
    assert body["status"] == "down"
    assert body["checks"]["workers"]["status"] == "down"
    assert "no Celery worker answered" in body["checks"]["workers"]["error"]
    assert body["checks"]["database"]["status"] == "up"
    assert body["checks"]["broker"]["status"] == "up"


def test_health_is_red_without_a_ready_base_model(db, admin_client):
    BaseModelFactory(enabled=False)
    body = admin_client.get("/healthz").json()
    assert body["checks"]["base_models"]["status"] == "down"
    assert "import_base_model" in body["checks"]["base_models"]["error"]


def test_parallel_callers_share_one_worker_check_and_only_staff_see_detail(transactional_db, settings):
    settings.HEALTH_CACHE_S = 60
    BaseModelFactory()
    staff = UserFactory(is_staff=True)
    bodies, lock, start = [], threading.Lock(), threading.Barrier(20)

    def caller():
        client = Client()
        client.force_login(staff)
        start.wait()
        response = client.get("/healthz")
        with lock:
            bodies.append((response.status_code, response.json()))

    threads = [threading.Thread(target=caller) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # No worker runs: every caller is told so (503), from one broadcast, not twenty.
    assert {code for code, _ in bodies} == {503}
    assert len({body["checks"]["workers"]["checked_at"] for _, body in bodies}) == 1
    assert all("no Celery worker answered" in body["checks"]["workers"]["error"] for _, body in bodies)

    anonymous = Client().get("/healthz")
    assert anonymous.status_code == 503
    assert anonymous.json()["checks"]["workers"] == {"status": "down"}  # no worker names, no errors
