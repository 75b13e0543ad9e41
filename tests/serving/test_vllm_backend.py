"""The vLLM backend without a GPU: its settings, the worker's choice of backend, and how requests map onto
vLLM's arguments. (vLLM itself answers only on GPU workers; the README says what was measured.)"""

import importlib.util

import pytest

from serving import tasks
from serving.engine import AdapterRef, Sampling
from serving.vllm_engine import MISSING, AdapterIds, engine_kwargs, lora_kwargs, sampling_kwargs
from tests.modelfactory.test_settings import start_django


def test_an_unknown_backend_stops_the_app_with_a_clear_message(tmp_path):
    result = start_django(tmp_path, show="SERVING_BACKEND", SERVING_BACKEND="tgi")
    assert result.returncode != 0 and "SERVING_BACKEND is engine or vllm, not 'tgi'" in result.stderr
    assert start_django(tmp_path, show="SERVING_BACKEND", SERVING_BACKEND="vllm").stdout.strip() == "vllm"


def test_the_worker_builds_the_configured_backend(settings, tiny_model_dir):
    settings.SERVING_BACKEND = "engine"
    assert type(tasks.new_engine(str(tiny_model_dir))).__name__ == "Engine"
    settings.SERVING_BACKEND = "vllm"
    if importlib.util.find_spec("vllm") is None or not __import__("torch").cuda.is_available():
        with pytest.raises(RuntimeError) as error:  # a CPU machine, or vLLM not installed: say how to fix it
            tasks.new_engine(str(tiny_model_dir))
        assert str(error.value) == MISSING and "requirements-vllm.txt" in MISSING


def test_requests_map_onto_vllm_arguments():
    greedy = sampling_kwargs(Sampling(temperature=0, top_p=0.5, max_tokens=12, seed=3), {2, 0})
    assert greedy == {"temperature": 0, "top_p": 1.0, "max_tokens": 12, "seed": 3, "stop_token_ids": [0, 2]}
    sampled = sampling_kwargs(Sampling(temperature=0.7, top_p=0.9, max_tokens=256), {2})
    assert (sampled["temperature"], sampled["top_p"], sampled["seed"]) == (0.7, 0.9, None)

    ids = AdapterIds()
    first = lora_kwargs(AdapterRef("team/codes@3", "/cache/codes3"), ids)
    assert first == {"lora_name": "team/codes@3", "lora_int_id": 1, "lora_path": "/cache/codes3"}
    assert lora_kwargs(AdapterRef("team/fruit@1", "/cache/fruit1"), ids)["lora_int_id"] == 2
    assert lora_kwargs(AdapterRef("team/codes@3", "/cache/codes3"), ids)["lora_int_id"] == 1  # stable a key
    assert "team/codes@3" in ids and "team/other@1" not in ids

    options = engine_kwargs("/models/smollm2", max_loras=8, max_cpu_loras=4, max_lora_rank=64)
    assert options == {
        "model": "/models/smollm2",
        "enable_lora": True,
        "max_loras": 8,
        "max_cpu_loras": 8,  # vLLM needs room in host memory for at least a batch's adapters
        "max_lora_rank": 64,
    }
