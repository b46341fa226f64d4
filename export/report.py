"""``assets.extra/report.png``: the evaluation and the validation curve of a version, to look at.

Left: test hit rate at k (1, 5, 10, 50, 100) for the model and each evaluated baseline, seen titles excluded
(solid) and not (dashed). Right: the validation curve (seen-excluded top-10 per epoch) with the chosen
epoch marked, or a note when the export ran without validation. Drawn with matplotlib's Agg backend (no
display needed).
"""

from __future__ import annotations

from pathlib import Path

REPORT_FILE = "report.png"
_COLOURS = {"model": "#1f77b4", "popularity": "#7f7f7f", "ease": "#d62728", "item_knn": "#2ca02c"}


def write(saved_model_dir: Path, model_name: str, metrics: dict, validation: dict | None) -> Path:
    """Draws the report into the version's assets.extra (every model's version gets the same evaluation:
    the export evaluates the user -> movies model); returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from export.evaluate import BASELINES

    figure, (hits, curve) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    for name in ("model", *BASELINES):
        for suffix, style in (("_exclude_seen", "-"), ("", "--")):
            row = metrics.get(name + suffix)
            if not row:
                continue
            ks = sorted(int(key.split("_")[1]) for key in row)
            hits.plot(ks, [row[f"top_{k}"] for k in ks], style, marker="o", markersize=3,
                      color=_COLOURS.get(name), label=f"{name}{', seen excluded' if suffix else ''}")
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
        curve.text(0.5, 0.5, "trained without a validation split\n(--validation-fraction 0)", ha="center",
                   va="center", fontsize=11)
    figure.tight_layout()
    path = Path(saved_model_dir) / "assets.extra" / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
