"""Side-by-side comparison of finished runs: a text table and an accuracy/MB plot."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any, Optional


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


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and abs(value) >= 1e4:  # 28,797, not 2.88e+04
            return f"{value:,.0f}"
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(
    rows: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    columns: Sequence[str] | None = None,
    *,
    markdown: bool = True,
) -> str:
    """The one table writer: rows of dicts -> a Markdown (or aligned plain-text) table.

    Floats get 4 significant digits (from 10,000 on, whole numbers with thousands
    separators) and integers thousands separators unless they are already strings.
    `columns` defaults to the first row's keys.
    """
    if isinstance(rows, Mapping):
        rows = [rows]
    columns = list(columns or rows[0])
    cells = [[_cell(row.get(c, "")) for c in columns] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        return "\n".join(lines + ["| " + " | ".join(line) + " |" for line in cells])
    widths = [max(len(x) for x in [c, *(line[i] for line in cells)]) for i, c in enumerate(columns)]

    def fmt(line):
        return "  ".join(
            x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(line, widths))
        )

    return "\n".join([fmt(columns), "  ".join("-" * w for w in widths), *map(fmt, cells)])


def comparison_rows(summaries: Sequence[Mapping[str, Any]], baseline: str) -> list[dict]:
    """Display rows of a comparison; reductions are against the run labelled `baseline`."""
    base = next(s for s in summaries if s["run"] == baseline)
    return [
        {
            "run": s["run"],
            "test acc": f"{s['test_accuracy']:.4f}",
            "bytes/client/round": f"{s['bytes_per_client_round']:,}",
            "total MB": f"{s['total_megabytes']:.1f}",
            "reduction": f"{base['total_megabytes'] / s['total_megabytes']:.1f}x",
            "median s/round": f"{s['median_round_seconds']:.3f}",
        }
        for s in summaries
    ]


def comparison_table(summaries: Sequence[Mapping[str, Any]], baseline: str) -> str:
    """A plain-text comparison table."""
    return table(comparison_rows(summaries, baseline), markdown=False)


def markdown_table(summaries: Sequence[Mapping[str, Any]], baseline: str) -> str:
    """The same table in Markdown (for the README)."""
    return table(comparison_rows(summaries, baseline))


def plot_curves(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    path: str,
    title: str,
    xlabel: str,
    *,
    log_x: bool = False,
    minor_grid: Optional[bool] = None,
    small: bool = False,
    ylabel: str = "test accuracy",
) -> str:
    """Writes a PNG of accuracy curves ({label: [(x, accuracy), ...]}); the minor grid
    lines default to a log x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, points in curves.items():
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", markersize=2 if small else 3, label=label)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    minor = log_x if minor_grid is None else minor_grid
    ax.grid(True, which="both" if minor else "major", alpha=0.3)
    ax.legend(fontsize=7 if small else None)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_accuracy(runs, path, title, x_key, xlabel, *, log_x=False, small=False) -> str:
    """Test accuracy of each run's evaluated rounds against the column `x_key`, to a PNG."""
    curves = {
        label: [
            (float(r[x_key]), float(r["eval/accuracy"]))
            for r in rows
            if r.get("eval/accuracy", "") != ""
        ]
        for label, rows in runs.items()
    }
    return plot_curves(curves, path, title, xlabel, log_x=log_x, small=small)


def plot_accuracy_vs_megabytes(
    runs: Mapping[str, Sequence[Mapping[str, Any]]], path: str, title: str = ""
) -> str:
    """Writes a PNG of test accuracy against cumulative megabytes (log x axis)."""
    xlabel = "cumulative megabytes communicated (down + up, all clients)"
    return _plot_accuracy(runs, path, title, "cumulative_megabytes", xlabel, log_x=True)


def plot_accuracy_vs_rounds(
    runs: Mapping[str, Sequence[Mapping[str, Any]]], path: str, title: str = ""
) -> str:
    """Writes a PNG of test accuracy against the round (every evaluated round of each run)."""
    return _plot_accuracy(runs, path, title, "round", "round", small=True)


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


class FewerRunsError(ValueError):
    """A report would replace saved results that hold more runs, or more rounds, than it
    found."""


def _as_counts(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, 0)


def refuse_fewer_runs(path: str, found: Mapping[str, Any], count, runs_dir: str = "") -> None:
    """Raises FewerRunsError when the report saved at `path` (JSON) holds, in a section,
    more runs or more rounds than `found` ({section: (runs, rounds)} or {section: runs},
    read from `runs_dir`); `count(saved_json)` gives the same for the saved report. A
    short grid (every run a few rounds) therefore never replaces a long one. A missing
    file is fine; an unreadable one is refused (nothing is overwritten)."""
    import json

    try:
        with open(path) as f:
            saved = count(json.load(f))
    except FileNotFoundError:
        return
    except (OSError, ValueError, AttributeError, TypeError) as e:
        raise FewerRunsError(
            f"{path} exists but cannot be read ({e}); move it away to write a new report."
        ) from None
    fewer = {}
    for key, value in saved.items():
        (runs, rounds), (had_runs, had_rounds) = _as_counts(found.get(key, 0)), _as_counts(value)
        if runs < had_runs or rounds < had_rounds:
            fewer[key] = f"section {key}: {runs} run rows (saved: {had_runs})" + (
                f", {rounds:,} rounds in all (saved: {had_rounds:,})" if had_rounds else ""
            )
    if fewer:
        raise FewerRunsError(
            f"the report from {runs_dir or 'these runs'} has fewer runs or rounds than {path} "
            f"holds ({'; '.join(fewer.values())}); nothing was written. Point it at the runs "
            f"behind {path}, or write this report elsewhere."
        )
