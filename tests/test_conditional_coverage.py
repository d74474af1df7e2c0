"""Coverage conditional on visibility and on each true parameter, and its noise floor."""

import numpy as np

from sbicluster.diagnostics.conditional import conditional_coverage, region_masks
from sbicluster.diagnostics.coverage import calibrated_max_deviation

NAMES = ("log_age", "log_mass", "log_rh", "av")


def _objects(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0, 1, (n, len(NAMES)))
    visibility = 10 ** rng.uniform(0, 3, n)
    return rng, theta, visibility


def test_regions_are_three_visibility_bins_and_three_terciles_of_each_parameter():
    _, theta, visibility = _objects(3001)
    regions = region_masks(visibility, theta, NAMES)
    assert [r["by"] for r in regions[:3]] == ["visibility"] * 3
    assert sum(r["mask"].sum() for r in regions[:3]) == 3001
    for j, name in enumerate(NAMES):
        terciles = [r for r in regions if r["by"] == name]
        assert len(terciles) == 3
        counts = [int(r["mask"].sum()) for r in terciles]
        assert sum(counts) == 3001 and max(counts) - min(counts) <= 2
        # the lowest tercile holds the smallest values
        assert theta[terciles[0]["mask"], j].max() <= theta[terciles[1]["mask"], j].min()


def test_a_posterior_miscalibrated_only_for_faint_clusters_is_caught_there_alone():
    """Exact credibility (uniform) for bright clusters, overconfident (u^0.6) for faint ones."""
    rng, theta, visibility = _objects(6000)
    faint = visibility < 20
    columns = {}
    for name in ("joint", *NAMES):
        u = rng.uniform(size=6000)
        columns[name] = np.where(faint, u**0.6, u)
    result = conditional_coverage(columns, region_masks(visibility, theta, NAMES))
    rows = {(r["by"], r["label"]): r for r in result["regions"]}
    faint_row = rows[("visibility", "0–20")]
    assert not any(faint_row["meets"].values())
    assert faint_row["worst"]["max_abs_deviation"] > 0.15  # c^(1/0.6) - c is -0.185 at c = 0.5
    for label in ("20–100", "100–inf"):
        row = rows[("visibility", label)]
        for column in columns:
            deviation = row["columns"][column]["max_abs_deviation"]
            assert deviation < 1.3 * row["noise_floor"]["quantiles"]["0.95"]
    assert not result["all_meet"] and result["worst"]["label"] == "0–20"


def test_exact_posterior_bound_grows_with_the_test_set():
    """The union bound on an exact posterior meeting the goal everywhere: poor on small sets,
    near 1 on large ones, and equal to 1 - the summed exceedance probabilities."""
    bounds = []
    for n in (1500, 90_000):
        rng, theta, visibility = _objects(n, seed=1)
        columns = {"joint": rng.uniform(size=n), NAMES[0]: rng.uniform(size=n)}
        result = conditional_coverage(columns, region_masks(visibility, theta, NAMES))
        p_sum = sum(
            r["noise_floor"]["p_exceed"] * len(columns) for r in result["regions"] if "columns" in r
        )
        assert np.isclose(result["exact_meets_all_at_least"], max(0.0, 1 - p_sum))
        bounds.append(result["exact_meets_all_at_least"])
    assert bounds[0] < 0.5 < 0.9 < bounds[1]
    assert calibrated_max_deviation(500)["p_exceed"] > calibrated_max_deviation(5000)["p_exceed"]


def test_small_regions_report_only_their_count():
    rng, theta, visibility = _objects(60)
    visibility[:] = 5.0  # every object faint: the other visibility bins are empty
    result = conditional_coverage(
        {"joint": rng.uniform(size=60)}, region_masks(visibility, theta, NAMES)
    )
    empty = [r for r in result["regions"] if r["by"] == "visibility" and r["n"] == 0]
    assert len(empty) == 2 and all("columns" not in r for r in empty)
    assert all("columns" not in r for r in result["regions"] if r["by"] != "visibility")
