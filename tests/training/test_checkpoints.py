"""Checkpoints by steps, by time and a few per run, so a short run killed early resumes; the job's log
says what really happened."""

import json

import pytest

from training import jobs, trainer
from training.models import FineTuneJob


def records_file(path, n=40):
    with open(path, "w") as handle:
        for i in range(n):
            handle.write(
                json.dumps({"instruction": f"What does code {i} mean?", "input": "", "output": f"Code {i} means blue."})
                + "\n"
            )
    return path


def config(model_dir, **changes):
    settings = {"method": "lora", "learning_rate": 0.005, "batch_size": 4, "max_seq_length": 64}
    return trainer.TrainConfig(
        base_model_path=str(model_dir), influence_methods=[], eval_prompts=0, **{**settings, **changes}
    )


def test_a_nine_step_run_stopped_at_step_three_resumes_from_a_checkpoint(tiny_model_dir, tmp_path):
    data, out = records_file(tmp_path / "data.jsonl"), tmp_path / "out"
    first = []

    def stop_after_step_three():
        return any(e["event"] == "step" and e["step"] >= 3 for e in first)

    with pytest.raises(trainer.Cancelled):  # as a kill -9 would, it leaves the output folder as it is
        trainer.train(
            config(tiny_model_dir, max_steps=9, checkpoint_every=20),
            data,
            out,
            progress=first.append,
            should_stop=stop_after_step_three,
        )
    assert [e["step"] for e in first if e["event"] == "checkpoint"] == [2]  # 9 steps: at least 4 per run

    second = []
    trainer.train(config(tiny_model_dir, max_steps=9, checkpoint_every=20), data, out, progress=second.append)
    assert {"event": "resumed", "step": 2} in second
    assert [e["step"] for e in second if e["event"] == "step"][0] == 3
    assert [e["step"] for e in second if e["event"] == "checkpoint"] == [4, 6, 8]


def test_checkpoints_by_time_as_well_as_steps(tiny_model_dir, tmp_path):
    events = []
    trainer.train(
        config(tiny_model_dir, max_steps=5, checkpoint_every=1000, checkpoint_every_s=0),
        records_file(tmp_path / "data.jsonl"),
        tmp_path / "out",
        progress=events.append,
    )
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [1, 2, 3, 4]  # not the last: it is the end


def test_a_retried_job_without_a_checkpoint_says_it_starts_again(
    transactional_db, tiny_base_model, trainer_user, version, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        job = jobs.job_create(
            owner=trainer_user,
            name="Again",
            base_model=tiny_base_model,
            versions=[version],
            method="lora",
            preset="quick",
            overrides={"max_seq_length": 64},
        )
    job.config = {**job.config, "max_steps": 4, "influence_methods": []}
    job.attempts = 1  # an earlier attempt's worker died before its first checkpoint, on another machine
    job.save(update_fields=["config", "attempts"])
    assert jobs.job_run(job_id=job.pk, worker="test") == "succeeded"
    logs = FineTuneJob.objects.get(pk=job.pk).logs
    assert any(
        "No checkpoint of the earlier attempt is here: training starts again from step 0." in line for line in logs
    )
    assert not any("Resumed from checkpoint" in line for line in logs)
    assert FineTuneJob.objects.get(pk=job.pk).metrics["checkpoint_step"] == 3  # 4 steps: one at each but the last


def test_the_reaper_says_from_which_step_a_job_resumes(
    transactional_db, tiny_base_model, trainer_user, version, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    with django_capture_on_commit_callbacks(execute=False):
        saved, unsaved = (
            jobs.job_create(
                owner=trainer_user,
                name=name,
                base_model=tiny_base_model,
                versions=[version],
                method="lora",
                preset="quick",
            )
            for name in ("Saved", "Unsaved")
        )
    long_ago = timezone.now() - timedelta(minutes=5)
    FineTuneJob.objects.filter(pk=saved.pk).update(
        status="running", heartbeat_at=long_ago, metrics={"checkpoint_step": 40}
    )
    FineTuneJob.objects.filter(pk=unsaved.pk).update(status="running", heartbeat_at=long_ago)
    assert sorted(jobs.jobs_reap(stale_after_s=60)) == sorted([saved.pk, unsaved.pk])
    assert "resumes from its last checkpoint, at step 40." in FineTuneJob.objects.get(pk=saved.pk).logs[-1]
    assert "resumes from step 0: it saved no checkpoint." in FineTuneJob.objects.get(pk=unsaved.pk).logs[-1]


def test_loraplus_gives_the_b_matrices_the_larger_rate_and_trains(tiny_model_dir, tmp_path):
    data, out = records_file(tmp_path / "data.jsonl"), tmp_path / "out"
    run = trainer.setup(config(tiny_model_dir, loraplus_lr_ratio=16), data, None, out / "checkpoint", print)
    rate = {id(p): group["lr"] for group in run.optimizer.param_groups for p in group["params"]}
    named = [(n, p) for n, p in run.model.named_parameters() if p.requires_grad]
    assert named and {rate[id(p)] for n, p in named if "lora_A" in n} == {0.005}
    assert {rate[id(p)] for n, p in named if "lora_B" in n} == {0.08}
    with pytest.raises(ValueError, match="LoRA\\+"):
        config(tiny_model_dir, loraplus_lr_ratio=0.5).validate()
    events = []
    trainer.train(config(tiny_model_dir, loraplus_lr_ratio=16, max_steps=3), data, out, progress=events.append)
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2, 3]


def test_full_fine_tunings_base_answers_are_the_base_models(tiny_model_dir, tmp_path):
    """The side-by-side's base column under full fine-tuning (weights swapped back in place) must be the base
    model's own answers: the same as a LoRA run's on the same questions, not the fine-tune's (bf16 autocast
    once kept its casts of the tuned weights across the swap)."""
    data = records_file(tmp_path / "data.jsonl")
    examples = {}
    for method, rate in (("full", 1e-3), ("lora", 1e-2)):
        changes = {"method": method, "learning_rate": rate, "epochs": 2, "precision": "bf16", "task_eval_examples": 8}
        metrics = trainer.train(config(tiny_model_dir, **changes), data, tmp_path / method)
        examples[method] = metrics["task"]["trained"]["examples"]
    assert [e["base"] for e in examples["full"]] == [e["base"] for e in examples["lora"]]
    assert [e["base"] for e in examples["full"]] != [e["tuned"] for e in examples["full"]]
