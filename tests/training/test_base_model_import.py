"""Base-model import: a real worker converts a real (tiny) model to safetensors and records its hash."""

import hashlib
from pathlib import Path

import pytest
import torch
from django.conf import settings
from django.core.management import call_command
from transformers import AutoModelForCausalLM, AutoTokenizer

from modelfactory.exceptions import ApplicationError
from tests.waiting import wait_until
from training import services
from training.models import BaseModel
from training.tasks import base_model_import_task


def sha256_by_hand(model_dir: Path) -> str:
    lines = ""
    for file in sorted(model_dir.glob("*.safetensors")):
        lines += f"{file.name}\t{hashlib.sha256(file.read_bytes()).hexdigest()}\n"
    return hashlib.sha256(lines.encode()).hexdigest()


def test_import_task_runs_on_a_real_worker(celery_worker_process, tiny_model_dir):
    model = services.base_model_register(name="Tiny Llama", source=str(tiny_model_dir), license="mit")
    assert model.status == BaseModel.Status.IMPORTING

    result = base_model_import_task.delay(model.pk)
    assert result.get(timeout=120) == "ready"

    model.refresh_from_db()
    out = Path(model.local_path)
    assert out == Path(settings.MODELS_DIR) / "tiny-llama"
    assert (out / "model.safetensors").is_file()
    assert not list(out.glob("*.bin"))
    assert model.weights_sha256 == sha256_by_hand(out)
    assert model.architecture == "LlamaForCausalLM"
    assert model.context_length == 512
    assert "<|im_start|>" in model.chat_template

    loaded = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True)
    assert model.parameter_count == sum(p.numel() for p in loaded.parameters())
    tokenizer = AutoTokenizer.from_pretrained(out)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hello"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        generated = loaded.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] == prompt["input_ids"].shape[1] + 4

    # A second delivery of the same task (a redelivered message) changes nothing.
    assert base_model_import_task.delay(model.pk).get(timeout=60) == "ready"
    model.refresh_from_db()
    assert model.weights_sha256 == sha256_by_hand(out)


def test_a_directory_without_safetensors_is_refused_and_leaves_nothing(db, tmp_path):
    source = tmp_path / "pickled"
    source.mkdir()
    (source / "config.json").write_text("{}")
    (source / "pytorch_model.bin").write_bytes(b"not loaded, ever")
    model = services.base_model_register(name="Pickled", source=str(source), license="mit")

    with pytest.raises(ApplicationError, match="only safetensors are loaded"):
        services.base_model_import(base_model=model)

    model.refresh_from_db()
    assert model.status == BaseModel.Status.FAILED
    assert "safetensors" in model.error
    assert not (Path(settings.MODELS_DIR) / "pickled").exists()


def test_register_refuses_a_missing_source_and_a_taken_name(db, tiny_model_dir):
    with pytest.raises(ApplicationError, match="does not exist"):
        services.base_model_register(name="Ghost", source="/no/such/model", license="mit")
    services.base_model_register(name="Once", source=str(tiny_model_dir), license="mit")
    with pytest.raises(ApplicationError, match="already exists"):
        services.base_model_register(name="Once", source=str(tiny_model_dir), license="mit")
    assert BaseModel.objects.count() == 1


def test_management_command_imports_a_directory(db, tiny_model_dir, capsys):
    call_command("import_base_model", str(tiny_model_dir), "--name", "Tiny CLI", "--license", "mit")
    model = BaseModel.objects.get(name="Tiny CLI")
    assert model.status == BaseModel.Status.READY
    assert model.weights_sha256 in capsys.readouterr().out


def test_gpu_queue_task_reaches_a_real_worker_and_is_late_acked(celery_worker_process):
    from training.jobs.tasks import job_run_task

    assert job_run_task.acks_late and job_run_task.reject_on_worker_lost
    route = job_run_task.app.amqp.router.route({}, job_run_task.name)
    assert route["queue"].name == "gpu"
    result = job_run_task.delay(0)
    assert result.get(timeout=60) == "finished"  # no such job: the worker answers, nothing runs
    assert result.backend.get_task_meta(result.id)["status"] == "SUCCESS"


def test_a_model_added_in_django_admin_is_imported_by_a_worker(celery_worker_process, admin_client, tiny_model_dir):
    form = {
        "name": "Admin Llama",
        "slug": "admin-llama",
        "license": "mit",
        "source": str(tiny_model_dir),
        "enabled": "on",
    }
    missing = admin_client.post("/admin/training/basemodel/add/", {**form, "source": "/nowhere/model"})
    assert missing.status_code == 200 and "does not exist on this machine" in missing.content.decode()
    response = admin_client.post("/admin/training/basemodel/add/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    model = wait_until(
        lambda: BaseModel.objects.get(name="Admin Llama"), lambda m: m.status != BaseModel.Status.IMPORTING, timeout=120
    )
    assert model.status == BaseModel.Status.READY, model.error
    assert model.weights_sha256 == sha256_by_hand(Path(model.local_path))
