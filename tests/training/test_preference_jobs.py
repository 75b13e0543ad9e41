"""DPO, ORPO and DoRA jobs on a real worker with the tiny model; the wizard's rules on objectives and methods."""

import pytest

from datanets import services as datanet_services
from datanets.models import Record
from modelfactory.exceptions import ApplicationError
from tests.factories import DatanetFactory, UserFactory
from tests.training.test_jobs import launch, wait_for
from training import estimates, jobs

FAST = {"learning_rate": 0.005, "epochs": 3, "batch_size": 4, "max_seq_length": 64, "eval_fraction": 0.25}
# A random model learns the rule in 36 steps at a high learning rate; ORPO's odds term needs beta 1 to outweigh
# the chosen answers' NLL, which on a random model is large.
PAIRS = {**FAST, "learning_rate": 0.01, "epochs": 6, "beta": 1.0}


def preference_version(owner, n=32):
    """Pairs whose chosen answer follows a rule the random tiny model cannot know: things of Paris are foxes,
    things of France dogs. The answers differ in one token (" fox", " dog"), the places are one token each,
    and the two rules pair the two words in opposite orders: a base model's bias for either word prefers
    chosen on about half the pairs, and batches (sorted by length) mix both rules."""
    datanet = DatanetFactory(name="Animals", visibility="public", created_by=owner, schema="preference")
    author = UserFactory()
    for i in range(n):
        place, animal, other = ("Paris", "fox", "dog") if i % 2 else ("France", "dog", "fox")
        value = {"prompt": f"Thing {i} of {place}?", "chosen": f"The {animal}.", "rejected": f"The {other}."}
        datanet_services.record_create(datanet=datanet, contributor=author, value=value)
    Record.objects.filter(datanet=datanet).update(status="approved")
    return datanet_services.version_publish(datanet=datanet, by=UserFactory(is_staff=True))


def test_dpo_orpo_and_dora_jobs_succeed_and_the_adapters_prefer_chosen(
    celery_worker_process, tiny_base_model, trainer_user, version, django_capture_on_commit_callbacks
):
    pairs = preference_version(trainer_user)
    common = {"owner": trainer_user, "base_model": tiny_base_model}
    dpo = launch(
        django_capture_on_commit_callbacks, versions=[pairs], overrides={**PAIRS, "objective": "dpo"}, **common
    )
    orpo = launch(
        django_capture_on_commit_callbacks, versions=[pairs], overrides={**PAIRS, "objective": "orpo"}, **common
    )
    with django_capture_on_commit_callbacks(execute=True):
        dora = jobs.job_create(
            method="dora", preset="quick", name="", versions=[version], overrides={**FAST, "epochs": 1}, **common
        )
    for job in (dpo, orpo):
        job = wait_for(job, lambda j: j.finished)
        assert job.status == "succeeded", (job.error, job.logs)
        ev = job.evaluation
        assert ev["loss_on"] == "held_out" and ev["eval_examples"] == 8
        assert ev["tuned"]["accuracy"] > ev["base"]["accuracy"], ev  # held-out pairs: chosen more often
        assert ev["tuned"]["logp_gap"] > ev["base"]["logp_gap"], ev
        assert {"margin", "accuracy"} <= set(job.metrics["train"][-1]) and "margin" in job.metrics["last"]
        assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors"} <= set(jobs.job_outputs(job))
        measured = job.influence["methods"]["datainf"]["parameters"]  # on the preference loss, per pair
        assert measured["target"].startswith(f"held-out {job.config['objective'].upper()} loss")
        assert job.record_influences.filter(method="datainf").count() == measured["train_examples"] == 24
    dora = wait_for(dora, lambda j: j.finished)
    assert dora.status == "succeeded", (dora.error, dora.logs)
    assert dora.config["method"] == "dora" and dora.evaluation["method"] == "dora"


def test_objectives_match_the_datanets_and_full_fine_tuning_must_fit(tiny_base_model, trainer_user, version):
    pairs = preference_version(trainer_user, n=4)
    common = {"owner": trainer_user, "base_model": tiny_base_model, "preset": "quick", "name": ""}
    with pytest.raises(ApplicationError, match="preference Datanets"):
        jobs.job_create(method="lora", versions=[version], overrides={"objective": "dpo"}, **common)
    with pytest.raises(ApplicationError, match="choose DPO or ORPO"):
        jobs.job_create(method="lora", versions=[pairs], overrides={}, **common)
    with pytest.raises(ApplicationError, match="DPO needs the base model"):
        jobs.job_create(method="full", versions=[pairs], overrides={"objective": "dpo"}, **common)
    assert estimates.full_fits(tiny_base_model.parameter_count, 2**30)
    assert not estimates.full_fits(7_000_000_000, 64 * 2**30)
