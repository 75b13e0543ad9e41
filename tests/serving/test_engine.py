"""The engine on the tiny model: adapters, alone or batched together, answer exactly as peft + generate does."""

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from serving.engine import AdapterRef, Engine, Sampling

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = Sampling(temperature=0, max_tokens=12)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    """Three random (not zero-initialised) LoRA adapters, so each answers differently."""
    out = []
    for seed in range(3):
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        config = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
        path = tmp_path_factory.mktemp(f"adapter{seed}")
        get_peft_model(base, config).save_pretrained(path)
        out.append(AdapterRef(f"a{seed}", str(path)))
    return out


def reference(tiny_model_dir, adapter, messages=MESSAGES):
    """Plain transformers generate, with peft, greedy."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    if adapter:
        model = PeftModel.from_pretrained(model, adapter.path)
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False, eos_token_id=tokenizer.eos_token_id)
    return out[0][inputs["input_ids"].shape[1] :].tolist()


def ids(engine, adapter=None, sampling=GREEDY, messages=MESSAGES, should_stop=None):
    tokens = engine.generate(messages, adapter=adapter, sampling=sampling, should_stop=should_stop)
    return [token.id for token in tokens]


def test_hot_swapped_adapters_answer_like_transformers_generate(tiny_model_dir, adapters):
    engine = Engine(str(tiny_model_dir))
    assert ids(engine) == reference(tiny_model_dir, None)
    expected = [reference(tiny_model_dir, adapter) for adapter in adapters]
    assert len({tuple(e) for e in expected}) == 3
    for _ in range(2):  # switch back and forth on one base model
        assert [ids(engine, adapter) for adapter in adapters] == expected
        assert ids(engine) == reference(tiny_model_dir, None)  # the base model, adapters disabled
    text = "".join(token.text for token in engine.generate(MESSAGES, adapter=adapters[0], sampling=GREEDY))
    assert text == engine.decode(expected[0])


def test_concurrent_chats_on_threads_do_not_mix_adapters(tiny_model_dir, adapters):
    engine = Engine(str(tiny_model_dir))
    expected = {a.key: ids(engine, a) for a in adapters}
    results = {}

    def chat(adapter):
        results[adapter.key] = ids(engine, adapter)

    threads = [threading.Thread(target=chat, args=(a,)) for a in adapters * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == expected


def test_loaded_adapters_are_bounded_by_count_and_bytes(tiny_model_dir, adapters):
    engine = Engine(str(tiny_model_dir), max_adapters=2)
    for adapter in adapters:
        ids(engine, adapter, Sampling(max_tokens=1))
    assert list(engine.loaded) == ["a_a1", "a_a2"]  # the least recently used went
    assert set(engine.model.peft_config) == {"a_a1", "a_a2"}
    ids(engine, adapters[1], Sampling(max_tokens=1))
    ids(engine, adapters[0], Sampling(max_tokens=1))
    assert list(engine.loaded) == ["a_a1", "a_a0"]

    one = engine.loaded["a_a0"]
    engine = Engine(str(tiny_model_dir), max_adapter_bytes=one * 2)
    for adapter in adapters:
        ids(engine, adapter, Sampling(max_tokens=1))
    assert list(engine.loaded) == ["a_a1", "a_a2"]
    assert ids(engine, adapters[0]) == reference(tiny_model_dir, adapters[0])  # reloaded after eviction


def test_mixed_batches_over_many_adapters_of_different_ranks_answer_as_each_alone(tiny_model_dir, tmp_path):
    """Slots are taken and given back as adapters come and go; ranks and target layers differ."""
    made = []
    for seed, (rank, targets) in enumerate([(2, "all-linear"), (8, ["q_proj", "v_proj"]), (4, "all-linear")] * 2):
        torch.manual_seed(10 + seed)
        config = LoraConfig(r=rank, target_modules=targets, init_lora_weights=False, task_type="CAUSAL_LM")
        get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config).save_pretrained(
            tmp_path / str(seed)
        )
        made.append(AdapterRef(f"m{seed}", str(tmp_path / str(seed))))
    alone = {a.key: ids(Engine(str(tiny_model_dir)), a) for a in made[:3]}
    alone.update({a.key: reference(tiny_model_dir, a) for a in made[3:]})
    engine = Engine(str(tiny_model_dir), max_adapters=4)
    loads, ensure = [], engine.ensure_adapter
    engine.ensure_adapter = lambda adapter: (loads.append(not engine.has_adapter(adapter.key)), ensure(adapter))[1]
    for group in (made[:3], made[3:], made[:3]):  # the third reloads evicted adapters into freed slots
        results, barrier = {}, threading.Barrier(len(group))

        def chat(adapter, results=results, barrier=barrier):
            barrier.wait()
            results[adapter.key] = ids(engine, adapter)

        threads = [threading.Thread(target=chat, args=(a,)) for a in group]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == {a.key: alone[a.key] for a in group}
    assert engine.mixed and sum(loads) > len(made)  # the gathered path ran, with evictions between
    assert len(engine.loaded) <= 4 and set(engine.mixed.slot) == set(engine.loaded)


def test_sampling_is_reproducible_with_a_seed(tiny_model_dir, adapters):
    engine = Engine(str(tiny_model_dir))
    sampling = Sampling(temperature=1.0, top_p=0.9, max_tokens=10, seed=7)
    assert ids(engine, adapters[0], sampling) == ids(engine, adapters[0], sampling)


QUESTIONS = [[{"role": "user", "content": text}] for text in ("Hi", "Name a fruit.", "What is two plus two, please?")]


def run_together(engine, chats):
    """Queue every chat before any starts, so that they decode in one batch; each chat's token ids."""
    results = [None] * len(chats)

    def chat(i, adapter, messages, should_stop):
        results[i] = ids(engine, adapter, messages=messages, should_stop=should_stop)

    threads = [threading.Thread(target=chat, args=(i, *c)) for i, c in enumerate(chats)]
    with engine.scheduler.hold():
        for thread in threads:
            thread.start()
        while len(engine.scheduler.waiting) < len(chats):
            time.sleep(0.01)
    for thread in threads:
        thread.join()
    return results


@pytest.mark.parametrize("path", ["stacked", "peft"])
def test_chats_on_different_adapters_decode_in_one_batch_like_generate(tiny_model_dir, adapters, path):
    """Three adapters, one twice, and the base model in one batch, prompts of different lengths; one chat stops
    early. The batch is stepped with the engine's stacked LoRA weights, or with peft's mixed adapter batches."""
    engine = Engine(str(tiny_model_dir))
    for adapter in adapters:
        engine.ensure_adapter(adapter)
    if path == "peft":
        engine.mixed = False
    seen = []

    def stop_after_two():
        seen.append(1)
        return len(seen) > 2

    chats = [
        (adapters[0], QUESTIONS[0], None),
        (adapters[1], QUESTIONS[1], None),
        (None, QUESTIONS[2], None),
        (adapters[2], QUESTIONS[1], None),
        (adapters[0], QUESTIONS[2], None),
        (adapters[1], QUESTIONS[0], stop_after_two),
    ]
    expected = [reference(tiny_model_dir, adapter, messages) for adapter, messages, _ in chats]
    assert len({tuple(e) for e in expected[:5]}) == 5  # so that a row given another's adapter would show
    expected[-1] = expected[-1][:2]
    assert run_together(engine, chats) == expected
    assert engine.scheduler.most_rows == len(chats)
    assert not any(engine.in_use.values())  # every row left the batch
    assert ids(engine, adapters[2], messages=QUESTIONS[1]) == expected[3]  # and the engine goes on alone


def test_batch_is_bounded_and_queued_chats_wait_their_turn(tiny_model_dir, adapters):
    engine = Engine(str(tiny_model_dir), max_batch=2)
    chats = [(adapters[i % 3], QUESTIONS[i % 3], None) for i in range(5)]
    expected = [reference(tiny_model_dir, adapter, messages) for adapter, messages, _ in chats]
    assert run_together(engine, chats) == expected
    assert engine.scheduler.most_rows == 2


def test_base_linears_run_on_reordered_weights_with_the_same_rows_alone_or_batched(tiny_model_dir):
    """On the CPU every linear layer of the base model multiplies by a oneDNN-reordered copy of its weight
    (serving/packed_linear.py): the same products as F.linear, and a row's result does not depend on the
    other rows of its batch."""
    engine = Engine(str(tiny_model_dir))
    linears = [m for m in engine.base.modules() if type(m) is torch.nn.Linear]
    assert linears and all(m.packed_weight.is_mkldnn for m in linears)
    layer = linears[0]
    x = torch.randn(8, 3, layer.in_features)
    with torch.inference_mode():
        batched = layer(x)
        torch.testing.assert_close(batched, torch.nn.functional.linear(x, layer.weight, layer.bias))
        assert torch.equal(layer(x[2:3]), batched[2:3])


def test_a_process_that_served_exits_cleanly(tiny_model_dir):
    """The decode loop ends at exit: before, a process often aborted there (SIGABRT)."""
    script = (
        "import sys; from serving.engine import Engine, Sampling; engine = Engine(sys.argv[1]); "
        "print(len(list(engine.generate([{'role': 'user', 'content': 'Hi'}], sampling=Sampling(temperature=0, max_tokens=4)))))"
    )
    for _ in range(3):  # each run aborted with a chance of about one half
        done = subprocess.run(
            [sys.executable, "-c", script, str(tiny_model_dir)], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip() == "4"
