"""report.png: each model's own panels, only panels with data, legends that say what is what, a colour bar for the
ScaNN panel and no overlapping text. Inputs are real manifests' figures (report_cases.json: tiny synthetic
exports, `--preset seed` and `--tune-budget 40`, and a MovieLens-sized one whose index search tried re-orders from
50 to 1,665)."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

import matplotlib
import pytest

from export import report

matplotlib.use("Agg")

CASES = json.loads((Path(__file__).parent / "report_cases.json").read_text(encoding="utf-8"))
COLOUR_BAR = "colour: re-order candidates (exact re-scoring of the best approximate ones)"


def _figure(case: dict, **changes):
    case = {**copy.deepcopy(case), **changes}
    return report.figure(case["model_name"], case["metrics"], case["validation"], case["tuning"])


def _panels(fig) -> list:
    """The figure's panels: axes with a title (not the colour bar, nor the ScaNN panel's latency axis)."""
    return [axes for axes in fig.axes if axes.get_title()]


def _titles(fig) -> list[str]:
    return [axes.get_title().split(":")[0].split(" (")[0] for axes in _panels(fig)]


def _colour_bars(fig) -> list:
    return [axes for axes in fig.axes if axes.get_xlabel() == COLOUR_BAR]


def _has_data(axes) -> bool:
    lines = [line for line in axes.get_lines() if len(line.get_xdata()) > 0]
    collections = [c for c in axes.collections if len(c.get_offsets()) > 0]
    return bool(lines or collections)


def test_the_seed_run_has_no_empty_panel_and_no_validation_panel():
    fig = _figure(CASES["seed"])
    assert CASES["seed"]["validation"] is None
    assert _titles(fig) == ["user -> movies", "retrieval", "new users"]
    assert all(_has_data(axes) for axes in _panels(fig))
    assert fig.get_size_inches()[0] == pytest.approx(3 * report.PANEL_SIZE[0])  # one row of three
    assert len(_colour_bars(fig)) == 1


def test_the_default_run_shows_its_curve_its_tuning_trials_its_index_and_new_users_in_filled_rows():
    fig = _figure(CASES["default"])
    assert _titles(fig) == ["user -> movies", "validation curve", "tuning", "retrieval", "new users"]
    assert all(_has_data(axes) for axes in _panels(fig))
    rows = [axes.get_subplotspec().rowspan.start for axes in _panels(fig)]
    assert rows == [0, 0, 0, 1, 1]  # 3 + 2: no empty slot
    spans = [len(axes.get_subplotspec().colspan) for axes in _panels(fig)]
    assert spans == [2, 2, 2, 3, 3]  # of six columns: each row fills the width
    trials = CASES["default"]["validation"]["tuning"]["trials"]
    search = _panels(fig)[2]
    assert sum(len(c.get_offsets()) for c in search.collections) == len(trials) + 1  # every trial, and the chosen ring
    assert f"{len(trials)} trials" in search.get_title() and "budget spent" in search.get_title()
    assert len(_colour_bars(fig)) == 1


def test_similar_movies_shows_its_own_index_only():
    fig = _figure(CASES["similar_movies"])
    assert _titles(fig) == ["similar_movies"]
    assert _panels(fig)[0].get_title() == "similar_movies: ScaNN search settings"
    assert all("hit rate" not in axes.get_ylabel() for axes in fig.axes)  # no user -> movies chart
    assert len(_colour_bars(fig)) == 1
    brute = _figure(CASES["similar_movies"], tuning=None)
    assert brute.axes == []  # nothing to plot: a line of text, no empty panel
    assert "nothing measured to plot" in brute.texts[0].get_text()


def test_without_an_index_search_the_retrieval_report_has_four_panels_in_two_rows_of_two():
    fig = _figure(CASES["default"], tuning=None)
    assert _titles(fig) == ["user -> movies", "validation curve", "tuning", "new users"]
    assert fig.get_size_inches()[0] == pytest.approx(2 * report.PANEL_SIZE[0])
    assert not _colour_bars(fig)
    without_new_users = copy.deepcopy(CASES["seed"]["metrics"])
    del without_new_users["new_users"]
    fig = report.figure("retrieval", without_new_users, None, None)
    assert _titles(fig) == ["user -> movies"]


def test_the_hit_rate_legend_tells_who_by_colour_and_seen_excluded_from_kept_by_line():
    fig = _figure(CASES["default"])
    hits = _panels(fig)[0]
    legend = [text.get_text() for text in hits.get_legend().get_texts()]
    served = CASES["default"]["metrics"]["served"]["exclude_seen"]
    assert legend[:4] == ["model", "popularity", "EASE", "item-kNN"]
    assert legend[4].startswith("seen titles excluded\n(exclude_seen: ")
    assert legend[5] == "seen titles kept\n(serving_default)"
    styles = [handle.get_linestyle() for handle in hits.get_legend().legend_handles[4:]]
    assert styles == ["-", "--"]
    assert [line.get_linestyle() for line in hits.get_lines()][:2] == ["-", "--"]  # model: excluded, then kept
    blended = copy.deepcopy(CASES["default"]["metrics"])
    blended["served"] = {"exclude_seen": {"tower": 1.0, "ease": 0.25}}
    fig = report.figure("retrieval", blended, None, None)
    assert "(exclude_seen: towers + 0.25 x EASE)" in [t.get_text() for t in _panels(fig)[0].get_legend().get_texts()][4]
    blended["served"] = {"exclude_seen": {"tower": 0.0, "ease": 1.0}}
    fig = report.figure("retrieval", blended, None, None)
    assert "(exclude_seen: EASE's factors)" in [t.get_text() for t in _panels(fig)[0].get_legend().get_texts()][4]
    assert served  # the fixture records what exclude_seen served


def test_the_scann_panel_has_a_colour_bar_of_re_order_candidates_and_a_latency_axis():
    fig = _figure(CASES["similar_movies"])
    [bar] = _colour_bars(fig)
    reorders = sorted({t["reorder"] for t in CASES["similar_movies"]["tuning"]["tried"]})
    assert [round(tick) for tick in bar.get_xticks()] == reorders
    [latency] = [axes for axes in fig.axes if axes.get_ylabel() == "median latency per query, ms"]
    timed = [t for t in CASES["similar_movies"]["tuning"]["tried"] if "p50_ms" in t]
    assert len(latency.get_lines()[0].get_xdata()) == len(timed)
    labels = [text.get_text() for text in _panels(fig)[0].get_legend().get_texts()]
    chosen = CASES["similar_movies"]["tuning"]["chosen"]
    assert labels == [
        "tried",
        f"chosen: {chosen['leaves_to_search']} leaves, re-order {chosen['reorder']}",
        "recall needed (0.96)",
        "median latency (right axis)",
    ]


@pytest.mark.parametrize(
    "name", ["seed", "default", "similar_movies", "movielens_retrieval", "movielens_similar_movies"]
)
def test_no_two_texts_overlap(name):
    fig = _figure(CASES[name])
    assert not _overlaps(fig), _overlaps(fig)[:5]
    width, height = fig.get_size_inches() * fig.dpi
    assert all(
        box.x0 >= -1 and box.x1 <= width + 1 and box.y0 >= -1 and box.y1 <= height + 1 for _, box in _extents(fig)
    )


def test_the_overlap_check_finds_overlapping_annotations():
    """What the old ScaNN panel did: a latency written beside each of two nearby points."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots()
    axes.scatter([3, 3.05], [0.99, 0.995])
    axes.annotate("0.79 ms", (3, 0.99))
    axes.annotate("0.70 ms", (3.05, 0.995))
    axes.set_xlim(1, 10)
    axes.set_ylim(0.5, 1.0)
    assert [(a.split(": ")[-1], b.split(": ")[-1]) for a, b in _overlaps(fig)] == [("'0.79 ms'", "'0.70 ms'")]
    plt.close(fig)


def _extents(fig) -> list:
    """Titles, axis labels, drawn tick labels, other texts (annotations) and legends of every axes, as drawn: (what,
    box). A legend's own entries are inside its box, so the legend counts as one box."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = []
    for axes in fig.axes:
        texts = [axes.title, *axes.texts]
        for axis, limits, coordinate in ((axes.xaxis, axes.get_xlim(), 0), (axes.yaxis, axes.get_ylim(), 1)):
            if not axis.get_visible():  # the latency axis' x axis: the panel's own
                continue
            low, high = sorted(limits)
            texts.append(axis.label)
            texts += [
                t for t in axis.get_ticklabels() if t.get_visible() and low <= t.get_position()[coordinate] <= high
            ]
        boxes += [(f"{axes.get_title() or axes.get_ylabel() or axes.get_xlabel()}: {t.get_text()!r}", t) for t in texts]
        if axes.get_legend() is not None:
            boxes.append((f"{axes.get_title()}: legend", axes.get_legend()))
    return [(what, artist.get_window_extent(renderer)) for what, artist in boxes if _shown(artist)]


def _overlaps(fig) -> list[tuple[str, str]]:
    """Pairs of texts whose boxes intersect."""
    return [
        (a, b)
        for (a, box_a), (b, box_b) in itertools.combinations(_extents(fig), 2)
        if box_a.width and box_b.width and _intersect(box_a, box_b)
    ]


def _shown(artist) -> bool:
    return artist.get_visible() and (not hasattr(artist, "get_text") or bool(artist.get_text()))


def _intersect(a, b, slack: float = 1.0) -> bool:
    return a.x0 + slack < b.x1 and b.x0 + slack < a.x1 and a.y0 + slack < b.y1 and b.y0 + slack < a.y1


def test_rows_are_at_most_three_and_filled():
    assert [report.rows_of(n) for n in range(1, 8)] == [[1], [2], [3], [2, 2], [3, 2], [3, 3], [3, 2, 2]]


def test_write_keeps_its_signature_and_saves_a_png_into_assets_extra(tmp_path):
    case = CASES["default"]
    path = report.write(tmp_path, case["model_name"], case["metrics"], case["validation"], case["tuning"])
    assert path == tmp_path / "assets.extra" / report.REPORT_FILE
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    path = report.write(tmp_path / "brute", "similar_movies", case["metrics"], None)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_re_orders_that_span_decades_get_a_log_colour_scale_with_each_one_a_tick():
    case = CASES["movielens_similar_movies"]
    reorders = sorted({t["reorder"] for t in case["tuning"]["tried"]})
    assert reorders[-1] > 10 * reorders[0]
    [bar] = _colour_bars(_figure(case))
    assert bar.get_xscale() == "log"
    assert [round(tick) for tick in bar.get_xticks()] == reorders
    assert [label.get_text() for label in bar.get_xticklabels()] == [f"{r:g}" for r in reorders]


def test_one_tuning_trial_is_said_in_the_singular_on_an_integer_axis():
    fig = _figure(CASES["movielens_retrieval"])
    [search] = [axes for axes in _panels(fig) if axes.get_title().startswith("tuning")]
    assert search.get_title() == "tuning: 1 trial in 82 s, budget spent"
    assert list(search.get_xticks()) == [0]
    assert _panels(fig)[1].get_title() == "validation curve (the one tuning trial)"


def test_a_pruned_trial_shows_as_a_grey_cross_without_a_criterion():
    case = copy.deepcopy(CASES["movielens_retrieval"])
    tuning = case["validation"]["tuning"]
    criterion = tuning["criterion"]
    kept = tuning["trials"][0]
    tuning["trials"].append(
        {"number": 1, "params": dict(kept["params"]), "top_10_exclude_seen": 0.1, "stopped_by": "pruned"}
    )
    fig = _figure(case)
    [search] = [axes for axes in _panels(fig) if axes.get_title().startswith("tuning")]
    labels = (
        search.get_legend_handles_labels()[1]
        if search.get_legend() is None
        else [t.get_text() for t in search.get_legend().get_texts()]
    )
    assert "pruned" in labels
    crosses = [c for c in search.collections if c.get_label() == "pruned"]
    assert [list(p) for p in crosses[0].get_offsets()] == [[1.0, kept[criterion]]]
