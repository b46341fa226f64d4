"""``assets.extra/report.png``: the evaluation and the validation curve of a version, to look at.

Left: test hit rate at k (1, 5, 10, 50, 100) for the model and each evaluated baseline, seen titles excluded
(solid) and not (dashed). Middle: the validation curve (seen-excluded top-10 per epoch) with the chosen
epoch marked, or a note when the export ran without validation. Right: the ScaNN settings the export tried
for this version's index (recall@10 against leaves searched, latency written beside the ones timed), the
chosen one marked, or a note for BruteForce / hand-set settings. When ``metrics["new_users"]`` is there
(export/history.py's evaluate_new_users), a fourth panel (``new_users_panel``): the ``by_history`` model's hit
rate at k on held-out new users against EASE, item-kNN and popularity, with 95 % confidence bars. Drawn with
matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path

REPORT_FILE = "report.png"
_COLOURS = {"model": "#1f77b4", "popularity": "#7f7f7f", "ease": "#d62728", "item_knn": "#2ca02c"}


def write(
    saved_model_dir: Path, model_name: str, metrics: dict, validation: dict | None, index_tuning: dict | None = None
) -> Path:
    """Draws the report into the version's assets.extra (every model's version gets the same evaluation:
    the export evaluates the user -> movies model); returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from export.evaluate import BASELINES

    new_users = metrics.get("new_users")
    panels = 4 if new_users else 3
    figure, axes = plt.subplots(1, panels, figsize=(16 * panels / 3, 4.2), dpi=100)
    hits, curve, frontier = axes[:3]
    if new_users:
        new_users_panel(axes[3], new_users)
    for name in ("model", *BASELINES):
        for suffix, style in (("_exclude_seen", "-"), ("", "--")):
            row = metrics.get(name + suffix)
            if not row:
                continue
            ks = sorted(int(key.split("_")[1]) for key in row)
            hits.plot(
                ks,
                [row[f"top_{k}"] for k in ks],
                style,
                marker="o",
                markersize=3,
                color=_COLOURS.get(name),
                label=f"{name}{', seen excluded' if suffix else ''}",
            )
    hits.set_xscale("log")
    hits.set_xlabel("k")
    hits.set_ylabel("test hit rate at k")
    hits.set_title(f"user -> movies: test hit rate ({metrics.get('test_ratings', 0):,} ratings)")
    hits.grid(True, alpha=0.3)
    hits.legend(fontsize=7, loc="upper left")

    if validation and validation.get("curve"):
        values = validation["curve"]
        epochs = list(range(1, len(values) + 1))
        best = validation["best_epoch"]
        curve.plot(epochs, values, marker="o", markersize=3, color=_COLOURS["model"])
        curve.axvline(best, color="#ff7f0e", linestyle=":", label=f"chosen: epoch {best}")
        curve.scatter([best], [values[best - 1]], color="#ff7f0e", zorder=3)
        curve.set_xlabel("epoch")
        curve.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        curve.set_ylabel(f"validation {validation.get('metric', '')}")
        title = "validation curve"
        if validation.get("tuning"):
            title += f" (best of {len(validation['tuning']['trials'])} tuning trials)"
        curve.set_title(title)
        curve.legend(fontsize=8)
        curve.grid(True, alpha=0.3)
    else:
        curve.axis("off")
        curve.text(
            0.5,
            0.5,
            "trained without a validation split\n(--validation-fraction 0)",
            ha="center",
            va="center",
            fontsize=11,
        )
    if index_tuning and index_tuning.get("tried"):
        tried, chosen = index_tuning["tried"], index_tuning["chosen"]
        frontier.scatter(
            [t["leaves_to_search"] for t in tried],
            [t["recall_at_10"] for t in tried],
            s=12,
            c=[t["reorder"] for t in tried],
            cmap="viridis",
            label="tried (colour: re-order)",
        )
        for t in tried:
            if "p50_ms" in t:
                frontier.annotate(
                    f"{t['p50_ms']:.2f} ms",
                    (t["leaves_to_search"], t["recall_at_10"]),
                    fontsize=7,
                    xytext=(3, -9),
                    textcoords="offset points",
                )
        frontier.scatter(
            [chosen["leaves_to_search"]],
            [chosen["recall_at_10"]],
            s=80,
            facecolors="none",
            edgecolors="#ff7f0e",
            linewidths=2,
            label=f"chosen (re-order {chosen['reorder']})",
        )
        frontier.axhline(index_tuning["target_recall"], color="#7f7f7f", linestyle=":", label="recall needed")
        frontier.set_xscale("log")
        frontier.set_xlabel("leaves searched")
        frontier.set_ylabel("recall@10 vs exact (sampled queries)")
        frontier.set_title(f"{model_name}: ScaNN search settings")
        frontier.legend(fontsize=7, loc="lower right")
        frontier.grid(True, alpha=0.3)
    else:
        frontier.axis("off")
        frontier.text(
            0.5, 0.5, "index not tuned\n(BruteForce, or search settings given)", ha="center", va="center", fontsize=11
        )
    figure.tight_layout()
    path = Path(saved_model_dir) / "assets.extra" / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def new_users_panel(axes, new_users: dict) -> None:
    """Hit rate at k of held-out new users (``metrics.new_users``, export/history.py): the history model and each
    baseline fitted without them, history excluded, with 95 % confidence bars."""
    from export.history import ROWS

    for name in ROWS:
        row = new_users.get(name)
        if not row:
            continue
        ks = sorted(int(key.split("_")[1]) for key in row if key.startswith("top_"))
        ci = new_users.get("ci95", {}).get(name, {})
        axes.errorbar(
            ks,
            [row[f"top_{k}"] for k in ks],
            yerr=[ci.get(f"top_{k}", 0.0) for k in ks],
            marker="o",
            markersize=3,
            capsize=2,
            color=_COLOURS.get(name),
            label=name if name != "model" else f"by_history: {new_users.get('model_recipe', {}).get('name', name)}",
        )
    axes.set_xscale("log")
    axes.set_xlabel("k")
    axes.set_ylabel("hit rate at k, history excluded")
    axes.set_title(
        f"new users: {new_users.get('test_users', 0):,} held out, {new_users.get('test_ratings', 0):,} ratings"
    )
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=7, loc="upper left")
