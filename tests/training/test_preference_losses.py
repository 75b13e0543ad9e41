"""Our DPO and ORPO losses equal trl's on the same batch (trl as the oracle; no Django, no workers)."""

from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from training import preference
from training.examples import IGNORE, Example

PAIRS = [
    {
        "prompt": [{"role": "user", "content": f"Name colour {i}."}],
        "chosen": [{"role": "assistant", "content": f"Colour {i} is teal{'!' * i}"}],
        "rejected": [{"role": "assistant", "content": f"It is red {i}."}],
    }
    for i in range(4)
]


@pytest.fixture(scope="module")
def trl_dpo(tiny_model_dir, tmp_path_factory):
    """trl's DPOTrainer making a LoRA adapter on the tiny model (so its reference is the base with the adapter
    off, as ours), the adapter moved off its zero start, and one collated batch ([chosen rows; rejected rows])."""
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(0)
    args = DPOConfig(
        output_dir=str(tmp_path_factory.mktemp("trl")),
        per_device_train_batch_size=len(PAIRS),
        report_to=[],
        beta=0.1,
        use_cpu=True,
        max_length=128,
    )
    dpo = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=args,
        train_dataset=Dataset.from_list(PAIRS),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0),
    )
    with torch.no_grad():
        for name, parameter in dpo.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    dpo.model.eval()
    batch = next(iter(dpo.get_train_dataloader()))
    return dpo, {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}


def our_pairs(batch) -> list[preference.Pair]:
    """The same token rows as our Examples: the completion's tokens labelled, padding dropped."""
    rows = []
    for ids, mask, completion in zip(
        batch["input_ids"], batch["attention_mask"], batch["completion_mask"], strict=True
    ):
        keep = mask.bool()
        ids, completion = ids[keep].tolist(), completion[keep].tolist()
        rows.append(Example(ids, [t if c else IGNORE for t, c in zip(ids, completion, strict=True)], None, None))
    n = len(rows) // 2
    return [preference.Pair(rows[i], rows[n + i], []) for i in range(n)]


def test_our_dpo_loss_equals_trls_on_one_batch(trl_dpo):
    dpo, batch = trl_dpo
    model = dpo.model
    with torch.no_grad():
        theirs = dpo.compute_loss(dpo.model, batch)
        ours, _ = preference.batch_loss(model, our_pairs(batch), "dpo", 0.1, "cpu")
    assert abs(theirs.item() - torch.log(torch.tensor(2.0)).item()) > 1e-3  # the adapter makes a difference
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-4, abs=1e-5)


def test_our_orpo_odds_ratio_and_log_probs_equal_trls(trl_dpo):
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    dpo, batch = trl_dpo
    model = dpo.model
    pairs = our_pairs(batch)
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, IGNORE)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        mean_logps = ORPOTrainer.get_batch_logps(logits, labels, average_log_prob=True)
        n = len(pairs)
        oracle = SimpleNamespace(beta=0.1, accelerator=SimpleNamespace(device="cpu"))
        odds_terms, *_ = ORPOTrainer.odds_ratio_loss(oracle, mean_logps[:n], mean_logps[n:])
        chosen_nll = -(ORPOTrainer.get_batch_logps(logits[:n], labels[:n]).sum() / (labels[:n, 1:] != IGNORE).sum())
        theirs = chosen_nll - odds_terms.mean()  # trl's ORPO loss, with the NLL on the answers as ours
        ours, _ = preference.batch_loss(model, pairs, "orpo", 0.1, "cpu")
        sums, counts = preference.sequence_logps(model, [p.chosen for p in pairs] + [p.rejected for p in pairs], "cpu")
    assert (sums / counts).numpy() == pytest.approx(mean_logps.numpy(), rel=1e-4)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-4)


@pytest.mark.parametrize("objective", ["dpo", "orpo"])
def test_influence_takes_each_pairs_gradient_of_its_own_preference_loss(trl_dpo, objective):
    """attribution/influence.py's per-example gradients for pairs (chosen and rejected rows summed) equal
    autograd's gradient of each pair's loss alone; padded rows give the packed rows' log-probabilities."""
    from attribution import influence

    dpo, batch = trl_dpo
    model, pairs = dpo.model, our_pairs(batch)
    loss_fn = preference.influence_loss(objective, 0.1, pad_id=0)
    capture = influence.GradientCapture(model, 0, 0)
    try:
        grads = influence.gradients(
            model,
            pairs,
            capture=capture,
            batch_size=len(pairs),
            pad_id=0,
            device="cpu",
            per_token=False,
            loss_fn=loss_fn,
        )
    finally:
        capture.close()
    for i, pair in enumerate(pairs):
        loss, _, _ = loss_fn(model, [pair], "cpu")
        weights = [module.weight for _, module in capture.modules]
        alone = torch.autograd.grad(loss, weights)
        for grad, own in zip(grads, alone, strict=True):
            assert grad[i] == pytest.approx(own.flatten().numpy(), rel=1e-3, abs=1e-6)
    answers = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    with torch.no_grad():
        padded, _ = preference.row_logps(model, answers, 0, "cpu")
        packed, _ = preference.sequence_logps(model, answers, "cpu")
    assert padded.numpy() == pytest.approx(packed.numpy(), rel=1e-4)
