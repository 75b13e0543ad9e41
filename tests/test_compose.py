"""docker-compose.yml: the production services are there, healthy-gated, and the file validates."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def compose_command() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_has_every_service_with_health_checks():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "web", "worker", "worker-gpu"} <= set(services)
    for name in ("postgres", "redis", "web", "worker", "worker-gpu"):
        assert "healthcheck" in services[name], name
    assert "/healthz" in " ".join(services["web"]["healthcheck"]["test"])
    gpu = services["worker-gpu"]
    assert gpu["command"][gpu["command"].index("-Q") + 1] == "gpu"
    assert gpu["command"][gpu["command"].index("--prefetch-multiplier") + 1] == "1"
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "media:/data/media" in services["web"]["volumes"]
    assert (
        "--beat" not in services["worker"]["command"]
    )  # one beat of its own: a crashed worker leaves no reaper behind
    assert services["beat"]["command"][:4] == ["celery", "-A", "modelfactory", "beat"]
    assert services["beat"]["deploy"]["replicas"] == 1
    inference = services["worker-inference"]
    assert inference["command"][inference["command"].index("-Q") + 1] == "inference" and "healthcheck" in inference


def test_the_multi_gpu_worker_offers_the_gpus_it_reserves():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    multi = services["worker-gpu-multi"]
    reserved = multi["deploy"]["resources"]["reservations"]["devices"][0]["count"]
    assert int(multi["environment"]["WORKER_DEVICES"]) == reserved > 1
    assert multi["environment"]["DATABASE_URL"] == services["worker-gpu"]["environment"]["DATABASE_URL"]
    assert multi["command"][multi["command"].index("-Q") + 1] == "gpu" and "healthcheck" in multi


def test_compose_config_validates_where_a_compose_client_exists():
    command = compose_command()
    if command is None:
        pytest.skip("no docker compose client on this machine")
    result = subprocess.run([*command, "-f", "docker-compose.yml", "config", "-q"], cwd=ROOT, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()


def test_the_image_bakes_in_the_code_version_manifests_sign():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG CODE_VERSION" in dockerfile and "ENV MF_CODE_VERSION=$CODE_VERSION" in dockerfile
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert "CODE_VERSION" in compose["services"]["web"]["build"]["args"]
