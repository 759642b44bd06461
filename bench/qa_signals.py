"""Abstention signals tried offline on a qa run's per-answer file (`qa-answers.jsonl`), without asking
again: `python -m bench.qa_signals FILE` prints, for each signal and mode, the threshold chosen on the
answerable tuning answers (at most MAX_FALSE_ABSTAIN withdrawn, `signal_threshold`) and the shares it
withdraws of the unanswerable questions of SQuAD v2's first article (Normans, beside tuning) and of the
others (Rhine, beside held-out), and of the held-out answerable ones (false abstention).

A signal is higher for an answer to keep. Those tried (README "Evaluation"): support and confidence
(`Chat.support`, `Chat.confidence`), the abstention reply's log-probability, the answer's margin over it,
and how far the answer agrees (SQuAD token F1) with the other sourced mode's answer to the same question.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

from bench.qa_eval import MAX_FALSE_ABSTAIN, signal_threshold, withdraws
from bench.squad import f1

Answers = dict[str, dict]  # one question's answers by mode ("none", "rag", "memory")
Signal = Callable[[str, Answers], float | None]  # (mode, answers) -> the signal of answers[mode]
OTHER = {"rag": "memory", "memory": "rag"}


def _field(name: str) -> Signal:
    return lambda mode, answers: answers[mode].get(name)  # None in files written before the signal


def _margin(mode: str, answers: Answers) -> float | None:
    row = answers[mode]
    if row.get("confidence") is None or row.get("unknown_logprob") is None:
        return None
    return row["confidence"] - row["unknown_logprob"]


def _agreement(mode: str, answers: Answers) -> float | None:
    other = answers.get(OTHER[mode])
    return None if other is None else f1(answers[mode]["answer"], (other["answer"],))


def _negated(x: float | None) -> float | None:
    return None if x is None else -x


SIGNALS: dict[str, Signal] = {
    "support": _field("support"),
    "confidence": _field("confidence"),
    "-unknown_logprob": lambda mode, answers: _negated(answers[mode].get("unknown_logprob")),
    "confidence - unknown_logprob": _margin,
    "agreement with the other mode": _agreement,
}


def group(rows: Iterable[dict]) -> dict[tuple[str, str], Answers]:
    """Rows of qa-answers.jsonl by (split, question id), then by mode (the setting's first word)."""
    grouped: dict[tuple[str, str], Answers] = defaultdict(dict)
    for row in rows:
        grouped[(row["split"], row["id"])][row["setting"].split("/", 1)[0]] = row
    return grouped


def evaluate(grouped: dict[tuple[str, str], Answers], mode: str, signal: Signal) -> dict:
    """The threshold chosen on tuning answers and the shares withdrawn: "tune" and "heldout" (answerable,
    false abstention), "normans" and "rhine" (unanswerable); None where a split has no answers."""
    by_split: dict[str, list[tuple[float | None, bool]]] = defaultdict(list)
    for (split, _), answers in grouped.items():
        if mode in answers:
            row = answers[mode]
            name = split if split != "unanswerable" else "normans" if row["article"] == 0 else "rhine"
            by_split[name].append((signal(mode, answers), row["abstained"]))
    chosen = signal_threshold(by_split["tune"], MAX_FALSE_ABSTAIN)
    shares = {name: _withdrawn(by_split[name], chosen) for name in ("tune", "normans", "heldout", "rhine")}
    return {"threshold": chosen, **shares}


def _withdrawn(pairs: list[tuple[float | None, bool]], threshold: float | None) -> float | None:
    return sum(withdraws(s, a, threshold) for s, a in pairs) / len(pairs) if pairs else None


def table(path: Path) -> str:
    grouped = group(json.loads(line) for line in path.read_text().splitlines() if line.strip())
    modes = sorted({m for answers in grouped.values() for m in answers} & set(OTHER))
    lines = [
        "| mode | signal | threshold | false, answerable (tuning) | unanswerable, Normans (tuning) "
        "| false, answerable (held-out) | unanswerable, Rhine (held-out) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for mode in modes:
        for name, signal in SIGNALS.items():
            r = evaluate(grouped, mode, signal)
            cells = [
                f"{r[k]:.2f}" if r[k] is not None else "—" for k in ("tune", "normans", "heldout", "rhine")
            ]
            threshold = f"{r['threshold']:.3f}" if r["threshold"] is not None else "—"
            lines.append(f"| {mode} | {name} | {threshold} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1])))
