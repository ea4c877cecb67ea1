"""Saving and loading prompts: exact round trips and clear errors for bad files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from mptune.checkpoint import FORMAT, load_prompt, save_prompt
from mptune.data import collate, encode
from mptune.errors import MptuneError
from mptune.prompts import MultitaskPrompt, SoftPrompt
from mptune.tasks import get_task


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _modules(dim: int):
    soft = SoftPrompt(_randn(3, 4, dim))
    mpt = MultitaskPrompt(_randn(4, dim, seed=1), 3, 2, _randn(3, 4, 2, seed=2), _randn(3, 2, dim, seed=3))
    return {"soft": soft, "mpt": mpt}


@pytest.mark.parametrize("kind", ["soft", "mpt"])
def test_round_trip_tensors(tmp_path, kind):
    module = _modules(16)[kind]
    path = save_prompt(module, ["rte", "mrpc", "cola"], tmp_path / "sub" / "prompt.safetensors")
    assert path.is_file() and not path.with_name(path.name + ".tmp").exists()
    loaded, tasks = load_prompt(path, dim=16)
    assert tasks == ["rte", "mrpc", "cola"]
    assert type(loaded) is type(module)
    original, restored = module.state_dict(), loaded.state_dict()
    assert set(original) == set(restored)
    assert all(torch.equal(original[k], restored[k]) for k in original)
    ids = torch.tensor([2, 0, 1, 1])
    assert torch.equal(loaded(ids), module(ids))
    if kind == "mpt":
        assert loaded.rank == 2


def test_key_schema_and_metadata(tmp_path):
    mods = _modules(8)
    save_prompt(mods["soft"], ["a", "b", "c"], tmp_path / "soft.safetensors")
    save_prompt(mods["mpt"], ["a", "b", "c"], tmp_path / "mpt.safetensors")
    assert set(load_file(tmp_path / "soft.safetensors")) == {"prompt"}
    assert set(load_file(tmp_path / "mpt.safetensors")) == {"shared", "u", "v"}
    from safetensors import safe_open

    with safe_open(str(tmp_path / "mpt.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == FORMAT and meta["kind"] == "multitask" and json.loads(meta["tasks"]) == ["a", "b", "c"]


@pytest.mark.parametrize("kind", ["soft", "mpt"])
def test_round_trip_reproduces_backbone_outputs(backbone, data_dir, tmp_path, kind):
    module = _modules(backbone.dim)[kind]
    path = save_prompt(module, ["rte", "mrpc", "cola"], tmp_path / "prompt.safetensors")
    loaded, _ = load_prompt(path, backbone.dim)
    rows = get_task("rte").load(data_dir, "dev", 42)
    items = [it.__class__(it.input_ids, it.target_ids, i % 3) for i, it in
             enumerate(encode(rows, backbone.tokenizer, backbone.is_seq2seq, 128))]
    batch = collate(items, backbone.tokenizer.pad_token_id, backbone.is_seq2seq)
    with torch.no_grad():
        before = backbone.forward(module(batch.task_ids), batch)
        after = backbone.forward(loaded(batch.task_ids), batch)
    assert torch.equal(before.logits, after.logits)
    assert torch.equal(before.hidden, after.hidden)


def test_task_names_must_match_rows(tmp_path):
    with pytest.raises(ValueError):
        save_prompt(_modules(8)["soft"], ["only-one"], tmp_path / "p.safetensors")


def test_width_mismatch(tmp_path):
    path = save_prompt(_modules(16)["mpt"], ["a", "b", "c"], tmp_path / "p.safetensors")
    with pytest.raises(MptuneError, match="d=16") as err:
        load_prompt(path, dim=32)
    assert str(path) in str(err.value)
    load_prompt(path)  # no dim: no check


def test_missing_file(tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(MptuneError, match="does not exist") as err:
        load_prompt(path)
    assert str(path) in str(err.value)


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"this is not a safetensors file at all" * 10)
    with pytest.raises(MptuneError, match="readable") as err:
        load_prompt(path)
    assert str(path) in str(err.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    with pytest.raises(MptuneError) as err:
        load_prompt(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("meta", [None, {"format": "something-else/9", "kind": "soft", "tasks": "[\"a\"]"}])
def test_wrong_format_metadata(tmp_path, meta):
    path = tmp_path / "other.safetensors"
    save_file({"prompt": torch.zeros(1, 2, 3)}, str(path), metadata=meta)
    with pytest.raises(MptuneError, match="not an mptune prompt") as err:
        load_prompt(path)
    assert str(path) in str(err.value)


def test_wrong_keys_for_kind(tmp_path):
    path = tmp_path / "bad.safetensors"
    save_file({"prompt": torch.zeros(1, 2, 3)}, str(path),
              metadata={"format": FORMAT, "kind": "multitask", "tasks": "[\"a\"]"})
    with pytest.raises(MptuneError, match="keys") as err:
        load_prompt(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("meta", [{"format": FORMAT, "kind": "soft"},
                                  {"format": FORMAT, "kind": "soft", "tasks": "{oops"},
                                  {"format": FORMAT, "tasks": "[\"a\"]"}])
def test_incomplete_metadata(tmp_path, meta):
    path = tmp_path / "partial.safetensors"
    save_file({"prompt": torch.zeros(1, 2, 3)}, str(path), metadata=meta)
    with pytest.raises(MptuneError) as err:
        load_prompt(path)
    assert str(path) in str(err.value)


def test_save_overwrites_atomically(tmp_path):
    path = tmp_path / "p.safetensors"
    save_prompt(SoftPrompt(torch.zeros(2, 3)), ["a"], path)
    save_prompt(SoftPrompt(torch.ones(2, 3)), ["b"], path)
    loaded, tasks = load_prompt(path)
    assert tasks == ["b"] and torch.equal(loaded.prompt, torch.ones(1, 2, 3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.safetensors"]
