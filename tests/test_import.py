"""PEFT -> mptune: imported adapters give PEFT's own prompts and outputs, and the stages use them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import peft_label_logits, tiny_llama, tiny_t5
from mptune.checkpoint import load_prompt, save_prompt
from mptune.data import collate, encode
from mptune.errors import MptuneError
from mptune.interop import export_peft, import_peft, import_peft_file
from mptune.prompts import MultitaskPrompt, SoftPrompt
from mptune.tasks import get_task
from test_cli import LENGTH, assert_unit, assert_user_error, cli, flags
from test_export import _mpt

peft = pytest.importorskip("peft")


def peft_adapter(tokenizer, folder: Path, num_tasks: int | None = None, rank: int = 2, seq2seq: bool = False):
    """Save a PEFT adapter built with PEFT's API on a tiny model: prompt tuning, or MPT when num_tasks is given.

    Its tensors are set to random values of the embeddings' scale (PEFT starts u, v near 0), so every
    factor matters. Returns the PEFT model.
    """
    base = tiny_t5(tokenizer) if seq2seq else tiny_llama(tokenizer)
    task_type = "SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM"
    if num_tasks is None:
        config = peft.PromptTuningConfig(task_type=task_type, num_virtual_tokens=LENGTH)
    else:
        config = peft.MultitaskPromptTuningConfig(task_type=task_type, num_virtual_tokens=LENGTH,
                                                  num_tasks=num_tasks, num_ranks=rank)
    model = peft.get_peft_model(base, config)
    g = torch.Generator().manual_seed(5)
    scale = base.get_input_embeddings().weight.std()
    with torch.no_grad():
        for name, param in model.prompt_encoder["default"].named_parameters():
            noise = torch.randn(param.shape, generator=g)
            param.copy_(noise * scale if name == "embedding.weight" else 1 + 0.3 * noise)
    model.save_pretrained(str(folder))
    return model.eval()


def batch_of(tokenizer, data_dir, n: int = 6):
    rows = get_task("cola").load(data_dir, "train", 42)[:n]
    return collate(encode(rows, tokenizer, False, 128), tokenizer.pad_token_id, False)


def test_mpt_adapter_gives_peft_task_prompts_and_outputs(tokenizer, llama_backbone, data_dir, tmp_path):
    model = peft_adapter(tokenizer, tmp_path / "mpt", num_tasks=3, rank=2)
    module = import_peft(tmp_path / "mpt")
    assert isinstance(module, MultitaskPrompt) and (module.num_tasks, module.length, module.rank) == (3, LENGTH, 2)

    encoder = model.prompt_encoder["default"]
    tokens = model.prompt_tokens["default"].unsqueeze(0).expand(3, -1)
    task_ids = torch.arange(3)
    with torch.no_grad():
        theirs = encoder(tokens, task_ids)  # PEFT's MultitaskPromptEmbedding.forward
    torch.testing.assert_close(module(task_ids), theirs, rtol=0, atol=0)

    batch = batch_of(tokenizer, data_dir)
    task_ids = torch.arange(len(batch)) % 3  # a batch mixing the three tasks
    with torch.no_grad():
        ours = llama_backbone.forward(module(task_ids), batch).logits
    reloaded = peft.PeftModel.from_pretrained(tiny_llama(tokenizer), str(tmp_path / "mpt")).eval()
    torch.testing.assert_close(peft_label_logits(reloaded, batch, LENGTH, False, task_ids=task_ids), ours,
                               rtol=1e-5, atol=1e-5)


def test_prompt_tuning_adapter_gives_peft_outputs(tokenizer, llama_backbone, data_dir, tmp_path):
    peft_adapter(tokenizer, tmp_path / "pt")
    module = import_peft(tmp_path / "pt")
    assert isinstance(module, SoftPrompt) and module.prompt.shape == (1, LENGTH, 32)
    batch = batch_of(tokenizer, data_dir)
    with torch.no_grad():
        ours = llama_backbone.forward(module(torch.zeros_like(batch.task_ids)), batch).logits
    reloaded = peft.PeftModel.from_pretrained(tiny_llama(tokenizer), str(tmp_path / "pt")).eval()
    torch.testing.assert_close(peft_label_logits(reloaded, batch, LENGTH, False), ours, rtol=1e-5, atol=1e-5)


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
    peft_adapter(tokenizer, tmp_path / "mpt", num_tasks=2, rank=1)
    out = tmp_path / "run"
    argv = flags(out, llama_dir, data_dir, "--target.methods", "mpt")
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


def test_imported_teachers_are_distilled(tokenizer, tmp_path, capsys, llama_dir, data_dir):
    out = tmp_path / "run"
    for task in ("rte", "mrpc"):
        peft_adapter(tokenizer, tmp_path / task)
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
