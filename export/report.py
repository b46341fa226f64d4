"""``assets.extra/report.png``: a version's measurements, one panel per thing measured, only panels that have data.

``retrieval`` (user -> movies), in this order, each when its data is there:

1. **test hit rate at k** (``hit_rate_panel``): the model and each evaluated baseline (colour), seen titles
   excluded as ``exclude_seen`` serves them (solid) and not, as ``serving_default`` (dashed); the legend names
   both kinds and, for the model, what ``exclude_seen`` serves (e.g. towers + 0.25 x EASE);
2. **validation curve** (``curve_panel``): the seen-excluded top-10 per epoch of the towers that were kept, the
   chosen epoch marked (not drawn without a validation split: the ``seed`` preset);
3. **hyperparameter search** (``search_panel``): each trial's validation criterion in trial order, coloured by
   loss, the chosen trial ringed, and why the search stopped (only with ``--tune-budget`` > 0);
4. **ScaNN search settings** (``index_panel``): recall@10 against exact search by leaves searched, coloured by
   re-order candidates (colour bar), the median latency of the timed settings on a right-hand axis, the chosen
   setting ringed and the recall needed as a line (not drawn for BruteForce or hand-set settings);
5. **new users** (``new_users_panel``, when ``metrics["new_users"]`` is there, export/history_evaluation.py): the
   ``by_history`` model's hit rate at k on held-out new users against EASE, item-kNN and popularity, with 95 %
   confidence bars.

``similar_movies`` (movie -> movies) has no test of its own (no ground truth for similar titles): its report is
its own index's panel (4); with nothing tuned (BruteForce, or search settings given) it is one line of text.

Panels are laid out in rows of at most three, every row filled (4 panels: 2 + 2; 5: 3 + 2). Drawn with
matplotlib's Agg backend (no display needed); ``figure`` returns the drawing for tests, ``write`` saves it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

REPORT_FILE = "report.png"
_COLOURS = {"model": "#1f77b4", "popularity": "#7f7f7f", "ease": "#d62728", "item_knn": "#2ca02c"}
_NAMES = {"model": "model", "popularity": "popularity", "ease": "EASE", "item_knn": "item-kNN"}
_CHOSEN = "#ff7f0e"
_KS_TICKS = (1, 5, 10, 50, 100)
PANEL_SIZE = (5.4, 4.3)  # inches per panel


def write(
    saved_model_dir: Path, model_name: str, metrics: dict, validation: dict | None, index_tuning: dict | None = None
) -> Path:
    """Draws the report of ``model_name``'s version into its assets.extra; returns its path."""
    import matplotlib.pyplot as plt

    drawing = figure(model_name, metrics, validation, index_tuning)
    path = Path(saved_model_dir) / "assets.extra" / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    drawing.savefig(path)
    plt.close(drawing)
    return path


def panels(
    model_name: str, metrics: dict, validation: dict | None, index_tuning: dict | None
) -> list[Callable[[object], None]]:
    """The panels ``model_name``'s report draws, in order, each a function of its axes: only those with data."""
    drawn: list[Callable[[object], None]] = []
    if model_name != "similar_movies":
        if any(metrics.get(name) for name in _COLOURS):
            drawn.append(lambda axes: hit_rate_panel(axes, metrics))
        if validation and validation.get("curve"):
            drawn.append(lambda axes: curve_panel(axes, validation))
        if validation and (validation.get("tuning") or {}).get("trials"):
            drawn.append(lambda axes: search_panel(axes, validation["tuning"]))
    if index_tuning and index_tuning.get("tried"):
        drawn.append(lambda axes: index_panel(axes, model_name, index_tuning))
    if model_name != "similar_movies" and metrics.get("new_users"):
        drawn.append(lambda axes: new_users_panel(axes, metrics["new_users"]))
    return drawn


def rows_of(count: int) -> list[int]:
    """Panels per row: at most three, every row filled as evenly as it can be (4: 2 + 2, 5: 3 + 2)."""
    rows = -(-count // 3)
    return [count // rows + (1 if i < count % rows else 0) for i in range(rows)]


def figure(model_name: str, metrics: dict, validation: dict | None, index_tuning: dict | None = None):
    """The report as a matplotlib Figure (Agg): the panels of ``panels``, or one line of text when there are none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = panels(model_name, metrics, validation, index_tuning)
    if not drawn:
        fig = plt.figure(figsize=(8, 1.2), dpi=100)
        fig.text(
            0.5,
            0.5,
            f"{model_name}: nothing measured to plot\n(an exact BruteForce index, or ScaNN search settings given; "
            "see manifest.json)",
            ha="center",
            va="center",
            fontsize=10,
        )
        return fig
    rows = rows_of(len(drawn))
    columns = max(rows)
    fig = plt.figure(figsize=(PANEL_SIZE[0] * columns, PANEL_SIZE[1] * len(rows)), dpi=100, layout="constrained")
    grid = fig.add_gridspec(len(rows), 6)
    drawing = iter(drawn)
    for row, count in enumerate(rows):
        span = 6 // count
        for column in range(count):
            next(drawing)(fig.add_subplot(grid[row, column * span : (column + 1) * span]))
    return fig


def _log_k_axis(axes, ks: list[int]) -> None:
    import matplotlib.ticker

    axes.set_xscale("log")
    axes.xaxis.set_major_locator(matplotlib.ticker.FixedLocator([k for k in _KS_TICKS if k in ks] or ks))
    axes.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axes.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    axes.set_xlabel("k (titles returned)")


def _ks(row: dict) -> list[int]:
    return sorted(int(key.split("_")[1]) for key in row if key.startswith("top_"))


def _served(metrics: dict) -> str:
    """What exclude_seen serves, in words, from ``metrics["served"]["exclude_seen"]`` (the chosen blend)."""
    blend = (metrics.get("served") or {}).get("exclude_seen") or {}
    tower, ease = blend.get("tower", 1.0), blend.get("ease", 0.0)
    if not ease:
        return "the towers"
    return "EASE's factors" if not tower else f"towers + {ease:g} x EASE"


def hit_rate_panel(axes, metrics: dict) -> None:
    """Test hit rate at k of the model and each baseline: colour = who, solid = seen titles excluded, dashed = not."""
    from matplotlib.lines import Line2D

    from export.evaluate import BASELINES

    names, ks_all = [], set()
    for name in ("model", *BASELINES):
        drew = False
        for suffix, style in (("_exclude_seen", "-"), ("", "--")):
            row = metrics.get(name + suffix)
            if not row:
                continue
            ks = _ks(row)
            ks_all.update(ks)
            axes.plot(ks, [row[f"top_{k}"] for k in ks], style, marker="o", markersize=3, color=_COLOURS.get(name))
            drew = True
        if drew:
            names.append(name)
    _log_k_axis(axes, sorted(ks_all))
    axes.set_ylabel("test hit rate at k")
    axes.set_ylim(0, 1.02)
    axes.set_title(f"user -> movies: test hit rate ({metrics.get('test_ratings', 0):,} ratings)")
    axes.grid(True, alpha=0.3)
    handles = [Line2D([], [], color=_COLOURS.get(n), marker="o", markersize=3, label=_NAMES.get(n, n)) for n in names]
    handles += [
        Line2D([], [], color="black", linestyle="-", label=f"seen titles excluded\n(exclude_seen: {_served(metrics)})"),
        Line2D([], [], color="black", linestyle="--", label="seen titles kept\n(serving_default)"),
    ]
    axes.legend(handles=handles, fontsize=7, loc="upper left")


def curve_panel(axes, validation: dict) -> None:
    """The validation curve of the towers that were kept, the chosen epoch marked."""
    import matplotlib.ticker

    values = validation["curve"]
    epochs = list(range(1, len(values) + 1))
    best = validation["best_epoch"]
    axes.plot(epochs, values, marker="o", markersize=3, color=_COLOURS["model"], label="after each epoch")
    axes.axvline(best, color=_CHOSEN, linestyle=":")
    axes.scatter([best], [values[best - 1]], color=_CHOSEN, zorder=3, label=f"chosen: epoch {best}")
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    metric = validation.get("metric", "")
    axes.set_ylabel(
        "validation hit rate at 10, seen excluded" if metric == "top_10_exclude_seen" else f"validation {metric}"
    )
    title = "validation curve"
    if validation.get("tuning"):
        trials = len(validation["tuning"]["trials"])
        title += f" (best of {trials} trials)" if trials > 1 else " (the one tuning trial)"
    axes.set_title(title)
    axes.legend(fontsize=7, loc="lower right")
    axes.grid(True, alpha=0.3)


def search_panel(axes, tuning: dict) -> None:
    """Each hyperparameter trial's validation criterion in trial order (colour: loss), the chosen one ringed; a
    trial the pruner stopped (no criterion: export/tune.py) as a grey x at the bottom of the axes."""
    import matplotlib.ticker

    trials = tuning["trials"]
    criterion = tuning.get("criterion", "")
    finished = [t for t in trials if criterion in t]
    losses = sorted({t["params"].get("loss", "") for t in finished})
    colours = ("#1f77b4", "#9467bd", "#8c564b")
    pruned = [t["number"] for t in trials if criterion not in t]
    if pruned:
        low = min(t[criterion] for t in finished)
        axes.scatter(pruned, [low] * len(pruned), s=18, marker="x", color="#999999", label="pruned", zorder=2)
    for i, loss in enumerate(losses):
        mine = [t for t in finished if t["params"].get("loss", "") == loss]
        axes.scatter(
            [t["number"] for t in mine],
            [t[criterion] for t in mine],
            s=18,
            color=colours[i % len(colours)],
            label=loss.replace("_", " ") or "trial",
            zorder=2,
        )
    best = tuning["best"]
    axes.scatter(
        [best["number"]],
        [best[criterion]],
        s=110,
        facecolors="none",
        edgecolors=_CHOSEN,
        linewidths=2,
        label=f"chosen: trial {best['number']}",
        zorder=3,
    )
    numbers = [t["number"] for t in trials]
    axes.xaxis.set_major_locator(
        matplotlib.ticker.FixedLocator(numbers) if len(numbers) <= 12 else matplotlib.ticker.MaxNLocator(integer=True)
    )
    axes.set_xlim(min(numbers) - 0.5, max(numbers) + 0.5)
    axes.set_xlabel("trial")
    axes.set_ylabel(
        "validation mean of seen-excluded top-10, top-100"
        if criterion == "mean_top_10_top_100_exclude_seen"
        else f"validation {criterion}"
    )
    stopped = tuning.get("stopped", "")
    why = ", budget spent" if "budget" in stopped else ", all trials run" if "trials" in stopped else ""
    count = f"{len(trials)} trial{'s' if len(trials) != 1 else ''}"
    axes.set_title(f"tuning: {count} in {tuning.get('seconds', 0):.0f} s{why}")
    axes.legend(fontsize=7, loc="lower right")
    axes.grid(True, alpha=0.3)


def index_panel(axes, model_name: str, index_tuning: dict) -> None:
    """The ScaNN settings tried: recall@10 by leaves searched, colour = re-order candidates (colour bar), median
    latency of the timed ones on a right-hand axis, the chosen one ringed, the recall needed as a line."""
    import matplotlib.colors
    import matplotlib.ticker

    tried, chosen = index_tuning["tried"], index_tuning["chosen"]
    reorders = sorted({t["reorder"] for t in tried})
    # Settings that differ only in re-ordering often reach the same recall: the smaller re-order is drawn first and
    # larger, so that each shows as a ring around the next; colours on a log scale when re-orders span decades.
    size = {r: 20 + 90 * (len(reorders) - 1 - i) / max(len(reorders) - 1, 1) for i, r in enumerate(reorders)}
    norm = matplotlib.colors.LogNorm(reorders[0], reorders[-1]) if reorders[-1] > 4 * reorders[0] else None
    tried = sorted(tried, key=lambda t: t["reorder"])
    points = axes.scatter(
        [t["leaves_to_search"] for t in tried],
        [t["recall_at_10"] for t in tried],
        s=[size[t["reorder"]] for t in tried],
        c=[t["reorder"] for t in tried],
        cmap="viridis",
        norm=norm,
        edgecolors="white",
        linewidths=0.5,
        zorder=2,
        label="tried",
    )
    axes.scatter(
        [chosen["leaves_to_search"]],
        [chosen["recall_at_10"]],
        s=size.get(chosen["reorder"], 22) + 110,
        facecolors="none",
        edgecolors=_CHOSEN,
        linewidths=2,
        zorder=3,
        label=f"chosen: {chosen['leaves_to_search']} leaves, re-order {chosen['reorder']}",
    )
    axes.axhline(
        index_tuning["target_recall"],
        color="#7f7f7f",
        linestyle=":",
        label=f"recall needed ({index_tuning['target_recall']:g})",
    )
    leaves = sorted({t["leaves_to_search"] for t in tried})
    if leaves[-1] > 4 * leaves[0]:
        axes.set_xscale("log")
        if len(leaves) <= 8:
            axes.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(leaves))
        axes.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        axes.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    else:
        axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes.set_xlabel("leaves searched")
    axes.set_ylabel(f"recall@10 vs exact ({index_tuning.get('queries', 'sampled')} queries)")
    axes.set_title(f"{model_name}: ScaNN search settings")
    axes.grid(True, alpha=0.3)
    handles, labels = axes.get_legend_handles_labels()
    timed = [t for t in tried if "p50_ms" in t]
    if timed:
        latency = axes.twinx()
        (line,) = latency.plot(
            [t["leaves_to_search"] for t in timed],
            [t["p50_ms"] for t in timed],
            "x",
            color="#d62728",
            markersize=6,
            label="median latency (right axis)",
        )
        latency.set_ylabel("median latency per query, ms", color="#d62728")
        latency.set_ylim(0, max(t["p50_ms"] for t in timed) * 1.6)
        latency.tick_params(axis="y", colors="#d62728")
        handles.append(line)
        labels.append(line.get_label())
    axes.legend(handles, labels, fontsize=7, loc="lower right")
    bar = axes.figure.colorbar(points, ax=axes, location="bottom", fraction=0.05, pad=0.02, aspect=40)
    bar.set_label("colour: re-order candidates (exact re-scoring of the best approximate ones)", fontsize=8)
    if len(reorders) <= 6:
        bar.set_ticks(reorders)
        bar.ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        bar.ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))


def new_users_panel(axes, new_users: dict) -> None:
    """Hit rate at k of held-out new users (``metrics.new_users``, export/history_evaluation.py): the history
    model and each baseline fitted without them, history excluded, with 95 % confidence bars."""
    from export.history_evaluation import ROWS

    ks_all: set[int] = set()
    for name in ROWS:
        row = new_users.get(name)
        if not row:
            continue
        ks = _ks(row)
        ks_all.update(ks)
        ci = new_users.get("ci95", {}).get(name, {})
        axes.errorbar(
            ks,
            [row[f"top_{k}"] for k in ks],
            yerr=[ci.get(f"top_{k}", 0.0) for k in ks],
            marker="o",
            markersize=3,
            capsize=2,
            color=_COLOURS.get(name),
            label=_NAMES.get(name, name)
            if name != "model"
            else f"by_history: {new_users.get('model_recipe', {}).get('name', name)}",
        )
    _log_k_axis(axes, sorted(ks_all))
    axes.set_ylabel("hit rate at k, history excluded")
    axes.set_ylim(0, 1.05)
    axes.set_title(
        f"new users: {new_users.get('test_users', 0):,} held out, {new_users.get('test_ratings', 0):,} ratings"
    )
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=7, loc="upper left")
