"""Proofs that influence attribution finds who taught what: generated tasks, a canary, exact payouts.

A tiny model is trained for real on a generated Datanet where each contributor teaches a different
invented task (testkit.synthetic); the held-out questions ask the same facts in other words.
"""

import json

import numpy as np
import pytest

from attribution import influence
from testkit import synthetic
from testkit.ranks import auc, spearman
from testkit.tiny_model import build_tiny_model
from training import trainer
from training.examples import collate, load_examples
from training.modeling import load_model

K = 4


def train_on(tmp_path, *, seed: int, epochs: float, canary_task=None):
    tasks = synthetic.make_tasks(K, 12, seed=seed)
    train_path, questions_path, owners = synthetic.write_datanet(tasks, tmp_path / "data", canary_task=canary_task)
    corpus = [" ".join(json.loads(line)["content"].values()) for line in train_path.read_text().splitlines()]
    model_dir = build_tiny_model(tmp_path / "model", corpus=corpus, hidden_size=128, seed=seed)
    config = trainer.TrainConfig(
        base_model_path=str(model_dir),
        method="lora",
        learning_rate=0.005,
        epochs=epochs,
        batch_size=4,
        max_seq_length=96,
        eval_prompts=0,
        seed=seed,
        influence_methods=list(influence.METHODS),
    )
    metrics = trainer.train(config, train_path, tmp_path / "out", eval_path=questions_path)
    summary = json.loads((tmp_path / "out" / "influence.json").read_text())
    scores = np.load(tmp_path / "out" / "influence.npz")
    contributors = [str(row["contributor"]) for row in summary["records"]]
    return metrics, summary, {m: scores[m] for m in scores.files}, contributors, owners


@pytest.mark.parametrize("seed", [0, 2])
def test_each_task_is_attributed_to_the_contributor_who_taught_it(tmp_path, seed):
    metrics, summary, scores, contributors, owners = train_on(tmp_path, seed=seed, epochs=3)
    assert metrics["tuned"]["eval_loss"] < metrics["base"]["eval_loss"]  # the facts were learned
    assert summary["default_method"] == influence.DEFAULT_METHOD == "datainf"

    default = synthetic.question_accuracy(scores["datainf"], contributors, owners)
    assert default["questions"] == K * 4
    assert default["top1"] >= 0.9, default
    assert default["auc"] > 0.6, default
    baseline = synthetic.question_accuracy(scores["tracin"], contributors, owners)
    assert baseline["top1"] >= 0.75, baseline
    traced = synthetic.question_accuracy(scores["tracincp"], contributors, owners)  # gathered while training
    assert traced["top1"] >= 0.9, traced

    table = summary["contributors"]["datainf"]
    assert {row["contributor"] for row in table} == {f"contributor-{i + 1}" for i in range(K)}
    assert abs(sum(row["share"] for row in table) - 1) < 1e-9
    for row in table:
        assert row["records"] == 12
        assert row["share_ci"][0] <= row["share"] <= row["share_ci"][1]
        assert row["score_ci"][0] <= row["score"] <= row["score_ci"][1]


def test_a_canary_copying_held_out_answers_ranks_first_for_them(tmp_path):
    _, _, scores, contributors, owners = train_on(tmp_path, seed=0, epochs=6, canary_task=0)
    asked = [j for j, owner in enumerate(owners) if owner == "canary"]
    assert len(asked) == 8 and contributors.count("canary") == 8
    result = synthetic.question_accuracy(scores["datainf"][:, asked], contributors, ["canary"] * len(asked))
    assert result["top1"] == 1.0, result
    # Record by record too: each canary record is the most influential record for the question it copies.
    for j in asked:
        assert int(np.argmax(scores["datainf"][:, j])) in [i for i, c in enumerate(contributors) if c == "canary"]


def test_projected_gradients_keep_the_ranking(tmp_path):
    """CountSketch projection (for models whose gradients do not fit) agrees with exact gradients."""
    tasks = synthetic.make_tasks(K, 12, seed=3)
    train_path, questions_path, owners = synthetic.write_datanet(tasks, tmp_path / "data")
    corpus = [" ".join(json.loads(line)["content"].values()) for line in train_path.read_text().splitlines()]
    model_dir = build_tiny_model(tmp_path / "model", corpus=corpus, hidden_size=128, seed=3)
    config = trainer.TrainConfig(
        base_model_path=str(model_dir),
        method="lora",
        learning_rate=0.005,
        epochs=6,
        batch_size=4,
        max_seq_length=96,
        eval_prompts=0,
        seed=3,
        influence_methods=[],
    )
    trainer.train(config, train_path, tmp_path / "out", eval_path=questions_path)
    config.influence_methods = ["datainf"]
    exact = trainer.attribute_saved(
        config, train_path, tmp_path / "out" / "adapter", tmp_path / "exact", eval_path=questions_path
    )
    config.influence_projection_dim = 128
    projected = trainer.attribute_saved(
        config, train_path, tmp_path / "out" / "adapter", tmp_path / "projected", eval_path=questions_path
    )
    assert exact["parameters"]["projection"] == "none"
    assert projected["parameters"]["projection"] == "countsketch-128"
    assert projected["gradient_bytes"] < exact["gradient_bytes"] / 4
    a = np.load(tmp_path / "exact" / "influence.npz")["datainf"].mean(axis=1)
    b = np.load(tmp_path / "projected" / "influence.npz")["datainf"].mean(axis=1)
    assert spearman(a, b) > 0.8


def test_payouts_add_up_exactly_and_follow_the_shares():
    shares = {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3, "d": 0.0}
    parts = influence.payouts(100_00, shares)
    assert sum(parts.values()) == 100_00 and parts["d"] == 0
    assert sorted(parts.values()) == [0, 3333, 3333, 3334]
    assert influence.payouts(1, {"x": 0.5, "y": 0.5}) in ({"x": 1, "y": 0}, {"x": 0, "y": 1})
    assert influence.payouts(999, {"x": 0.0}) == {"x": 0}
    with pytest.raises(ValueError):
        influence.payouts(-1, shares)


def test_rank_statistics():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert auc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert auc([0.1, 0.2, 0.9, 0.8], [True, True, False, False]) == 0.0


def live_lora(model_dir, tmp_path, n: int):
    """The tiny model with a LoRA adapter whose B matrices are not zero (which would leave A's gradients zero),
    and ``n`` examples of a generated Datanet."""
    import torch

    tasks = synthetic.make_tasks(2, 4, seed=0)
    train_path, _, _ = synthetic.write_datanet(tasks, tmp_path / "data")
    config = trainer.TrainConfig(
        base_model_path=str(model_dir),
        method="lora",
        lora_dropout=0.0,
        max_seq_length=96,
        precision="fp32",
    )
    model, tokenizer, _ = load_model(config)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.02)
    return model, tokenizer, load_examples(tokenizer, train_path, config.max_seq_length)[:n]


def test_per_example_gradients_add_up_to_the_batch_gradient(tiny_model_dir, tmp_path):
    """The hooks' per-example LoRA gradients are exact: they sum to autograd's gradient of the batch."""
    import torch

    model, tokenizer, examples = live_lora(tiny_model_dir, tmp_path, 4)
    capture = influence.GradientCapture(model, 0, seed=0)
    per_example = influence.gradients(
        model, examples, capture=capture, batch_size=4, pad_id=tokenizer.pad_token_id, device="cpu", per_token=False
    )
    batch = collate(examples, tokenizer.pad_token_id)
    model.eval()
    model(**batch, num_items_in_batch=torch.tensor(1)).loss.backward()
    for (_, module), grads in zip(capture.modules, per_example, strict=True):
        assert grads.shape[0] == 4
        np.testing.assert_allclose(grads.sum(axis=0), module.weight.grad.reshape(-1).numpy(), rtol=1e-4, atol=1e-6)
    capture.close()
    alone = influence.gradients(
        model,
        examples[:1],
        capture=influence.GradientCapture(model, 0, seed=0),
        batch_size=1,
        pad_id=tokenizer.pad_token_id,
        device="cpu",
        per_token=False,
    )
    for together, single in zip(per_example, alone, strict=True):
        np.testing.assert_allclose(together[0], single[0], rtol=1e-4, atol=1e-6)  # padding changes nothing


def test_question_shares_count_each_held_out_question_alike():
    """A contributor who alone explains one of three questions, whose gradients are small (an easy question),
    gets a third under question_shares; under raw sums the volume on the other two outvotes it."""
    scores = np.zeros((12, 3))
    scores[:10, 1:] = 0.1  # "big": 10 records on questions 1 and 2
    scores[10:, 0] = 0.005  # "small": 2 records, the only help on question 0
    contributors = ["big"] * 10 + ["small"] * 2

    def shares(rule):
        table = influence.contributor_table(scores, contributors, bootstrap=200, seed=0, aggregation=rule)
        return {row["contributor"]: row for row in table}

    assert shares("sum")["small"]["share"] < 0.01
    fair = shares("question_shares")
    assert fair["small"]["share"] == pytest.approx(1 / 3) and fair["big"]["share"] == pytest.approx(2 / 3)
    assert fair["small"]["share_ci"][0] <= fair["small"]["share"] <= fair["small"]["share_ci"][1]
    assert fair["small"]["score"] == shares("sum")["small"]["score"]  # the score stays the sum rule's
    with pytest.raises(ValueError, match="aggregation"):
        influence.InfluenceConfig(aggregation="votes").validate()
