"""Preference objectives, DPO and ORPO: pairs as token ids, sequence log-probabilities, losses. No Django.

A preference record (datanets/schemas.py) is a prompt, or a chat ending with a user turn, and two
answers: ``chosen`` and ``rejected``. Each answer is encoded through the base model's chat template
like a supervised example, with only the answer's tokens labelled.

- DPO (Rafailov et al. 2023): ``-log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))`` with
  ``pi``, ``ref`` the summed log-probabilities of an answer under the fine-tune and the reference.
  The reference is the base model: the same weights with the adapter disabled, never a second copy.
- ORPO (Hong et al. 2024): the chosen answer's mean negative log-likelihood per token plus
  ``beta * -log sigmoid(log odds(chosen) - log odds(rejected))``, odds from the mean per-token
  log-probability ``p``: ``log odds = p - log(1 - exp(p))``. No reference model.

Rewards, as trl reports them: DPO ``beta * (pi - ref)``, ORPO ``beta * p``; the reward margin is
chosen's minus rejected's, the accuracy the share of pairs whose margin is positive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from training import packing
from training.examples import IGNORE, Example, encode, load_rows, template_ids

OBJECTIVES = ("sft", "dpo", "orpo")


@dataclass
class Pair:
    chosen: Example
    rejected: Example
    prompt: list[dict]
    source: dict = field(default_factory=dict)  # {content_hash, contributor} when the data carries them


def prompt_messages(content: dict) -> list[dict]:
    return content["messages"] if "messages" in content else [{"role": "user", "content": content["prompt"]}]


def encode_answer(tokenizer, prompt: list[dict], answer: str, max_len: int) -> Example | None:
    """The prompt and one answer, only the answer's tokens labelled (earlier assistant turns are not)."""
    example = encode(tokenizer, {"messages": [*prompt, {"role": "assistant", "content": answer}]}, max_len)
    if example is None:
        return None
    start = len(template_ids(tokenizer, prompt, generation_prompt=True))
    example.labels = [IGNORE] * min(start, len(example.labels)) + example.labels[start:]
    return example if any(label != IGNORE for label in example.labels) else None


def encode_pair(tokenizer, content: dict, max_len: int) -> Pair | None:
    if "chosen" not in content or "rejected" not in content:
        raise ValueError("DPO and ORPO train on preference records ({prompt or messages, chosen, rejected})")
    prompt = prompt_messages(content)
    chosen = encode_answer(tokenizer, prompt, content["chosen"], max_len)
    rejected = encode_answer(tokenizer, prompt, content["rejected"], max_len)
    return Pair(chosen, rejected, prompt) if chosen and rejected else None


def load_pairs(tokenizer, path, max_len: int) -> list[Pair]:
    pairs = []
    for content, source in load_rows(path):
        pair = encode_pair(tokenizer, content, max_len)
        if pair:
            pair.source = source
            pairs.append(pair)
    return pairs


def sequence_logps(model, examples: list[Example], device: str):
    """Summed log-probability of each example's labelled tokens and how many there are: one packed row,
    the head only where a labelled token is predicted (training/packing.py)."""
    import torch

    batch = packing.pack(examples)
    segments = torch.tensor([i for i, e in enumerate(examples) for _ in e.input_ids], device=device)
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    targets = batch["targets"].to(device)[0]
    hidden = lm.get_decoder()(
        input_ids=batch["input_ids"].to(device), position_ids=batch["position_ids"].to(device), use_cache=False
    ).last_hidden_state[0]
    keep = targets != IGNORE
    logits = lm.get_output_embeddings()(hidden[keep]).float()
    token_logps = -torch.nn.functional.cross_entropy(logits, targets[keep], reduction="none")
    where = segments[keep]
    sums = torch.zeros(len(examples), device=device, dtype=token_logps.dtype).index_add(0, where, token_logps)
    counts = torch.zeros(len(examples), device=device).index_add(0, where, torch.ones_like(token_logps))
    return sums, counts


def pair_logps(model, pairs: list[Pair], device: str):
    """(chosen sums, rejected sums, chosen counts, rejected counts), chosen and rejected in one row."""
    sums, counts = sequence_logps(model, [p.chosen for p in pairs] + [p.rejected for p in pairs], device)
    n = len(pairs)
    return sums[:n], sums[n:], counts[:n], counts[n:]


def dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta: float):
    """Per-pair DPO losses and the chosen and rejected rewards."""
    import torch.nn.functional as F

    chosen_rewards, rejected_rewards = beta * (chosen - ref_chosen), beta * (rejected - ref_rejected)
    return -F.logsigmoid(chosen_rewards - rejected_rewards), chosen_rewards.detach(), rejected_rewards.detach()


def log1mexp(x):
    """log(1 - exp(x)) for x < 0, stable at both ends (Maechler 2012)."""
    import torch

    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def orpo_odds_loss(chosen_mean, rejected_mean, beta: float):
    """Per-pair ORPO odds-ratio losses (beta times) and the rewards, from mean per-token log-probabilities."""
    import torch.nn.functional as F

    log_odds = (chosen_mean - rejected_mean) - (log1mexp(chosen_mean) - log1mexp(rejected_mean))
    return -beta * F.logsigmoid(log_odds), beta * chosen_mean.detach(), beta * rejected_mean.detach()


def reference_logps(model, pairs: list[Pair], device: str):
    """The base model's log-probabilities: the same weights with the adapter switched off."""
    import torch

    with torch.no_grad(), model.disable_adapter():
        chosen, rejected, _, _ = pair_logps(model, pairs, device)
    return chosen, rejected


def pair_losses(model, pairs: list[Pair], objective: str, beta: float, device: str) -> dict:
    """Per-pair losses (tensors with gradients), rewards and the ORPO NLL term's token count."""
    chosen, rejected, chosen_n, rejected_n = pair_logps(model, pairs, device)
    if objective == "dpo":
        ref_chosen, ref_rejected = reference_logps(model, pairs, device)
        losses, chosen_r, rejected_r = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta)
        return {"losses": losses, "chosen_rewards": chosen_r, "rejected_rewards": rejected_r}
    if objective == "orpo":
        odds, chosen_r, rejected_r = orpo_odds_loss(chosen / chosen_n, rejected / rejected_n, beta)
        return {
            "losses": odds,
            "nll": -chosen.sum(),
            "nll_tokens": chosen_n.sum(),
            "chosen_rewards": chosen_r,
            "rejected_rewards": rejected_r,
        }
    raise ValueError(f"unknown preference objective {objective!r}")


def batch_loss(model, pairs: list[Pair], objective: str, beta: float, device: str) -> tuple[object, dict]:
    """The mean loss over a batch of pairs (ORPO: NLL per chosen token plus the mean odds term) and its
    metrics: reward margin and accuracy (chosen's reward above rejected's)."""
    out = pair_losses(model, pairs, objective, beta, device)
    loss = out["losses"].mean()
    if objective == "orpo":
        loss = loss + out["nll"] / out["nll_tokens"].clamp(min=1)
    margin = out["chosen_rewards"] - out["rejected_rewards"]
    return loss, {"margin": margin.mean().item(), "accuracy": (margin > 0).float().mean().item()}


def preference_accuracy(model, pairs: list[Pair], device: str, batch_size: int = 8) -> dict:
    """Share of pairs whose answer log-probability (summed over its tokens) prefers chosen, and the mean
    log-probability gap; for the model as it is (inside ``disable_adapter()``: the base)."""
    import torch

    wins, gaps = 0, []
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            chosen, rejected, _, _ = pair_logps(model, pairs[start : start + batch_size], device)
            wins += int((chosen > rejected).sum().item())
            gaps += (chosen - rejected).tolist()
    return {"accuracy": wins / max(len(pairs), 1), "logp_gap": sum(gaps) / max(len(gaps), 1), "pairs": len(pairs)}


def row_logps(model, examples: list[Example], pad_id: int, device: str):
    """Summed log-probability of each example's labelled tokens and their count, one example a padded
    row (influence takes per-example gradients from batch rows; ``sequence_logps`` packs them in one)."""
    import torch

    from training.examples import collate

    batch = {k: v.to(device) for k, v in collate(examples, pad_id).items()}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    token_logps = torch.gather(logits.log_softmax(-1), 2, targets.clamp(min=0).unsqueeze(2)).squeeze(2)
    return (token_logps * keep).sum(dim=1), keep.sum(dim=1).float()


def influence_target(objective: str) -> str:
    return f"held-out {objective.upper()} loss (mean per pair)"


def influence_loss(objective: str, beta: float, pad_id: int):
    """The loss influence measures for a preference run (attribution/influence.py): each pair's DPO or ORPO
    loss, summed over a chunk of pairs, with its chosen and rejected rows owned by the pair."""
    import torch

    def loss_fn(model, pairs: list[Pair], device: str):
        answers = [p.chosen for p in pairs] + [p.rejected for p in pairs]
        n = len(pairs)
        if objective == "dpo":
            with torch.no_grad(), model.disable_adapter():
                reference, _ = row_logps(model, answers, pad_id, device)
        sums, counts = row_logps(model, answers, pad_id, device)
        if objective == "dpo":
            losses, _, _ = dpo_loss(sums[:n], sums[n:], reference[:n], reference[n:], beta)
        else:
            means = sums / counts.clamp(min=1)
            losses, _, _ = orpo_odds_loss(means[:n], means[n:], beta)
            losses = losses - means[:n]
        return losses.sum(), torch.arange(n).repeat(2), torch.ones(2 * n)

    return loss_fn
