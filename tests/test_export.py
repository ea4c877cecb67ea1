"""mptune -> PEFT: an exported prompt loads with PeftModel.from_pretrained and gives mptune's outputs."""

from __future__ import annotations

import json
import re

import pytest
import torch

from mptune.backbone import Backbone
from mptune.card import NOT_RECORDED
from mptune.checkpoint import load_prompt, save_prompt
from mptune.data import collate, encode
from mptune.errors import MptuneError
from mptune.interop import export_peft
from mptune.models import load_backbone
from mptune.prompts import MultitaskPrompt, mpt_target_parameters
from mptune.tasks import get_task

from conftest import peft_label_logits
from test_cli import LENGTH, assert_user_error, cli, flags

peft = pytest.importorskip("peft")


def _mpt(backbone: Backbone, length: int = 4) -> MultitaskPrompt:
    g = torch.Generator().manual_seed(3)
    shared = torch.randn(length, backbone.dim, generator=g) * backbone.embeddings.detach().std()
    u = 1 + 0.3 * torch.randn(2, length, 1, generator=g)
    v = 1 + 0.3 * torch.randn(2, 1, backbone.dim, generator=g)
    return MultitaskPrompt(shared, 2, 1, u, v)


def _batch(backbone: Backbone, data_dir, n: int = 6, task: str = "cola"):
    """The first n training examples of a task as one batch."""
    rows = get_task(task).load(data_dir, "train", 42)[:n]
    return collate(encode(rows, backbone.tokenizer, backbone.is_seq2seq, 128), backbone.tokenizer.pad_token_id,
                   backbone.is_seq2seq)


def load_as_the_card_says(folder):
    """The PEFT model built by the python block of an exported adapter's README.md, run as written."""
    card = (folder / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1).replace("<this folder>", str(folder))
    names: dict = {}
    exec(code, names)
    return names["model"].eval()


@pytest.mark.parametrize("family", ["llama", "t5", "gpt2"])
def test_peft_adapter_reproduces_mptune_outputs(family, tokenizer, data_dir, tmp_path, request):
    import conftest

    backbone = Backbone(getattr(conftest, f"tiny_{family}")(tokenizer), tokenizer, precision="fp32", name=family)
    prompt = _mpt(backbone)
    path = save_prompt(prompt, ["rte", "cola"], tmp_path / "prompt.safetensors")
    out = export_peft(backbone, path, "cola", tmp_path / "adapter")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["num_virtual_tokens"] == 4
    assert "cola" in (out / "README.md").read_text()

    batch = _batch(backbone, data_dir)
    ids = torch.ones_like(batch.task_ids)  # cola is row 1
    ours = backbone.forward(prompt(ids), batch).logits

    base = getattr(conftest, f"tiny_{family}")(tokenizer)
    model = peft.PeftModel.from_pretrained(base, str(out)).eval()
    torch.testing.assert_close(peft_label_logits(model, batch, 4, backbone.is_seq2seq), ours, rtol=1e-5, atol=1e-5)


def test_export_refuses_a_non_empty_folder(llama_backbone, tmp_path):
    path = save_prompt(_mpt(llama_backbone), ["rte", "cola"], tmp_path / "p.safetensors")
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "keep.txt").write_text("mine")
    with pytest.raises(MptuneError, match="not empty"):
        export_peft(llama_backbone, path, "cola", tmp_path / "adapter")
    assert (tmp_path / "adapter" / "keep.txt").read_text() == "mine"


def test_exported_trained_target_and_its_card(tmp_path, capsys, llama_dir, data_dir):
    """A trained MPT target exported by the CLI: the card's code loads it in PEFT with mptune's logits; the card
    names every element of the issue."""
    out = tmp_path / "run"
    argv = flags(out, llama_dir, data_dir, "--compare.methods", "mpt", "--adapt.lr", "0.25")
    assert cli(capsys, "run", *argv)[0] == 0
    unit = out / "adapt" / "mpt" / "cola"
    code, stdout, err = cli(capsys, "export", "--prompt", str(unit / "prompt.safetensors"),
                            "--peft", str(tmp_path / "a"), *argv)
    assert code == 0, err

    backbone = load_backbone(str(llama_dir), "fp32")
    prompt, tasks = load_prompt(unit / "prompt.safetensors", backbone.dim)
    assert isinstance(prompt, MultitaskPrompt) and tasks == ["cola"]
    batch = _batch(backbone, data_dir)
    with torch.no_grad():
        ours = backbone.forward(prompt(torch.zeros_like(batch.task_ids)), batch).logits
    model = load_as_the_card_says(tmp_path / "a")
    torch.testing.assert_close(peft_label_logits(model, batch, LENGTH, False), ours, rtol=1e-5, atol=1e-5)

    card = (tmp_path / "a" / "README.md").read_text()
    metrics = json.loads((unit / "metrics.json").read_text())
    expected = {
        "base model": f"- Base model: `{llama_dir}`",
        "tasks": "- Tasks: trained on cola; the run's sources: rte, mrpc; targets: cola, wnli",
        "method": "MPT: P* o u v^T adapted from the prompt distilled from rte, mrpc",
        "data": f"- Data: `{data_dir}`, split seed 42; `cola` splits: {get_task('cola').splits_doc}",
        "budget": "- Budget: 3 steps of 4 examples, AdamW lr 0.25 (u, v: 0.03), 0 warm-up steps, seed 0",
        "scores": f"- Scores on the `test` split (at most 200 examples): matthews "
                  f"{metrics['scores']['cola']['matthews']:.1f}",
        "parameters": f"- Trainable parameters: {metrics['parameters']:,} (",
        "loading": "PeftModel.from_pretrained(",  # run just above
    }
    for element, text in expected.items():
        assert text in card, element
    assert metrics["parameters"] == mpt_target_parameters(LENGTH, backbone.dim, 1, 1)

    code, _, err = cli(capsys, "export", "--prompt", str(unit / "prompt.safetensors"), "--peft", str(tmp_path / "b"),
                       "--task", "rte", *argv)
    assert_user_error(code, err, "cola", "rte")
    other = tmp_path / "other-model"  # a prompt exported for another model than its run's: refused before loading
    code, _, err = cli(capsys, "export", "--prompt", str(unit / "prompt.safetensors"), "--peft", str(tmp_path / "c"),
                       *argv, "--model.name", str(other))
    assert_user_error(code, err, f"trained on model {llama_dir}", f"not {other}", "config.yaml")
    assert not (tmp_path / "c").exists()


def test_card_of_a_few_shot_seed_unit_and_of_a_loose_file(tmp_path, capsys, llama_dir, data_dir, llama_backbone):
    """compare.seeds units: the card names the unit's seed and its k-shot sample; a file outside a run: not recorded."""
    out = tmp_path / "run"
    argv = flags(out, llama_dir, data_dir, "--sources", "rte", "--targets", "cola@4", "--compare.methods", "pt",
                 "--compare.seeds", "3")
    assert cli(capsys, "run", *argv)[0] == 0
    unit = out / "adapt" / "pt" / "seed3" / "cola@4"
    export_peft(llama_backbone, unit / "prompt.safetensors", "cola@4", tmp_path / "a")
    card = (tmp_path / "a" / "README.md").read_text()
    assert "split seed 42, k-shot sample seed 45; `cola@4` splits: train: 4 per class" in card
    assert "0 warm-up steps, seed 3" in card and "PT: prompt tuning from a fresh prompt (init vocab)" in card

    loose = tmp_path / "loose.safetensors"
    loose.write_bytes((unit / "prompt.safetensors").read_bytes())
    export_peft(llama_backbone, loose, "cola@4", tmp_path / "b")
    card = (tmp_path / "b" / "README.md").read_text()
    for element in ("Tasks", "Data", "Budget", "Scores", "Trainable parameters"):
        assert f"- {element}: {NOT_RECORDED}" in card
    assert "- Base model: `tiny-llama`" in card and "PeftModel.from_pretrained(" in card
