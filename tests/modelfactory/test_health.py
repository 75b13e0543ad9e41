"""/healthz reports each part, and goes red when the worker stops."""

from tests.factories import BaseModelFactory


def test_health_is_green_with_a_worker_and_red_once_it_stops(celery_worker_process, client):
    BaseModelFactory()

    response = client.get("/healthz")
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

    response = client.get("/healthz")
    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "down"
    assert body["checks"]["workers"]["status"] == "down"
    assert "no Celery worker answered" in body["checks"]["workers"]["error"]
    assert body["checks"]["database"]["status"] == "up"
    assert body["checks"]["broker"]["status"] == "up"


def test_health_is_red_without_a_ready_base_model(db, client):
    BaseModelFactory(enabled=False)
    body = client.get("/healthz").json()
    assert body["checks"]["base_models"]["status"] == "down"
    assert "import_base_model" in body["checks"]["base_models"]["error"]
