"""How the backbone computes: bf16 weights stored once, attention kernels, auto-selection, compilation.

Every choice must compute what today's path computes: bf16-stored weights bitwise the outputs of
autocast over fp32 weights, every attention kernel the same losses, gradients, scores and
generations (fp32: to float rounding; bf16: to bf16 rounding), and 'auto' the same choice every
time on one machine, from its cache.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from mptune import kernels
from mptune.backbone import Backbone
from mptune.config import ModelArgs, RunConfig, same_run, to_dict, with_overrides
from mptune.errors import MptuneError
from mptune.evaluate import choice_scores, length_order, predictions
from mptune.generate import generate
from mptune.losses import plm_loss
from mptune.tasks import get_task

from conftest import tiny_gpt2, tiny_llama, tiny_t5
from test_backbone import _batch, _items, _soft

FAMILIES = {"llama": tiny_llama, "gpt2": tiny_gpt2, "t5": tiny_t5}


def _loss_and_grad(backbone: Backbone, items):
    prompt = _soft(backbone)
    batch = _batch(backbone, items)
    out = backbone.forward(prompt(batch.task_ids), batch)
    loss = plm_loss(out.logits, out.targets)
    loss.backward()
    return out, loss.detach(), prompt.prompt.grad


# --- bf16 weights stored once ------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_stored_weights_give_bitwise_the_autocast_outputs(family, tokenizer, data_dir):
    """Autocast over fp32 weights (the old path) and bf16-stored weights: equal logits, hidden, gradients."""
    model = FAMILIES[family](tokenizer)
    stored = copy.deepcopy(model)
    assert kernels.store_linear_weights(stored, torch.bfloat16) > 0
    old, new = Backbone(model, tokenizer, "bf16"), Backbone(stored, tokenizer, "bf16")
    items = _items(old, data_dir)
    a, loss_a, grad_a = _loss_and_grad(old, items)
    b, loss_b, grad_b = _loss_and_grad(new, items)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.hidden, b.hidden)
    assert torch.equal(loss_a, loss_b) and torch.equal(grad_a, grad_b)
    new.assert_frozen()


def test_bf16_storage_keeps_the_embeddings_and_norms_fp32(tokenizer):
    model = tiny_llama(tokenizer)
    model.config.tie_word_embeddings = True
    model.tie_weights()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    kernels.store_linear_weights(model, torch.bfloat16)
    assert model.lm_head.weight.dtype == torch.bfloat16  # a copy of its own ...
    assert model.model.embed_tokens.weight.dtype == torch.float32  # ... the table prompts start from stays
    assert torch.equal(model.lm_head.weight, model.model.embed_tokens.weight.to(torch.bfloat16))
    assert model.model.norm.weight.dtype == torch.float32
    Backbone(model, tokenizer, "bf16").assert_frozen()


def test_load_backbone_stores_bf16_weights_and_fp32_refuses_them(saved_models):
    from mptune.models import load_backbone

    bf16 = load_backbone(str(saved_models["llama"]), "bf16", attention="sdpa")
    assert bf16.model.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    fp32 = load_backbone(str(saved_models["llama"]), "fp32", attention="sdpa")
    assert all(p.dtype == torch.float32 for p in fp32.model.parameters())
    with pytest.raises(MptuneError, match="precision fp32 needs a model whose weights are all fp32"):
        Backbone(bf16.model, bf16.tokenizer, "fp32")


# --- attention kernels -------------------------------------------------------------------------

def _outputs(backbone: Backbone, data_dir, impl: str):
    backbone.attention = {mode: impl for mode in kernels.MODES}
    items = _items(backbone, data_dir)
    _, loss, grad = _loss_and_grad(backbone, items)
    task = get_task("rte")
    scores = choice_scores(backbone, _soft(backbone), items, task.choices, batch_size=4)
    multi = choice_scores(backbone, _soft(backbone), items, ["the cat", "a dog today", "yes"], batch_size=4)
    gen = generate(backbone, _soft(backbone), items[:4], 3, batch_size=2)
    return loss, grad, scores, multi, gen


@pytest.mark.parametrize("family", FAMILIES)
def test_every_attention_kernel_computes_the_same(family, tokenizer, data_dir):
    """fp32: the same loss, prompt gradient, rank-classification scores (one- and multi-token) and
    greedy generations as torch's default SDPA, to float rounding."""
    backbone = Backbone(FAMILIES[family](tokenizer), tokenizer, "fp32")
    candidates = kernels.supported(backbone.model)
    assert candidates == list(kernels.ATTENTION)
    ref = _outputs(backbone, data_dir, "sdpa")
    for impl in candidates[1:]:
        loss, grad, scores, multi, gen = _outputs(backbone, data_dir, impl)
        assert backbone.model.config._attn_implementation == kernels.hf_attention(impl)  # it did switch
        torch.testing.assert_close(loss, ref[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grad, ref[1], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(scores, ref[2], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(multi, ref[3], rtol=1e-4, atol=1e-4)
        assert gen == ref[4], impl


def test_every_attention_kernel_agrees_in_bf16(tokenizer, data_dir):
    """bf16 (stored weights): every kernel's loss and scores within bf16 rounding of fp32's."""
    model = tiny_llama(tokenizer)
    fp32 = Backbone(copy.deepcopy(model), tokenizer, "fp32")
    kernels.store_linear_weights(model, torch.bfloat16)
    bf16 = Backbone(model, tokenizer, "bf16")
    ref = _outputs(fp32, data_dir, "sdpa")
    for impl in kernels.ATTENTION:
        loss, grad, scores, multi, _ = _outputs(bf16, data_dir, impl)
        torch.testing.assert_close(loss, ref[0], rtol=0.02, atol=0.02)
        assert torch.nn.functional.cosine_similarity(grad.flatten(), ref[1].flatten(), dim=0) > 0.99
        torch.testing.assert_close(scores, ref[2], rtol=0.02, atol=0.05)
        torch.testing.assert_close(multi, ref[3], rtol=0.02, atol=0.05)


def test_the_kernel_follows_the_kind_of_forward(tokenizer, data_dir, monkeypatch):
    """attention['train'] runs with gradients, attention['infer'] without."""
    backbone = Backbone(tiny_llama(tokenizer), tokenizer, "fp32", attention={"train": "eager", "infer": "sdpa-math"})
    seen = []
    real = kernels.attention_context
    monkeypatch.setattr(kernels, "attention_context", lambda impl: seen.append(impl) or real(impl))
    batch = _batch(backbone, _items(backbone, data_dir))
    prompt = _soft(backbone)
    backbone.forward(prompt(batch.task_ids), batch)
    assert backbone.model.config._attn_implementation == "eager"
    with torch.no_grad():
        backbone.forward(prompt(batch.task_ids), batch)
    assert seen == ["eager", "sdpa-math"]
    assert backbone.model.config._attn_implementation == "sdpa"


# --- auto-selection ----------------------------------------------------------------------------

@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MPTUNE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "kernels.json"


def _counting_measure(monkeypatch) -> list:
    calls = []
    real = kernels.measure

    def counted(backbone, candidates):
        calls.append(candidates)
        return real(backbone, candidates)

    monkeypatch.setattr(kernels, "measure", counted)
    return calls


def test_auto_measures_once_then_reads_its_cache(tokenizer, cache, monkeypatch):
    calls = _counting_measure(monkeypatch)
    backbone = Backbone(tiny_llama(tokenizer), tokenizer, "fp32")
    first = kernels.choose_attention(backbone, "auto")
    assert len(calls) == 1 and set(first) == set(kernels.MODES)
    assert all(impl in kernels.ATTENTION for impl in first.values())
    entry = json.loads(cache.read_text())[kernels.probe_key(backbone)]
    assert entry["choice"] == first
    assert set(entry["seconds"]["train"]) == set(kernels.ATTENTION)
    for _ in range(3):  # the same machine, model and precision: the cached choice, nothing timed
        again = Backbone(tiny_llama(tokenizer), tokenizer, "fp32")
        assert kernels.choose_attention(again, "auto") == first
    assert len(calls) == 1
    assert kernels.choose_attention(backbone, "eager") == {"train": "eager", "infer": "eager"}
    assert len(calls) == 1  # an explicit setting measures nothing


def test_the_cache_key_separates_precisions_and_architectures(tokenizer):
    llama = Backbone(tiny_llama(tokenizer), tokenizer, "fp32")
    keys = {kernels.probe_key(llama), kernels.probe_key(Backbone(tiny_llama(tokenizer), tokenizer, "bf16")),
            kernels.probe_key(Backbone(tiny_gpt2(tokenizer), tokenizer, "fp32"))}
    assert len(keys) == 3
    assert kernels.probe_key(Backbone(tiny_llama(tokenizer, seed=7), tokenizer, "fp32")) == kernels.probe_key(llama)
    assert kernels.device_description(torch.device("cpu")) in kernels.probe_key(llama)


def test_a_damaged_cache_is_measured_again(tokenizer, cache, monkeypatch):
    calls = _counting_measure(monkeypatch)
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json")
    backbone = Backbone(tiny_llama(tokenizer), tokenizer, "fp32")
    choice = kernels.choose_attention(backbone, "auto")
    assert len(calls) == 1 and json.loads(cache.read_text())[kernels.probe_key(backbone)]["choice"] == choice
    data = json.loads(cache.read_text())
    data[kernels.probe_key(backbone)]["choice"] = {"train": "flash-9000", "infer": "eager"}  # not a candidate
    cache.write_text(json.dumps(data))
    assert set(kernels.choose_attention(backbone, "auto").values()) <= set(kernels.ATTENTION)
    assert len(calls) == 2


def test_a_failing_or_wrong_kernel_is_never_chosen(tokenizer, cache, monkeypatch):
    real = kernels.attention_context

    def broken(impl):
        if impl == "sdpa-math":
            raise RuntimeError("this build has no such kernel")
        return real(impl)

    monkeypatch.setattr(kernels, "attention_context", broken)
    backbone = Backbone(tiny_llama(tokenizer), tokenizer, "fp32")
    timings = kernels.measure(backbone, list(kernels.ATTENTION))
    assert timings["train"]["sdpa-math"] is None and timings["infer"]["sdpa-math"] is None
    assert timings["train"]["sdpa"] is not None and timings["train"]["eager"] is not None
    assert "sdpa-math" not in kernels.choose_attention(backbone, "auto").values()
    assert backbone.attention == {"train": "sdpa", "infer": "sdpa"}  # the probe leaves the backbone as it was


def test_a_model_without_sdpa_runs_eager_without_a_probe(tokenizer, cache, monkeypatch):
    calls = _counting_measure(monkeypatch)
    backbone = Backbone(tiny_llama(tokenizer), tokenizer, "fp32")
    monkeypatch.setattr(type(backbone.model), "_supports_sdpa", False)
    assert kernels.choose_attention(backbone, "auto") == {"train": "eager", "infer": "eager"}
    assert calls == [] and not cache.exists()


def test_load_backbone_applies_the_auto_choice(saved_models, cache):
    from mptune.models import load_backbone

    backbone = load_backbone(str(saved_models["llama"]), "fp32")
    entry = json.loads(cache.read_text())[kernels.probe_key(backbone)]
    assert backbone.attention == entry["choice"]
    assert load_backbone(str(saved_models["llama"]), "fp32", attention="sdpa-math").attention == \
        {"train": "sdpa-math", "infer": "sdpa-math"}


# --- precision 'auto' --------------------------------------------------------------------------

def test_bf16_weights_for_a_block_only(tokenizer, data_dir):
    """linear_weights_in: bf16-stored weights inside the block (bitwise the stored-weights outputs),
    the very same fp32 tensors after it (a tied head tied again, the outputs bitwise as before)."""
    model = tiny_llama(tokenizer)
    model.config.tie_word_embeddings = True
    model.tie_weights()
    before = {name: t for name, t in model.named_parameters(remove_duplicate=False)}
    fp32 = Backbone(model, tokenizer, "fp32")
    items = _items(fp32, data_dir)
    ref = _loss_and_grad(fp32, items)[1]
    stored = copy.deepcopy(model)
    kernels.store_linear_weights(stored, torch.bfloat16)
    with kernels.linear_weights_in(model, torch.bfloat16):
        assert model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
        assert model.lm_head.weight is not model.model.embed_tokens.weight
        inside = _loss_and_grad(Backbone(model, tokenizer, "bf16"), items)[1]
    assert torch.equal(inside, _loss_and_grad(Backbone(stored, tokenizer, "bf16"), items)[1])
    after = dict(model.named_parameters(remove_duplicate=False))
    assert after.keys() == before.keys() and all(after[n] is before[n] for n in before)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert torch.equal(_loss_and_grad(Backbone(model, tokenizer, "fp32"), items)[1], ref)


def _counting_precision_probe(monkeypatch, fake: dict | None = None) -> list:
    calls = []
    real = kernels.measure_precisions

    def counted(model, tokenizer, candidates):
        calls.append(candidates)
        return fake if fake is not None else real(model, tokenizer, candidates)

    monkeypatch.setattr(kernels, "measure_precisions", counted)
    return calls


def test_auto_precision_is_measured_once_then_read_from_the_cache(tokenizer, cache, monkeypatch):
    calls = _counting_precision_probe(monkeypatch)
    model = tiny_llama(tokenizer)
    first = kernels.choose_precision(model, tokenizer, ["fp32", "bf16"])
    assert len(calls) == 1 and first in ("fp32", "bf16")
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the probe leaves the weights fp32
    entry = json.loads(cache.read_text())[kernels.precision_key(model)]
    assert entry["precision"] == first and set(entry["seconds"]) == {"fp32", "bf16"}
    assert all(set(t) == set(kernels.MODES) for t in entry["seconds"].values())  # both ran, losses agreed
    for _ in range(3):  # the same machine and model: the cached choice, nothing timed
        assert kernels.choose_precision(tiny_llama(tokenizer, seed=3), tokenizer, ["fp32", "bf16"]) == first
    assert len(calls) == 1
    assert kernels.choose_precision(tiny_gpt2(tokenizer), tokenizer, ["fp32", "bf16"]) in ("fp32", "bf16")
    assert len(calls) == 2  # another architecture is measured for itself
    assert kernels.choose_precision(model, tokenizer, ["fp32"]) == "fp32" and len(calls) == 2


@pytest.mark.parametrize("bf16, choice", [
    ({"train": 0.85, "infer": 0.45}, "bf16"),   # 13% faster: bf16
    ({"train": 0.98, "infer": 0.50}, "fp32"),   # 1% faster: within MARGIN, fp32 (exact) stays
    ({"train": 1.60, "infer": 0.80}, "fp32"),   # slower, as on a Xeon with AVX512-BF16 but no AMX
    (None, "fp32"),                             # failed, or a loss off fp32's
])
def test_auto_precision_keeps_fp32_unless_bf16_is_clearly_faster(tokenizer, cache, monkeypatch, bf16, choice):
    fake = {"fp32": {"train": 1.0, "infer": 0.5}, "bf16": bf16, "loss": {}}
    _counting_precision_probe(monkeypatch, fake)
    assert kernels.choose_precision(tiny_llama(tokenizer), tokenizer, ["fp32", "bf16"]) == choice


def test_a_precision_whose_loss_is_off_is_no_candidate(tokenizer, monkeypatch):
    real = kernels.store_linear_weights

    def corrupt(model, dtype):  # a bf16 path that computes something else
        changed = real(model, dtype)
        model.lm_head.weight.data.mul_(1000)
        return changed

    monkeypatch.setattr(kernels, "store_linear_weights", corrupt)
    model = tiny_llama(tokenizer)
    timings = kernels.measure_precisions(model, tokenizer, ["fp32", "bf16"])
    assert timings["bf16"] is None and set(timings["fp32"]) == set(kernels.MODES)


def test_load_backbone_computes_in_the_auto_choice(saved_models, cache, monkeypatch):
    import mptune.backbone as backbone_module
    from mptune.models import load_backbone

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    path = str(saved_models["llama"])
    key = kernels.precision_key(load_backbone(path, "fp32", attention="sdpa").model)
    monkeypatch.setattr(backbone_module, "cpu_has_bf16", lambda: True)
    calls = _counting_precision_probe(monkeypatch)
    for choice, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        kernels.write_cache(key, {"precision": choice, "margin": kernels.MARGIN})
        backbone = load_backbone(path, "auto", attention="sdpa")
        assert backbone.precision == choice
        assert backbone.model.model.layers[0].self_attn.q_proj.weight.dtype == dtype
    assert calls == []  # read from the cache
    monkeypatch.setattr(backbone_module, "cpu_has_bf16", lambda: False)
    kernels.write_cache(key, {"precision": "bf16", "margin": kernels.MARGIN})
    assert load_backbone(path, "auto", attention="sdpa").precision == "fp32"  # no bf16 instructions: no candidate
    assert calls == []


# --- settings ----------------------------------------------------------------------------------

def test_attention_and_compile_settings_are_checked():
    with pytest.raises(MptuneError, match="attention must be 'auto' or one of sdpa, sdpa-math, eager, got 'flash'"):
        ModelArgs(attention="flash")
    with pytest.raises(MptuneError, match="compile must be 'auto', 'on' or 'off', got 'maybe'"):
        ModelArgs(compile="maybe")


def test_a_run_resumes_with_another_kernel():
    saved = to_dict(RunConfig())
    assert same_run(saved, RunConfig(model=ModelArgs(attention="eager", compile="on")))
    assert not same_run(saved, RunConfig(model=ModelArgs(precision="fp32")))


# --- compilation -------------------------------------------------------------------------------

def test_a_compiled_model_computes_the_same_and_records_its_cost(tokenizer, data_dir, cache):
    eager = Backbone(tiny_llama(tokenizer), tokenizer, "fp32", attention="eager")
    compiled = Backbone(tiny_llama(tokenizer), tokenizer, "fp32", attention="eager")
    record = kernels.compile_model(compiled)
    assert record["compile_seconds"] >= 0 and record["eager_step"] > 0 and record["compiled_step"] > 0
    assert record["infer_compile_seconds"] >= 0 and record["infer_eager_step"] > 0 and record["infer_compiled_step"] > 0
    assert set(kernels.RECORD_FIELDS) <= set(record)  # what compile_pays needs: both graphs measured
    assert json.loads(cache.read_text())[kernels.probe_key(compiled)]["compile"] == record
    items = _items(eager, data_dir)
    _, loss_a, grad_a = _loss_and_grad(eager, items)
    _, loss_b, grad_b = _loss_and_grad(compiled, items)
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_b, grad_a, rtol=1e-4, atol=1e-6)
    task = get_task("rte")
    torch.testing.assert_close(choice_scores(compiled, _soft(compiled), items, task.choices),
                               choice_scores(eager, _soft(eager), items, task.choices), rtol=1e-4, atol=1e-4)


# --- evaluation order --------------------------------------------------------------------------

def test_evaluation_runs_longest_first_and_answers_in_order(llama_backbone, data_dir):
    items = _items(llama_backbone, data_dir, per_task=4)
    order = length_order(items)
    lengths = [len(items[i].input_ids) for i in order]
    assert lengths == sorted(lengths, reverse=True) and sorted(order) == list(range(len(items)))
    task = get_task("rte")
    prompt = _soft(llama_backbone)
    got = predictions(llama_backbone, prompt, task, items, batch_size=3)
    one_by_one = [predictions(llama_backbone, prompt, task, [it], batch_size=1)[0] for it in items]
    assert got == one_by_one


def test_auto_compiles_only_where_the_record_says_it_pays(tokenizer, cache):
    backbone = Backbone(tiny_llama(tokenizer), tokenizer, "fp32")
    assert not kernels.compile_pays(backbone, 10**9)  # never measured on this machine: no compile
    # both graphs cost 30 s; a training probe step saves 0.25 s, a scoring forward 0.1 s
    record = {"compile_seconds": 30.0, "eager_step": 1.0, "compiled_step": 0.75,
              "infer_compile_seconds": 30.0, "infer_eager_step": 0.4, "infer_compiled_step": 0.3}
    kernels.write_cache(kernels.probe_key(backbone), {"compile": record})
    assert not kernels.compile_pays(backbone, 200 * kernels.PROBE_ROWS)  # 50 s saved < 60 s of compiling
    assert kernels.compile_pays(backbone, 250 * kernels.PROBE_ROWS)  # 62.5 s > 60 s
    assert kernels.compile_pays(backbone, 200 * kernels.PROBE_ROWS, 200 * kernels.PROBE_ROWS)  # 50 + 20 s
    assert not kernels.compile_pays(backbone, 0, 500 * kernels.PROBE_ROWS)  # scoring alone: 50 s < 60 s
    kernels.write_cache(kernels.probe_key(backbone), {"compile": {**record, "compiled_step": 1.2,
                                                                  "infer_compiled_step": 0.5}})
    assert not kernels.compile_pays(backbone, 10**9, 10**9)  # slower compiled: never
    old = {k: record[k] for k in ("compile_seconds", "eager_step", "compiled_step")}
    kernels.write_cache(kernels.probe_key(backbone), {"compile": old})
    assert not kernels.compile_pays(backbone, 10**9)  # a record without the scoring graph's cost: no compile


def test_the_cli_plans_the_examples_a_compile_must_repay():
    from mptune.cli import planned_examples

    cfg = RunConfig()
    teach, distill = 100 * 8 * 3, 150 * 8
    adapt = 40 * 8 * 3 * 3
    scored = 200 * (3 + 3 + 3 * 3)  # data.eval_examples per source (teachers, P*) and per target unit
    assert planned_examples(cfg, "teach") == (teach, 200 * 3) and planned_examples(cfg, "distill") == (distill, 600)
    assert planned_examples(cfg, "run") == (teach + distill + adapt, scored)
    assert planned_examples(cfg, "evaluate") == (0, 200) and planned_examples(cfg, "predict") == (0, 0)
    selected = with_overrides(cfg, {"teach.eval_every": "30"})  # dev scoring at steps 30, 60, 90 and the last
    assert planned_examples(selected, "teach") == (teach, 3 * (200 + 4 * 100))


@pytest.mark.parametrize("seconds,choice", [
    ({"sdpa": 1.0, "sdpa-math": 1.2, "eager": 0.97}, "sdpa"),  # 3% faster: noise, the default stays
    ({"sdpa": 1.0, "sdpa-math": 1.2, "eager": 0.90}, "eager"),  # 10% faster: chosen
    ({"sdpa": None, "sdpa-math": 1.2, "eager": 1.3}, "sdpa-math"),  # the default failed: the fastest valid
    ({"sdpa": None, "sdpa-math": None, "eager": None}, "sdpa"),
])
def test_the_default_kernel_gives_way_only_to_a_clear_winner(seconds, choice):
    assert kernels.fastest(seconds, "sdpa") == choice
