"""mptune -> PEFT: an exported prompt loads with PeftModel.from_pretrained and gives mptune's outputs."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import peft_label_logits
from mptune.backbone import Backbone
from mptune.checkpoint import save_prompt
from mptune.data import collate, encode
from mptune.errors import MptuneError
from mptune.interop import export_peft
from mptune.prompts import MultitaskPrompt
from mptune.tasks import get_task
from test_cli import assert_user_error, cli, flags

peft = pytest.importorskip("peft")


def _mpt(backbone: Backbone, length: int = 4) -> MultitaskPrompt:
    g = torch.Generator().manual_seed(3)
    shared = torch.randn(length, backbone.dim, generator=g) * backbone.embeddings.detach().std()
    u = 1 + 0.3 * torch.randn(2, length, 1, generator=g)
    v = 1 + 0.3 * torch.randn(2, 1, backbone.dim, generator=g)
    return MultitaskPrompt(shared, 2, 1, u, v)


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

    rows = get_task("cola").load(data_dir, "train", 42)[:6]
    batch = collate(encode(rows, tokenizer, backbone.is_seq2seq, 128), tokenizer.pad_token_id, backbone.is_seq2seq)
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


def test_export_command(tmp_path, capsys, llama_dir, data_dir):
    out = tmp_path / "run"
    argv = flags(out, llama_dir, data_dir, "--sources", "rte")
    assert cli(capsys, "teach", *argv)[0] == 0
    prompt = out / "teach" / "rte" / "prompt.safetensors"
    code, stdout, err = cli(capsys, "export", "--prompt", str(prompt), "--peft", str(tmp_path / "a"), *argv)
    assert code == 0, err
    card = (tmp_path / "a" / "README.md").read_text()
    assert "accuracy" in card and str(llama_dir) in card
    code, _, err = cli(capsys, "export", "--prompt", str(prompt), "--peft", str(tmp_path / "b"), "--task", "cola",
                       *argv)
    assert_user_error(code, err, "rte", "cola")
