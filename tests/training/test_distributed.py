"""A fine-tune on two processes (DDP, or FSDP with the base sharded, on the gloo backend under torchrun)
follows the single-process run step for step; its checkpoint resumes on one process and on two; a 2-device
job runs only on a worker that has two devices, and survives one of its ranks being killed."""

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


def test_two_processes_follow_the_single_process_loss_curve_with_the_base_replicated_or_sharded(
    tiny_model_dir, tmp_path
):
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

    sharded_events = []  # FSDP: the base's weights sharded over the two processes, the adapter whole on each
    sharded = processes.train(  # a checkpoint right after a held-out check on steps 3, 6 and 9
        config(tiny_model_dir, max_steps=12, devices=2, parallel="fsdp", eval_every=3),
        data,
        tmp_path / "sharded",
        sharded_events.append,
        never,
    )
    assert sorted(losses(sharded_events)) == list(range(1, 13))
    assert_follows(losses(sharded_events), reference)
    assert sharded["tuned"]["eval_loss"] == pytest.approx(single["tuned"]["eval_loss"], rel=0.02)
    resolved = json.loads((tmp_path / "sharded" / "config.json").read_text())["resolved"]
    adapter = sharded["trainable_parameters"] * 4  # fp32
    assert resolved["sharded"] and resolved["weights_bytes"] > 4 * adapter and len(resolved["peak_bytes"]) == 2
    # Half the base's weights a process (within one row of each matrix), and the whole adapter.
    base = resolved["weights_bytes"] - adapter
    assert resolved["weights_held_bytes"] - adapter == pytest.approx(base / 2, rel=0.01)


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
    shutil.copytree(tmp_path / "cut", tmp_path / "sharded")
    sharded = []  # the adapter's checkpoint is the same whether the base was sharded or not
    settings["parallel"] = "fsdp"
    processes.train(config(tiny_model_dir, devices=2, **settings), data, tmp_path / "sharded", sharded.append, never)
    for resumed in (on_one, on_two, sharded):
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
    with pytest.raises(ValueError, match="4-bit weights are not sharded here"):
        config(tiny_model_dir, devices=2, method="qlora", parallel="fsdp").validate()
    with pytest.raises(ValueError, match="parallel must be ddp or fsdp"):
        config(tiny_model_dir, devices=2, parallel="zero3").validate()
    config(tiny_model_dir, devices=2, method="dora", parallel="fsdp").validate()


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


@pytest.mark.one_pass  # processes and queues; queue_position's lookups run on both databases (test below)
def test_two_device_and_two_node_jobs_wait_for_workers_that_have_them_and_learn_as_one_device_does(
    celery_worker_process, tiny_base_model, trainer_user, version, django_capture_on_commit_callbacks, tmp_path
):
    """A 2-device job waits until a worker with two devices is online. In a 2-node job, node 0's worker hosts
    the rendezvous and asks another worker to join; both share JOB_WORK_DIR."""
    common = {"owner": trainer_user, "base_model": tiny_base_model, "versions": [version]}
    changes = {"max_steps": 20, "influence_methods": [], "task_eval_examples": 0}
    devices = launch(
        django_capture_on_commit_callbacks, **common, overrides={**FAST, "devices": 2}, config_changes=changes
    )
    one = launch(django_capture_on_commit_callbacks, **common, overrides=FAST, config_changes=changes)
    assert devices.config["devices"] == 2 and workers.queue_for(2) == "gpu.2"
    one = wait_for(one, lambda j: j.finished)
    assert one.status == "succeeded", (one.error, one.logs)
    devices.refresh_from_db()
    assert devices.status == "queued" and devices.worker == ""  # the worker has one device: it never took the job

    second = WorkerProcess(database_url_for_workers(), tmp_path / "worker2.log", env={"WORKER_DEVICES": "2"})
    try:
        devices = wait_for(devices, lambda j: j.finished, timeout=180)
        nodes = launch(  # LoRA with the base sharded across the two nodes (FSDP)
            django_capture_on_commit_callbacks,
            **common,
            method="lora",
            overrides={**FAST, "nodes": 2, "parallel": "fsdp"},
            config_changes=changes,
        )
        nodes = wait_for(nodes, lambda j: j.finished, timeout=180)
    finally:
        second.stop()
    assert devices.status == nodes.status == "succeeded", (devices.error, nodes.error, nodes.logs)
    assert devices.device == "cpu x2" and devices.worker.startswith(second.name.split("@")[0])
    assert devices.step == 20 and len(devices.metrics["train"]) == 20
    assert nodes.device == "cpu on 2 nodes" and nodes.step == 20
    joined = [line for line in nodes.logs if "Node 2 of 2 joins on" in line]
    assert len(joined) == 1 and nodes.worker.split("@")[0] not in joined[0]  # the other worker ran node 2
    assert any("Sharded the base model over 2 processes (FSDP)" in line for line in nodes.logs)
    assert devices.evaluation["tuned"]["eval_loss"] == pytest.approx(one.evaluation["tuned"]["eval_loss"], rel=0.02)
    for job in (devices, nodes):  # the sharded LoRA run is compared with one process above (a QLoRA job here)
        assert job.evaluation["tuned"]["eval_loss"] < job.evaluation["base"]["eval_loss"]


def test_a_job_queues_behind_the_jobs_that_need_as_many_devices(
    tiny_base_model, trainer_user, version, django_capture_on_commit_callbacks
):
    common = {"owner": trainer_user, "base_model": tiny_base_model, "versions": [version], "method": "lora"}
    with django_capture_on_commit_callbacks(execute=False):
        made = [
            jobs.job_create(name="", preset="quick", **common, overrides={**FAST, **extra})
            for extra in ({}, {"devices": 2}, {}, {"devices": 2}, {"devices": 4})
        ]
    assert [jobs.queue_position(job) for job in made] == [1, 1, 2, 2, 1]


def test_a_node_called_for_an_ended_attempt_does_not_join(tmp_path):
    (tmp_path / "rendezvous.json").write_text(json.dumps(["127.0.0.1", 29500]))
    assert processes.follow(tmp_path, 1, ("127.0.0.1", 29400), never) == -1


def two_devices(owner, base_model, version) -> dict:
    return {"owner": owner, "base_model": base_model, "versions": [version], "overrides": {**FAST, "devices": 2}}


def ranks(job) -> list:
    return [rank_pid(job, 0), rank_pid(job, 1)]


@pytest.mark.one_pass  # torchrun's processes, not the database, are what it measures
def test_a_killed_rank_restarts_every_rank_cancel_stops_them_and_a_killed_worker_takes_them_with_it(
    transactional_db, tiny_base_model, trainer_user, version, django_capture_on_commit_callbacks, tmp_path
):
    """No rank outlives its run: a killed rank brings every rank back from the last checkpoint; cancel stops
    them; so does the worker's kill -9 (else the reaper's re-run elsewhere would share the job's folder)."""
    job_of = lambda changes: launch(  # noqa: E731
        django_capture_on_commit_callbacks,
        **two_devices(trainer_user, tiny_base_model, version),
        config_changes=changes,
    )
    worker = WorkerProcess(database_url_for_workers(), tmp_path / "worker.log", env={"WORKER_DEVICES": "2"})
    try:
        restarted = job_of({"max_steps": 120, "checkpoint_every": 20, "influence_methods": []})
        restarted = wait_for(restarted, lambda j: (j.metrics or {}).get("checkpoint_step", 0) >= 20)
        assert all(ranks(restarted))
        os.kill(rank_pid(restarted, 1), signal.SIGKILL)
        restarted = wait_for(restarted, lambda j: j.finished, timeout=240)

        endless = {"max_steps": 100000, "influence_methods": []}
        cancelled = wait_for(job_of(endless), lambda j: j.step >= 5)
        assert all(ranks(cancelled))
        jobs.job_cancel(job=cancelled, by=trainer_user)
        cancelled = wait_for(cancelled, lambda j: j.finished, timeout=60)
        assert cancelled.status == "cancelled" and ranks(cancelled) == [None, None]

        killed = wait_for(job_of(endless), lambda j: j.step >= 5)
        assert all(ranks(killed))
        os.kill(worker.process.pid, signal.SIGKILL)
        worker.process.wait()
        wait_until(lambda: ranks(killed), lambda pids: pids == [None, None], timeout=30)
    finally:
        worker.stop()
    assert restarted.status == "succeeded", (restarted.error, restarted.logs)
    assert restarted.resumed_from_step >= 20 and restarted.resumed_from_step % 20 == 0
    assert any("A process of the run failed (exit 1): all 2 start again" in line for line in restarted.logs)
    assert any("Resumed from the checkpoint" in line for line in restarted.logs)
    assert restarted.step == 120 and [p["step"] for p in restarted.metrics["train"]] == list(range(1, 121))
