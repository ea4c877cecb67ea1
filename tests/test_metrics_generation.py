"""Generation metrics: SQuAD EM/F1 on hand-computed cases, BLEU against sacrebleu, ROUGE-L by hand."""

from __future__ import annotations

import random

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from mptune.errors import MptuneError
from mptune.metrics import bleu, normalize_answer, rouge_l, score, squad_em, squad_f1, ter
from mptune.tasks import get_task


def test_squad_normalisation():
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert normalize_answer("an apple, a pear and the plum.") == "apple pear and plum"
    assert normalize_answer("Theory of an Anthem") == "theory of anthem"  # whole words only
    assert normalize_answer("  U.S.A.  ") == "usa"
    assert normalize_answer("The") == ""


def test_squad_em_and_f1_hand_computed():
    golds = [("Denver Broncos", "The Broncos")]
    assert squad_em(["the denver broncos."], golds) == 100.0
    assert squad_em(["Broncos"], golds) == 100.0  # matches "The Broncos" once the article goes
    assert squad_em(["Denver"], golds) == 0.0
    assert squad_f1(["Broncos"], golds) == pytest.approx(100.0)  # best gold: "The Broncos" -> "broncos"
    # "Denver" vs "denver broncos": P = 1, R = 1/2 -> F1 = 2/3
    assert squad_f1(["Denver"], [("Denver Broncos",)]) == pytest.approx(200 / 3)
    # "denver broncos won" vs "denver broncos": P = 2/3, R = 1 -> 0.8; vs "broncos": P = 1/3, R = 1 -> 0.5
    assert squad_f1(["Denver Broncos won"], [("Denver Broncos", "Broncos")]) == pytest.approx(80.0)
    # bags of tokens: "x y y" vs "y y z" share two "y" -> P = R = 2/3
    assert squad_f1(["x y y"], [("y y z",)]) == pytest.approx(200 / 3)
    assert squad_f1(["cat"], [("dog",)]) == 0.0
    # averages over examples; a single string label is one gold answer
    assert squad_em(["Paris", "London"], ["paris", ("Rome", "Milan")]) == 50.0
    assert squad_f1(["Paris", "Denver"], ["paris", ("Denver Broncos",)]) == pytest.approx((100 + 200 / 3) / 2)


def test_empty_predictions_are_wrong():
    # the official script would give EM 1 here (both normalise to ""); an empty generation is wrong
    assert squad_em([""], [("The",)]) == 0.0 and squad_f1(["  "], [("The",)]) == 0.0
    assert squad_em(["a"], [("The",)]) == 100.0  # a non-empty prediction keeps the official rule
    assert squad_em([None, "x"], [("x",), ("x",)]) == 50.0


def test_bleu_matches_sacrebleu_with_variable_references():
    preds = ["the cat sat on the mat", "a dog ran in the park today", "there is a house by the river",
             "my friend eats some bread at home"]
    labels = [("the cat sat on a mat", "a cat was sitting on the mat"),
              ("the dog ran in the park",),
              ("a house stands by the river", "there is a house near the river", "by the river is a house"),
              "my friend eats bread at home"]
    streams = [[labels[0][0], labels[1][0], labels[2][0], labels[3]],
               [labels[0][1], None, labels[2][1], None],
               [None, None, labels[2][2], None]]
    expected = sacrebleu.corpus_bleu(preds, streams).score
    assert bleu(preds, labels) == pytest.approx(expected)
    assert 0.0 < expected < 100.0
    one_ref = [ls[0] if isinstance(ls, tuple) else ls for ls in labels]
    assert bleu(preds, one_ref) == pytest.approx(sacrebleu.corpus_bleu(preds, [one_ref]).score)
    assert bleu(["the cat sat on the mat today"], [("the cat sat on the mat today",)]) == pytest.approx(100.0)
    assert bleu(["", ""], [("a b c d",), ("e f g h",)]) == 0.0


def test_ter_hand_computed():
    # one substitution over six reference words; TER is an error rate: lower is better
    assert ter(["the cat sat on a mat"], [("the cat sat on the mat",)]) == pytest.approx(100 / 6)
    assert ter(["the cat sat on a mat"], [("a dog", "the cat sat on a mat")]) == 0.0  # closest reference
    assert ter(["", ""], [("a b",), ("c d",)]) == 100.0  # every reference word is an edit


def _random_corpus(seed: int) -> tuple[list[str], list[tuple[str, ...]]]:
    rng = random.Random(seed)
    words = "the a cat dog sat ran on in mat park house river by today".split()
    sentence = lambda: " ".join(rng.choices(words, k=rng.randint(3, 12)))  # noqa: E731
    preds = [sentence() for _ in range(30)]
    labels = [tuple(sentence() for _ in range(rng.randint(1, 3))) for _ in preds]
    return preds, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nlg_metrics_agree_with_the_packages_on_random_data(seed):
    preds, labels = _random_corpus(seed)
    streams = [[g[k] if k < len(g) else None for g in labels] for k in range(3)]
    assert bleu(preds, labels) == pytest.approx(sacrebleu.corpus_bleu(preds, streams).score)
    assert ter(preds, labels) == pytest.approx(sacrebleu.corpus_ter(preds, streams).score)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    expected = sum(scorer.score_multi(list(g), p)["rougeL"].fmeasure for p, g in zip(preds, labels)) / len(preds)
    assert rouge_l(preds, labels) == pytest.approx(100 * expected)


def test_rouge_l_hand_computed():
    # LCS("the cat sat", "the cat sat on the mat") = 3: P = 1, R = 1/2 -> F = 2/3
    assert rouge_l(["the cat sat"], [("the cat sat on the mat",)]) == pytest.approx(200 / 3)
    # best reference wins; stemming makes "cats" match "cat"
    assert rouge_l(["the cats sat"], [("a dog barked", "the cat sat")]) == pytest.approx(100.0)
    assert rouge_l(["", "a b"], [("a b",), ("a b",)]) == pytest.approx(50.0)


def test_bad_inputs():
    for fn in (squad_em, squad_f1, bleu, ter, rouge_l):
        with pytest.raises(MptuneError, match="2 predictions for 1 labels"):
            fn(["a", "b"], [("a",)])
        with pytest.raises(MptuneError, match="empty"):
            fn([], [])
        with pytest.raises(MptuneError, match="no gold"):
            fn(["a"], [()])


def test_score_uses_generation_task_metrics():
    assert list(score(get_task("squad"), ["a b"], [("a b",)])) == ["squad_f1", "squad_em"]
    assert list(score(get_task("record"), ["a b"], [("a b",)])) == ["squad_f1", "squad_em"]
    assert list(score(get_task("e2e"), ["a b"], [("a b",)])) == ["bleu", "rouge_l"]
    assert list(score(get_task("webnlg"), ["a b"], [("a b",)])) == ["bleu", "ter", "rouge_l"]
