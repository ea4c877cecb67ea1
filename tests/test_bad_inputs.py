"""The bad-input corpus: every user error gives one line `mptune: error: ...` naming the problem,
exit status 2, no traceback, and leaves the results of an earlier run untouched.

Each case builds its bad input under `tmp_path` and returns the CLI arguments plus words the
message must contain. All cases run against the same finished run directory (one teacher), whose
files are hashed before and after.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mptune.checkpoint import save_prompt
from mptune.prompts import SoftPrompt
from mptune.resume import STATE_FILE, read_state

from test_cli import assert_user_error, cli, flags

BASE = ("--sources", "rte", "--targets", "cola")


def _data_copy(data_dir: Path, tmp: Path) -> Path:
    target = tmp / "data"
    shutil.copytree(data_dir, target)
    return target


def _rte_train(data: Path) -> Path:
    return data / "glue" / "RTE" / "train.tsv"


def _fresh(case_tmp: Path, model: Path, data: Path, *extra: str) -> list[str]:
    return ["teach", *flags(case_tmp / "fresh", model, data, *BASE, *extra)]


# --- the corpus: name -> builder(tmp, run_dir, model, data) -> (argv, words) -------------------

def bad_tsv_columns(tmp, run, model, data):
    d = _data_copy(data, tmp)
    _rte_train(d).write_text("index\tpremise\thypothesis\tgold\n0\ta\tb\tentailment\n")
    return _fresh(tmp, model, d), [str(_rte_train(d)), "sentence1"]


def empty_data_file(tmp, run, model, data):
    d = _data_copy(data, tmp)
    _rte_train(d).write_text("")
    return _fresh(tmp, model, d), [str(_rte_train(d)), "empty"]


def missing_data_file(tmp, run, model, data):
    d = _data_copy(data, tmp)
    _rte_train(d).unlink()
    return _fresh(tmp, model, d), [str(_rte_train(d)), "does not exist"]


def unknown_label(tmp, run, model, data):
    d = _data_copy(data, tmp)
    _rte_train(d).write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    return _fresh(tmp, model, d), [str(_rte_train(d)), "maybe"]


def too_few_fields(tmp, run, model, data):
    d = _data_copy(data, tmp)
    _rte_train(d).write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tentailment\n")
    return _fresh(tmp, model, d), [str(_rte_train(d)), "line 2"]


def non_utf8_text(tmp, run, model, data):
    d = _data_copy(data, tmp)
    _rte_train(d).write_bytes(b"index\tsentence1\tsentence2\tlabel\n0\ta \xff\xfe b\tc\tentailment\n")
    return _fresh(tmp, model, d), [str(_rte_train(d)), "UTF-8"]


def data_dir_missing(tmp, run, model, data):
    return _fresh(tmp, model, tmp / "nowhere"), [str(tmp / "nowhere")]


def data_dir_is_a_file(tmp, run, model, data):
    f = tmp / "file.txt"
    f.write_text("x")
    return _fresh(tmp, model, f), [str(f)]


def unknown_source_task(tmp, run, model, data):
    return _fresh(tmp, model, data, "--sources", "rte,nosuch"), ["nosuch"]


def unknown_target_task(tmp, run, model, data):
    return _fresh(tmp, model, data, "--targets", "colaa"), ["colaa"]


def zero_shot_count(tmp, run, model, data):
    return _fresh(tmp, model, data, "--targets", "cola@0"), ["cola@0"]


def non_integer_shot_count(tmp, run, model, data):
    return _fresh(tmp, model, data, "--targets", "cola@many"), ["cola@many"]


def duplicate_source(tmp, run, model, data):
    return _fresh(tmp, model, data, "--sources", "rte,rte"), ["rte", "more than once"]


def zero_steps(tmp, run, model, data):
    return _fresh(tmp, model, data, "--teach.steps", "0"), ["teach.", "steps"]


def negative_batch(tmp, run, model, data):
    return _fresh(tmp, model, data, "--adapt.batch_size", "-4"), ["adapt.", "batch_size"]


def negative_lr(tmp, run, model, data):
    return _fresh(tmp, model, data, "--distill.lr", "-0.1"), ["distill.lr must be > 0"]


def negative_lambda(tmp, run, model, data):
    return _fresh(tmp, model, data, "--loss.lam", "-1"), ["loss.", "lam"]


def zero_temperature(tmp, run, model, data):
    return _fresh(tmp, model, data, "--loss.temperature", "0"), ["temperature"]


def kappa_one(tmp, run, model, data):
    return _fresh(tmp, model, data, "--data.kappa", "1"), ["kappa"]


def non_numeric_steps(tmp, run, model, data):
    return _fresh(tmp, model, data, "--teach.steps", "ten"), ["teach.steps", "ten"]


def unknown_method(tmp, run, model, data):
    return _fresh(tmp, model, data, "--compare.methods", "pt,lora"), ["lora"]


def bad_precision(tmp, run, model, data):
    return _fresh(tmp, model, data, "--model.precision", "fp8"), ["precision", "fp8"]


def bad_eval_split(tmp, run, model, data):
    return _fresh(tmp, model, data, "--eval_split", "train"), ["eval_split"]


def yaml_unknown_key(tmp, run, model, data):
    cfg = tmp / "c.yaml"
    cfg.write_text("teach:\n  stepz: 3\n")
    return _fresh(tmp, model, data, "--config", str(cfg)), ["teach.stepz"]


def yaml_wrong_type(tmp, run, model, data):
    cfg = tmp / "c.yaml"
    cfg.write_text("teach:\n  steps: three\n")
    return _fresh(tmp, model, data, "--config", str(cfg)), ["teach.steps", "three"]


def yaml_malformed(tmp, run, model, data):
    cfg = tmp / "c.yaml"
    cfg.write_text("teach: [steps: 3\n")
    return _fresh(tmp, model, data, "--config", str(cfg)), [str(cfg), "YAML"]


def yaml_missing(tmp, run, model, data):
    return _fresh(tmp, model, data, "--config", str(tmp / "none.yaml")), [str(tmp / "none.yaml")]


def model_missing(tmp, run, model, data):
    return _fresh(tmp, model, data, "--model.name", str(tmp / "no-model")), [str(tmp / "no-model"), "does not exist"]


def init_prompt_wrong_width(tmp, run, model, data):
    path = save_prompt(SoftPrompt(torch.zeros(4, 7)), ["x"], tmp / "p.safetensors")
    return _fresh(tmp, model, data, "--prompt.init", str(path)), [str(path), "d=7"]


def init_prompt_wrong_length(tmp, run, model, data):
    path = save_prompt(SoftPrompt(torch.zeros(9, 32)), ["x"], tmp / "p.safetensors")
    return _fresh(tmp, model, data, "--prompt.init", str(path)), [str(path), "length 9"]


def init_prompt_foreign_format(tmp, run, model, data):
    path = tmp / "adapter_model.safetensors"
    save_file({"prompt_embeddings": torch.zeros(4, 32)}, str(path))
    return _fresh(tmp, model, data, "--prompt.init", str(path)), [str(path), "not an mptune prompt"]


def init_prompt_garbage(tmp, run, model, data):
    path = tmp / "junk.safetensors"
    path.write_bytes(b"\x00garbage" * 10)
    return _fresh(tmp, model, data, "--prompt.init", str(path)), [str(path)]


def evaluate_prompt_for_other_task(tmp, run, model, data):
    prompt = run / "teach" / "rte" / "prompt.safetensors"
    return (["evaluate", "--prompt", str(prompt), "--task", "cola", *flags(run, model, data, *BASE)],
            ["rte", "cola"])


def evaluate_missing_prompt(tmp, run, model, data):
    return (["evaluate", "--prompt", str(tmp / "none.safetensors"), "--task", "rte", *flags(run, model, data, *BASE)],
            [str(tmp / "none.safetensors")])


def different_config_same_dir(tmp, run, model, data):
    return ["teach", *flags(run, model, data, *BASE, "--seed", "5")], [str(run), "different config"]


def distill_without_teachers(tmp, run, model, data):
    return ["distill", *flags(tmp / "fresh", model, data, *BASE)], ["no teacher", "rte"]


def out_dir_under_a_file(tmp, run, model, data):
    blocker = tmp / "blocker"
    blocker.write_text("x")
    return ["teach", *flags(blocker / "run", model, data, *BASE)], [str(blocker / "run")]


def _read_only_folder(tmp: Path) -> Path:
    """A real folder nobody may write in: chmod 0o555. Root ignores permission bits, so as root the
    folder is /sys instead: sysfs refuses new files and folders to everyone, root included."""
    if os.geteuid() == 0:
        return Path("/sys")
    folder = tmp / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


def out_dir_in_read_only_folder(tmp, run, model, data):
    out = _read_only_folder(tmp) / "mptune-run"
    return ["teach", *flags(out, model, data, *BASE)], [str(out), "cannot write"]


def out_dir_read_only(tmp, run, model, data):
    out = _read_only_folder(tmp)
    return ["teach", *flags(out, model, data, *BASE)], [str(out / ".lock"), "Permission denied"]


def zero_grad_accum(tmp, run, model, data):
    return _fresh(tmp, model, data, "--distill.grad_accum", "0"), ["distill.", "grad_accum"]


def custom_task_unknown_metric(tmp, run, model, data):
    spec = tmp / "t.yaml"
    spec.write_text("name: mine\ntrain: t.csv\ntext_columns: [text]\nlabel_column: label\n"
                    "label_words: {a: x, b: y}\nmetric: bleurt\n")
    return _fresh(tmp, model, data, "--data.custom_tasks", str(spec)), ["bleurt"]


def _long_rte(data: Path, tmp: Path, words: int) -> Path:
    """A copy of the data whose first RTE training premise is `words` words long."""
    d = _data_copy(data, tmp)
    lines = _rte_train(d).read_text().splitlines()
    index, _, hypothesis, label = lines[1].split("\t")
    lines[1] = "\t".join([index, " ".join(["cat"] * words), hypothesis, label])
    _rte_train(d).write_text("\n".join(lines) + "\n")
    return d


def over_long_input_beyond_model_positions(tmp, run, model, data):
    d = _long_rte(data, tmp, 600)  # kept whole by max_input_tokens 1000, but the tiny Llama has 512 positions
    return (_fresh(tmp, model, d, "--model.max_input_tokens", "1000"),
            ["task rte", "more than the 512", "max_input_tokens"])


def max_input_tokens_too_small(tmp, run, model, data):
    return _fresh(tmp, model, data, "--model.max_input_tokens", "8"), ["max_input_tokens must be >= 32"]


def launcher_fp16(tmp, run, model, data):
    return (_fresh(tmp, model, data, "--model.precision", "auto"),  # an explicit bf16 or fp32 would win
            ["mixed precision 'fp16' is not supported", "--model.precision"])


def resume_without_a_run(tmp, run, model, data):
    return [*_fresh(tmp, model, data), "--resume"], ["nothing to resume", str(tmp / "fresh")]


CASE_ENV = {"launcher_fp16": {"ACCELERATE_MIXED_PRECISION": "fp16"}}
"""Environment variables a case runs with (`accelerate launch --mixed_precision fp16` sets this one)."""

CORPUS = [bad_tsv_columns, empty_data_file, missing_data_file, unknown_label, too_few_fields, non_utf8_text,
          data_dir_missing, data_dir_is_a_file, unknown_source_task, unknown_target_task, zero_shot_count,
          non_integer_shot_count, duplicate_source, zero_steps, negative_batch, negative_lr, negative_lambda,
          zero_temperature, kappa_one, non_numeric_steps, unknown_method, bad_precision, bad_eval_split,
          yaml_unknown_key, yaml_wrong_type, yaml_malformed, yaml_missing, model_missing,
          init_prompt_wrong_width, init_prompt_wrong_length, init_prompt_foreign_format, init_prompt_garbage,
          evaluate_prompt_for_other_task, evaluate_missing_prompt, different_config_same_dir,
          distill_without_teachers, out_dir_under_a_file, out_dir_in_read_only_folder, out_dir_read_only,
          zero_grad_accum, custom_task_unknown_metric, over_long_input_beyond_model_positions,
          max_input_tokens_too_small, launcher_fp16, resume_without_a_run]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, saved_models, data_dir):
    """A finished `teach` run whose files must survive every bad input."""
    from mptune.cli import main

    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(["teach", *flags(run, saved_models["llama"], data_dir, *BASE)]) == 0
    return run


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize("case", CORPUS, ids=lambda f: f.__name__)
def test_bad_input(case, tmp_path, capsys, finished_run, saved_models, data_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for key, value in CASE_ENV.get(case.__name__, {}).items():
        monkeypatch.setenv(key, value)
    before = _hashes(finished_run)
    argv, words = case(tmp_path, finished_run, saved_models["llama"], data_dir)
    code, _, err = cli(capsys, *argv)
    assert_user_error(code, err, *words, one_line=False)
    print(f"CORPUS {case.__name__}: {err.strip().splitlines()[-1]}")  # `pytest -rP` lists every message
    assert _hashes(finished_run) == before
    fresh = tmp_path / "fresh"
    assert not list(fresh.rglob("*.safetensors")) if fresh.exists() else True


def test_corpus_size():
    assert len(CORPUS) >= 30


def test_over_long_input_is_truncated_not_refused(tmp_path, capsys, saved_models, data_dir):
    """A 2000-word input trains: it keeps its head and last tokens within model.max_input_tokens."""
    d = _long_rte(data_dir, tmp_path, 2000)
    code, _, err = cli(capsys, *_fresh(tmp_path, saved_models["llama"], d))
    assert code == 0, err
    assert (tmp_path / "fresh" / "teach" / "rte" / "metrics.json").is_file()


def test_over_long_input_on_gpt2_is_refused_before_training(gpt2_backbone, data_dir, tmp_path):
    """GPT-2's learned positions end at n_positions: past them its forward fails with an IndexError."""
    from mptune.config import DataArgs, ModelArgs, PromptArgs, RunConfig
    from mptune.errors import MptuneError
    from mptune.task_data import load_tasks

    d = _long_rte(data_dir, tmp_path, 600)
    cfg = RunConfig(model=ModelArgs(max_input_tokens=1000), prompt=PromptArgs(length=4), data=DataArgs(data_dir=str(d)))
    with pytest.raises(MptuneError, match="task rte: its longest example needs 6.. positions .* more than the 512"):
        load_tasks(cfg, gpt2_backbone, ["rte"], "dev")
    fits = RunConfig(model=ModelArgs(max_input_tokens=500), prompt=PromptArgs(length=4), data=DataArgs(data_dir=str(d)))
    assert load_tasks(fits, gpt2_backbone, ["rte"], "dev")[0].train


def test_nan_loss_names_stage_step_and_task_and_keeps_the_last_checkpoint(tmp_path, capsys, saved_models, data_dir):
    out = tmp_path / "nan"
    argv = flags(out, saved_models["llama"], data_dir, *BASE, "--teach.lr", "1e30", "--teach.steps", "6",
                 "--teach.checkpoint_every", "1")  # an infinite lr is refused as a setting; 1e30 overflows
    code, _, err = cli(capsys, "teach", *argv)
    assert_user_error(code, err, "teach rte: loss is nan at step", "on a batch of rte", one_line=False)
    step = int(err.split("at step ")[1].split()[0])
    assert not (out / "teach" / "rte" / "metrics.json").exists()
    assert read_state(out / "teach" / "rte" / STATE_FILE)["step"] == step - 1  # the last good checkpoint is kept


def test_full_disk_while_saving(tmp_path, capsys, saved_models, data_dir, monkeypatch):
    import mptune.checkpoint as checkpoint

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.tmp"))

    monkeypatch.setattr(checkpoint, "save_file", no_space)
    out = tmp_path / "full"
    code, _, err = cli(capsys, "teach", *flags(out, saved_models["llama"], data_dir, *BASE))
    assert_user_error(code, err, "No space left on device", one_line=False)
    assert not (out / "teach" / "rte" / "metrics.json").exists()
    monkeypatch.undo()
    code, _, err = cli(capsys, "teach", *flags(out, saved_models["llama"], data_dir, *BASE))
    assert code == 0, err  # the same command succeeds once there is space again


def test_spot_source_must_be_a_source(tmp_path, capsys, saved_models, data_dir):
    out = tmp_path / "spot"
    argv = flags(out, saved_models["llama"], data_dir, *BASE, "--compare.methods", "spot",
                 "--compare.spot_source", "mrpc")
    assert cli(capsys, "teach", *argv)[0] == 0
    code, _, err = cli(capsys, "adapt", *argv)
    assert_user_error(code, err, "mrpc", "not one of the sources", one_line=False)
