"""Fine-tune jobs on real worker processes: train a tiny model, survive kill -9, cancel, fail clearly."""

import os
import signal
import time

import pytest
import torch
from django.core.files.storage import default_storage
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from modelfactory.exceptions import ApplicationError
from tests.conftest import WorkerProcess, database_url_for_workers
from tests.waiting import wait_until
from training import estimates, jobs
from training.models import FineTuneJob

FAST = {"learning_rate": 0.005, "epochs": 4, "batch_size": 4, "max_seq_length": 64}


def wait_for(job, condition, timeout=300):
    def refresh():
        job.refresh_from_db()
        return job

    return wait_until(
        refresh,
        condition,
        timeout=timeout,
        every=0.2,
        describe=lambda: f"job is {job.status} at step {job.step}: {job.error} {job.logs[-5:]}",
    )


def launch(django_capture_on_commit_callbacks, *, config_changes=None, method="qlora", **kwargs):
    """Create the job through the wizard's service; dispatch it on commit through the real broker."""
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = jobs.job_create(method=method, preset="quick", name="", **kwargs)
        if config_changes:
            job.config = {**job.config, **config_changes}
            job.save(update_fields=["config"])
    for callback in callbacks:
        callback()
    return job


def launch_endless(capture_on_commit, owner, base_model, version):
    """A job that trains until it is cancelled."""
    return launch(
        capture_on_commit,
        owner=owner,
        base_model=base_model,
        versions=[version],
        overrides=FAST,
        config_changes={"max_steps": 100000},
    )


def test_a_job_trains_on_a_real_worker_and_its_adapter_loads_with_peft(
    celery_worker_process, tiny_base_model, trainer_user, version, django_capture_on_commit_callbacks, tmp_path
):
    job = launch(
        django_capture_on_commit_callbacks,
        owner=trainer_user,
        base_model=tiny_base_model,
        versions=[version],
        overrides=FAST,
    )
    assert job.status == "queued" and jobs.queue_position(job) == 1
    job = wait_for(job, lambda j: j.finished)
    assert job.status == "succeeded", (job.error, job.logs)
    assert job.step == job.total_steps > 0
    assert job.device == "cpu" and job.worker.startswith(celery_worker_process.name.split("@")[0])
    assert len(job.metrics["train"]) == job.total_steps
    assert job.evaluation["tuned"]["eval_loss"] < job.evaluation["base"]["eval_loss"]
    assert job.influence["default_method"] == "datainf"  # measured on the worker after training
    trained = job.influence["methods"]["datainf"]["parameters"]["train_examples"]
    assert job.record_influences.filter(method="datainf").count() == trained == job.evaluation["train_examples"]
    assert len(job.evaluation["samples"]) >= 1 and {"base", "tuned", "prompt"} <= set(job.evaluation["samples"][0])

    outputs = jobs.job_outputs(job)
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors", "config.json"} <= set(outputs)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        with default_storage.open(outputs[f"adapter/{name}"]) as source:
            (adapter / name).write_bytes(source.read())
    base = AutoModelForCausalLM.from_pretrained(tiny_base_model.local_path)
    model = PeftModel.from_pretrained(base, adapter)
    tokenizer = AutoTokenizer.from_pretrained(tiny_base_model.local_path)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What does code 3 mean?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]


def test_a_killed_worker_resumes_from_its_checkpoint(
    celery_worker_process, tiny_base_model, trainer_user, version, django_capture_on_commit_callbacks, tmp_path
):
    job = launch(
        django_capture_on_commit_callbacks,
        owner=trainer_user,
        base_model=tiny_base_model,
        versions=[version],
        overrides=FAST,
        config_changes={"max_steps": 400, "checkpoint_every": 50, "early_stopping_patience": 0},
    )
    job = wait_for(job, lambda j: j.step >= 120)
    os.kill(celery_worker_process.process.pid, signal.SIGKILL)  # kill -9: no clean-up, no ack
    celery_worker_process.process.wait()
    killed_at = job.step
    assert job.status == "running"

    second = WorkerProcess(database_url_for_workers(), tmp_path / "worker2.log")
    try:
        time.sleep(3.5)  # the heartbeat goes stale (JOB_HEARTBEAT_STALE_S=3 in tests)
        assert jobs.jobs_reap(stale_after_s=3) == [job.pk]
        job = wait_for(job, lambda j: j.finished, timeout=180)
    finally:
        second.stop()
    assert job.status == "succeeded", (job.error, job.logs)
    assert job.attempts == 2
    assert 50 <= job.resumed_from_step  # from the last checkpoint, not from step 0
    assert job.resumed_from_step % 50 == 0 and job.resumed_from_step <= killed_at + 50
    assert any("Resumed from the checkpoint" in line for line in job.logs)
    assert job.step == 400


def test_cancel_stops_a_run_and_frees_the_worker(
    celery_worker_process, tiny_base_model, trainer_user, version, django_capture_on_commit_callbacks
):
    job = launch_endless(django_capture_on_commit_callbacks, trainer_user, tiny_base_model, version)
    job = wait_for(job, lambda j: j.step >= 3)
    jobs.job_cancel(job=job, by=trainer_user)
    job = wait_for(job, lambda j: j.finished)
    assert job.status == "cancelled"
    from training.jobs.tasks import job_run_task

    assert job_run_task.delay(0).get(timeout=30) == "finished"  # the worker takes new work

    retried = jobs.job_retry(job=job, by=trainer_user)
    assert retried.status == "queued"
    jobs.job_cancel(job=retried, by=trainer_user)  # else the worker's shutdown waits on the endless run
    assert wait_for(retried, lambda j: j.finished).status == "cancelled"


def test_a_failing_job_says_what_to_do_and_can_be_retried(
    tiny_base_model, trainer_user, version, django_capture_on_commit_callbacks
):
    job = launch(
        django_capture_on_commit_callbacks,
        owner=trainer_user,
        base_model=tiny_base_model,
        versions=[version],
        overrides=FAST,
    )
    job.base_model.local_path = "/nonexistent/model"
    job.base_model.save()
    assert jobs.job_run(job_id=job.pk, worker="here") == "failed"
    job.refresh_from_db()
    assert job.status == "failed" and "Retry it" in job.error
    assert jobs.job_run(job_id=job.pk, worker="here") == "finished"  # a second delivery changes nothing

    assert "Out of memory on cpu" in jobs.run.failure_message(RuntimeError("CUDA out of memory"), job)
    assert "smaller batch size (now 4)" in jobs.run.failure_message(MemoryError(), job)


def test_job_create_checks_access_settings_and_readiness(tiny_base_model, trainer_user, version):
    version.datanet.visibility = "private"
    version.datanet.save()
    with pytest.raises(ApplicationError, match="may not train on"):
        jobs.job_create(
            owner=trainer_user, name="x", base_model=tiny_base_model, versions=[version], method="qlora", preset="quick"
        )
    version.datanet.visibility = "public"
    version.datanet.save()
    with pytest.raises(ApplicationError, match="settings do not work"):
        jobs.job_create(
            owner=trainer_user,
            name="x",
            base_model=tiny_base_model,
            versions=[version],
            method="qlora",
            preset="quick",
            overrides={"learning_rate": 5},
        )
    with pytest.raises(ApplicationError, match="at least one"):
        jobs.job_create(
            owner=trainer_user, name="x", base_model=tiny_base_model, versions=[], method="qlora", preset="quick"
        )
    assert FineTuneJob.objects.count() == 0


def test_estimates_grow_with_the_settings_and_favour_qlora():
    shape = {"hidden": 576, "layers": 30, "intermediate": 1536, "vocab": 49152, "heads": 9, "kv_heads": 3}
    args = {"parameters": 134_515_008, "shape": shape, "rank": 8, "seq_len": 512, "train_tokens": 100_000}
    qlora = estimates.estimate(method="qlora", batch_size=4, **args)
    lora = estimates.estimate(method="lora", batch_size=4, **args)
    bigger = estimates.estimate(method="qlora", batch_size=16, **args)
    one_by_one = estimates.estimate(method="qlora", batch_size=1, **args)
    assert qlora["peak_memory_bytes"] < lora["peak_memory_bytes"] < 4 * 10**9
    assert bigger["peak_memory_bytes"] > qlora["peak_memory_bytes"]
    assert qlora["weights_bytes"] == int(134_515_008 * 0.53)
    assert 1_000_000 < qlora["trainable_parameters"] < 10_000_000  # r=8 on all linear layers: ~2.4M here
    assert qlora["seconds"] > 0
    assert one_by_one["train_seconds"] > qlora["train_seconds"]  # the same tokens in 4x the steps


def test_a_base_sharded_over_devices_takes_its_share_of_each_device_and_a_layer_more():
    shape = {"hidden": 4096, "layers": 32, "intermediate": 14336, "vocab": 128256, "heads": 32, "kv_heads": 8}
    args = {"parameters": 8_030_261_248, "shape": shape, "rank": 16, "seq_len": 1024, "train_tokens": 10**6}
    gpu = {**args, "method": "lora", "batch_size": 8, "device": "cuda"}
    one = estimates.estimate(**gpu)
    replicated = estimates.estimate(**gpu, devices=4)
    sharded = estimates.estimate(**gpu, devices=4, sharded=True)
    assert one["weights_bytes"] == replicated["weights_bytes"] == 2 * 8_030_261_248
    assert sharded["weights_bytes"] == int(2 * 8_030_261_248 * (1 / 4 + 1 / 32))
    assert replicated["activation_bytes"] == sharded["activation_bytes"] == one["activation_bytes"] // 4
    assert sharded["peak_memory_bytes"] < 80 * 10**9 // 4 < one["peak_memory_bytes"]  # 8B: under 20 GB a device


def test_an_upload_is_ingested_while_a_fine_tune_runs(
    transactional_db, tmp_path, tiny_base_model, trainer_user, version, django_capture_on_commit_callbacks
):
    """`make run`'s own workers (launcher.commands): the uploads' worker is free while the gpu worker trains."""
    from datanets import services as datanet_services
    from datanets.models import Upload
    from modelfactory import launcher
    from tests.datanets.conftest import jsonl_file

    table = launcher.commands(tmp_path, "0")
    url = database_url_for_workers()
    workers = [
        WorkerProcess(url, tmp_path / f"{name}.log", argv=table[name]) for name in ("default worker", "gpu worker")
    ]
    try:
        job = launch_endless(django_capture_on_commit_callbacks, trainer_user, tiny_base_model, version)
        job = wait_for(job, lambda j: j.step >= 2)
        with django_capture_on_commit_callbacks(execute=True):
            upload = datanet_services.upload_create(
                datanet=version.datanet,
                contributor=trainer_user,
                file=jsonl_file([{"instruction": "What is code 99?", "output": "Code 99 means green."}]),
            )
        done = wait_until(lambda: Upload.objects.get(pk=upload.pk), lambda u: u.finished, timeout=60)
        assert done.status == Upload.Status.DONE, done.message
        job.refresh_from_db()
        assert job.status == "running", "the upload waited for the fine-tune"
        jobs.job_cancel(job=job, by=trainer_user)
        assert wait_for(job, lambda j: j.finished).status == "cancelled"
    finally:
        for worker in workers:
            worker.stop()
