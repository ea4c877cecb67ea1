"""The frozen backbone: label-position outputs, frozen weights, per-example prompts, rank classification."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

import mptune.evaluate as evaluate_mod
from mptune.backbone import Backbone, precision_candidates
from mptune.config import TrainArgs
from mptune.data import collate, encode, tokenize_targets
from mptune.errors import MptuneError
from mptune.evaluate import choice_scores, evaluate_items
from mptune.losses import distill_kl, hidden_mse, plm_loss
from mptune.prompts import MultitaskPrompt, SoftPrompt
from mptune.stages import train_plm
from mptune.task_data import TaskData
from mptune.tasks import get_task

from conftest import tiny_llama


def _items(backbone: Backbone, data_dir, tasks=("rte", "cola", "mrpc"), per_task=2, split="train"):
    """Encoded examples of several tasks (task id = position in `tasks`), interleaved."""
    out = []
    for task_id, name in enumerate(tasks):
        rows = get_task(name).load(data_dir, split, 42)[:per_task]
        out.append(encode(rows, backbone.tokenizer, backbone.is_seq2seq, 128, task_id))
    return [it for group in zip(*out) for it in group]


def _soft(backbone: Backbone, tasks=3, length=4, seed=0) -> SoftPrompt:
    g = torch.Generator().manual_seed(seed)
    scale = backbone.embeddings.detach().std()
    return SoftPrompt(torch.randn(tasks, length, backbone.dim, generator=g) * scale)


def _mpt(backbone: Backbone, tasks=3, length=4, seed=0) -> MultitaskPrompt:
    g = torch.Generator().manual_seed(seed)
    scale = backbone.embeddings.detach().std()
    shared = torch.randn(length, backbone.dim, generator=g) * scale
    u = 1 + 0.5 * torch.randn(tasks, length, 1, generator=g)
    v = 1 + 0.5 * torch.randn(tasks, 1, backbone.dim, generator=g)
    return MultitaskPrompt(shared, tasks, 1, u, v)


def _batch(backbone: Backbone, items):
    return collate(items, backbone.tokenizer.pad_token_id, backbone.is_seq2seq)


# --- outputs at the label positions ------------------------------------------------------------

def test_outputs_match_the_plain_model_without_prompt(backbone, data_dir):
    """With an empty prompt, Backbone.forward equals the Hugging Face model's own logits."""
    items = _items(backbone, data_dir)
    batch = _batch(backbone, items)
    out = backbone.forward(torch.zeros(len(batch), 0, backbone.dim), batch)
    mask = batch.labels != -100
    with torch.no_grad():
        if backbone.is_seq2seq:
            ref = backbone.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                 labels=batch.labels).logits[mask]
        else:
            logits = backbone.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            rows, cols = mask.nonzero(as_tuple=True)
            ref = logits[rows, cols - 1]  # token t is predicted at t - 1
    n = int(mask.sum())
    assert out.logits.shape == (n, len(backbone.tokenizer)) and out.hidden.shape == (n, backbone.dim)
    assert torch.equal(out.targets, batch.labels[mask])
    assert torch.equal(out.rows, mask.nonzero(as_tuple=True)[0])
    assert torch.allclose(out.logits, ref, atol=1e-5)


def test_label_layout(backbone, data_dir):
    items = _items(backbone, data_dir, per_task=1)
    batch = _batch(backbone, items)
    out = backbone.forward(_soft(backbone)(batch.task_ids), batch)
    per_example = 2 if backbone.is_seq2seq else 1  # word + </s>, or the single word token
    assert out.rows.tolist() == [i for i in range(len(items)) for _ in range(per_example)]
    assert out.logits.dtype == torch.float32 and out.hidden.dtype == torch.float32


def test_sequence_logprobs_sums_per_example(backbone, data_dir):
    items = _items(backbone, data_dir)
    batch = _batch(backbone, items)
    out = backbone.forward(_soft(backbone)(batch.task_ids), batch)
    got = backbone.sequence_logprobs(out, len(batch))
    logp = torch.log_softmax(out.logits, -1)
    for i in range(len(batch)):
        sel = (out.rows == i).nonzero(as_tuple=True)[0]
        manual = sum(logp[j, out.targets[j]] for j in sel.tolist())
        assert torch.allclose(got[i], manual, atol=1e-5)
    assert (got < 0).all()


def _states_by_hand(backbone: Backbone, prompt: torch.Tensor, item) -> torch.Tensor:
    """One example alone, unpadded, through the Hugging Face modules: the final hidden states [m, d] at
    its real tokens (decoder-only: input + target; seq2seq: encoder at the input, decoder at the target)."""
    embed = backbone.model.get_input_embeddings()
    length = prompt.shape[0]
    with torch.no_grad():
        if backbone.is_seq2seq:
            x = torch.cat([prompt, embed(torch.tensor(item.input_ids))])[None]
            enc = backbone.model.get_encoder()(inputs_embeds=x).last_hidden_state
            decoder_input = backbone.model._shift_right(torch.tensor([item.target_ids]))
            dec = backbone.decoder(input_ids=decoder_input, encoder_hidden_states=enc).last_hidden_state
            return torch.cat([enc[0, length:], dec[0]])
        x = torch.cat([prompt, embed(torch.tensor(item.input_ids + item.target_ids))])[None]
        return backbone.body(inputs_embeds=x).last_hidden_state[0, length:]


def test_sequence_states_are_each_examples_own_states(backbone, data_dir):
    """forward(..., states=True): every real token's final hidden state, example by example, as each
    example alone gives them (padding and the prompt positions left out)."""
    items = _items(backbone, data_dir)
    assert len({len(it.input_ids) for it in items}) > 1  # the batch pads
    prompt = _soft(backbone)
    batch = _batch(backbone, items)
    out = backbone.forward(prompt(batch.task_ids), batch, states=True)
    want = torch.cat([_states_by_hand(backbone, prompt.prompt[it.task_id].detach(), it) for it in items])
    assert out.states.shape == (sum(len(it.input_ids) + len(it.target_ids) for it in items), backbone.dim)
    assert torch.allclose(out.states, want, atol=1e-5)
    assert backbone.forward(prompt(batch.task_ids), batch).states is None  # only when asked


def test_sequence_hidden_loss_by_hand(backbone, data_dir):
    """L_hidden over the sequence: the squared differences of every real token's states summed and
    divided by (tokens x d), computed example by example."""
    items = _items(backbone, data_dir)
    teacher, student = _soft(backbone, seed=1), _mpt(backbone, seed=2)
    batch = _batch(backbone, items)
    with torch.no_grad():
        got = hidden_mse(backbone.forward(student(batch.task_ids), batch, states=True).states,
                         backbone.forward(teacher(batch.task_ids), batch, states=True).states)
        students, teachers = student(batch.task_ids), teacher(batch.task_ids)
    squares, count = 0.0, 0
    for i, it in enumerate(items):
        diff = _states_by_hand(backbone, students[i], it) - _states_by_hand(backbone, teachers[i], it)
        squares += float((diff.double() ** 2).sum())
        count += diff.numel()
    assert got.item() == pytest.approx(squares / count, rel=1e-4)


# --- frozen backbone, gradients only in the prompt ---------------------------------------------

def _assert_backbone_untouched(backbone: Backbone):
    backbone.assert_frozen()
    for name, p in backbone.model.named_parameters():
        assert p.grad is None, name
        assert not p.requires_grad, name


@pytest.mark.parametrize("kind", ["soft", "mpt"])
def test_only_prompt_parameters_get_gradients(backbone, data_dir, kind):
    prompt = _soft(backbone) if kind == "soft" else _mpt(backbone)
    batch = _batch(backbone, _items(backbone, data_dir))
    out = backbone.forward(prompt(batch.task_ids), batch)
    loss = plm_loss(out.logits, out.targets)
    loss.backward()
    _assert_backbone_untouched(backbone)
    for name, p in prompt.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    if kind == "soft":  # every task in the batch gets its own gradient
        assert all(prompt.prompt.grad[k].abs().sum() > 0 for k in range(3))


def test_distillation_gradients_reach_the_student_only(backbone, data_dir):
    teacher, student = _soft(backbone, seed=1), _mpt(backbone, seed=2)
    batch = _batch(backbone, _items(backbone, data_dir))
    with torch.no_grad():
        t = backbone.forward(teacher(batch.task_ids), batch)
    s = backbone.forward(student(batch.task_ids), batch)
    loss = plm_loss(s.logits, s.targets) + distill_kl(s.logits, t.logits, 2.0) + hidden_mse(s.hidden, t.hidden)
    loss.backward()
    _assert_backbone_untouched(backbone)
    assert teacher.prompt.grad is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


def test_assert_frozen_catches_trainable_weights(tokenizer):
    bb = Backbone(tiny_llama(tokenizer), tokenizer, precision="fp32")
    bb.assert_frozen()
    assert not bb.model.training
    next(bb.model.parameters()).requires_grad_(True)
    with pytest.raises(AssertionError, match="require grad"):
        bb.assert_frozen()


def test_train_plm_trains_the_prompt_only(backbone, data_dir, tmp_path):
    task = get_task("rte")
    rows = task.load(data_dir, "train", 42)
    train = encode(rows, backbone.tokenizer, backbone.is_seq2seq, 128)
    data = [TaskData(task, train, train[:4], [r.label for r in rows[:4]])]
    prompt = _soft(backbone, tasks=1)
    before = prompt.prompt.detach().clone()
    weights = {n: p.detach().clone() for n, p in backbone.model.named_parameters()}
    stats = train_plm(backbone, prompt, data, TrainArgs(steps=3, batch_size=4, warmup_steps=0), 2, 0,
                      tmp_path, "test")
    _assert_backbone_untouched(backbone)
    assert all(torch.equal(p, weights[n]) for n, p in backbone.model.named_parameters())
    assert not torch.equal(prompt.prompt.detach(), before)
    rows_logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows_logged] == [1, 2, 3]
    assert all(r["loss"] > 0 for r in rows_logged)
    assert stats["train_examples_per_s"] > 0


# --- one prompt per example --------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["soft", "mpt"])
def test_mixed_task_batch_gives_each_example_its_own_prompt(backbone, data_dir, kind):
    prompt = _soft(backbone) if kind == "soft" else _mpt(backbone)
    items = _items(backbone, data_dir, per_task=2)  # task ids 0, 1, 2, 0, 1, 2; lengths differ
    assert len({len(it.input_ids) for it in items}) > 1
    batch = _batch(backbone, items)
    with torch.no_grad():
        out = backbone.forward(prompt(batch.task_ids), batch)
        for i, item in enumerate(items):
            alone = _batch(backbone, [item])
            ref = backbone.forward(prompt(torch.tensor([item.task_id])), alone)
            rows = out.rows == i
            assert torch.allclose(out.logits[rows], ref.logits, atol=1e-5), i
            assert torch.allclose(out.hidden[rows], ref.hidden, atol=1e-5), i
            assert torch.equal(out.targets[rows], ref.targets)
            # the prompt matters: another task's prompt gives different outputs
            other = backbone.forward(prompt(torch.tensor([(item.task_id + 1) % 3])), alone)
            assert not torch.allclose(other.logits, ref.logits, atol=1e-4)


def test_precision_candidates(monkeypatch):
    """An explicit precision is the only candidate; 'auto' times bf16 against fp32 only where the CPU
    has bf16 instructions (elsewhere bf16 is emulated, hundreds of times slower)."""
    import mptune.backbone as backbone_module

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    cpu = torch.device("cpu")
    assert precision_candidates("fp32", cpu) == ["fp32"]
    assert precision_candidates("bf16", cpu) == ["bf16"]
    monkeypatch.setattr(backbone_module, "cpu_has_bf16", lambda: True)
    assert precision_candidates("auto", cpu) == ["fp32", "bf16"]
    monkeypatch.setattr(backbone_module, "cpu_has_bf16", lambda: False)
    assert precision_candidates("auto", cpu) == ["fp32"]


def test_a_backbone_computes_in_a_resolved_precision(tokenizer):
    with pytest.raises(ValueError, match="load_backbone resolves 'auto'"):
        Backbone(tiny_llama(tokenizer), tokenizer, precision="auto")


@pytest.mark.parametrize("launcher, auto", [("bf16", "bf16"), ("BF16", "bf16"), ("no", "fp32")])
def test_auto_precision_follows_accelerate_launch(monkeypatch, launcher, auto):
    """`accelerate launch --mixed_precision X` sets ACCELERATE_MIXED_PRECISION=X; an explicit precision wins."""
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launcher)
    cpu = torch.device("cpu")
    assert precision_candidates("auto", cpu) == [auto]
    assert [precision_candidates(p, cpu) for p in ("fp32", "bf16")] == [["fp32"], ["bf16"]]


@pytest.mark.parametrize("launcher", ["fp16", "fp8"])
def test_unsupported_launcher_precision_is_a_user_error_unless_precision_is_explicit(monkeypatch, launcher):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launcher)
    cpu = torch.device("cpu")
    with pytest.raises(MptuneError, match=f"accelerate's mixed precision '{launcher}' is not supported"):
        precision_candidates("auto", cpu)
    assert precision_candidates("fp32", cpu) == ["fp32"]


def test_load_backbone_passes_the_launcher_precision_through(monkeypatch, saved_models):
    from mptune.models import load_backbone

    for launcher, precision in (("bf16", "bf16"), ("no", "fp32")):
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launcher)
        backbone = load_backbone(str(saved_models["llama"]))
        assert backbone.precision == precision


def test_bf16_autocast_keeps_fp32_outputs_and_prompt(tokenizer, data_dir):
    fp32 = Backbone(tiny_llama(tokenizer), tokenizer, precision="fp32")
    bf16 = Backbone(tiny_llama(tokenizer), tokenizer, precision="bf16")
    prompt = _soft(fp32)
    batch = _batch(fp32, _items(fp32, data_dir))
    ref = fp32.forward(prompt(batch.task_ids), batch)
    out = bf16.forward(prompt(batch.task_ids), batch)
    assert out.logits.dtype == torch.float32 and out.hidden.dtype == torch.float32
    assert torch.allclose(out.logits, ref.logits, atol=0.1)
    plm_loss(out.logits, out.targets).backward()
    assert prompt.prompt.grad is not None and prompt.prompt.grad.dtype == torch.float32
    bf16.assert_frozen()


# --- rank classification -----------------------------------------------------------------------

def _direct_scores(backbone: Backbone, prompt, items, choices) -> torch.Tensor:
    """Every (item, choice) scored on its own: Backbone.forward + sequence_logprobs."""
    choice_ids = tokenize_targets(backbone.tokenizer, choices, backbone.is_seq2seq)
    out = torch.zeros(len(items), len(choices))
    with torch.no_grad():
        for i, it in enumerate(items):
            for c, ids in enumerate(choice_ids):
                batch = _batch(backbone, [replace(it, target_ids=ids)])
                o = backbone.forward(prompt(batch.task_ids), batch)
                out[i, c] = backbone.sequence_logprobs(o, 1)[0]
    return out


@pytest.mark.parametrize("choices", [("yes", "no"), ("yes", "no", "maybe")])
def test_choice_scores_causal_fast_path_equals_general_path(llama_backbone, data_dir, monkeypatch, choices):
    bb = llama_backbone
    prompt = _soft(bb)
    items = _items(bb, data_dir, per_task=3)
    choice_ids = tokenize_targets(bb.tokenizer, choices, False)
    assert all(len(ids) == 1 for ids in choice_ids)  # the single-token fast path applies
    fast = choice_scores(bb, prompt, items, choices, batch_size=4)
    assert fast.shape == (len(items), len(choices))
    direct = _direct_scores(bb, prompt, items, choices)
    assert torch.allclose(fast, direct, atol=1e-5)
    monkeypatch.setattr(evaluate_mod, "_single_token_choices", lambda ids: None)
    general = choice_scores(bb, prompt, items, choices, batch_size=4)
    assert torch.allclose(fast, general, atol=1e-5)


@pytest.mark.parametrize("model", ["llama", "gpt2"])
@pytest.mark.parametrize("choices", [("the cat", "a dog", "yes"), ("the cat sat", "a dog", "yes", "the the")])
def test_choice_scores_causal_multi_token_choices(request, model, data_dir, choices):
    """Prompt + input once with the KV cache, then the choices on copies of it: the same scores as
    scoring every (example, choice) sequence alone, with choices of different lengths."""
    bb = request.getfixturevalue(f"{model}_backbone")
    prompt = _mpt(bb)
    items = _items(bb, data_dir, per_task=2)
    assert evaluate_mod._single_token_choices(tokenize_targets(bb.tokenizer, choices, False)) is None
    got = choice_scores(bb, prompt, items, choices, batch_size=4)
    assert torch.allclose(got, _direct_scores(bb, prompt, items, choices), atol=1e-5)


@pytest.mark.parametrize("choices", [("yes", "no"), ("yes", "no", "maybe"), ("the cat", "a dog")])
def test_choice_scores_seq2seq(t5_backbone, data_dir, choices):
    bb = t5_backbone
    prompt = _soft(bb)
    items = _items(bb, data_dir, per_task=3)
    got = choice_scores(bb, prompt, items, choices, batch_size=4)
    assert got.shape == (len(items), len(choices))
    assert torch.allclose(got, _direct_scores(bb, prompt, items, choices), atol=1e-5)


def test_choice_scores_empty_and_evaluate_items(backbone, data_dir):
    prompt = _soft(backbone, tasks=1)
    assert choice_scores(backbone, prompt, [], ("yes", "no")).shape == (0, 2)
    task = get_task("rte")
    rows = task.load(data_dir, "dev", 42)
    items = encode(rows, backbone.tokenizer, backbone.is_seq2seq, 128)
    metrics = evaluate_items(backbone, prompt, task, items, [r.label for r in rows], batch_size=4)
    assert 0.0 <= metrics["accuracy"] <= 100.0
    scores = choice_scores(backbone, prompt, items, task.choices)
    expected = 100.0 * sum(int(p == r.label) for p, r in zip(scores.argmax(-1).tolist(), rows)) / len(rows)
    assert metrics["accuracy"] == pytest.approx(expected)
