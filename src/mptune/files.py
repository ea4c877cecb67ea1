"""Reading and writing the files mptune owns: one reading path, one atomic writer.

Reading. Every file mptune reads (config YAML, custom-task YAML, a run's config.yaml, metrics.json,
predictions.json, results.json, results.md, log.jsonl, a PEFT adapter_config.json) goes through
`read_text` / `read_json` / `read_yaml`. Any damage (missing, not a file, unreadable, not UTF-8,
empty, truncated or invalid JSON/YAML, valid JSON/YAML of the wrong type) becomes one
`MptuneError` that names the file, what was wrong and what was expected:

    RUN/teach/rte/metrics.json: is not valid JSON (line 1 column 6: Expecting value; truncated or
    damaged); expected a unit's metrics (...); delete it to redo the unit

`what` says what the file should hold; `fix` (optional) says what the user can do about it
(delete the file to redo a unit, choose another --out_dir, ...).

Writing. Every file mptune writes goes through `atomic_write`: the bytes go to a temporary file in
the same folder, are flushed and fsynced, then renamed over the target (and the folder is synced,
so the rename survives a crash). A kill at any moment leaves either the old file or the new one,
never half of one; the temporary file is removed when writing fails. `write_text`, `write_json`,
`write_yaml` are the text forms; binary formats written by a library (safetensors, matplotlib)
pass a function that writes the temporary path.

Decisions
- The checks here are generic (encoding, syntax, top-level type); what a mapping must contain is
  checked by the module owning the concept (`config` for settings, `rundir` for a run, ...).
- Type names in messages are JSON/YAML words: a mapping, a list, text, a number.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import yaml

from mptune.errors import MptuneError

TYPE_WORDS = {dict: "a mapping", list: "a list", str: "text", int: "a whole number", float: "a number",
              bool: "true or false", type(None): "nothing (null)"}


def type_word(value_or_type) -> str:
    """'a mapping', 'a list', 'text', ... for a value or a type."""
    tp = value_or_type if isinstance(value_or_type, type) else type(value_or_type)
    return TYPE_WORDS.get(tp, tp.__name__)


def _fail(path: Path, problem: str, what: str, fix: str = "") -> MptuneError:
    return MptuneError(f"{path}: {problem}; expected {what}" + (f"; {fix}" if fix else ""))


def read_bytes(path: str | Path, what: str, fix: str = "") -> bytes:
    """The bytes of a file; MptuneError naming it when it is missing, not a file or unreadable."""
    path = Path(path)
    if not path.exists():
        raise _fail(path, "does not exist", what, fix)
    if not path.is_file():
        raise _fail(path, "is not a file", what, fix)
    try:
        return path.read_bytes()
    except OSError as err:
        raise _fail(path, f"cannot be read ({err.strerror or err})", what, fix) from None


def read_text(path: str | Path, what: str, fix: str = "") -> str:
    """The UTF-8 text of a file (a leading byte-order mark is dropped)."""
    data = read_bytes(path, what, fix)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise _fail(Path(path), f"is not UTF-8 text (byte {err.start}: {err.reason})", what, fix) from None


def check_type(value: Any, expect: type | tuple[type, ...], path: Path, what: str, fix: str = "") -> Any:
    """`value` when it has the expected top-level type, else MptuneError naming the file."""
    expected = expect if isinstance(expect, tuple) else (expect,)
    if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
        raise _fail(Path(path), f"holds {type_word(value)}", what, fix)
    return value


def read_json(path: str | Path, what: str, expect: type | tuple[type, ...] = dict, fix: str = "") -> Any:
    """The JSON value of a file, of type `expect` (an empty or cut-short file is an error)."""
    text = read_text(path, what, fix)
    if not text.strip():
        raise _fail(Path(path), "is empty", what, fix)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise _fail(Path(path), f"is not valid JSON (line {err.lineno} column {err.colno}: {err.msg}; "
                                f"truncated or damaged)", what, fix) from None
    return check_type(value, expect, Path(path), what, fix)


def read_yaml(path: str | Path, what: str, expect: type | tuple[type, ...] = dict, fix: str = "",
              loader: type = yaml.SafeLoader, empty: Any = ...) -> Any:
    """The YAML value of a file, of type `expect`. empty: the value of an empty file (default: an error)."""
    text = read_text(path, what, fix)
    try:
        value = yaml.load(text, Loader=loader)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f"line {where.line + 1}: " if where is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise _fail(Path(path), f"is not valid YAML ({at}{problem})", what, fix) from None
    if value is None:  # an empty file, or only comments
        if empty is not ...:
            return empty
        raise _fail(Path(path), "is empty", what, fix)
    return check_type(value, expect, Path(path), what, fix)


# --- writing -----------------------------------------------------------------------------------

def _sync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Make `path` by `write(tmp)` (a temporary path in the same folder), fsync, rename; returns path.

    A failure or interruption (Ctrl-C, SIGTERM) removes the temporary file and leaves `path` as it was.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # unique: writers may race
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # the mode a plain open() gives, not mkstemp's 0600
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, data: Any) -> Path:
    """JSON (indented) written atomically."""
    return write_text(path, json.dumps(data, indent=2))


def write_yaml(path: str | Path, data: Any) -> Path:
    return write_text(path, yaml.safe_dump(data, sort_keys=False))
