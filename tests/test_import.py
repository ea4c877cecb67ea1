"""PEFT -> mptune: imported adapters give PEFT's own prompts and outputs, and the stages use them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mptune.backbone import Backbone
from mptune.checkpoint import load_prompt, save_prompt
from mptune.errors import MptuneError
from mptune.interop import export_peft, import_peft, import_peft_file
from mptune.prompts import MultitaskPrompt, SoftPrompt, target_from_source

from conftest import peft_label_logits, tiny_llama, tiny_t5
from test_cli import LENGTH, assert_unit, assert_user_error, cli, flags
from test_export import _batch, _mpt

peft = pytest.importorskip("peft")

PEFT_STEPS = 6
"""Training steps of the PEFT adapters the tests import."""


def peft_adapter(tokenizer, folder: Path, data_dir: Path | None = None, num_tasks: int | None = None,
                 rank: int = 2, seq2seq: bool = False, task: str = "cola"):
    """Train a PEFT adapter with PEFT itself on a tiny model and save it: prompt tuning, or MPT when num_tasks is given.

    PEFT's own initialisation, forward and loss on `task`'s examples (MPT: with task_ids, the batch
    mixing all tasks), then PEFT's save_pretrained. Without data_dir it is saved untrained. Returns
    the PEFT model.
    """
    base = tiny_t5(tokenizer) if seq2seq else tiny_llama(tokenizer)
    task_type = "SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM"
    if num_tasks is None:
        config = peft.PromptTuningConfig(task_type=task_type, num_virtual_tokens=LENGTH)
    else:
        config = peft.MultitaskPromptTuningConfig(task_type=task_type, num_virtual_tokens=LENGTH,
                                                  num_tasks=num_tasks, num_ranks=rank)
    torch.manual_seed(5)
    model = peft.get_peft_model(base, config)
    if data_dir is not None:
        train_with_peft(model, _batch(Backbone(base, tokenizer), data_dir, 8, task), num_tasks)
    model.save_pretrained(str(folder))
    return model.eval()


def train_with_peft(model, batch, num_tasks: int | None, steps: int = PEFT_STEPS) -> None:
    """AdamW steps of PEFT's own training forward and loss on one batch (task ids 0, 1, ... cycled).

    Every trainable value (of P*, u, v; or of the prompt) must leave its initial value.
    """
    extra = {"task_ids": torch.arange(len(batch)) % num_tasks} if num_tasks else {}
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    start = {n: p.detach().clone() for n, p in trainable.items()}
    opt = torch.optim.AdamW(trainable.values(), lr=0.05)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels, **extra).loss
        loss.backward()
        opt.step()
    assert all((trainable[n] != start[n]).all() for n in trainable), "PEFT training left a value unchanged"


def test_mpt_adapter_gives_peft_task_prompts_and_outputs(tokenizer, llama_backbone, data_dir, tmp_path):
    model = peft_adapter(tokenizer, tmp_path / "mpt", data_dir, num_tasks=3, rank=2)
    module = import_peft(tmp_path / "mpt")
    assert isinstance(module, MultitaskPrompt) and (module.num_tasks, module.length, module.rank) == (3, LENGTH, 2)

    encoder = model.prompt_encoder["default"]
    tokens = model.prompt_tokens["default"].unsqueeze(0).expand(3, -1)
    task_ids = torch.arange(3)
    with torch.no_grad():
        theirs = encoder(tokens, task_ids)  # PEFT's MultitaskPromptEmbedding.forward
    torch.testing.assert_close(module(task_ids), theirs, rtol=0, atol=0)

    batch = _batch(llama_backbone, data_dir)
    task_ids = torch.arange(len(batch)) % 3  # a batch mixing the three tasks
    with torch.no_grad():
        ours = llama_backbone.forward(module(task_ids), batch).logits
    reloaded = peft.PeftModel.from_pretrained(tiny_llama(tokenizer), str(tmp_path / "mpt")).eval()
    torch.testing.assert_close(peft_label_logits(reloaded, batch, LENGTH, False, task_ids=task_ids), ours,
                               rtol=1e-5, atol=1e-5)


def test_prompt_tuning_adapter_gives_peft_outputs(tokenizer, llama_backbone, data_dir, tmp_path):
    peft_adapter(tokenizer, tmp_path / "pt", data_dir)
    module = import_peft(tmp_path / "pt")
    assert isinstance(module, SoftPrompt) and module.prompt.shape == (1, LENGTH, 32)
    batch = _batch(llama_backbone, data_dir)
    with torch.no_grad():
        ours = llama_backbone.forward(module(torch.zeros_like(batch.task_ids)), batch).logits
    reloaded = peft.PeftModel.from_pretrained(tiny_llama(tokenizer), str(tmp_path / "pt")).eval()
    torch.testing.assert_close(peft_label_logits(reloaded, batch, LENGTH, False), ours, rtol=1e-5, atol=1e-5)


def test_imported_source_starts_a_target_as_peft_does(tokenizer, llama_backbone, data_dir, tmp_path):
    """PEFT's MPT target init from a source (AVERAGE_SOURCE_TASKS) = mptune's MPT target from the imported source."""
    peft_adapter(tokenizer, tmp_path / "source", data_dir, num_tasks=3, rank=2)
    ours = target_from_source(import_peft(tmp_path / "source"), 1, "mean")
    config = peft.MultitaskPromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=LENGTH, num_tasks=1, num_ranks=2,
        prompt_tuning_init=peft.MultitaskPromptTuningInit.AVERAGE_SOURCE_TASKS,
        prompt_tuning_init_state_dict_path=str(tmp_path / "source" / "adapter_model.safetensors"))
    target = peft.get_peft_model(tiny_llama(tokenizer), config).eval()
    task_ids = torch.zeros(1, dtype=torch.long)
    with torch.no_grad():
        theirs = target.prompt_encoder["default"](target.prompt_tokens["default"].unsqueeze(0), task_ids)
    torch.testing.assert_close(ours(task_ids), theirs, rtol=0, atol=0)

    batch = _batch(llama_backbone, data_dir)
    ids = torch.zeros_like(batch.task_ids)
    with torch.no_grad():
        logits = llama_backbone.forward(ours(ids), batch).logits
    torch.testing.assert_close(peft_label_logits(target, batch, LENGTH, False, task_ids=ids), logits,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("row", [0, 1])
def test_export_then_import_gives_the_same_prompt(llama_backbone, tmp_path, row):
    prompt = _mpt(llama_backbone)
    path = save_prompt(prompt, ["rte", "cola"], tmp_path / "prompt.safetensors")
    task = ["rte", "cola"][row]
    export_peft(llama_backbone, path, task, tmp_path / "adapter")
    out = import_peft_file(tmp_path / "adapter", [task], tmp_path / "back.safetensors")
    module, tasks = load_prompt(out, llama_backbone.dim)
    assert tasks == [task] and isinstance(module, SoftPrompt)
    assert torch.equal(module.prompt[0], prompt.task_prompts()[row].detach())
    assert not (tmp_path / "metrics.json").exists()  # not a run unit's prompt.safetensors


def test_import_refusals(tokenizer, tmp_path):
    peft_adapter(tokenizer, tmp_path / "t5", num_tasks=2, seq2seq=True)  # PEFT's seq2seq default: encoder and decoder
    with pytest.raises(MptuneError, match="encoder and the decoder"):
        import_peft(tmp_path / "t5")
    peft_adapter(tokenizer, tmp_path / "mpt", num_tasks=2)
    with pytest.raises(MptuneError, match="2 task prompt"):
        import_peft_file(tmp_path / "mpt", ["rte"], tmp_path / "p.safetensors")
    (tmp_path / "taken.safetensors").write_text("mine")
    with pytest.raises(MptuneError, match="exists"):
        import_peft_file(tmp_path / "mpt", ["rte", "mrpc"], tmp_path / "taken.safetensors")
    assert (tmp_path / "taken.safetensors").read_text() == "mine"
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (tmp_path / "lora" / "adapter_model.safetensors").write_bytes((tmp_path / "mpt" / "adapter_model.safetensors")
                                                                  .read_bytes())
    with pytest.raises(MptuneError, match="LORA adapter"):
        import_peft(tmp_path / "lora")
    with pytest.raises(MptuneError, match="not a PEFT adapter folder"):
        import_peft(tmp_path)


def test_imported_distilled_prompt_starts_mpt_targets(tokenizer, tmp_path, capsys, llama_dir, data_dir):
    peft_adapter(tokenizer, tmp_path / "mpt", data_dir, num_tasks=2, rank=1)
    out = tmp_path / "run"
    argv = flags(out, llama_dir, data_dir, "--compare.methods", "mpt")
    distilled = out / "distill" / "prompt.safetensors"
    code, stdout, err = cli(capsys, "import", "--peft", str(tmp_path / "mpt"), "--out", str(distilled),
                            "--tasks", "rte,mrpc")
    assert code == 0, err
    saved = distilled.read_bytes()
    assert json.loads((out / "distill" / "metrics.json").read_text())["imported_from"] == str(tmp_path / "mpt")

    code, _, err = cli(capsys, "adapt", *argv)
    assert code == 0, err
    for target in ("cola", "wnli"):
        assert_unit(out / "adapt" / "mpt" / target)
    code, _, err = cli(capsys, "run", *argv)  # teaches, keeps the imported P*, writes the table
    assert code == 0, err
    assert distilled.read_bytes() == saved and not (out / "distill" / "log.jsonl").exists()
    assert "| cola |" in (out / "results.md").read_text()

    code, _, err = cli(capsys, "import", "--peft", str(tmp_path / "mpt"), "--out", str(distilled), "--tasks", "a,b")
    assert_user_error(code, err, "exists")

    code, _, err = cli(capsys, "export", "--prompt", str(distilled), "--peft", str(tmp_path / "back"), "--task", "mrpc",
                       *argv)  # the imported P* o u v^T back to PEFT: its card says where it came from
    assert code == 0, err
    card = (tmp_path / "back" / "README.md").read_text()
    assert f"imported from the PEFT adapter `{tmp_path / 'mpt'}`" in card
    assert "- Budget: not recorded (trained outside mptune)" in card
    assert "- Trainable parameters: 200 (" in card  # P* l x d and u, v of 2 tasks: 4 * 32 + 2 * (4 + 32)


def test_imported_teachers_are_distilled(tokenizer, tmp_path, capsys, llama_dir, data_dir):
    out = tmp_path / "run"
    for task in ("rte", "mrpc"):
        peft_adapter(tokenizer, tmp_path / task, data_dir, task=task)
        code, _, err = cli(capsys, "import", "--peft", str(tmp_path / task), "--tasks", task,
                           "--out", str(out / "teach" / task / "prompt.safetensors"))
        assert code == 0, err
    saved = {t: (out / "teach" / t / "prompt.safetensors").read_bytes() for t in ("rte", "mrpc")}
    code, _, err = cli(capsys, "distill", *flags(out, llama_dir, data_dir))
    assert code == 0, err
    assert_unit(out / "distill")
    code, _, err = cli(capsys, "teach", *flags(out, llama_dir, data_dir))
    assert code == 0, err
    assert {t: (out / "teach" / t / "prompt.safetensors").read_bytes() for t in saved} == saved
    module, tasks = load_prompt(out / "teach" / "rte" / "prompt.safetensors", 32)
    assert tasks == ["rte"] and torch.equal(module.prompt[0], import_peft(tmp_path / "rte").prompt[0])


def test_import_command_errors(tmp_path, capsys):
    code, _, err = cli(capsys, "import", "--peft", str(tmp_path), "--out", str(tmp_path / "p.safetensors"),
                       "--tasks", "rte")
    assert_user_error(code, err, "not a PEFT adapter folder")
