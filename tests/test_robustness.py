"""The robustness corpus, generated over mechanisms: every file mptune reads damaged in every way,
every setting checked before anything is written, silent successes refused, writes that lose nothing.

The contract is the bad-input corpus's (tests/test_bad_inputs.py): one line `mptune: error: ...`
naming the problem (here: the damaged file), exit status 2, no traceback, and the files of the run
involved byte-identical before and after. Cases are generated: READERS x DAMAGES, SETTINGS x the
command, so a reader or a damage kind added to a table is tested everywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mptune.checkpoint import FORMAT, PROMPT_FILE
from mptune.config import CompareArgs, DataArgs, RunConfig
from mptune.errors import MptuneError

from test_cli import assert_user_error, cli, flags

BASE = ("--sources", "rte", "--targets", "cola")
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(autouse=True)
def own_registry(monkeypatch):
    """Custom tasks registered by a case stay in that case."""
    from mptune.tasks import registry

    monkeypatch.setattr(registry, "TASKS", dict(registry.TASKS))


# --- a finished run, copied for each case ------------------------------------------------------

@pytest.fixture(scope="module")
def finished(tmp_path_factory, saved_models, data_dir) -> Path:
    """A finished `teach` run (one teacher, rte) with a results table, copied by each case."""
    from mptune.cli import main

    run = tmp_path_factory.mktemp("robust") / "run"
    assert main(["teach", *flags(run, saved_models["llama"], data_dir, *BASE)]) == 0
    (run / "results.json").write_text(json.dumps({"targets": {"cola": {"metric": "matthews", "pt": 1.0}},
                                                  "seconds": {"total": 1.0}}))
    (run / "results.md").write_text("| target | PT |\n|---|---|\n| cola | 1.0 |\n")
    return run


def hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def peft_folder(folder: Path, weights: torch.Tensor | None = None) -> Path:
    """A PEFT prompt-tuning adapter for the tiny Llama (4 virtual tokens, d = 32)."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = torch.randn(4, 32) if weights is None else weights
    save_file({"prompt_embeddings": weights}, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": 4, "token_dim": 32,
        "num_transformer_submodules": 1}))
    return folder


def mptune_prompt(path: Path, prompt: torch.Tensor, tasks=("rte",)) -> Path:
    """An mptune prompt file written without save_prompt's checks (as another tool might write one)."""
    save_file({"prompt": prompt}, str(path), metadata={"format": FORMAT, "kind": "soft", "tasks": json.dumps(tasks)})
    return path


CUSTOM_SPEC = "name: mine\ntrain: train.csv\ntext_columns: [text]\nlabel_column: label\nlabel_words: {a: x, b: y}\n"


def custom_task(folder: Path, spec: str = CUSTOM_SPEC, header: str = "text,label") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"the cat sees the {w} today,{'ab'[i % 2]}\n" for i, w in enumerate(["ball", "tree"] * 6))
    (folder / "train.csv").write_text(header + "\n" + rows)
    (folder / "task.yaml").write_text(spec)
    return folder / "task.yaml"


# --- every reader --------------------------------------------------------------------------------
# name -> (format, setup(tmp, run, model, data) -> (file to damage, argv)); `run` is a fresh copy of
# the finished run, whose files must not change.

def _fresh(tmp, model, data, *extra):
    return ["teach", *flags(tmp / "fresh", model, data, *BASE, *extra)]


def _rerun(tmp, run, model, data):
    return ["teach", *flags(run, model, data, *BASE)]


def config_yaml(tmp, run, model, data):
    path = tmp / "settings.yaml"
    path.write_text("teach:\n  steps: 3\n  batch_size: 4\nseed: 0\n")
    return path, _fresh(tmp, model, data, "--config", str(path))


def custom_task_yaml(tmp, run, model, data):
    path = custom_task(tmp / "custom")
    return path, _fresh(tmp, model, data, "--data.custom_tasks", str(path))


def run_config_on_rerun(tmp, run, model, data):
    return run / "config.yaml", _rerun(tmp, run, model, data)


def run_config_in_report(tmp, run, model, data):
    return run / "config.yaml", ["report", str(run)]


def metrics_on_rerun(tmp, run, model, data):
    return run / "teach" / "rte" / "metrics.json", _rerun(tmp, run, model, data)


def metrics_in_report(tmp, run, model, data):
    return run / "teach" / "rte" / "metrics.json", ["report", str(run)]


def run_config_on_export(tmp, run, model, data):
    prompt = run / "teach" / "rte" / PROMPT_FILE
    return run / "config.yaml", ["export", "--prompt", str(prompt), "--peft", str(tmp / "out"),
                                 *flags(run, model, data, *BASE)]


def metrics_on_export(tmp, run, model, data):
    prompt = run / "teach" / "rte" / PROMPT_FILE
    return run / "teach" / "rte" / "metrics.json", ["export", "--prompt", str(prompt), "--peft", str(tmp / "out"),
                                                   *flags(run, model, data, *BASE)]


def predictions_on_rerun(tmp, run, model, data):
    return run / "teach" / "rte" / "predictions.json", _rerun(tmp, run, model, data)


def results_in_report(tmp, run, model, data):
    return run / "results.json", ["report", str(run)]


def results_md_in_report(tmp, run, model, data):
    return run / "results.md", ["report", str(run)]


def log_in_report(tmp, run, model, data):
    return run / "teach" / "rte" / "log.jsonl", ["report", str(run)]


def adapter_config_on_import(tmp, run, model, data):
    folder = peft_folder(tmp / "adapter")
    return folder / "adapter_config.json", ["import", "--peft", str(folder), "--out", str(tmp / "p.safetensors"),
                                            "--tasks", "rte"]


def adapter_weights_on_import(tmp, run, model, data):
    folder = peft_folder(tmp / "adapter")
    return folder / "adapter_model.safetensors", ["import", "--peft", str(folder), "--out",
                                                  str(tmp / "p.safetensors"), "--tasks", "rte"]


def prompt_on_evaluate(tmp, run, model, data):
    path = run / "teach" / "rte" / PROMPT_FILE
    return path, ["evaluate", "--prompt", str(path), "--task", "rte", *flags(run, model, data, *BASE)]


def prompt_on_rerun(tmp, run, model, data):
    return run / "teach" / "rte" / PROMPT_FILE, _rerun(tmp, run, model, data)


def prompt_as_init(tmp, run, model, data):
    path = shutil.copy(run / "teach" / "rte" / PROMPT_FILE, tmp / "init.safetensors")
    return Path(path), _fresh(tmp, model, data, "--prompt.init", str(path))


READERS = {  # name -> (format, setup)
    "config_yaml": ("yaml", config_yaml),
    "custom_task_yaml": ("yaml", custom_task_yaml),
    "run_config_on_rerun": ("yaml", run_config_on_rerun),
    "run_config_in_report": ("yaml", run_config_in_report),
    "run_config_on_export": ("yaml", run_config_on_export),
    "metrics_on_rerun": ("json", metrics_on_rerun),
    "metrics_in_report": ("json", metrics_in_report),
    "metrics_on_export": ("json", metrics_on_export),
    "predictions_on_rerun": ("json", predictions_on_rerun),
    "results_in_report": ("json", results_in_report),
    "results_md_in_report": ("text", results_md_in_report),
    "log_in_report": ("jsonl", log_in_report),
    "adapter_config_on_import": ("json", adapter_config_on_import),
    "adapter_weights_on_import": ("binary", adapter_weights_on_import),
    "prompt_on_evaluate": ("binary", prompt_on_evaluate),
    "prompt_as_init": ("binary", prompt_as_init),
    "prompt_on_rerun": ("binary", prompt_on_rerun),
}

WRONG_TYPE = {"yaml": b"- a list\n- where a mapping belongs\n", "json": b"[1, 2, 3]\n",
              "jsonl": b'[1, 2]\n{"step": 2, "loss": 1.0}\n'}

DAMAGES = {  # name -> (formats it applies to, damage(original bytes, format) -> bytes)
    "non_utf8": (("yaml", "json", "jsonl", "text"), lambda b, f: b"\xff\xfe" + b),
    "empty": (("yaml", "json", "binary"), lambda b, f: b""),
    "truncated": (("yaml", "json", "binary"), lambda b, f: b[:len(b) // 2]),
    "wrong_type": (("yaml", "json", "jsonl"), lambda b, f: WRONG_TYPE[f]),
    "garbage": (("binary",), lambda b, f: b"\x00\x01 not safetensors " * 8),
}
NOT_DAMAGE = {("config_yaml", "empty"): "an empty config file means every default (test_config)"}
"""(reader, damage) pairs that are valid input by design."""

CASES = [(r, d) for r, (fmt, _) in READERS.items() for d, (formats, _) in DAMAGES.items()
         if fmt in formats and (r, d) not in NOT_DAMAGE]


@pytest.mark.parametrize("reader,damage", CASES, ids=[f"{r}-{d}" for r, d in CASES])
def test_damaged_file(reader, damage, tmp_path, capsys, finished, saved_models, data_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = Path(shutil.copytree(finished, tmp_path / "run"))
    fmt, setup = READERS[reader]
    path, argv = setup(tmp_path, run, saved_models["llama"], data_dir)
    path.write_bytes(DAMAGES[damage][1](path.read_bytes(), fmt))
    before = hashes(run)
    code, _, err = cli(capsys, *argv)
    assert_user_error(code, err, str(path))
    print(f"ROBUST {reader}-{damage}: {err.strip()}")
    assert hashes(run) == before
    assert not (tmp_path / "fresh" / "config.yaml").exists()


def test_every_damage_reaches_every_reader():
    assert len(CASES) >= 45 and {d for _, d in CASES} == set(DAMAGES)
    assert all(any(r == reader for r, _ in CASES) for reader in READERS)


# --- values: refused before anything is written, and the fix is not refused --------------------

SETTINGS = {  # name -> (flags, words of the message, flags of the corrected command or None)
    "seed_beyond_2_63": (("--seed", str(2**63)), ["seed", "2^63"], ()),
    "negative_seed": (("--seed", "-1"), ["seed"], ()),
    "split_seed_beyond_2_63": (("--data.split_seed", str(2**64)), ["split_seed"], ()),
    "compare_seed_beyond_2_63": (("--compare.seeds", f"1,{2**63}"), ["seeds"], ()),
    "unknown_device": (("--model.device", "tpu"), ["device", "tpu"], ()),
    "unavailable_device": (("--model.device", "cuda:7"), ["cuda:7"], ()),
    "infinite_temperature": (("--loss.temperature", "inf"), ["temperature", "finite"], ()),
    "infinite_weight_decay": (("--teach.weight_decay", "inf"), ["weight_decay", "finite"], ()),
    "nan_lambda": (("--loss.lam", "nan"), ["lam", "finite"], ()),
    "infinite_lr": (("--teach.lr", "inf"), ["lr", "finite"], ()),
    "infinite_clip_norm": (("--adapt.clip_norm", "inf"), ["clip_norm"], ()),
    "rank_beyond_prompt_length": (("--prompt.rank", "100000"), ["rank", "length (4)"], ()),
    "empty_out_dir": (("--out_dir", ""), ["out_dir"], None),
    "same_task_twice_in_other_case": (("--sources", "rte,RTE"), ["rte", "RTE", "more than once"], ()),
    "missing_model": (("--model.name", "{tmp}/no-model"), ["no-model"], ()),
    "prompt_too_long_for_the_model": (("--prompt.length", "600"), ["512"], ()),
    "init_of_another_width": (("--prompt.init", "{tmp}/wide.safetensors"), ["d=7"], ()),
    "init_of_another_length": (("--prompt.init", "{tmp}/long.safetensors"), ["length 9"], ()),
}
"""Where the device is available (a CUDA machine), its cases are not refused."""


@pytest.mark.parametrize("name", list(SETTINGS))
def test_bad_setting_writes_nothing_and_its_fix_runs(name, tmp_path, capsys, saved_models, data_dir):
    if name == "unavailable_device" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    bad, words, fixed = SETTINGS[name]
    mptune_prompt(tmp_path / "wide.safetensors", torch.zeros(1, 4, 7))
    mptune_prompt(tmp_path / "long.safetensors", torch.zeros(1, 9, 32))
    model, out = saved_models["llama"], tmp_path / "fresh"
    argv = ["teach", *flags(out, model, data_dir, *BASE), *(f.format(tmp=tmp_path) for f in bad)]
    code, _, err = cli(capsys, *argv)
    assert_user_error(code, err, *words, one_line=False)
    message = err.strip().splitlines()[-1]
    assert not (out / "config.yaml").exists() and not list(out.rglob("*.safetensors")) if out.exists() else True
    if fixed is not None:  # the corrected command (the same run without the bad setting) is not refused
        code, _, err = cli(capsys, "teach", *flags(out, model, data_dir, *BASE, *fixed))
        assert code == 0, err
    print(f"ROBUST {name}: {message}")  # `pytest -rP` lists every message


def test_different_config_names_each_setting_and_compares_paths_as_paths(tmp_path, capsys, finished, saved_models,
                                                                          data_dir, monkeypatch):
    run = Path(shutil.copytree(finished, tmp_path / "run"))
    model = saved_models["llama"]
    before = hashes(run)
    code, _, err = cli(capsys, "teach", *flags(run, model, data_dir, *BASE, "--seed", "5", "--teach.lr", "0.1"))
    assert_user_error(code, err, "seed: saved 0, now 5", "teach.lr: saved 0.3, now 0.1", f"--config {run}/config.yaml")
    monkeypatch.chdir(tmp_path)  # the same paths written relatively, with trailing slashes
    spelled = {str(run): "run/", str(model): os.path.relpath(model) + "/", str(data_dir): str(data_dir) + "/"}
    same = [spelled.get(a, a) for a in flags(run, model, data_dir, *BASE)]
    assert "run/" in same and os.path.relpath(model) + "/" in same
    code, _, err = cli(capsys, "teach", *same)
    assert code == 0, err
    assert hashes(run) == before


# --- silent successes that must fail ----------------------------------------------------------

def nonfinite_prompt_evaluated(tmp, run, model, data):
    path = mptune_prompt(tmp / "nan.safetensors", torch.full((1, 4, 32), float("nan")))
    return ["evaluate", "--prompt", str(path), "--task", "rte", *flags(run, model, data, *BASE)], [str(path), "NaN"]


def nonfinite_prompt_exported(tmp, run, model, data):
    path = mptune_prompt(tmp / "inf.safetensors", torch.full((1, 4, 32), float("inf")))
    return (["export", "--prompt", str(path), "--peft", str(tmp / "peft"), *flags(run, model, data, *BASE)],
            [str(path), "infinite"])


def nonfinite_prompt_as_init(tmp, run, model, data):
    path = mptune_prompt(tmp / "nan.safetensors", torch.full((1, 4, 32), float("nan")))
    return _fresh(tmp, model, data, "--prompt.init", str(path)), [str(path), "NaN"]


def nonfinite_adapter_imported(tmp, run, model, data):
    folder = peft_folder(tmp / "adapter", torch.full((4, 32), float("nan")))
    return ["import", "--peft", str(folder), "--out", str(tmp / "p.safetensors"), "--tasks", "rte"], ["NaN"]


def csv_duplicated_header_column(tmp, run, model, data):
    spec = custom_task(tmp / "custom", header="text,text,label")
    return (_fresh(tmp, model, data, "--data.custom_tasks", str(spec), "--sources", "mine"),
            [str(tmp / "custom" / "train.csv"), "more than once"])


def custom_task_defined_twice(tmp, run, model, data):
    first = custom_task(tmp / "a")
    second = custom_task(tmp / "b")
    return (_fresh(tmp, model, data, "--data.custom_tasks", f"{first},{second}"),
            ["'mine'", "defined twice", str(first), str(second)])


def yaml_scalar_for_a_list(tmp, run, model, data):
    path = tmp / "c.yaml"
    path.write_text("sources: rte\n")
    return _fresh(tmp, model, data, "--config", str(path)), [str(path), "sources", "list"]


def run_config_scalar_for_a_list(tmp, run, model, data):
    text = (run / "config.yaml").read_text().replace("sources:\n- rte\n", "sources: rte\n")
    (run / "config.yaml").write_text(text)
    return ["report", str(run)], [str(run / "config.yaml"), "sources is text"]


def import_into_another_tasks_unit(tmp, run, model, data):
    folder = peft_folder(tmp / "adapter")
    for name in (PROMPT_FILE, "metrics.json"):
        (run / "teach" / "rte" / name).unlink()
    return (["import", "--peft", str(folder), "--out", str(run / "teach" / "rte" / PROMPT_FILE), "--tasks", "cola"],
            ["teacher unit of rte", "not for cola", "--tasks rte"])


def import_into_a_held_run(tmp, run, model, data):
    from mptune.rundir import RunDir

    folder = peft_folder(tmp / "adapter")
    for name in (PROMPT_FILE, "metrics.json"):
        (run / "teach" / "rte" / name).unlink()
    holder = RunDir(run)
    holder.lock()  # as a training process holds it (flock: another open file conflicts, in any process)
    import_into_a_held_run.holder = holder  # released by the test
    return (["import", "--peft", str(folder), "--out", str(run / "teach" / "rte" / PROMPT_FILE), "--tasks", "rte"],
            ["another mptune process", str(run)])


SILENT = [nonfinite_prompt_evaluated, nonfinite_prompt_exported, nonfinite_prompt_as_init, nonfinite_adapter_imported,
          csv_duplicated_header_column, custom_task_defined_twice, yaml_scalar_for_a_list,
          run_config_scalar_for_a_list, import_into_another_tasks_unit, import_into_a_held_run]


@pytest.mark.parametrize("case", SILENT, ids=lambda f: f.__name__)
def test_silent_success_is_refused(case, tmp_path, capsys, finished, saved_models, data_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = Path(shutil.copytree(finished, tmp_path / "run"))
    argv, words = case(tmp_path, run, saved_models["llama"], data_dir)
    before = hashes(run)
    try:
        code, _, err = cli(capsys, *argv)
    finally:
        if getattr(case, "holder", None) is not None:
            case.holder.close()
            case.holder = None
    assert_user_error(code, err, *words, one_line=False)
    print(f"ROBUST {case.__name__}: {err.strip().splitlines()[-1]}")
    assert hashes(run) == before
    assert not (tmp_path / "fresh" / "config.yaml").exists()


def test_saving_a_nonfinite_prompt_is_refused(tmp_path):
    from mptune.checkpoint import save_prompt
    from mptune.prompts import SoftPrompt

    with pytest.raises(MptuneError, match="NaN or infinite"):
        save_prompt(SoftPrompt(torch.full((4, 8), float("nan"))), ["rte"], tmp_path / "p.safetensors")
    assert list(tmp_path.iterdir()) == []


# --- writes that lose nothing ------------------------------------------------------------------

def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    from mptune.files import atomic_write, write_json

    path = write_json(tmp_path / "metrics.json", {"a": 1})
    old = path.read_bytes()

    def half_then_killed(tmp: Path) -> None:
        tmp.write_text('{"a": ')
        raise KeyboardInterrupt  # Ctrl-C or SIGTERM (cli.Terminated) in the middle of the write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_killed)
    assert path.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


WRITERS_ALLOWED = {
    "files.py": "the atomic writer itself",
    "resume.py": "state.pt: its own temp + fsync + two renames (keeps state.prev.pt), see resume's docstring",
    "logs.py": "log.jsonl: appended and flushed per step after an atomic rewrite of the kept lines",
    "rundir.py": "the .lock file, opened for flock, never written",
}
READERS_ALLOWED = {
    "files.py": "the reading path itself",
    "kernels.py": "the kernel cache: damage counts as empty (the probe runs again); /proc/cpuinfo",
    "backbone.py": "/proc/cpuinfo",
    "checkpoint.py": "the task list inside a safetensors header (its errors name the prompt file)",
    "glue.py": "data files: read_tsv names the file, line and column",
    "superglue.py": "data files: read_jsonl names the file and line",
    "generation.py": "data files (SQuAD-style JSON): read_json names the file and line",
    "logs.py": "log.jsonl: its text is read through files, then parsed line by line (read_log)",
    "resume.py": "state.pt: header and checksum checked before anything is unpickled",
    "serve.py": "HTTP request bodies, not files: bad JSON is a 400 with one message",
}


def _sources_using(patterns: tuple[str, ...]) -> set[str]:
    found = set()
    for path in (SRC / "mptune").rglob("*.py"):
        text = path.read_text()
        if any(p in text for p in patterns):
            found.add(path.name)
    return found


def test_every_writer_and_reader_goes_through_files():
    """No module writes or parses a file itself, except the listed ones (each with its reason)."""
    writers = _sources_using((".write_text(", ".write_bytes(", "json.dump(", "yaml.safe_dump(", '"w")', '"wb")'))
    assert writers - set(WRITERS_ALLOWED) == set()
    for path in (SRC / "mptune").rglob("*.py"):  # library writers (safetensors, matplotlib) write the temporary file
        for line in path.read_text().splitlines():
            if "save_file(" in line or "savefig(" in line:
                assert "atomic_write(" in line and "tmp" in line, f"{path.name}: {line.strip()}"
    readers = _sources_using((".read_text(", ".read_bytes(", "json.load(", "json.loads(", "yaml.safe_load(",
                              "yaml.load("))
    assert readers - set(READERS_ALLOWED) - {"custom.py"} == set()  # custom.py passes its YAML loader to files


def test_finished_run_is_not_rewritten_by_a_rerun(tmp_path, capsys, saved_models, data_dir):
    out = tmp_path / "run"
    argv = flags(out, saved_models["llama"], data_dir, *BASE, "--compare.methods", "pt")
    code, _, err = cli(capsys, "run", *argv)
    assert code == 0, err
    before = hashes(out)
    for extra in ((), ("--resume",)):
        code, stdout, err = cli(capsys, "run", *argv, *extra)
        assert code == 0, err
        assert "| cola |" in stdout
        assert hashes(out) == before  # results.json keeps its timings


def _log_steps(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]


def test_sigterm_is_a_clean_resumable_stop_and_the_log_has_no_hole(tmp_path, saved_models, data_dir):
    out = tmp_path / "run"
    argv = flags(out, saved_models["llama"], data_dir, *BASE, "--teach.steps", "60", "--teach.checkpoint_every", "7")
    env = {**os.environ, "PYTHONPATH": str(SRC), "MPTUNE_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mptune", "teach", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    log = out / "teach" / "rte" / "log.jsonl"
    for _ in range(1200):  # until a few checkpoints and steps after the last one are logged (or the run ends)
        if proc.poll() is not None or (log.exists() and len(log.read_text().splitlines()) >= 17):
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "mptune: terminated (SIGTERM); a rerun resumes from the last step checkpoint"
    steps = _log_steps(log)
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 17  # flushed per step: nothing lost
    assert not list(out.rglob("*.tmp"))
    code = subprocess.run([sys.executable, "-m", "mptune", "teach", *argv, "--resume"], env=env, capture_output=True,
                          text=True)
    assert code.returncode == 0, code.stderr
    assert _log_steps(log) == list(range(1, 61))  # resumed at the checkpoint: no hole, no step twice


def test_report_names_the_steps_a_log_misses(tmp_path, capsys, finished):
    run = Path(shutil.copytree(finished, tmp_path / "run"))
    log = run / "teach" / "rte" / "log.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join([lines[0], lines[2]]) + "\n")  # step 2 lost (a log of an earlier version)
    code, _, err = cli(capsys, "report", str(run))
    assert code == 0, err
    assert "log.jsonl misses steps 2" in (run / "report" / "report.md").read_text()


@pytest.mark.parametrize("build,key", [
    (lambda: RunConfig(sources="rte"), "sources"),
    (lambda: DataArgs(custom_tasks="task.yaml"), "custom_tasks"),
    (lambda: CompareArgs(seeds=3), "seeds"),
])
def test_python_settings_refuse_a_scalar_for_a_list(build, key):
    with pytest.raises(MptuneError, match=f"{key} must be a list"):
        build()
