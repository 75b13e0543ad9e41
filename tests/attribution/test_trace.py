"""TracInCP gathered while training (attribution/trace.py): exact per-record gradients from the packed
training row, Adam's momentum weights, and a state that survives a checkpoint. That it finds who taught
what is proven beside the other methods (test_influence.py)."""

import numpy as np
import pytest

from attribution import influence
from attribution.trace import momentum_weight
from testkit import synthetic
from tests.attribution.test_influence import live_lora
from training import packing, trainer


def test_per_record_gradients_of_a_packed_row_are_each_records_own(tiny_model_dir, tmp_path):
    """Records laid end to end in one training row: the hooks' per-record split equals each record's
    gradient taken alone (the row's block-diagonal mask keeps records apart)."""
    model, tokenizer, examples = live_lora(tiny_model_dir, tmp_path, 3)
    capture = influence.GradientCapture(model, 0, seed=0)
    model.eval()
    packing.summed_loss(model, packing.pack(examples), "cpu").backward()
    packed = capture.per_record([len(e.input_ids) for e in examples])
    model.zero_grad()
    alone = influence.gradients(
        model, examples, capture=capture, batch_size=1, pad_id=tokenizer.pad_token_id, device="cpu", per_token=False
    )
    capture.close()
    for row, single in zip(packed, alone, strict=True):
        np.testing.assert_allclose(row.numpy(), single, rtol=1e-3, atol=1e-6)


def test_momentum_weights():
    """A gradient's total weight in Adam's bias-corrected moment averages: about 1 mid-run, more on the
    first steps (bias correction), 1 - beta on the last step."""
    assert momentum_weight(0.9, 50, 200) == pytest.approx(1.0, abs=0.01)
    assert momentum_weight(0.9, 1, 200) > 2
    assert momentum_weight(0.9, 200, 200) == pytest.approx(0.1 / (1 - 0.9**200))


def test_tracincp_survives_a_resume(tiny_model_dir, tmp_path):
    """A run stopped at a checkpoint and resumed gathers the same scores as one that ran through (the state
    rides in the checkpoint)."""
    tasks = synthetic.make_tasks(2, 10, seed=0)
    train_path, questions, _ = synthetic.write_datanet(tasks, tmp_path / "data")
    config = trainer.TrainConfig(
        base_model_path=str(tiny_model_dir),
        method="lora",
        learning_rate=0.005,
        max_steps=8,
        batch_size=4,
        max_seq_length=96,
        eval_prompts=0,
        influence_methods=["tracincp"],
    )
    progress = []
    summary = trainer.train(config, train_path, tmp_path / "through", eval_path=questions, progress=progress.append)
    summary = summary["influence"]
    assert summary["default_method"] == "tracincp"
    assert summary["parameters"]["train_examples"] == 20
    attributing = [e for e in progress if e["event"] == "attributing"]
    assert attributing[-1]["done"] == attributing[-1]["total"] > 0  # no pass over the records, yet done
    through = np.load(tmp_path / "through" / "influence.npz")["tracincp"]
    assert np.abs(through).max() > 0

    events = []
    with pytest.raises(trainer.Cancelled):
        trainer.train(
            config,
            train_path,
            tmp_path / "resumed",
            eval_path=questions,
            progress=events.append,
            should_stop=lambda: any(e["event"] == "checkpoint" and e["step"] >= 6 for e in events),
        )
    resumed = []
    trainer.train(config, train_path, tmp_path / "resumed", eval_path=questions, progress=resumed.append)
    assert {"event": "resumed", "step": 6} in resumed  # after the middle anchor (step 4)
    again = np.load(tmp_path / "resumed" / "influence.npz")["tracincp"]
    np.testing.assert_allclose(again, through, rtol=1e-3, atol=1e-5 * np.abs(through).max())
