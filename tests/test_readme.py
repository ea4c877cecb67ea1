"""README.md and docs/*.md say what the code does.

- The README's Python API snippet runs as written (on the tiny model and data, with tiny budgets).
- A python block introduced as "as it reads in `module.function`" is an excerpt of that function:
  its lines appear, in order, in the function's source. Every other python block runs as written.
- Every `mptune ...` command line (in bash blocks and inline code) parses with the real CLI parser,
  its settings resolve into a valid RunConfig, and the tasks it names exist.
- Every `--section.field` flag and every `section.field` setting named anywhere is a setting of
  RunConfig; every YAML block is a valid config file or custom task spec.
- Every `mptune.x.y` / `stages.f` reference resolves, every repository path named exists, every
  relative link (and its #anchor) points at a file (and a heading) that exists.
- The README's map of the code names every module of src/mptune, and the fresh-machine block holds
  the command .ci/run runs.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import re
import shlex
import textwrap
from pathlib import Path

import pytest

import mptune
from mptune.config import RENAMED, RunConfig, TrainArgs, flat_fields, load_yaml

from test_cli import LENGTH

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
TINY_TASKS = {"sst2": "cola", "qnli": "rte", "qqp": "mrpc", "sst2@16": "cola@4", "rte": "rte"}
"""The snippet's tasks -> tasks of the tiny data (the snippet's target rte stays rte)."""

FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)
EXCERPT = re.compile(r"as it reads in `(?P<name>[\w.]+)`")
FILE_SUFFIXES = {"py", "md", "yaml", "yml", "json", "jsonl", "png", "pt", "csv", "tsv", "safetensors", "gz", "txt"}
SETTINGS = {key for key, _, _ in flat_fields()}
SECTIONS = {key.split(".")[0] for key in SETTINGS if "." in key}
STAGE_SECTIONS = ("teach", "distill", "adapt")
"""What `--STAGE.field` stands for."""
PLACEHOLDER_FLAGS = {"section.field"}
"""Flags that name the pattern, not a setting."""


@dataclasses.dataclass(frozen=True)
class Block:
    page: Path
    lang: str
    code: str
    before: str
    """The page's text before the block's fence."""

    @property
    def where(self) -> str:
        line = self.before.count("\n") + 1
        return f"{self.page.relative_to(ROOT)}:{line}"


def fenced_blocks(page: Path) -> list[Block]:
    text = page.read_text()
    return [Block(page, m["lang"], textwrap.dedent(m["body"]), text[:m.start()]) for m in FENCE.finditer(text)]


def prose(page: Path) -> str:
    """The page without its fenced blocks."""
    return FENCE.sub("", page.read_text())


def inline_code(page: Path) -> list[str]:
    """Inline code spans outside fenced blocks, whitespace collapsed (a span may wrap lines)."""
    return [" ".join(s.split()) for s in re.findall(r"`([^`]+)`", prose(page)) if "\n\n" not in s]


def blocks(lang: str) -> list[Block]:
    return [b for page in PAGES for b in fenced_blocks(page) if b.lang == lang]


def ids(items: list[Block]) -> list[str]:
    return [b.where for b in items]


# --- the README's Python API snippet, run as written ------------------------------------------

def python_api_snippet() -> str:
    """The first python block of the README section '## Python API'."""
    section = README.read_text().split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def tiny_run_config(model: Path, data_dir: Path):
    """RunConfig as the snippet calls it, turned into a tiny run: model, data, tasks, budgets."""
    def build(sources, targets, **settings) -> RunConfig:
        cfg = RunConfig(sources=[TINY_TASKS[t] for t in sources], targets=[TINY_TASKS[t] for t in targets],
                        **settings)
        budget = TrainArgs(steps=2, batch_size=2, warmup_steps=0)
        return dataclasses.replace(
            cfg, teach=budget, distill=budget, adapt=budget,
            model=dataclasses.replace(cfg.model, name=str(model), precision="fp32"),
            data=dataclasses.replace(cfg.data, data_dir=str(data_dir), eval_examples=4),
            prompt=dataclasses.replace(cfg.prompt, length=LENGTH))
    return build


def test_python_api_snippet_runs_as_written(tmp_path, monkeypatch, llama_dir, data_dir):
    code = python_api_snippet()
    assert "from mptune import RunConfig, load_backbone, stages" in code  # what the patch below relies on
    monkeypatch.setattr(mptune, "RunConfig", tiny_run_config(llama_dir, data_dir))
    monkeypatch.chdir(tmp_path)  # the snippet writes runs/api/ relative to the working directory
    names: dict = {}
    exec(compile(code, f"{README}:Python API", "exec"), names)

    run = tmp_path / "runs" / "api"
    assert names["cfg"].sources == ["cola", "rte", "mrpc"] and names["cfg"].targets == ["cola@4", "rte"]
    assert set(names["results"]) == {"pt", "spot", "mpt"}
    assert set(names["table"]["targets"]) == {"cola@4", "rte"} and "| rte | accuracy |" in names["markdown"]
    saved = json.loads((run / "adapt" / "mpt" / "rte" / "metrics.json").read_text())
    assert names["results"]["mpt"]["rte"]["scores"]["rte"]["accuracy"] == saved["scores"]["rte"]["accuracy"]
    assert (run / "report" / "report.md").is_file() and (run / "report" / "results.png").is_file()


# --- every other python block: an excerpt of the code, or a snippet that runs -----------------

def excerpt_of(block: Block) -> str | None:
    """`stages.train_distill` when the paragraph before the block says 'as it reads in `stages.train_distill`'."""
    paragraph = block.before.rstrip().rsplit("\n\n", 1)[-1]
    match = EXCERPT.search(paragraph)
    return match["name"] if match else None


def resolve(name: str):
    """`mptune.stages.train_distill`, `stages.train_distill`, `mptune.report` ... -> the object."""
    parts = name.split(".")
    if parts[0] != "mptune":
        parts = ["mptune", *parts]
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(name)


def code_lines(text: str) -> list[str]:
    """Stripped lines without comments (a '  #' comment after code, or a comment line), blank lines dropped."""
    out = []
    for line in text.splitlines():
        line = re.sub(r"(^|\s+)#\s.*$", "", line).strip()
        if line:
            out.append(line)
    return out


PYTHON = [b for b in blocks("python") if not (b.page == README and b.code == python_api_snippet())]


def test_docs_have_python_blocks_beyond_the_api_snippet():
    assert any(excerpt_of(b) for b in PYTHON), "the README's distillation excerpt is missing"
    assert any(not excerpt_of(b) for b in PYTHON)


@pytest.mark.parametrize("block", PYTHON, ids=ids(PYTHON))
def test_python_block(block, tmp_path, monkeypatch):
    code = compile(block.code, block.where, "exec")
    name = excerpt_of(block)
    if name is None:  # a self-contained snippet: it runs as written
        monkeypatch.chdir(tmp_path)
        exec(code, {})
        return
    source = code_lines(inspect.getsource(resolve(name)))
    position = 0
    for line in code_lines(block.code):
        assert line in source[position:], f"{block.where}: `{line}` is not (or no longer in this order) in {name}"
        position = source.index(line, position) + 1


# --- mptune command lines ------------------------------------------------------------------------

def shell_lines(code: str) -> list[str]:
    """A bash block's commands: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [re.sub(r"(^|\s)#.*$", "", line).strip() for line in joined.splitlines()]


def mptune_commands() -> list[tuple[str, list[str], bool]]:
    """(where, argv after `mptune`, full) for every mptune command line; full=False for a bare inline
    `mptune COMMAND` named in prose (only the command itself is checked)."""
    found = []
    for block in blocks("bash"):
        page, fence = block.where.rsplit(":", 1)
        for i, line in enumerate(shell_lines(block.code)):
            match = re.search(r"(?:^|\s)(?:-m\s+)?mptune\s+(.*)$", line)
            if match:
                found.append((f"{page}:{int(fence) + 1 + i}", shlex.split(match[1]), True))
    for page in PAGES:
        for span in inline_code(page):
            if span.startswith("mptune "):
                argv = shlex.split(span.replace("[", " ").replace("]", " "))[1:]
                found.append((str(page.relative_to(ROOT)), argv, len(argv) > 1))
    return [(where, argv, full) for where, argv, full in found if not argv[0].isupper()]  # `mptune COMMAND ...`


def alternatives(argv: list[str]) -> list[list[str]]:
    """`teach | distill | adapt` -> [teach], [distill], [adapt]; `...` (more flags) and --help dropped."""
    argv = [a for a in argv if a not in ("...", "--help")]
    if "|" not in argv:
        return [argv]
    assert argv[1::2] == ["|"] * (len(argv) // 2), f"cannot read the alternatives in {argv}"
    return [[a] for a in argv[0::2]]


def custom_task_blocks() -> list[Block]:
    return [b for b in blocks("yaml") if "label_words" in b.code]


COMMANDS = mptune_commands()


def test_docs_show_mptune_commands():
    assert len(COMMANDS) > 20 and any(argv[0] == "run" for _, argv, _ in COMMANDS)


@pytest.mark.parametrize("where,argv,full", COMMANDS, ids=[f"{w}: mptune {' '.join(a)}" for w, a, _ in COMMANDS])
def test_mptune_command_parses(where, argv, full, tmp_path, monkeypatch):
    from mptune.cli import COMMANDS, build_parser, resolve_config
    from mptune.tasks import get_task, registry
    from mptune.tasks.custom import load_custom_yaml, register_custom

    monkeypatch.setattr(registry, "TASKS", dict(registry.TASKS))  # custom tasks below stay in this test
    for i, block in enumerate(custom_task_blocks()):
        path = tmp_path / f"task{i}.yaml"
        path.write_text(block.code)
        register_custom(load_custom_yaml(path))
    for args in alternatives(argv):
        assert args[0] in COMMANDS, f"{where}: mptune has no command {args[0]!r}"
        if not full:
            continue
        try:
            parsed = build_parser().parse_args(args)
        except SystemExit:
            pytest.fail(f"{where}: `mptune {' '.join(args)}` does not parse (see stderr)")
        if not hasattr(parsed, "config"):  # tasks, report, import take no settings
            continue
        parsed.config = None  # the YAML files the examples name (my.yaml) are the reader's
        cfg = resolve_config(parsed)
        for name in [*cfg.sources, *cfg.targets]:
            get_task(name)


# --- settings named in the text --------------------------------------------------------------------

def named_settings(text: str) -> list[str]:
    """Every `--section.field` flag (anywhere) and `section.field` inline code naming a config section."""
    flags = [f"{s}.{f}" for s, f in re.findall(r"(?<![\w-])--([A-Za-z_]+)\.([A-Za-z_]+)\b", text)]
    spans = [s for s in re.findall(r"`([a-z_]+\.[a-z_]+)`", text)
             if s.split(".")[0] in SECTIONS and s.split(".")[1] not in FILE_SUFFIXES]
    return [name for name in flags + spans if name not in PLACEHOLDER_FLAGS]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_named_settings_exist(page):
    unknown = []
    for name in named_settings(page.read_text()):
        section, field = name.split(".")
        expanded = [f"{s}.{field}" for s in STAGE_SECTIONS] if section == "STAGE" else [name]
        unknown += [n for n in expanded if n not in SETTINGS and n not in RENAMED]  # earlier names still work
    assert not unknown, f"{page.name} names settings RunConfig does not have: {sorted(set(unknown))}"


def test_named_settings_finds_flags():
    assert {"teach.steps", "model.attention"} <= set(named_settings("`--teach.steps 3`, `model.attention`"))
    assert named_settings("`data.py` and `--section.field`") == []


YAML = blocks("yaml")


@pytest.mark.parametrize("block", YAML, ids=ids(YAML))
def test_yaml_block(block, tmp_path):
    from mptune.tasks.custom import load_custom_yaml

    path = tmp_path / "block.yaml"
    path.write_text(block.code)
    if "label_words" in block.code:
        load_custom_yaml(path)  # files are read when a split loads, so the spec alone is checked
    else:
        load_yaml(path)


# --- references, paths and links -------------------------------------------------------------------

def code_references(page: Path) -> list[str]:
    """`mptune.x.y` and `stages.f` (a module of mptune, then an attribute) in inline code; calls cut."""
    modules = {p.stem for p in (ROOT / "src" / "mptune").glob("*.py")} | {"tasks"}
    refs = []
    for span in inline_code(page):
        match = re.match(r"([a-z_]\w*(?:\.\w+)+)", span)
        if not match:
            continue
        name = match[1]
        head, last = name.split(".")[0], name.split(".")[-1]
        if last in FILE_SUFFIXES or (head != "mptune" and head not in modules):
            continue
        refs.append(name)
    return refs


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_code_references_resolve(page):
    broken = []
    for name in code_references(page):
        try:
            resolve(name)
        except (ImportError, AttributeError):
            broken.append(name)
    assert not broken, f"{page.name} names what mptune does not have: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_repository_paths_exist(page):
    paths = re.findall(r"(?<![\w/.-])((?:src/mptune|tests|benchmarks|docs|\.ci)/[\w./-]*\w)", page.read_text())
    missing = [p for p in paths
               if (p.startswith("src/mptune/") or p.rsplit(".", 1)[-1] in {"py", "md", "png", "toml"} or p == ".ci/run")
               and not (ROOT / p).exists()]
    assert not missing, f"{page.name} names files that do not exist: {sorted(set(missing))}"


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose(page), re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_links_resolve(page):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(page)):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        if not path.exists():
            broken.append(target)
        elif anchor and (path.suffix != ".md" or anchor not in anchors(path)):
            broken.append(target)
    assert not broken, f"{page.name} has links to nothing: {broken}"


def test_slug_follows_github():
    assert slug("Stage profile: wall time and peak memory of `mptune run`") == \
        "stage-profile-wall-time-and-peak-memory-of-mptune-run"
    assert slug("Seed 0, 2026-12-01") == "seed-0-2026-12-01"


# --- the README as an entry point ------------------------------------------------------------------

def readme_section(title: str) -> str:
    return README.read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_readme_is_short():
    assert len(README.read_text().splitlines()) <= 160


def test_readme_map_names_every_module():
    table = readme_section("Map of the code")
    src = ROOT / "src" / "mptune"
    modules = sorted(p.name for p in src.glob("*.py") if p.name != "__init__.py")
    assert not [m for m in modules if f"`{m}`" not in table], "a module is missing from the README's map"
    assert "`tasks/`" in table
    assert not [m for m in re.findall(r"`([\w/]+\.py)`", table) if not (src / m).is_file()]


def test_fresh_machine_commands_are_what_ci_runs():
    block = re.search(r"```bash\n(.*?)```", readme_section("On a fresh machine"), re.S)[1]
    commands = shell_lines(block)
    assert commands[:2] == ["make run", "make test"]
    ci = [line for line in shell_lines((ROOT / ".ci" / "run").read_text()) if line and not line.startswith(
        ("set ", "cd "))]
    assert ci == ["make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run: ", makefile, re.M) and re.search(r"^test: ", makefile, re.M)


def test_every_page_is_linked_from_the_readme():
    links = set(re.findall(r"\]\((docs/[\w.-]+\.md)", README.read_text()))
    pages = {str(p.relative_to(ROOT)) for p in PAGES[1:]}
    assert pages <= links, f"docs pages the README does not link: {sorted(pages - links)}"

