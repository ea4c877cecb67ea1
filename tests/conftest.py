"""Shared fixtures: a tiny word-level tokenizer, tiny random Llama and T5 backbones, tiny GLUE data.

Nothing here downloads anything, and MPTUNE_OFFLINE=1 keeps task loaders off the hub. The data
tree mirrors the official GLUE layout for the small tasks RTE, MRPC, CoLA and WNLI (dev/test are
halves of dev.tsv, so a few dozen rows suffice); the tokenizer's vocabulary is built from the
words of that data, the task templates and the label words, so every label word is one token
(causal) or word + </s> (seq2seq). `write_tiny_squad` writes SQuAD-format data in the same words.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch

from mptune.backbone import Backbone

# Tests never touch the network: a task without local files raises its missing-file error instead
# of reading the hub copy (tests of the hub route clear this and fake `hub.load_from_hub`).
os.environ["MPTUNE_OFFLINE"] = "1"
# The tiny models are far faster on one thread, and the suite must not fight other jobs for cores
# (with two threads on a busy 2-core machine a 32-wide matmul takes milliseconds instead of microseconds).
torch.set_num_threads(1)

SEED = 1234
SPECIALS = ["<pad>", "</s>", "<unk>"]

# --- tiny synthetic data ----------------------------------------------------------------------

_SUBJECTS = ["the cat", "a dog", "the man", "a woman", "the child", "my friend", "the teacher", "a bird"]
_VERBS = ["sees", "likes", "eats", "finds", "takes", "buys", "wants", "loves"]
_OBJECTS = ["the apple", "a book", "the ball", "a house", "the car", "some bread", "the river", "a tree"]
_ADVERBS = ["today", "quickly", "again", "slowly", "at home", "in the park"]


def _sentence(rng: random.Random) -> str:
    return f"{rng.choice(_SUBJECTS).capitalize()} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_ADVERBS)}."


def _pair(rng: random.Random, same: bool) -> tuple[str, str]:
    first = _sentence(rng)
    if same:
        return first, first[:-1] + " indeed."
    second = _sentence(rng)
    while second == first:
        second = _sentence(rng)
    return first, second


def write_tiny_glue(root: Path, n_train: int = 24, n_dev: int = 12, seed: int = 0) -> Path:
    """A data dir with glue/{RTE,MRPC,CoLA,WNLI}/{train,dev}.tsv in the official layouts."""
    rng = random.Random(seed)
    glue = root / "glue"
    for split, n in (("train", n_train), ("dev", n_dev)):
        rte = ["index\tsentence1\tsentence2\tlabel"]
        wnli = ["index\tsentence1\tsentence2\tlabel"]
        mrpc = ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"]
        cola = []
        for i in range(n):
            same = i % 2 == 0
            a, b = _pair(rng, same)
            rte.append(f"{i}\t{a}\t{b}\t{'entailment' if same else 'not_entailment'}")
            a, b = _pair(rng, same)
            wnli.append(f"{i}\t{a}\t{b}\t{int(same)}")
            a, b = _pair(rng, same)
            mrpc.append(f"{int(same)}\t{1000 + i}\t{2000 + i}\t{a}\t{b}")
            s = _sentence(rng)
            if not same:
                words = s[:-1].split()
                rng.shuffle(words)
                s = " ".join(words) + "."
            cola.append(f"src{i % 3}\t{int(same)}\t{'' if same else '*'}\t{s}")
        for name, lines in (("RTE", rte), ("WNLI", wnli), ("MRPC", mrpc), ("CoLA", cola)):
            folder = glue / name
            folder.mkdir(parents=True, exist_ok=True)
            prefix = "\ufeff" if name == "MRPC" else ""  # the official MRPC files start with a BOM
            (folder / f"{split}.tsv").write_text(prefix + "\n".join(lines) + "\n", encoding="utf-8")
    return root


TINY_TASKS = ("rte", "mrpc", "cola", "wnli")

QA_QUESTION = "Who {verb} {object} ?"
"""Questions of the tiny SQuAD-format data (`write_tiny_squad`); the answer is the sentence's subject."""


def write_tiny_squad(root: Path, n_train: int, n_dev: int, seed: int = 0) -> Path:
    """A data dir with squad/{train,dev}-v1.1.json in the SQuAD v1.1 layout, in the tiny vocabulary."""
    import json

    rng = random.Random(seed)
    for split, n in (("train", n_train), ("dev", n_dev)):
        paragraphs = []
        for i in range(n):
            subject, verb, obj = rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)
            context = f"{subject.capitalize()} {verb} {obj} {rng.choice(_ADVERBS)}. {_sentence(rng)}"
            question = QA_QUESTION.format(verb=verb, object=obj)
            answers = [{"text": subject.capitalize(), "answer_start": 0}] * (1 if split == "train" else 3)
            paragraphs.append({"context": context, "qas": [{"id": f"{split}{i}", "question": question,
                                                            "answers": answers}]})
        doc = {"version": "1.1", "data": [{"title": "Tiny", "paragraphs": paragraphs}]}
        folder = root / "squad"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{split}-v1.1.json").write_text(json.dumps(doc), encoding="utf-8")
    return root


# --- tokenizer ---------------------------------------------------------------------------------

def _pre_tokenizer():
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])


def _vocabulary_texts() -> list[str]:
    from mptune.config import PromptArgs
    from mptune.tasks import generation, glue, superglue

    texts = [w for group in (_SUBJECTS, _VERBS, _OBJECTS, _ADVERBS) for w in group]
    texts += [s.capitalize() for s in _SUBJECTS] + ["indeed", "*"]
    texts += [spec.template for spec in glue.SPECS] + [superglue.ENTAIL, PromptArgs().init_text]
    texts += [*generation.TEMPLATES, QA_QUESTION]
    texts += [c for spec in glue.SPECS for c in spec.choices if spec.labels is not None]
    texts += ["maybe", "positive", "negative", "yes", "no"]
    return texts


def build_tokenizer():
    """A PreTrainedTokenizerFast over a word-level vocabulary; add_special_tokens appends </s>."""
    from tokenizers import Tokenizer, models, processors
    from transformers import PreTrainedTokenizerFast

    pre = _pre_tokenizer()
    words: dict[str, None] = {}
    for text in _vocabulary_texts():
        for piece, _ in pre.pre_tokenize_str(text):
            words.setdefault(piece)
    vocab = {tok: i for i, tok in enumerate(SPECIALS + sorted(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


# --- tiny models -------------------------------------------------------------------------------

def tiny_llama(tokenizer, seed: int = SEED):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(tokenizer, seed: int = SEED):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=512,
                        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                        bos_token_id=tokenizer.eos_token_id, embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)
    return GPT2LMHeadModel(config).eval()


def tiny_t5(tokenizer, seed: int = SEED):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    pad = tokenizer.pad_token_id
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=64, d_kv=8, num_layers=2, num_heads=4,
                      decoder_start_token_id=pad, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
                      dropout_rate=0.0)
    return T5ForConditionalGeneration(config).eval()


BUILDERS = {"llama": tiny_llama, "t5": tiny_t5}


def peft_label_logits(model, batch, length: int, is_seq2seq: bool, **kwargs) -> torch.Tensor:
    """A PEFT model's logits at the label positions of an mptune batch, in mptune's order [N, V]."""
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels,
                       **kwargs).logits
    mask = batch.labels != -100
    if is_seq2seq:
        return logits[mask]
    rows, cols = mask.nonzero(as_tuple=True)  # the prompt's l positions come first; token t is predicted at l + t - 1
    return logits[rows, length + cols - 1]


@pytest.fixture(scope="session")
def llama_backbone(tokenizer) -> Backbone:
    return Backbone(tiny_llama(tokenizer), tokenizer, precision="fp32", name="tiny-llama")


@pytest.fixture(scope="session")
def t5_backbone(tokenizer) -> Backbone:
    return Backbone(tiny_t5(tokenizer), tokenizer, precision="fp32", name="tiny-t5")


@pytest.fixture(scope="session")
def gpt2_backbone(tokenizer) -> Backbone:
    return Backbone(tiny_gpt2(tokenizer), tokenizer, precision="fp32")


@pytest.fixture(params=["llama", "t5", "gpt2"])
def backbone(request) -> Backbone:
    """Each tiny backbone in turn (tests that apply to both model families)."""
    return request.getfixturevalue(f"{request.param}_backbone")


@pytest.fixture(scope="session")
def saved_models(tmp_path_factory, tokenizer) -> dict[str, Path]:
    """The tiny models and the tokenizer saved with save_pretrained: {'llama': dir, 't5': dir}."""
    out = {}
    for family, build in BUILDERS.items():
        path = tmp_path_factory.mktemp(f"tiny-{family}")
        build(tokenizer).save_pretrained(path)
        tokenizer.save_pretrained(path)
        out[family] = path
    return out


# --- data --------------------------------------------------------------------------------------

@pytest.fixture
def llama_dir(saved_models) -> Path:
    """The tiny Llama and its tokenizer saved to disk (for the CLI, which loads models by name)."""
    return saved_models["llama"]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A tiny GLUE tree (RTE, MRPC, CoLA, WNLI) read by the real task loaders."""
    return write_tiny_glue(tmp_path_factory.mktemp("data"))
