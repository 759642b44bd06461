"""SQuAD-format QA data and its official scoring: answer normalisation, exact match and token F1.

The scoring follows the SQuAD v1.1/v2.0 evaluation script: lower case, drop punctuation and the articles
a/an/the, collapse white space; EM and F1 are the best over the gold answers. An unanswerable question
(SQuAD v2) has no gold answers: only an abstention scores there.
"""

from __future__ import annotations

import collections
import re
import string
from dataclasses import dataclass
from pathlib import Path

import msgspec

from bench.errors import QADataError
from engine.chat.prompt import ABSTAIN

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    answers: tuple[str, ...]  # empty: unanswerable
    article: int  # index of its article in the file
    passage: int  # index of its passage in the article


@dataclass(frozen=True)
class Article:
    title: str
    passages: tuple[str, ...]


@dataclass(frozen=True)
class Dataset:
    articles: tuple[Article, ...]
    questions: tuple[Question, ...]


class _Answer(msgspec.Struct):
    text: str


class _QA(msgspec.Struct):
    id: str
    question: str
    answers: list[_Answer]
    is_impossible: bool = False


class _Paragraph(msgspec.Struct):
    context: str
    qas: list[_QA]


class _Article(msgspec.Struct):
    title: str
    paragraphs: list[_Paragraph]


class _File(msgspec.Struct):  # other fields (version, answer_start, plausible_answers) are ignored
    data: list[_Article]


def load(path: str | Path) -> Dataset:
    """Read a SQuAD v1.1 or v2.0 JSON file. QADataError (one sentence) for a file that cannot be read or
    is not SQuAD JSON, naming what is wrong and where (msgspec's message, e.g. `$.data[0].title`)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise QADataError(f"Cannot read the QA data {path}: {exc.strerror or exc}.") from exc
    try:
        return _dataset(msgspec.json.decode(raw, type=_File))
    except msgspec.DecodeError as exc:  # ValidationError among them
        raise QADataError(f"{path} is not a readable SQuAD JSON file: {exc}.") from exc


def _dataset(file: _File) -> Dataset:
    articles, questions = [], []
    for a, article in enumerate(file.data):
        for p, paragraph in enumerate(article.paragraphs):
            for qa in paragraph.qas:
                answers = () if qa.is_impossible else tuple(x.text for x in qa.answers)
                questions.append(Question(qa.id, qa.question, answers, a, p))
        articles.append(Article(article.title, tuple(p.context for p in article.paragraphs)))
    return Dataset(tuple(articles), tuple(questions))


def normalize(text: str) -> str:
    """SQuAD's answer normalisation."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def abstains(prediction: str) -> bool:
    """The answer declines: empty, or the abstention word the prompt teaches."""
    return normalize(prediction) in ("", ABSTAIN)


def exact_match(prediction: str, answers: tuple[str, ...]) -> float:
    if not answers:
        return float(abstains(prediction))
    return max(float(normalize(prediction) == normalize(a)) for a in answers)


def f1(prediction: str, answers: tuple[str, ...]) -> float:
    if not answers:
        return float(abstains(prediction))
    return max(_f1(normalize(prediction).split(), normalize(a).split()) for a in answers)


def _f1(pred: list[str], gold: list[str]) -> float:
    if not pred or not gold:
        return float(pred == gold)
    common = sum((collections.Counter(pred) & collections.Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)
