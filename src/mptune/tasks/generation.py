"""Generation tasks: extractive QA (SQuAD, MRQA 2019, ReCoRD) and data-to-text (E2E, WebNLG).

Design decisions
- Each task reads its dataset's official release, unpacked under the data directory:
  - squad: `squad/{train,dev}-v1.1.json` (SQuAD v1.1): {"data": [{"title", "paragraphs":
    [{"context", "qas": [{"id", "question", "answers": [{"text", "answer_start"}]}]}]}]}.
  - nq, hotpotqa, searchqa, newsqa: the MRQA 2019 shared task's in-domain files of
    NaturalQuestionsShort, HotpotQA, SearchQA and NewsQA, as `mrqa/<NAME>/{train,dev}.jsonl.gz`,
    or as downloaded, `mrqa/{train,dev}/<NAME>.jsonl.gz` (used when only that layout is there):
    gzipped JSONL, a {"header": ...} line, then one context per line: {"context", "qas": [{"qid",
    "question", "answers": [str], "detected_answers": [...]}]}. `answers` are the gold strings
    the MRQA scorer compares against.
  - record: SuperGLUE ReCoRD `superglue/ReCoRD/{train,val}.jsonl`: {"passage": {"text",
    "entities": [{"start", "end"}]}, "qas": [{"query", "answers": [{"start", "end", "text"}]}]};
    entity `end` offsets are inclusive.
  - e2e: E2E NLG Challenge `e2e/{trainset,devset,testset_w_refs}.csv`: CSV with header `mr,ref`,
    one row per (meaning representation, human reference).
  - webnlg: the WebNLG 2017 challenge data as `webnlg/{train,dev,test}.json` in the JSON layout
    of the WebNLG corpus converter (the files prefix-tuning reads): {"entries": [{"1": {"category",
    "modifiedtripleset": [{"subject", "property", "object"}], "lexicalisations": [{"lex",
    "comment", ...}], ...}}, {"2": {...}}, ...]}. Lexicalisations with a "comment" other than
    "good" (or empty) are dropped, as prefix-tuning does.
- QA: one example per question; input "question: ...\\ncontext: ...\\nAnswer:", target the first
  gold answer, label the tuple of all gold answers; metrics squad_f1 (headline) and squad_em.
- ReCoRD is generation of the entity that fills @placeholder. The input gives the query, the
  passage's entities (distinct, in passage order, as T5's input does) and the passage (its
  "@highlight" lines joined into sentences as T5 does). The label is the tuple of distinct answer
  texts, sorted, and the target its first: the hub copy stores answers that way, so the file and
  the hub give the same example. Metrics as QA (ReCoRD's official F1/EM are SQuAD's).
- NLG: train has one example per reference; dev and test have one example per input (MR or
  triple set), whose label is the tuple of all its references and whose target is the first, so
  corpus BLEU is multi-reference as in the challenges. Triples read "subject : property : object"
  joined by " | ", with "_" in entity names read as spaces. Metrics: bleu (headline) and rouge_l,
  and for WebNLG ter (sacrebleu; lower is better), the metrics of maintained packages among those
  the challenges report (E2E: BLEU, NIST, METEOR, ROUGE-L, CIDEr; WebNLG 2017: BLEU, METEOR,
  TER). NIST, METEOR and CIDEr are left out: nltk's NIST fails on corpora whose outputs are all
  shorter than 5 tokens, METEOR needs WordNet data or Java, CIDEr another package (pycocoevalcap).
- Splits (`tasks/splits.py`): SQuAD, MRQA and ReCoRD have over 10,000 training questions and a
  labelled official dev set: dev = 1,000 held out of train (seeded), test = official dev. E2E and
  WebNLG ship labelled train/dev/test, used as they are (`select_given`).
- Bad input (missing file, malformed JSON/CSV, missing or mistyped field, no gold answer) raises
  `MptuneError` naming the file and the line, row or JSON path.
- Hub copies (`tasks/hub.py`), as for the classification tasks: rajpurkar/squad, mrqa-workshop/mrqa
  (all MRQA subsets in one table; rows of other subsets are skipped), aps/super_glue record and
  tuetschek/e2e_nlg (the original E2E release; GEM/e2e_nlg is the cleaned re-release, other data).
  WebNLG has no hub route: webnlg-challenge/web_nlg and GEM/web_nlg cut and version the data
  differently from the 2017 challenge files, so their rows would not give the files' examples.
- Generation stops at `Task.max_new_tokens`: 32 tokens for answers and entities, 128 for texts.
- Prediction (`Task.read_row`) reads one row by the files' field names; answers and references are
  not read (official test rows have none): SQuAD and MRQA a context with its questions ({"context",
  "qas": [{"question"}]}: a SQuAD paragraph, an MRQA line; one example per question) or one question
  flat ({"question", "context"}, the hub rows' layout); ReCoRD an official passage row (test.jsonl:
  {"passage": {"text", "entities"}, "qas": [{"query", "idx"}], "idx"}), one example per query; E2E
  {"mr"}; WebNLG one entry ({"modifiedtripleset": [...]}). The file and hub readers parse through
  the same per-row functions (`context_questions`, `flat_question`, `record_rows`, `e2e_example`,
  `webnlg_input`), given the answer reader (`Answers`; `no_answers` for prediction).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from mptune.errors import MptuneError
from mptune.tasks import hub
from mptune.tasks.base import Example, Task, files_doc, row_texts
from mptune.tasks.glue import normalize, read_tsv
from mptune.tasks.splits import describe, select, select_given
from mptune.tasks.superglue import read_jsonl

QA = "question: {question}\ncontext: {context}\nAnswer:"
RECORD = "query: {query}\nentities: {entities}\npassage: {passage}\nAnswer:"
E2E = "meaning: {mr}\nText:"
WEBNLG = "triples: {triples}\nText:"
TEMPLATES = (QA, RECORD, E2E, WEBNLG)

SQUAD_SOURCE = "official SQuAD v1.1"
MRQA_SOURCE = "official MRQA 2019"
RECORD_SOURCE = "official SuperGLUE ReCoRD"
E2E_SOURCE = "official E2E NLG"
WEBNLG_SOURCE = "WebNLG 2017 JSON"
KINDS = {str: "a string", list: "a list", dict: "an object", int: "an integer"}
Files = Callable[[Path], dict[str, tuple[str, str]]]
"""root folder -> {role: (file name under root, hub split)}."""
Answers = Callable[[Any, str], Sequence | None]
"""(question object, where it is) -> its gold strings; `no_answers` (prediction) reads none."""
QA_FIELDS = ("question", "context")


# --- reading helpers ---------------------------------------------------------------------------

def need(obj: Any, key: str, where: str, what: str, kind: type = str) -> Any:
    """obj[key], checked to be a `kind`; MptuneError naming `where` (file and line, row or JSON path)."""
    if not isinstance(obj, dict):
        raise MptuneError(f"{where} is not a JSON object; expected the {what} layout.")
    if key not in obj:
        raise MptuneError(f"{where} has no field {key!r}; expected the {what} fields.")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MptuneError(f"{where} field {key!r} is not {KINDS[kind]}; expected the {what} layout.")
    return value


def read_json(path: Path, what: str) -> Any:
    """The JSON document in `path`; MptuneError naming the file when it is absent or malformed."""
    if not path.is_file():
        raise MptuneError(f"Data file {path} does not exist; expected the {what} JSON there.")
    try:
        with path.open(encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise MptuneError(f"{path} line {exc.lineno} is not valid JSON ({exc.msg}).") from None
    except UnicodeDecodeError as exc:
        raise MptuneError(f"{path} is not UTF-8 text ({exc.reason}); expected the {what} JSON.") from None


def golds(texts: Sequence, where: str) -> tuple[str, ...]:
    """Whitespace-normalised gold strings, in order; MptuneError if one is not a string or none is left."""
    if not all(isinstance(t, str) for t in texts):
        raise MptuneError(f"{where} has a gold answer that is not a string.")
    out = tuple(t for t in map(normalize, texts) if t)
    if not out:
        raise MptuneError(f"{where} has no gold answer; generation tasks need at least one.")
    return out


def group_references(examples: Sequence[Example]) -> list[Example]:
    """One example per distinct input: label = its distinct targets in order, target = the first."""
    refs: dict[str, dict[str, None]] = {}
    for ex in examples:
        refs.setdefault(ex.input_text, {})[ex.target_text] = None
    return [Example(text, next(iter(found)), tuple(found)) for text, found in refs.items()]


def labelled(text: str, gold: tuple[str, ...] | None) -> Example:
    """An example with the first gold string as target and all of them as label; without gold (a row read
    for prediction) label None and an empty target."""
    return Example(text, "", None) if gold is None else Example(text, gold[0], gold)


def no_answers(question: Any, where: str) -> None:
    """The `Answers` of prediction: unlabelled rows have no answers, and answers present are not read."""
    return None


# --- QA: SQuAD and MRQA ------------------------------------------------------------------------

def qa_example(question: str, context: str, answers: Sequence | None, where: str) -> Example:
    """A QA example: question and context in, first gold answer out, all gold answers as label (None: unlabelled)."""
    if not isinstance(question, str) or not isinstance(context, str):
        raise MptuneError(f"{where} has a question or context that is not a string.")
    text = QA.format(question=normalize(question), context=normalize(context))
    return labelled(text, None if answers is None else golds(answers, where))


def context_questions(row: Any, at: str, what: str, answers: Answers, sep: str = " ") -> list[Example]:
    """One example per question of a context object {"context", "qas": [{"question", ...}]}: a SQuAD paragraph
    (`sep` '.': 'data[0].paragraphs[1].qas[2]'), an MRQA line ('FILE line 3 qas[2]'), a prediction row."""
    context = need(row, "context", at, what)
    out = []
    for q, qa in enumerate(need(row, "qas", at, what, list)):
        where = f"{at}{sep}qas[{q}]"
        out.append(qa_example(need(qa, "question", where, what), context, answers(qa, where), where))
    return out


def flat_question(row: Any, at: str, what: str, answers: Answers) -> list[Example]:
    """A question given flat with its context, {"question", "context", ...}: a hub row, a prediction row."""
    return [qa_example(need(row, "question", at, what), need(row, "context", at, what), answers(row, at), at)]


def squad_answers(qa: Any, where: str) -> list[str]:
    """The gold texts of an official SQuAD question: answers [{"text", "answer_start"}]."""
    return [need(ans, "text", f"{where}.answers[{i}]", SQUAD_SOURCE)
            for i, ans in enumerate(need(qa, "answers", where, SQUAD_SOURCE, list))]


def read_squad(path: Path) -> list[Example]:
    """Every question of an official SQuAD v1.1 JSON file, in file order."""
    articles = need(read_json(path, SQUAD_SOURCE), "data", str(path), SQUAD_SOURCE, list)
    out = []
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(need(article, "paragraphs", f"{path} data[{a}]", SQUAD_SOURCE, list)):
            out += context_questions(paragraph, f"{path} data[{a}].paragraphs[{p}]", SQUAD_SOURCE, squad_answers, ".")
    return out


def squad_hub_answers(row: Any, where: str) -> list:
    """The gold texts of a rajpurkar/squad row: answers {"text": [...], "answer_start": [...]}."""
    what = "rajpurkar/squad"
    return need(need(row, "answers", where, what, dict), "text", f"{where} answers", what, list)


def squad_row(row: dict, where: str, line: int) -> list[Example]:
    """One rajpurkar/squad row (context, question, answers {text: [...]}) as the official question."""
    return flat_question(row, f"{where} row {line}", "rajpurkar/squad", squad_hub_answers)


def answer_list(what: str) -> Answers:
    """Answers given as a list of gold strings (MRQA's files and hub rows); `what` names the layout in messages."""
    return lambda qa, where: need(qa, "answers", where, what, list)


def read_mrqa(path: Path) -> list[Example]:
    """Every question of an MRQA 2019 gzipped JSONL file (the header line is skipped)."""
    return [ex for line, row in read_jsonl(path, MRQA_SOURCE) if "header" not in row
            for ex in context_questions(row, f"{path} line {line}", MRQA_SOURCE, answer_list(MRQA_SOURCE))]


def mrqa_row(subset: str) -> hub.RowReader:
    """Row reader of mrqa-workshop/mrqa keeping the rows of one subset (one question each)."""
    what = "mrqa-workshop/mrqa"

    def read(row: dict, where: str, line: int) -> list[Example]:
        return flat_question(row, f"{where} row {line}", what, answer_list(what)) if row.get("subset") == subset else []

    return read


def qa_read_row(what: str) -> hub.RowReader:
    """`Task.read_row` of SQuAD and MRQA: a context with its questions as the files hold them ({"context", "qas":
    [{"question", ...}]}: a SQuAD paragraph, an MRQA line; one example per question), or one question flat
    ({"question", "context"}, as the hub rows); answers are not read."""

    def read(row: Mapping[str, Any], where: str, line: int) -> list[Example]:
        at = f"{where} line {line}"
        return (context_questions if "qas" in row else flat_question)(row, at, what, no_answers)

    return read


def mrqa_layouts(subset: str) -> tuple[dict[str, str], dict[str, str]]:
    """Names under `mrqa/` by role: nested `<subset>/{train,dev}.jsonl.gz`, download `{train,dev}/<subset>.jsonl.gz`."""
    nested = {"train": f"{subset}/train.jsonl.gz", "validation": f"{subset}/dev.jsonl.gz"}
    download = {"train": f"train/{subset}.jsonl.gz", "validation": f"dev/{subset}.jsonl.gz"}
    return nested, download


def mrqa_files(subset: str) -> Files:
    """`mrqa/<subset>/{train,dev}.jsonl.gz`, or the download layout `mrqa/{train,dev}/<subset>.jsonl.gz`."""

    def files(root: Path) -> dict[str, tuple[str, str]]:
        nested, download = mrqa_layouts(subset)
        exists = lambda layout: any((root / name).is_file() for name in layout.values())  # noqa: E731
        chosen = download if exists(download) and not exists(nested) else nested
        return {role: (name, role) for role, name in chosen.items()}

    return files


# --- ReCoRD ------------------------------------------------------------------------------------

def join_highlights(passage: str) -> str:
    """ReCoRD passage with its '@highlight' lines joined into sentences (T5's preprocessing)."""
    passage = re.sub(r"([.?!\"'])\n@highlight\n", r"\1 ", passage)
    return re.sub(r"\n@highlight\n", ". ", passage)


def record_example(passage: str, entities: Sequence[str], query: str, answers: Sequence | None,
                   where: str) -> Example:
    """A ReCoRD query: query, distinct entities and passage in; the sorted distinct answers as label (None:
    unlabelled)."""
    if not isinstance(query, str) or not isinstance(passage, str):
        raise MptuneError(f"{where} has a query or passage that is not a string.")
    names = ", ".join(dict.fromkeys(normalize(e) for e in entities))
    text = RECORD.format(query=normalize(query), entities=names, passage=normalize(join_highlights(passage)))
    return labelled(text, None if answers is None else tuple(sorted(set(golds(answers, where)))))


def entity_span(entity: Any, text: str, where: str) -> tuple[int, int]:
    """(start, inclusive end) of a ReCoRD entity; MptuneError if it lies outside the passage."""
    start, end = (need(entity, k, where, RECORD_SOURCE, int) for k in ("start", "end"))
    if not 0 <= start <= end < len(text):
        raise MptuneError(f"{where} span {start}..{end} lies outside the passage ({len(text)} characters).")
    return start, end


def record_answers(qa: Any, where: str) -> list[str]:
    """The gold texts of an official ReCoRD query: answers [{"start", "end", "text"}]."""
    return [need(a, "text", f"{where}.answers[{i}]", RECORD_SOURCE)
            for i, a in enumerate(need(qa, "answers", where, RECORD_SOURCE, list))]


def record_rows(row: Any, where: str, answers: Answers = record_answers) -> list[Example]:
    """The queries of one official ReCoRD passage row ({"passage": {"text", "entities"}, "qas": [{"query",
    "idx", "answers"}], "idx"}), one example each; `no_answers` reads a test row (prediction)."""
    passage = need(row, "passage", where, RECORD_SOURCE, dict)
    text = need(passage, "text", where, RECORD_SOURCE)
    spans = [entity_span(e, text, f"{where} passage.entities[{i}]")
             for i, e in enumerate(need(passage, "entities", where, RECORD_SOURCE, list))]
    entities = [text[s:e + 1] for s, e in sorted(spans, key=lambda span: span[0])]
    out = []
    for q, qa in enumerate(need(row, "qas", where, RECORD_SOURCE, list)):
        at = f"{where} qas[{q}]"
        out.append(record_example(text, entities, need(qa, "query", at, RECORD_SOURCE), answers(qa, at), at))
    return out


def read_record(path: Path) -> list[Example]:
    """Every query of an official ReCoRD JSONL file."""
    return [ex for line, row in read_jsonl(path, RECORD_SOURCE) for ex in record_rows(row, f"{path} line {line}")]


def record_read_row(row: Mapping[str, Any], where: str, line: int) -> list[Example]:
    """`Task.read_row` of ReCoRD: an official passage row (as in test.jsonl), one example per query."""
    return record_rows(row, f"{where} line {line}", no_answers)


def record_row(row: dict, where: str, line: int) -> list[Example]:
    """One aps/super_glue record row (passage, query, entity_spans, answers) as the official query."""
    at, what = f"{where} row {line}", "aps/super_glue record"
    spans = need(row, "entity_spans", at, what, dict)
    starts, texts = need(spans, "start", at, what, list), need(spans, "text", at, what, list)
    entities = [t for _, t in sorted(zip(starts, texts), key=lambda pair: pair[0])]
    return [record_example(need(row, "passage", at, what), entities, need(row, "query", at, what),
                           need(row, "answers", at, what, list), at)]


# --- NLG: E2E and WebNLG -----------------------------------------------------------------------

def e2e_example(mr: str, ref: str | None, where: str) -> Example:
    """One (meaning representation, reference) pair; a meaning representation alone (`ref` None) unlabelled."""
    mr, ref = normalize(mr), None if ref is None else normalize(ref)
    if not mr or ref == "":
        raise MptuneError(f"{where} has an empty mr or ref; expected the {E2E_SOURCE} columns.")
    return labelled(E2E.format(mr=mr), None if ref is None else (ref,))


def read_e2e(path: Path) -> list[Example]:
    """Every row of an official E2E NLG CSV (header mr,ref)."""
    rows = read_tsv(path, ("mr", "ref"), delimiter=",", what=E2E_SOURCE)
    return [e2e_example(mr, ref, f"{path} line {line}") for line, (mr, ref) in rows]


def e2e_row(row: dict, where: str, line: int) -> list[Example]:
    """One tuetschek/e2e_nlg row (meaning_representation, human_reference) as the CSV row."""
    mr, ref = hub.fields(row, ("meaning_representation", "human_reference"), where, line)
    return [e2e_example(str(mr), str(ref), f"{where} row {line}")]


def e2e_read_row(row: Mapping[str, Any], where: str, line: int) -> list[Example]:
    """`Task.read_row` of E2E: a row by the CSV's header, {"mr"} (the reference `ref` is not read)."""
    (mr,) = row_texts(row, ("mr",), where, line, "e2e")
    return [e2e_example(mr, None, f"{where} line {line}")]


def triple_text(triple: Any, where: str) -> str:
    """'subject : property : object' with '_' in the entity names read as spaces."""
    subject, prop, obj = (need(triple, k, where, WEBNLG_SOURCE) for k in ("subject", "property", "object"))
    return f"{normalize(subject.replace('_', ' '))} : {normalize(prop)} : {normalize(obj.replace('_', ' '))}"


def webnlg_input(entry: Any, where: str) -> str:
    """The model input of a WebNLG entry: its modifiedtripleset, triple by triple."""
    triples = need(entry, "modifiedtripleset", where, WEBNLG_SOURCE, list)
    if not triples:
        raise MptuneError(f"{where} has an empty modifiedtripleset; expected at least one triple.")
    return WEBNLG.format(triples=" | ".join(triple_text(t, f"{where}.modifiedtripleset[{j}]")
                                            for j, t in enumerate(triples)))


def webnlg_entry(entry: Any, where: str) -> list[Example]:
    """One example per kept lexicalisation of a WebNLG entry."""
    source = webnlg_input(entry, where)
    out = []
    for k, lex in enumerate(need(entry, "lexicalisations", where, WEBNLG_SOURCE, list)):
        text = normalize(need(lex, "lex", f"{where}.lexicalisations[{k}]", WEBNLG_SOURCE))
        if text and lex.get("comment", "good") in ("good", ""):
            out.append(Example(source, text, (text,)))
    return out


def read_webnlg(path: Path) -> list[Example]:
    """Every kept lexicalisation of a WebNLG 2017 JSON file, entry by entry."""
    entries = need(read_json(path, WEBNLG_SOURCE), "entries", str(path), WEBNLG_SOURCE, list)
    out = []
    for i, wrapper in enumerate(entries):
        if not isinstance(wrapper, dict) or len(wrapper) != 1:
            raise MptuneError(f"{path} entries[{i}] is not an object with one key (the entry number); "
                              f"expected the {WEBNLG_SOURCE} layout.")
        (key, entry), = wrapper.items()
        out.extend(webnlg_entry(entry, f"{path} entries[{i}][{key!r}]"))
    return out


def webnlg_read_row(row: Mapping[str, Any], where: str, line: int) -> list[Example]:
    """`Task.read_row` of WebNLG: one entry object ({"modifiedtripleset": [...]}; lexicalisations not read)."""
    return [Example(webnlg_input(row, f"{where} line {line}"), "", None)]


# --- tasks -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Readers:
    """How a generation task reads: its official files, its hub rows, and single rows (`Task.read_row`)."""

    file: Callable[[Path], list[Example]]
    """An official file -> its labelled examples."""
    hub_row: hub.RowReader | None
    """A row of the hub copy -> the examples of the official row (None: no hub copy)."""
    row: hub.RowReader
    """A row by the official field names, labels not read -> its unlabelled examples (prediction)."""
    fields: tuple[str, ...]
    """The fields `row` reads (`Task.input_fields`)."""


def make_task(name: str, family: str, folder: str, files: Files, readers: Readers, metric: str,
              extra: tuple[str, ...], doc: str, official_train: int = 0, max_new_tokens: int = 32,
              source: str = "") -> Task:
    """A generation `Task` over `<data_dir>/<folder>/`.

    Roles train+validation are split by `select`; train+dev+test are used as given, with dev and
    test grouped into one example per input (`group_references`). `source` (for `mptune tasks`)
    defaults to the files `files` names.
    """
    source = source or files_doc([f"{folder}/{file}" for file, _ in files(Path(folder)).values()])

    def load_split(data_dir: Path, split: str, seed: int) -> list[Example]:
        root = Path(data_dir) / folder
        found = hub.loaders(name, root, files(root), readers.file, readers.hub_row or (lambda row, where, line: []))
        if "dev" in found:
            rows = select_given(split, seed, found["train"], found["dev"], found["test"])
            return rows if split == "train" else group_references(rows)
        return select(split, seed, official_train, found["train"], found["validation"])

    def read_row(row: Mapping[str, Any], where: str, line: int) -> list[Example]:
        return [replace(ex, task=name) for ex in readers.row(row, where, line)]

    return Task(name=name, family=family, choices=(), metric=metric, load_split=load_split, splits_doc=doc,
                extra_metrics=extra, max_new_tokens=max_new_tokens, source=source, read_row=read_row,
                input_fields=readers.fields)


def qa_task(name: str, family: str, folder: str, files: Files, readers: Readers, official_train: int,
            validation: str, source: str = "") -> Task:
    """A QA task split by the large-task rule: dev = 1,000 held out of train, test = official dev."""
    doc = describe(official_train, validation=validation)
    return make_task(name, family, folder, files, readers, "squad_f1", ("squad_em",), doc, official_train,
                     source=source)


def mrqa_source(subset: str) -> str:
    """Both MRQA layouts in one line (`mptune tasks`)."""
    return " or ".join(files_doc([f"mrqa/{file}" for file in layout.values()]) for layout in mrqa_layouts(subset))


def nlg_task(name: str, folder: str, names: tuple[str, str, str], readers: Readers, doc: str,
             extra: tuple[str, ...]) -> Task:
    """A data-to-text task shipping labelled train/dev/test files `names`, used as they are."""
    files = dict(zip(("train", "dev", "test"), zip(names, ("train", "validation", "test"))))
    return make_task(name, "nlg", folder, lambda root: files, readers, "bleu", extra, doc, max_new_tokens=128)


MRQA_TASKS = (  # name, MRQA subset, official train questions, official dev questions
    ("nq", "NaturalQuestionsShort", 104_071, 12_836),
    ("hotpotqa", "HotpotQA", 72_928, 5_904),
    ("searchqa", "SearchQA", 117_384, 16_980),
    ("newsqa", "NewsQA", 74_160, 4_212),
)

TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        qa_task("squad", "qa", "squad", lambda root: {"train": ("train-v1.1.json", "train"),
                                                      "validation": ("dev-v1.1.json", "validation")},
                Readers(read_squad, squad_row, qa_read_row(SQUAD_SOURCE), QA_FIELDS), 87_599,
                "official dev (10,570)"),
        *(qa_task(name, "qa", "mrqa", mrqa_files(subset),
                  Readers(read_mrqa, mrqa_row(subset), qa_read_row(MRQA_SOURCE), QA_FIELDS), train,
                  f"official MRQA dev ({dev:,})", mrqa_source(subset)) for name, subset, train, dev in MRQA_TASKS),
        qa_task("record", "superglue", "superglue/ReCoRD", lambda root: {"train": ("train.jsonl", "train"),
                                                                         "validation": ("val.jsonl", "validation")},
                Readers(read_record, record_row, record_read_row, ("passage", "qas")), 100_730,
                "official validation (10,000)"),
        nlg_task("e2e", "e2e", ("trainset.csv", "devset.csv", "testset_w_refs.csv"),
                 Readers(read_e2e, e2e_row, e2e_read_row, ("mr",)),
                 "train: official trainset (42,061 MR-reference pairs); dev/test: official devset (547 MRs) "
                 "and testset_w_refs (630 MRs), one example per MR with all its references", ("rouge_l",)),
        nlg_task("webnlg", "webnlg", ("train.json", "dev.json", "test.json"),
                 Readers(read_webnlg, None, webnlg_read_row, ("modifiedtripleset",)),
                 "train: official train (18,102 texts of 6,940 triple sets); dev/test: official dev (872) and "
                 "test (1,862) triple sets, one example per set with all its references", ("ter", "rouge_l")),
    )
}
