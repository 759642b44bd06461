"""QA passages as real documents: one Markdown file per article, one passage per paragraph.

Each passage is one line, so the line span that the catalog records for a retrieved chunk says which
passage it came from: that is how retrieval recall is measured, through the real ingest pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from bench.squad import Dataset, Question
from engine.chat.citations import Citation
from engine.chat.sources import Chunk


def passage_line(passage: int) -> int:
    """The (1-based) line of a passage: after the title line and a blank line, one every other line."""
    return 3 + 2 * passage


def write_articles(dataset: Dataset, articles: Iterable[int], folder: Path) -> dict[int, Path]:
    """Write the chosen articles into `folder`; their paths by article index."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for a in articles:
        article = dataset.articles[a]
        title = article.title.replace("_", " ")
        passages = (" ".join(p.split()) for p in article.passages)  # one line each
        path = (folder / f"{a:02d}-{article.title}.md").resolve()
        path.write_text(f"# {title}\n\n" + "\n\n".join(passages) + "\n", encoding="utf-8")
        paths[a] = path
    return paths


def holds_gold(chunk: Chunk | Citation, question: Question, paths: dict[int, Path]) -> bool:
    """Whether the chunk (or a citation of it) covers the passage the question was written from."""
    line = passage_line(question.passage)
    return Path(chunk.path) == paths[question.article] and chunk.line_start <= line <= chunk.line_end
