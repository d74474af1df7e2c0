"""The one-page diagnostics report: ``report.md`` + PNG figures + ``metrics.json``.

This module owns turning the metrics dictionary built by :func:`sbicluster.diagnostics.run_diagnostics`
into Markdown, and writing the report directory atomically (each file is written to a temporary
name and renamed, so an interrupted run never leaves a half-written file). It must not compute
statistics or draw figures.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..files import atomic_path

__all__ = ["write_report", "render_markdown", "to_jsonable", "range_label"]


def to_jsonable(obj):
    """Recursively convert numpy arrays/scalars to lists/floats and NaN/inf to ``None`` (strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.bool_ | bool):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating | float):
        return float(obj) if math.isfinite(obj) else None
    return obj


def _f(x, fmt: str = ".3f") -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def _edge(x) -> str:
    return "∞" if x is None else format(x, "g")


def _yes(ok) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**missed**")


def _recalibration_lines(summary: dict | None) -> list[str]:
    """One paragraph on the model's recalibration, or nothing."""
    if not summary:
        return []
    kind = (
        "one temperature per base dimension"
        if summary.get("per_dimension")
        else "one temperature for all dimensions"
    )
    factor = summary.get("coverage_factor")
    factor_text = ""
    if factor:
        bins = ", ".join(
            f"{range_label(row['predicted_visibility'])}: {row['factor']:g}"
            for row in factor.get("bins", [])
        )
        factor_text = (
            " It is multiplied by a coverage factor per bin of predicted visibility, fitted to "
            f"the HPD coverage of {factor.get('n_simulations')} further simulated clusters "
            f"({bins})."
        )
    what = (
        "a temperature and a location (a shift of each base coordinate)"
        if summary.get("location")
        else "a temperature"
    )
    return [
        f"The posterior is recalibrated: {what} on the flow's base distribution "
        f"({kind}), a function of the cutout fitted on {summary.get('n_simulations')} simulated "
        f"clusters (recalibration seed {summary.get('seed')}, a stream of its own)." + factor_text,
        "",
    ]


def range_label(edges) -> str:
    """'0–20' or '100+' for bin edges [low, high or None] (visibility bins in reports)."""
    low, high = edges
    return f"{low:g}+" if high is None else f"{low:g}–{high:g}"


def render_markdown(metrics: dict, figures: Mapping[str, str]) -> str:
    """Markdown text of the report.

    Parameters
    ----------
    metrics : dict
        The metrics dictionary of :func:`sbicluster.diagnostics.run_diagnostics`.
    figures : mapping of str to str
        Figure key → file name (relative to the report).

    Returns
    -------
    str
    """
    m = metrics
    names = m["parameters"]
    goals = m.get("goals", {})
    n_obj = m.get("n_objects", m["n_clusters"])
    lines = [
        f"# Calibration and accuracy diagnostics — {m.get('model', {}).get('name', 'model')}",
        "",
        f"Held-out simulations: {n_obj} ({m['n_clusters']} clusters, {n_obj - m['n_clusters']} "
        f"backgrounds), seed {m.get('seed', '–')}, {m['num_samples']} posterior draws per object. "
        "Posterior statistics use the cluster objects only.",
        "",
        *_recalibration_lines(m.get("model", {}).get("recalibration")),
        "## Goals",
        "",
        "| goal | value | status |",
        "|---|---|---|",
    ]
    cov = m["coverage"]
    regions = ([("joint", cov["joint"])] if cov.get("joint") else []) + list(
        cov["marginal"].items()
    )
    worst = max(c["max_abs_deviation"] for _, c in regions)
    lines.append(
        f"| coverage: \\|empirical − nominal\\| ≤ {cov['tolerance']} at every level, "
        f"{'joint and ' if cov.get('joint') else ''}each marginal "
        f"| worst {_f(worst)} | {_yes(goals.get('coverage'))} |"
    )
    sbc = m["sbc"]
    pmin = min(min(v["ks_pvalue"], v["chi2_pvalue"]) for v in sbc["per_parameter"].values())
    lines.append(
        f"| SBC uniformity not rejected at p = {sbc['alpha']} (KS and χ² per parameter, "
        f"Bonferroni: rejected if either p < {sbc['alpha'] / 2:g}) | smallest p = {_f(pmin, '.3g')} "
        f"| {_yes(goals.get('sbc'))} |"
    )
    cls = m.get("classification")
    if cls:
        lines.append(
            f"| AUC ≥ 0.99 for visibility ≥ {cls['detection_threshold']} | {_f(cls['auc_detectable'], '.4f')} "
            f"| {_yes(goals.get('auc'))} |"
        )
    lines += ["", "## Coverage of highest-posterior-density regions", ""]
    lines += [
        "| region | verdict | max \\|Δ\\| | "
        + " | ".join(f"{lv:.2f}" for lv in regions[0][1]["levels"][1::2])
        + " |",
        "|---|---|---|" + "---|" * len(regions[0][1]["levels"][1::2]),
    ]
    for name, c in regions:
        lines.append(
            f"| {name} | {c['verdict']} | {_f(c['max_abs_deviation'])} | "
            + " | ".join(_f(e) for e in c["empirical"][1::2])
            + " |"
        )
    ref = cov.get("calibrated_reference")
    if ref:
        p_exceed = ref["p_exceed"]  # two decimals hide the small values of large test sets
        lines += [
            "",
            f"Finite-sample noise floor: an exact posterior tested on {ref['n']} clusters shows a "
            f"max \\|Δ\\| of {_f(ref['quantiles']['0.5'])} (median) and {_f(ref['quantiles']['0.95'])} "
            f"(95th percentile) from sampling noise alone, and exceeds the {ref['tolerance']} "
            f"tolerance with probability {_f(p_exceed, '.2f' if p_exceed >= 0.01 else '.2g')}. "
            "Verdicts use per-level "
            f"binomial bands ({_f(regions[0][1]['band_confidence'], 'g')} content).",
        ]
    by_vis = cov.get("joint_by_visibility")
    if by_vis:
        lv = by_vis[0]["levels"]
        picks = [i for i, level in enumerate(lv) if any(abs(level - t) < 1e-9 for t in (0.5, 0.9))]
        lines += [
            "",
            "Joint region by visibility (where the miscalibration sits):",
            "",
            "| visibility | clusters | verdict | max \\|Δ\\| | "
            + " | ".join(f"at {lv[i]:.2f}" for i in picks)
            + " |",
            "|---|---|---|---|" + "---|" * len(picks),
        ]
        for b in by_vis:
            lines.append(
                f"| {_edge(b['range'][0])}–{_edge(b['range'][1])} | {b['n']} | {b['verdict']} | "
                f"{_f(b['max_abs_deviation'])} | "
                + " | ".join(_f(b["empirical"][i]) for i in picks)
                + " |"
            )
    lines += ["", f"![coverage]({figures.get('coverage', '')})", ""]
    lines += _conditional_lines(cov.get("conditional"), figures)
    lines += _local_lines(m.get("local"), figures)
    lines += [
        "## Simulation-based calibration",
        "",
        "| parameter | KS p | χ² p | rejected |",
        "|---|---|---|---|",
    ]
    for name, v in sbc["per_parameter"].items():
        lines.append(
            f"| {name} | {_f(v['ks_pvalue'], '.3g')} | {_f(v['chi2_pvalue'], '.3g')} | {v['uniformity_rejected']} |"
        )
    lines += [
        "",
        f"![ranks]({figures.get('sbc_ranks', '')}) ![ecdf]({figures.get('sbc_ecdf', '')})",
        "",
    ]
    tarp = m.get("tarp")
    if tarp:
        lines += [
            "## TARP",
            "",
            f"Area to curve {_f(tarp['atc'], '+.4f')} (> 0 underconfident, < 0 overconfident), "
            f"KS p = {_f(tarp['ks_pvalue'], '.3g')}.",
            "",
            f"![tarp]({figures.get('tarp', '')})",
            "",
        ]
    acc = m["accuracy"]
    lines += [
        "## Accuracy of posterior medians",
        "",
        "| subset | n | " + " | ".join(f"{n} bias / σ_rob / RMSE" for n in names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    rows = [("all clusters", acc["overall"]), ("paper's reliable range", acc["reliable_range"])]
    rows += [
        (f"visibility {_edge(b['range'][0])}–{_edge(b['range'][1])}", b)
        for b in acc["by_visibility"]
    ]
    for label, a in rows:
        cells = [
            f"{_f(a[n]['bias'])} / {_f(a[n]['robust_sigma'])} / {_f(a[n]['rmse'])}" for n in names
        ]
        lines.append(f"| {label} | {a['n']} | " + " | ".join(cells) + " |")
    w = m["width_vs_visibility"]
    lines += [
        "",
        "Median posterior 68 % half-width by visibility:",
        "",
        "| visibility | n | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for b in range(len(w["count"])):
        lines.append(
            f"| {_edge(w['edges'][b])}–{_edge(w['edges'][b + 1])} | {w['count'][b]} | "
            + " | ".join(_f(w["median_width"][n][b]) for n in names)
            + " |"
        )
    lines += [
        "",
        f"![truth]({figures.get('truth_vs_median', '')}) ![width]({figures.get('width_vs_visibility', '')})",
        "",
    ]
    if cls:
        pr = cls["precision_recall"]
        lines += [
            "## Classification (cluster vs background)",
            "",
            f"AUC all clusters {_f(cls['auc'], '.4f')}; clusters with visibility ≥ {cls['detection_threshold']} "
            f"vs all backgrounds {_f(cls['auc_detectable'], '.4f')}. At P(cluster) ≥ {pr['threshold']}: "
            f"precision {_f(pr['precision'])}, recall {_f(pr['recall'])}, accuracy {_f(pr['accuracy'])}. "
            f"Brier score {_f(cls['brier'], '.4f')}, expected calibration error {_f(cls['reliability']['ece'], '.4f')}.",
            *(
                [
                    f"P(cluster) is the average over {m['symmetry_views']} symmetric views of each cutout "
                    f"(rotations and mirror images); from the cutout as given alone, the AUC above "
                    f"visibility {cls['detection_threshold']} would be "
                    f"{_f(cls['auc_detectable_single_view'], '.4f')}."
                ]
                if "auc_detectable_single_view" in cls
                else []
            ),
            "",
            "| visibility | clusters | AUC vs all backgrounds | recall at threshold | AUC, visibility ≥ lower edge |",
            "|---|---|---|---|---|",
        ]
        for b in cls["by_visibility"]:
            lines.append(
                f"| {_edge(b['range'][0])}–{_edge(b['range'][1])} | {b['n']} | {_f(b['auc'], '.4f')} "
                f"| {_f(b['recall'])} | {_f(b.get('auc_at_or_above'), '.4f')} |"
            )
        if "visibility_meeting_auc_goal" in cls:
            cut = cls["visibility_meeting_auc_goal"]
            lines += [
                "",
                "Lowest tabulated visibility cut whose clusters reach AUC ≥ 0.99 against all backgrounds: "
                + ("none" if cut is None else f"visibility ≥ {_edge(cut)}")
                + ".",
            ]
        if cls.get("by_background"):
            lines += [
                "",
                f"By kind of background (hard negatives: chance groupings of bright field stars or a "
                f"single bright star at the centre), clusters with visibility ≥ {cls['detection_threshold']}:",
                "",
                "| hard negative | backgrounds | AUC vs these backgrounds | false-positive rate at threshold |",
                "|---|---|---|---|",
            ]
            for b in cls["by_background"]:
                lines.append(
                    f"| {b['kind']} | {b['n']} | {_f(b['auc_detectable'], '.4f')} | {_f(b['false_positive_rate'])} |"
                )
        lines += [
            "",
            f"![roc]({figures.get('roc', '')}) ![reliability]({figures.get('reliability', '')})",
            "",
        ]
    if m.get("notes"):
        lines += ["## Notes", ""] + [f"- {note}" for note in m["notes"]] + [""]
    if m.get("timing"):
        lines += ["## Timing", "", ", ".join(f"{k} {v:.1f} s" for k, v in m["timing"].items()), ""]
    return "\n".join(lines)


def write_report(
    out_dir: str | Path, metrics: dict, figures: Mapping[str, Figure], *, dpi: int = 110
) -> Path:
    """Write ``metrics.json``, one PNG per figure and ``report.md`` into ``out_dir``.

    Parameters
    ----------
    out_dir : str or Path
        Report directory (created if absent; existing files of the same names are replaced).
    metrics : dict
        Metrics (numpy values allowed; NaN becomes ``null``).
    figures : mapping of str to Figure
        Figure key → figure; written as ``<key>.png``.
    dpi : int
        Resolution of the PNGs.

    Returns
    -------
    Path
        Path of ``report.md``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = {}
    for key, fig in figures.items():
        names[key] = f"{key}.png"
        with atomic_path(out / names[key]) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    clean = to_jsonable(metrics)
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(clean, indent=2) + "\n")
    text = render_markdown(clean, names)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(text + "\n")
    return out / "report.md"


def _conditional_lines(cond: dict | None, figures: dict) -> list[str]:
    """The report section on coverage conditional on visibility and on each true parameter."""
    if not cond or not cond["regions"]:
        return []
    columns = cond["columns"]
    lines = [
        "## Coverage for the cluster in hand",
        "",
        "max \\|empirical − nominal\\| of the HPD coverage in each region of visibility and of each "
        "true parameter (terciles), per region (joint and each marginal), against the noise floor "
        "of an exact posterior tested on the same number of clusters (median and 95th percentile "
        f"of its max \\|Δ\\|); **bold**: above the {cond['tolerance']} tolerance.",
        "",
        "| region | clusters | " + " | ".join(columns) + " | noise floor (median / 95 %) |",
        "|---|---|" + "---|" * len(columns) + "---|",
    ]
    for r in cond["regions"]:
        name = f"{r['by']} {r['label']}" + (
            f" ({r['range'][0]:.3g}–{r['range'][1]:.3g})" if r["by"] != "visibility" else ""
        )
        if "columns" not in r:
            lines.append(f"| {name} | {r['n']} | " + " | ".join("–" for _ in columns) + " | – |")
            continue
        cells = []
        for c in columns:
            value = _f(r["columns"][c]["max_abs_deviation"])
            cells.append(value if r["meets"][c] else f"**{value}**")
        floor = r["noise_floor"]["quantiles"]
        lines.append(
            f"| {name} | {r['n']} | "
            + " | ".join(cells)
            + f" | {_f(floor['0.5'])} / {_f(floor['0.95'])} |"
        )
    worst = cond["worst"]
    lines += [
        "",
        f"Every region within the tolerance: {_yes(cond['all_meet'])}"
        + (
            f" (worst: {worst['column']} in {worst['by']} {worst['label']}, "
            f"{_f(worst['max_abs_deviation'])})."
            if "column" in worst
            else "."
        )
        + " An exact posterior would meet the tolerance in every region and column at once with "
        f"probability ≥ {_f(cond['exact_meets_all_at_least'], '.2f')} at these counts (union bound); "
        "below 0.9 the test set is too small for this goal to separate a good posterior from a bad one.",
        "",
    ]
    if figures.get("conditional_coverage"):
        lines += [f"![conditional coverage]({figures['conditional_coverage']})", ""]
    return lines


def _ensemble_words(members: int) -> str:
    """How each classifier of the local test is made, when it is an ensemble."""
    if members == 1:
        return ""
    return f"; each classifier the mean of an ensemble of {members}, the null ones alike"


def _exact_replay_lines(local: dict) -> list[str]:
    """What an exact posterior would score on the same probes (absent from older reports)."""
    exact = local.get("exact_posterior")
    if not exact:
        return []
    fractions = np.sort(np.asarray(exact["fractions"], dtype=float))
    return [
        f"What an exact posterior would score here: each of the {exact['replicates']} null "
        "classifiers replayed as the observed one against the others (all probes share one "
        "classifier, so its chance fit moves their verdicts together) gives a fraction of "
        f"{exact['mean']:.0%} on average, from {fractions[0]:.0%} to {fractions[-1]:.0%}; "
        f"{exact['probability_goal_met']:.0%} of them meet the goal, and "
        f"{exact['share_at_or_below']:.0%} score at or below this model's "
        f"{local['fraction_not_rejected']:.0%}.",
        "",
    ]


def _local_lines(local: dict | None, figures: dict) -> list[str]:
    """The report section on the local test (L-C2ST) at individual observations."""
    if not local:
        return []
    probes = local["probes"]
    vis = np.array([p["visibility"] for p in probes])
    rejected = np.array([p["rejected"] for p in probes])
    lines = [
        "## Calibration at individual clusters (L-C2ST)",
        "",
        f"The local classifier two-sample test, in the flow's base space, at {local['n_probes']} "
        f"held-out clusters spread over visibility (classifiers trained on the other "
        f"{local['n_calibration']}; {local['num_null']} null classifiers"
        f"{_ensemble_words(local.get('num_ensemble', 1))}; level "
        f"{local['alpha']} per probe): calibration **not rejected at "
        f"{local['fraction_not_rejected']:.0%}** of the probes (an exact posterior: "
        f"{1 - local['alpha']:.0%} on average; goal ≥ {local['goal']:.0%}: "
        f"{_yes(local['goal_met'])}).",
        "",
        *_exact_replay_lines(local),
        "| visibility | probes | not rejected |",
        "|---|---|---|",
    ]
    for lo, hi in ((0, 20), (20, 100), (100, np.inf)):
        sel = (vis >= lo) & (vis < hi)
        if sel.any():
            lines.append(
                f"| {_edge(lo)}–{_edge(hi)} | {int(sel.sum())} | {np.mean(~rejected[sel]):.0%} |"
            )
    lines.append("")
    if figures.get("lc2st_pp"):
        lines += [f"![L-C2ST PP-plots]({figures['lc2st_pp']})", ""]
    return lines
