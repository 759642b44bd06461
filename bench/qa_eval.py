"""Asking a set of questions through one chat configuration and scoring the answers.

Every answer is timed as a user sees it (from the call to the first streamed piece, then the rest), and
scored with SQuAD's EM and F1. The gold answer's log-probability is measured separately, by feeding it
as the reply to the same context (teacher forcing), which says how close a wrong answer came.

Abstention: a 270M base model never answers `unknown` by itself, so an answer is withdrawn when its
sources did not support it (`Chat.support`: its log-probability with them minus without them, per
token) below a threshold chosen on answerable tuning questions (`calibrate`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.squad import Question, abstains, exact_match, f1
from engine.chat.chat import Chat
from engine.chat.citations import Citation
from engine.chat.prompt import ABSTAIN

MAX_ANSWER_TOKENS = 32  # SQuAD answers are a few words; the prompt ends an answer at the newline


@dataclass(frozen=True)
class Outcome:
    """One question answered in one configuration."""

    question: Question
    answer: str
    f1: float
    em: float
    abstained: bool
    logprob: float | None  # the gold answer's mean log-probability per token; None when unanswerable
    ttft_s: float | None  # None when the answer was empty
    decode_tok_s: float | None  # forward passes per second after the first token
    cites_gold: bool | None  # whether the top citation is the gold passage; None without citations
    support: float | None = None  # Chat.support (nats per token); None when not measured
    confidence: float | None = None  # Chat.confidence (nats per token); measured with support
    unknown_logprob: float | None = None  # the abstention reply's mean log-prob per token in the answer's
    # context (how near the model came to saying `unknown`); measured with support

    def row(self, setting: str, split: str) -> dict:
        """One line of the per-answer file (`qa-answers.jsonl`): what signals for abstention are tried on."""
        q = self.question
        return {
            "setting": setting,
            "split": split,
            "id": q.id,
            "article": q.article,
            "answer": self.answer,
            "f1": self.f1,
            "em": self.em,
            "abstained": self.abstained,
            "gold_logprob": self.logprob,
            "cites_gold": self.cites_gold,
            "support": self.support,
            "confidence": self.confidence,
            "unknown_logprob": self.unknown_logprob,
        }

    def withdrawn(self, threshold: float | None) -> bool:
        """Whether the answer abstains: it says so, or its support is below `threshold` (None: never)."""
        return withdraws(self.support, self.abstained, threshold)


def withdraws(signal: float | None, abstained: bool, threshold: float | None) -> bool:
    """Whether an answer abstains: it says so, or its signal was measured and is below `threshold`."""
    return abstained or (threshold is not None and signal is not None and signal < threshold)


Gold = Callable[[Citation, Question], bool]  # whether a citation points into the question's passage


def ask(
    chat: Chat,
    question: Question,
    mode: str,
    score: bool = True,
    gold: Gold | None = None,
    support: bool = False,
) -> Outcome:
    """score: measure the gold answer's log-probability; support: measure `Chat.support` (not in none)."""
    start = time.perf_counter()
    answer = chat.ask(question.text, mode, MAX_ANSWER_TOKENS)
    first = None
    for _ in answer:
        first = first or time.perf_counter()
    end = time.perf_counter()
    confidence = chat.confidence(answer) if support else None
    unknown = _per_token(answer.logprob(ABSTAIN)) if support else None
    gold_answered = score and question.answers
    logprob = _per_token(answer.logprob(_fitting(chat, question.answers[0]))) if gold_answered else None
    return Outcome(
        question,
        answer.text,
        f1(answer.text, question.answers),
        exact_match(answer.text, question.answers),
        abstains(answer.text),
        logprob,
        None if first is None else first - start,
        answer.tokens / (end - first) if first is not None and end > first and answer.tokens else None,
        gold(answer.citations[0], question) if gold and answer.citations and question.answers else None,
        chat.support(answer, confidence) if support else None,
        confidence,
        unknown,
    )


def _per_token(scored: tuple[float, int]) -> float:
    """(summed log-probability, tokens) -> nats per token."""
    total, n = scored
    return total / n


def _fitting(chat: Chat, answer: str) -> str:
    """The gold answer cut to the reply length the benchmark allows (a handful of SQuAD answers are
    longer than 32 tokens; their first 32 are scored)."""
    tok = chat.runtime.tokenizer
    ids = tok.encode(chat.prompt.lead + answer.strip())
    return answer if len(ids) <= MAX_ANSWER_TOKENS else tok.decode(ids[:MAX_ANSWER_TOKENS])


def ask_all(
    chat: Chat,
    questions: Sequence[Question],
    mode: str,
    score: bool = True,
    gold: Gold | None = None,
    on_answer: Callable[[Outcome], None] | None = None,
    support: bool = False,
) -> list[Outcome]:
    outcomes = []
    for q in questions:
        outcomes.append(ask(chat, q, mode, score, gold, support and mode != "none"))
        if on_answer is not None:
            on_answer(outcomes[-1])
    return outcomes


def _mean(xs: Sequence[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def _median(xs: Sequence[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def quality(outcomes: Sequence[Outcome]) -> dict:
    """Mean F1 and EM (SQuAD), gold log-probability and abstention share of a set of answers."""
    return {
        "f1": _mean([o.f1 for o in outcomes]),
        "em": _mean([o.em for o in outcomes]),
        "gold_logprob": _mean([o.logprob for o in outcomes]),
        "abstain": _mean([float(o.abstained) for o in outcomes]),
        "citation_at_1": _mean([None if o.cites_gold is None else float(o.cites_gold) for o in outcomes]),
    }


def speed(outcomes: Sequence[Outcome]) -> dict:
    """Median time to first token and decode rate over the answers."""
    return {
        "ttft_s": _median([o.ttft_s for o in outcomes]),
        "decode_tok_s": _median([o.decode_tok_s for o in outcomes]),
    }


MAX_FALSE_ABSTAIN = 0.10  # the share of answerable questions abstention may withdraw


def calibrate(answerable: Sequence[Outcome], max_false: float = MAX_FALSE_ABSTAIN) -> float | None:
    """The support threshold for these answerable answers (`signal_threshold`)."""
    return signal_threshold([(o.support, o.abstained) for o in answerable], max_false)


def signal_threshold(
    answerable: Sequence[tuple[float | None, bool]], max_false: float = MAX_FALSE_ABSTAIN
) -> float | None:
    """The threshold on a signal (higher: keep the answer) that withdraws the most answers while
    withdrawing at most `max_false` of these answerable ones, given as (signal, abstained) pairs (those
    that abstain by themselves count against it): abstain below it. None when no signal was measured,
    or the answers' own abstentions already exceed `max_false`."""
    measured = sorted(signal for signal, abstained in answerable if signal is not None and not abstained)
    budget = int(max_false * len(answerable)) - sum(abstained for _, abstained in answerable)
    if not measured or budget < 0:
        return None
    return measured[min(budget, len(measured) - 1)]


def withdrawn_share(outcomes: Sequence[Outcome], threshold: float | None) -> float | None:
    """The share of answers that abstain under `threshold` (None: no answers)."""
    return _mean([float(o.withdrawn(threshold)) for o in outcomes])
