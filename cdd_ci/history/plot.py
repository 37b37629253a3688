"""`cdd savings --plot`: daily machine-hours used against the baselines, as PNG or SVG.

matplotlib is an optional dependency (the `plot` extra), imported only here and only when
a plot is asked for, with the Agg backend: CI runners have no display.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cdd_ci.history.savings import Savings
from cdd_ci.words import plural

FORMATS = (".png", ".svg")
COLOURS = ("#2b6cb0", "#38a169", "#d69e2e", "#805ad5", "#dd6b20", "#319795")
BASELINE_STYLES = (("#c53030", "--"), ("#4a5568", ":"))


class PlotError(Exception):
    """The plot cannot be drawn (matplotlib missing, unknown format, unwritable path)."""


def plot(savings: Savings, path: Path) -> Path:
    """Draw the plot to `path` (its suffix picks the format); returns the path written."""
    if path.suffix.lower() not in FORMATS:
        raise PlotError(f"{path}: the plot is written as .png or .svg")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError("plotting needs matplotlib: pip install 'cdd-ci[plot]'") from None

    days = savings.days
    x = list(range(len(days)))
    fig, ax = plt.subplots(figsize=(10, 5.6), dpi=120)
    try:
        bottom = [0.0] * len(days)
        for i, env in enumerate(savings.environments):
            heights = [env.used.get(d, 0.0) for d in days]
            ax.bar(x, heights, bottom=bottom, width=0.7, color=COLOURS[i % len(COLOURS)],
                   label=f"used: {env.name} ({env.used_hours:,.1f} h)", zorder=3)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        for xi, total in zip(x, bottom, strict=True):
            if total:
                ax.annotate(f"{total:.1f}", (xi, total), xytext=(0, 3),
                            textcoords="offset points", ha="center", fontsize=8,
                            color="#2d3748")
        # a baseline is a level per whole day: stairs span each day's full width
        edges = [xi - 0.5 for xi in x] + [x[-1] + 0.5]
        for baseline, (colour, style) in zip(savings.baselines, BASELINE_STYLES, strict=False):
            total = savings.baseline_hours(baseline)
            saved = total - savings.used_hours
            share = f", cdd saves {saved / total:.0%}" if total else ""
            ax.stairs([savings.baseline_on(baseline, d) for d in days], edges, color=colour,
                      linestyle=style, linewidth=2, zorder=4, baseline=None,
                      label=f"{baseline.name}: {total:,.0f} h{share}")
        fig.suptitle("Machine-hours per day: what cdd used, and what the baselines would",
                     x=0.01, ha="left", fontsize=13, fontweight="bold")
        ax.set_title(_subtitle(savings), loc="left", fontsize=9, color="#4a5568")
        ax.set_ylabel("machine-hours per day")
        ax.set_ylim(bottom=0)
        ax.set_xlim(edges[0] - 0.1, edges[-1] + 0.1)
        every = max(1, len(days) // 14)  # about two weeks of labels fit
        ax.set_xticks(x[::every], labels=[f"{d:%a}\n{d:%d %b}" for d in days[::every]])
        ax.grid(axis="y", color="#e2e8f0", zorder=0)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        handles, labels = ax.get_legend_handles_labels()
        used_first = sorted(range(len(labels)), key=lambda i: not labels[i].startswith("used"))
        ax.legend([handles[i] for i in used_first], [labels[i] for i in used_first],
                  loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False,
                  fontsize=9)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format=path.suffix.lower().lstrip("."), bbox_inches="tight")
    except OSError as exc:
        raise PlotError(f"{path}: {exc}") from None
    finally:
        plt.close(fig)
    return path


def _subtitle(savings: Savings) -> str:
    first, last = savings.days[0], savings.days[-1]
    end = datetime.fromtimestamp(savings.window.end, UTC)
    partial = f"; the last day up to {end:%H:%M}" if end.time() != datetime.min.time() else ""
    text = (f"{first:%d %b} to {last:%d %b %Y} (UTC{partial}), {plural(savings.runs, 'run')}, "
            f"{savings.used_hours:,.1f} machine-hours used")
    if savings.price:
        text += f", {savings.currency}{savings.cost(savings.used_hours):,.2f}"
    return text
