"""A fine-tune on two processes (DDP on the gloo backend, under torchrun) follows the single-process run
step for step; its checkpoint resumes on one process and on two; a 2-device job runs only on a worker
that has two devices, and survives one of its ranks being killed."""

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.conftest import WorkerProcess, database_url_for_workers
from tests.training.test_jobs import FAST, launch, wait_for
from tests.waiting import wait_until
from training import jobs, trainer, workers
from training import launch as processes
from training.jobs.outputs import work_dir


def records_file(path, n=40):
    with open(path, "w") as handle:
        for i in range(n):
            record = {"instruction": f"What does code {i} mean?", "input": "", "output": f"Code {i} means blue."}
            handle.write(json.dumps(record) + "\n")
    return path


def config(model_dir, **changes):
    settings = {"method": "lora", "learning_rate": 0.005, "batch_size": 4, "max_seq_length": 64}
    return trainer.TrainConfig(
        base_model_path=str(model_dir),
        influence_methods=[],
        eval_prompts=0,
        task_eval_examples=0,
        **{**settings, **changes},
    )


def losses(events: list[dict]) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in events if e["event"] == "step"}


def assert_follows(curve: dict[int, float], reference: dict[int, float]) -> None:
    assert curve and set(curve) <= set(reference)
    for step, loss in curve.items():
        assert abs(loss - reference[step]) <= 0.02 * reference[step], (step, loss, reference[step])


def never() -> bool:
    return False


def test_two_processes_follow_the_single_process_loss_curve(tiny_model_dir, tmp_path):
    data = records_file(tmp_path / "data.jsonl")
    single = trainer.train(config(tiny_model_dir, max_steps=12), data, tmp_path / "one")
    events = []
    double = processes.train(
        config(tiny_model_dir, max_steps=12, devices=2), data, tmp_path / "two", events.append, never
    )
    reference = {p["step"]: p["loss"] for p in single["history"]["train"]}
    assert sorted(losses(events)) == list(range(1, 13))
    assert_follows(losses(events), reference)
    assert reference[12] < reference[1] - 0.2  # it learned: the comparison is not between two flat lines
    assert double["tuned"]["eval_loss"] == pytest.approx(single["tuned"]["eval_loss"], rel=0.02)
    assert (tmp_path / "two" / "adapter" / "adapter_model.safetensors").exists()


def test_two_processes_stop_early_where_one_process_does(tiny_model_dir, tmp_path):
    """Early stopping under DDP: every rank stops at the step one process stops at (rank 0 decides for all)."""
    data = records_file(tmp_path / "data.jsonl")
    changes = {
        "learning_rate": 0.05,
        "max_steps": 40,
        "early_stopping_patience": 1,
        "eval_every": 2,
        "eval_fraction": 0.2,
    }
    single = trainer.train(config(tiny_model_dir, **changes), data, tmp_path / "one")
    double = processes.train(config(tiny_model_dir, devices=2, **changes), data, tmp_path / "two", [].append, never)
    assert single["steps"] < 40 and (double["steps"], double["best_step"]) == (single["steps"], single["best_step"])


def test_a_two_process_checkpoint_resumes_on_one_process_and_on_two(tiny_model_dir, tmp_path):
    data = records_file(tmp_path / "data.jsonl")
    settings = {"max_steps": 40, "checkpoint_every": 5}
    whole = []  # the reference: one process, never stopped
    trainer.train(config(tiny_model_dir, **settings), data, tmp_path / "whole", progress=whole.append)
    cut = []
    with pytest.raises(trainer.Cancelled):  # every rank stops; the checkpoint stays
        processes.train(
            config(tiny_model_dir, devices=2, **settings),
            data,
            tmp_path / "cut",
            cut.append,
            lambda: any(e["event"] == "checkpoint" for e in cut),
        )
    assert (tmp_path / "cut" / "checkpoint" / "state.pt").exists()
    shutil.copytree(tmp_path / "cut", tmp_path / "on-one")
    shutil.copytree(tmp_path / "cut", tmp_path / "on-two")

    on_one = []
    trainer.train(config(tiny_model_dir, **settings), data, tmp_path / "on-one", progress=on_one.append)
    on_two = []
    processes.train(config(tiny_model_dir, devices=2, **settings), data, tmp_path / "on-two", on_two.append, never)
    for resumed in (on_one, on_two):
        step = next(e["step"] for e in resumed if e["event"] == "resumed")
        assert step >= 5 and min(losses(resumed)) == step + 1 and max(losses(resumed)) == 40
        assert_follows(losses(resumed), losses(whole))


def test_settings_several_devices_cannot_train_are_refused(tiny_model_dir):
    with pytest.raises(ValueError, match="at most the batch size"):
        config(tiny_model_dir, devices=2, batch_size=1).validate()
    for changes in ({"objective": "dpo"}, {"method": "full"}):
        with pytest.raises(ValueError, match="supervised LoRA, QLoRA or DoRA runs only"):
            config(tiny_model_dir, devices=2, **changes).validate()
    config(tiny_model_dir, devices=2, method="dora").validate()


def rank_pid(job, rank: int) -> int | None:
    """The process of one rank of the job's run, found by its command line and environment."""
    spec = str(work_dir(job) / "output" / "run.json")
    for entry in Path("/proc").iterdir():
        try:
            if spec in (entry / "cmdline").read_bytes().decode().split("\0"):
                if f"RANK={rank}" in (entry / "environ").read_bytes().decode().split("\0"):
                    return int(entry.name)
        except (OSError, ValueError):
            continue
    return None


def test_a_two_device_job_waits_for_a_worker_that_has_two_and_learns_as_one_device_does(
    celery_worker_process, tiny_base_model, trainer_user, version, django_capture_on_commit_callbacks, tmp_path
):
    common = {"owner": trainer_user, "base_model": tiny_base_model, "versions": [version]}
    changes = {"max_steps": 20, "influence_methods": [], "task_eval_examples": 0}
    two = launch(django_capture_on_commit_callbacks, **common, overrides={**FAST, "devices": 2}, config_changes=changes)
    one = launch(django_capture_on_commit_callbacks, **common, overrides=FAST, config_changes=changes)
    assert two.config["devices"] == 2 and workers.queue_for(2) == "gpu.2"
    one = wait_for(one, lambda j: j.finished)
    assert one.status == "succeeded", (one.error, one.logs)
    two.refresh_from_db()
    assert two.status == "queued" and two.worker == ""  # the worker has one device: it never took the job

    second = WorkerProcess(database_url_for_workers(), tmp_path / "worker2.log", env={"WORKER_DEVICES": "2"})
    try:
        two = wait_for(two, lambda j: j.finished, timeout=180)
    finally:
        second.stop()
    assert two.status == "succeeded", (two.error, two.logs)
    assert two.device == "cpu x2" and two.worker.startswith(second.name.split("@")[0])
    assert two.step == 20 and len(two.metrics["train"]) == 20
    assert two.evaluation["tuned"]["eval_loss"] == pytest.approx(one.evaluation["tuned"]["eval_loss"], rel=0.02)
    assert two.evaluation["tuned"]["eval_loss"] < two.evaluation["base"]["eval_loss"]


def test_a_two_node_job_trains_across_two_workers_as_one_device_does(
    celery_worker_process, tiny_base_model, trainer_user, version, django_capture_on_commit_callbacks, tmp_path
):
    """Node 0's worker hosts the rendezvous and asks another worker to join; both share JOB_WORK_DIR."""
    common = {"owner": trainer_user, "base_model": tiny_base_model, "versions": [version]}
    changes = {"max_steps": 20, "influence_methods": [], "task_eval_examples": 0}
    one = launch(django_capture_on_commit_callbacks, **common, overrides=FAST, config_changes=changes)
    one = wait_for(one, lambda j: j.finished)
    second = WorkerProcess(database_url_for_workers(), tmp_path / "worker2.log")
    try:
        two = launch(
            django_capture_on_commit_callbacks, **common, overrides={**FAST, "nodes": 2}, config_changes=changes
        )
        two = wait_for(two, lambda j: j.finished, timeout=180)
    finally:
        second.stop()
    assert one.status == two.status == "succeeded", (two.error, two.logs)
    assert two.device == "cpu on 2 nodes" and two.step == 20
    leader = two.worker.split("@")[0]
    joined = [line for line in two.logs if "Node 2 of 2 joins on" in line]
    assert len(joined) == 1 and leader not in joined[0]  # the other worker ran node 2
    assert two.evaluation["tuned"]["eval_loss"] == pytest.approx(one.evaluation["tuned"]["eval_loss"], rel=0.02)


def test_a_node_called_for_an_ended_attempt_does_not_join(tmp_path):
    (tmp_path / "rendezvous.json").write_text(json.dumps(["127.0.0.1", 29500]))
    assert processes.follow(tmp_path, 1, ("127.0.0.1", 29400), never) == -1


def two_devices(owner, base_model, version) -> dict:
    return {"owner": owner, "base_model": base_model, "versions": [version], "overrides": {**FAST, "devices": 2}}


@pytest.mark.one_pass  # torchrun's processes, not the database, are what it measures
def test_a_killed_rank_restarts_every_rank_from_the_last_checkpoint(
    transactional_db, tiny_base_model, trainer_user, version, django_capture_on_commit_callbacks, tmp_path
):
    worker = WorkerProcess(database_url_for_workers(), tmp_path / "worker.log", env={"WORKER_DEVICES": "2"})
    try:
        job = launch(
            django_capture_on_commit_callbacks,
            **two_devices(trainer_user, tiny_base_model, version),
            config_changes={"max_steps": 120, "checkpoint_every": 20, "influence_methods": []},
        )
        job = wait_for(job, lambda j: (j.metrics or {}).get("checkpoint_step", 0) >= 20)
        pid = rank_pid(job, 1)
        assert pid, "rank 1 is not running"
        os.kill(pid, signal.SIGKILL)
        job = wait_for(job, lambda j: j.finished, timeout=240)
    finally:
        worker.stop()
    assert job.status == "succeeded", (job.error, job.logs)
    assert job.resumed_from_step >= 20 and job.resumed_from_step % 20 == 0
    assert any("A process of the run failed (exit 1): all 2 start again" in line for line in job.logs)
    assert any("Resumed from the checkpoint" in line for line in job.logs)
    assert job.step == 120 and [p["step"] for p in job.metrics["train"]] == list(range(1, 121))


@pytest.mark.one_pass  # torchrun's processes, not the database, are what it measures
def test_cancel_stops_every_rank_and_a_killed_worker_takes_its_ranks_with_it(
    transactional_db, tiny_base_model, trainer_user, version, django_capture_on_commit_callbacks, tmp_path
):
    """No rank outlives its run: not after a cancel, and not after the worker's kill -9 (else the reaper's
    re-run on another worker would share the job's folder with it)."""

    def ranks(job) -> list:
        return [rank_pid(job, 0), rank_pid(job, 1)]

    worker = WorkerProcess(database_url_for_workers(), tmp_path / "worker.log", env={"WORKER_DEVICES": "2"})
    try:
        endless = {"max_steps": 100000, "influence_methods": []}
        cancelled = launch(
            django_capture_on_commit_callbacks,
            **two_devices(trainer_user, tiny_base_model, version),
            config_changes=endless,
        )
        cancelled = wait_for(cancelled, lambda j: j.step >= 5)
        assert all(ranks(cancelled))
        jobs.job_cancel(job=cancelled, by=trainer_user)
        cancelled = wait_for(cancelled, lambda j: j.finished, timeout=60)
        assert cancelled.status == "cancelled" and ranks(cancelled) == [None, None]

        killed = launch(
            django_capture_on_commit_callbacks,
            **two_devices(trainer_user, tiny_base_model, version),
            config_changes=endless,
        )
        killed = wait_for(killed, lambda j: j.step >= 5)
        assert all(ranks(killed))
        os.kill(worker.process.pid, signal.SIGKILL)
        worker.process.wait()
        wait_until(lambda: ranks(killed), lambda pids: pids == [None, None], timeout=30)
    finally:
        worker.stop()
