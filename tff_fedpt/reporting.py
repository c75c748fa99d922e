"""Side-by-side comparison of finished runs: a text table and an accuracy/MB plot."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any


def summarize(label: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One comparison-table row from a run's metrics rows."""
    evals = [r for r in rows if r.get("eval/accuracy", "") != ""]
    last = rows[-1]
    per_round = [float(r["round_broadcast_bytes"]) + float(r["round_upload_bytes"]) for r in rows]
    return {
        "run": label,
        "rounds": int(last["round"]),
        "test_accuracy": float(evals[-1]["eval/accuracy"]) if evals else float("nan"),
        "bytes_per_client_round": int(last["broadcast_bytes_per_client"])
        + int(last["upload_bytes_per_client"]),
        "bytes_per_round": statistics.median(per_round),
        "total_megabytes": float(last["cumulative_megabytes"]),
        "median_round_seconds": statistics.median(float(r["round_seconds"]) for r in rows),
    }


def comparison_table(summaries: Sequence[Mapping[str, Any]], baseline: str) -> str:
    """A plain-text table; reduction factors are against the run labelled `baseline`."""
    base = next(s for s in summaries if s["run"] == baseline)
    header = (
        "run",
        "test acc",
        "bytes/client/round",
        "total MB",
        "reduction",
        "median s/round",
    )
    lines = [header]
    for s in summaries:
        lines.append(
            (
                s["run"],
                f"{s['test_accuracy']:.4f}",
                f"{s['bytes_per_client_round']:,}",
                f"{s['total_megabytes']:.1f}",
                f"{base['total_megabytes'] / s['total_megabytes']:.1f}x",
                f"{s['median_round_seconds']:.3f}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))
        )
        for line in lines
    ]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown_table(summaries: Sequence[Mapping[str, Any]], baseline: str) -> str:
    """The same table in Markdown (for the README)."""
    text = comparison_table(summaries, baseline).splitlines()
    rows = [text[0]] + text[2:]
    cells = [[c for c in line.split("  ") if c.strip()] for line in rows]
    md = ["| " + " | ".join(c.strip() for c in cells[0]) + " |"]
    md.append("|" + "---|" * len(cells[0]))
    md += ["| " + " | ".join(c.strip() for c in row) + " |" for row in cells[1:]]
    return "\n".join(md)


def plot_accuracy_vs_megabytes(
    runs: Mapping[str, Sequence[Mapping[str, Any]]], path: str, title: str = ""
) -> str:
    """Writes a PNG of test accuracy against cumulative megabytes (log x axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, rows in runs.items():
        points = [
            (float(r["cumulative_megabytes"]), float(r["eval/accuracy"]))
            for r in rows
            if r.get("eval/accuracy", "") != ""
        ]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", markersize=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("cumulative megabytes communicated (down + up, all clients)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_accuracy_vs_noise(
    points: Mapping[str, Sequence[tuple[float, float, float]]], path: str, title: str = ""
) -> str:
    """Writes a PNG of final test accuracy against the noise multiplier.

    Args:
      points: run label -> [(noise_multiplier, epsilon, accuracy), ...].
      path: Output PNG path.
      title: Plot title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    first = sorted(next(iter(points.values())))
    position = {p[0]: i for i, p in enumerate(first)}  # evenly spaced noise levels
    for label, series in points.items():
        series = sorted(series)
        ax.plot([position[p[0]] for p in series], [p[2] for p in series], marker="o", label=label)
    ax.set_xticks(range(len(first)))
    ax.set_xticklabels(
        [
            f"{p[0]:g}\n(eps {p[1]:.3g})" if p[1] != float("inf") else f"{p[0]:g}\n(no DP)"
            for p in first
        ]
    )
    ax.set_xlabel("noise multiplier (epsilon at the target delta)")
    ax.set_ylabel("final test accuracy")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
