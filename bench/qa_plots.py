"""The QA benchmark's two figures: answer quality against memory size, and speed by mode."""

from __future__ import annotations

from pathlib import Path

import matplotlib

from ingest.atomic import replacing

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402


def save(results: dict, folder: Path) -> list[Path]:
    """The figures this run has data for (a `--main` run has no speed part, so no speed figure)."""
    folder.mkdir(parents=True, exist_ok=True)
    speed = [_speed(results, folder / "qa-speed.png")] if results["speed"] else []
    return [_quality(results, folder / "qa-quality.png"), *speed]


def _quality(results: dict, path: Path) -> Path:
    """Held-out F1 of each memory profile against its bytes per memory; RAG and no sources as lines."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    profiles = [r for r in results["records"] if r["knob"] not in ("memories", "interval")]
    memories = [r for r in profiles if r["mode"] == "memory"]
    ax.scatter([r["bytes_per_memory"] / 1024 for r in memories], [r["f1_heldout"] for r in memories])
    for r in memories:
        ax.annotate(
            r["profile"],
            (r["bytes_per_memory"] / 1024, r["f1_heldout"]),
            fontsize=8,
            xytext=(4, 3),
            textcoords="offset points",
        )
    for r in profiles:
        if r["mode"] in ("rag", "none"):
            ax.axhline(r["f1_heldout"], linestyle="--" if r["mode"] == "rag" else ":", color="grey")
            ax.annotate(
                r["mode"],
                (0, r["f1_heldout"]),
                xycoords=("axes fraction", "data"),
                fontsize=8,
                xytext=(4, 3),
                textcoords="offset points",
            )
    ax.set_xscale("log")
    ax.set_xlabel("KiB per memory (on disk)")
    ax.set_ylabel("F1, held-out articles")
    ax.set_title("Answer quality against memory size")
    fig.tight_layout()
    save_figure(fig, path)
    return path


def _speed(results: dict, path: Path) -> Path:
    """Time to first token and decode rate for 1, 5 and 10 retrieved chunks, by mode and engine."""
    rows = results["speed"]
    ks = sorted({r["retrieved"] for r in rows})
    series = sorted({(r["mode"], r["engine"]) for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.8 / len(series)
    for i, (mode, engine) in enumerate(series):
        xs = [k + (i - (len(series) - 1) / 2) * width for k in range(len(ks))]
        by_k = {r["retrieved"]: r for r in rows if (r["mode"], r["engine"]) == (mode, engine)}
        for ax, key in zip(axes, ("ttft_s", "decode_tok_s"), strict=True):
            ax.bar(xs, [by_k[k][key] for k in ks], width, label=f"{mode} ({engine})")
    for ax, label in zip(axes, ("time to first token (s)", "decode (tokens/s)"), strict=True):
        ax.set_xticks(range(len(ks)), [f"{k} chunks" for k in ks])
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    fig.suptitle("Speed by mode and retrieved chunks")
    fig.tight_layout()
    save_figure(fig, path)
    return path


def save_figure(fig: plt.Figure, path: Path) -> None:
    """Write the figure as a PNG, replacing `path` whole, and free it."""
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
