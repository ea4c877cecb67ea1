"""The Hugging Face Hub copy of every built-in task, used when its official files are absent.

Design decisions
- Local official files come first. A task reads the hub copy only when NONE of its official
  files is under the data directory and the hub is allowed: $MPTUNE_OFFLINE, $HF_HUB_OFFLINE and
  $HF_DATASETS_OFFLINE are all unset or false ('1', 'true', 'yes', 'on' mean offline, as in
  huggingface_hub). A partial local tree is never topped up from the hub: the missing file
  raises the usual `MptuneError`, so one run never mixes two copies of a task.
- `HUB_IDS` names each task's canonical hub repository and config (the maintained ids, not the
  legacy aliases 'glue'/'super_glue').
- `REVISIONS` pins each repository to a commit, so a hub copy cannot change under a result. The
  hashes come from public code, not from the hub itself (written without network access): each
  is pinned by other projects or appears in `datasets` cache paths
  (`<name>/<config>/0.0.0/<commit>/`), as the comment next to it says. tuetschek/e2e_nlg is the
  exception: its default branch holds a loading script, which `datasets` 4 no longer runs, so it
  reads the hub's parquet conversion branch `refs/convert/parquet` (a branch, not a commit).
  $MPTUNE_HUB_REVISIONS overrides the table without code (`hub_revision`), e.g.
  'nyu-mll/glue=main,aps/super_glue=<commit>'.
- Hub splits play the part of the official files ('train' for train.tsv, 'validation' for
  dev.tsv or val.jsonl, ...), so `tasks/splits.py` cuts them exactly like the local files.
- Each task maps a hub row back to its official row format and then reuses its local row
  parser, so a hub example is byte-identical to the one read from the official file.
- `datasets` is an optional dependency: it is imported inside `load_from_hub`, and its absence
  is an `MptuneError` with the install hint.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any, Callable, Collection, Iterable

from mptune.errors import MptuneError
from mptune.tasks.base import Example

Row = dict[str, Any]
Loader = Callable[[], list[Example]]
RowReader = Callable[[Row, str, int], list[Example]]
"""(hub row, where it came from, 1-based row number) -> examples."""

OFFLINE_VARS = ("MPTUNE_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
TRUE = {"1", "true", "yes", "on"}

GLUE = "nyu-mll/glue"
SUPERGLUE = "aps/super_glue"
HUB_IDS: dict[str, tuple[str, str | None]] = {
    **{name: (GLUE, name) for name in ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")},
    **{name: (SUPERGLUE, name) for name in ("boolq", "cb", "copa", "multirc", "wic")},
    "rte_sg": (SUPERGLUE, "rte"),
    "wsc": (SUPERGLUE, "wsc.fixed"),
    "winogrande": ("allenai/winogrande", "winogrande_xl"),
    "yelp_polarity": ("fancyzhx/yelp_polarity", None),
    "scitail": ("allenai/scitail", "tsv_format"),
    "paws": ("google-research-datasets/paws", "labeled_final"),
    "squad": ("rajpurkar/squad", "plain_text"),
    **{name: ("mrqa-workshop/mrqa", None) for name in ("nq", "hotpotqa", "searchqa", "newsqa")},  # one table
    "record": (SUPERGLUE, "record"),
    "e2e": ("tuetschek/e2e_nlg", None),  # the original release; GEM/e2e_nlg holds the cleaned data
    # webnlg: none. webnlg-challenge/web_nlg (webnlg_challenge_2017) and GEM/web_nlg cut and version
    # the data differently from the 2017 challenge JSON files, so their rows do not map one to one.
}
"""Task name -> (hub dataset id, config) of its canonical hub copy."""

REVISIONS: dict[str, str] = {
    # seen in datasets cache paths glue/<config>/0.0.0/<commit>/ and hf://datasets/nyu-mll/glue@<commit>/mrpc/...
    GLUE: "bcdcba79d07bc864c1c254ccfcedcce55bcc9a8c",
    # seen in cache paths super_glue/rte/0.0.0/<commit>/ and pinned for boolq, multirc, wic by several projects
    SUPERGLUE: "3de24cf8022e94f4ee4b9d55a6f539891524d646",
    # seen in cache paths winogrande/winogrande_xl/0.0.0/<commit>/ and inspect_evals' pinned revision
    "allenai/winogrande": "01e74176c63542e6b0bcb004dcdea22d94fb67b5",
    # pinned by several projects that record its 560,000 train and 38,000 test rows
    "fancyzhx/yelp_polarity": "bbf1c97a1f0cf005e5aded43839fd814654a1557",
    # pinned by several projects, with the file tsv_format/train-00000-of-00001.parquet
    "allenai/scitail": "0cc4353235b289165dfde1c7c5d1be983f99ce44",
    # pinned with .../paws/resolve/<commit>/labeled_final URLs and 49,401 train rows
    "google-research-datasets/paws": "161ece9501cf0a11f3e48bd356eaa82de46d6a09",
    # seen in cache paths squad/plain_text/0.0.0/<commit>/ and datasets--rajpurkar--squad/snapshots/<commit>
    "rajpurkar/squad": "7b6d24c440a36b6815f21b70d25016731768db1f",
    # pinned with plain_text/train-0000i-of-00009.parquet, 516,819 train rows (104,071 NaturalQuestionsShort)
    "mrqa-workshop/mrqa": "f3178d9888471dfb2b67c93de14f0ddf499a8d9f",
    # the default branch is a loading script; this branch holds its parquet conversion (not a commit)
    "tuetschek/e2e_nlg": "refs/convert/parquet",
}
"""Hub dataset id -> the revision (commit, or branch where noted) read; see the module docstring."""
REVISIONS_ENV = "MPTUNE_HUB_REVISIONS"


def hub_allowed() -> bool:
    """False when any of `OFFLINE_VARS` is set to a true value."""
    return not any(os.environ.get(var, "").strip().lower() in TRUE for var in OFFLINE_VARS)


def hub_revision(dataset_id: str) -> str | None:
    """The revision of `dataset_id` to read: from $MPTUNE_HUB_REVISIONS ('id=rev,...'), else `REVISIONS`."""
    overrides = {}
    for entry in filter(None, (e.strip() for e in os.environ.get(REVISIONS_ENV, "").split(","))):
        name, eq, rev = (part.strip() for part in entry.partition("="))
        if not (eq and name and rev):
            raise MptuneError(f"${REVISIONS_ENV} entry {entry!r} is not 'dataset_id=revision'.")
        overrides[name] = rev
    return overrides.get(dataset_id, REVISIONS.get(dataset_id))


def describe(task: str) -> str:
    """'id (config) @revision' of the task's hub copy, or 'none' (`mptune tasks`)."""
    if task not in HUB_IDS:
        return "none"
    dataset_id, config = HUB_IDS[task]
    text = dataset_id + (f" ({config})" if config else "")
    rev = hub_revision(dataset_id)
    return f"{text} @{rev[:12] if len(rev) == 40 else rev}" if rev else text


def use_hub(task: str, local_files: Iterable[Path]) -> bool:
    """True when `task` has a hub copy, the hub is allowed and none of `local_files` exists."""
    return task in HUB_IDS and hub_allowed() and not any(p.is_file() for p in local_files)


def load_from_hub(dataset_id: str, config: str | None, split: str, revision: str | None = None) -> Iterable[Row]:
    """Rows (dicts) of one split of a hub dataset, via `datasets.load_dataset`."""
    try:
        import datasets
    except ImportError:
        raise MptuneError(
            f"Reading {dataset_id} from the Hugging Face Hub needs the `datasets` package; "
            "install it with `pip install datasets`, or put the official files in the data directory."
        ) from None
    try:
        return datasets.load_dataset(dataset_id, config, split=split, revision=revision)
    except Exception as exc:  # network, auth or schema problems: all fixable by the user
        raise MptuneError(
            f"Could not load split {split!r} of {dataset_id} ({config}) at revision {revision or 'main'} from "
            f"the Hugging Face Hub ({type(exc).__name__}: {exc}); ${REVISIONS_ENV} can choose another revision."
        ) from exc


def fields(row: Row, keys: Iterable[str], where: str, line: int) -> list[Any]:
    """row[key] for each key; MptuneError naming the row when one is missing."""
    missing = [k for k in keys if k not in row]
    if missing:
        raise MptuneError(f"{where} row {line} has no field(s) {', '.join(missing)}; the hub copy's schema changed.")
    return [row[k] for k in keys]


def hub_split(task: str, split: str, read_row: RowReader, root: Path) -> Loader:
    """A loader of the examples of one hub split of `task` (`root`: the absent local folder)."""
    dataset_id, config = HUB_IDS[task]
    where = f"{dataset_id} ({config}) {split} split"

    def load() -> list[Example]:
        try:
            rows = load_from_hub(dataset_id, config, split, hub_revision(dataset_id))
        except MptuneError as exc:
            raise MptuneError(f"Task {task!r} has no data files under {root} and its hub copy could not "
                              f"be read: {exc}") from None
        return [ex for line, row in enumerate(rows, 1) for ex in read_row(row, where, line)]

    return load


def loaders(task: str, root: Path, files: dict[str, tuple[str, str]], read_file: Callable[[Path], list[Example]],
            read_row: RowReader, optional: Collection[str] = ()) -> dict[str, Loader | None]:
    """Loaders by role: the local files under `root`, or the hub splits when `use_hub` says so.

    `files` maps a role ('train', 'validation', ...) to (local file name, hub split name). A role
    in `optional` loads None when its local file is absent (MNLI's validation files offline).
    """
    paths = {role: root / name for role, (name, _) in files.items()}
    if use_hub(task, paths.values()):
        return {role: hub_split(task, split, read_row, root) for role, (_, split) in files.items()}
    return {role: None if role in optional and not path.is_file() else partial(read_file, path)
            for role, path in paths.items()}
