"""Plot helpers shared by the benchmarks (matplotlib, Agg, PNG)."""

from __future__ import annotations

from pathlib import Path


def loglog(series: list[tuple[str, str, str | None, list[tuple[float, float]]]], xlabel: str, ylabel: str, title: str,
           path: Path) -> None:
    """Log-log lines: series of (label, matplotlib style, colour or None, [(x, y), ...]) -> PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, style, color, pts in series:
        if pts:
            ax.loglog(*zip(*sorted(pts)), style, color=color, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
