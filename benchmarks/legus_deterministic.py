"""What stochastic IMF sampling, nebular emission, red supergiants and the extinction law change
in the LEGUS comparison: the shipped ``legus-uvis`` model against its deterministic twin.

Run from the repository root::

    python -m benchmarks.legus_deterministic [--deterministic-model DIR] [--data DIR]

The deterministic twin (default: ``benchmarks/models/legus-uvis-deterministic``, 1.3 MB, made by
``python -m benchmarks.train_legus_deterministic --out RUN`` and copied from ``RUN/model``) has
the architecture, batch, pool size, seeds and time budget of the shipped ``legus-uvis``.

Writes ``benchmarks/results/legus_deterministic.{json,md}`` (linked from ``legus.md``):

1. **Coverage on the same held-out stochastic simulations** (the realistic truth; seed 12345 as
   in :mod:`benchmarks.legus`) of both models, joint and per parameter, overall and in bins of
   true log mass (< 3.5, 3.5–4.5, ≥ 4.5), with the binomial noise floor at each bin's n; and, as a
   control that the twin is trained, its coverage on deterministic simulations of the same θ.
2. **Real clusters fitted by both models** (NGC 628-c, NGC 1313-e): the offsets from the
   catalogue's SED fits (ours − catalogue) for each model by catalogue age and mass bin; the
   change between the two is the share of stochastic sampling.
3. **Per-band residuals by age**: the catalogue's own fit residuals (columns 26–30, positive =
   observed flux above the model) and ours (observed − posterior-predictive median magnitude,
   sign flipped to the same convention) by age bin: < 10 Myr (nebular lines; [OIII] 5007 and Hβ
   fall in F555W), 10–30 Myr (red supergiants, F814W), older.
4. **Extinction law and isochrones**: A_band/A_V of integrated populations for the project's
   default law (``mist``) and CCM89 (the Milky Way law of the catalogue's fits), and the
   (log age, log mass, A_V) that a deterministic χ² grid fit with the default model returns for
   noiseless photometry made with CCM89 (or with PARSEC isochrones): the parameter shift those
   choices alone induce.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.legus import FIELDS, sed_comparison
from benchmarks.records import environment, write_results

DETERMINISTIC_MODEL = Path(__file__).resolve().parent / "models" / "legus-uvis-deterministic"
MASS_EDGES = (2.5, 3.5, 4.5, 6.5)
CAT_AGE_BINS = (
    (6.0, 7.0, "< 10 Myr"),
    (7.0, 7.5, "10–30 Myr"),
    (7.5, 8.0, "30–100 Myr"),
    (8.0, 9.0, "0.1–1 Gyr"),
    (9.0, 10.2, "> 1 Gyr"),
)
PARAMS = ("log_age", "log_mass", "av")
SHORT = {
    "WFC3_UVIS_F275W": "F275W",
    "WFC3_UVIS_F336W": "F336W",
    "WFC3_UVIS_F438W": "F438W",
    "ACS_WFC_F435W": "F435W",
    "WFC3_UVIS_F555W": "F555W",
    "ACS_WFC_F555W": "F555W",
    "WFC3_UVIS_F814W": "F814W",
    "ACS_WFC_F814W": "F814W",
}


# ---------------------------------------------------------------------- 1. coverage
def posterior_terms(
    model, batch, samples: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log q(θ*|x) (N,), log q of the draws (N, S) and the draws (N, S, D) of ``model``."""
    g = torch.Generator().manual_seed(seed)
    log_true, log_draws, draws = [], [], []
    with torch.no_grad():
        for start in range(0, len(batch.theta), 250):
            f = model.embed(batch.images[start : start + 250])
            d = model.sample_from_features(f, samples, g)
            log_true.append(model.flow_log_prob(batch.theta[start : start + 250], f).numpy())
            log_draws.append(model.flow_log_prob(d, f).T.numpy())
            draws.append(d.transpose(0, 1).numpy())
    return np.concatenate(log_true), np.concatenate(log_draws), np.concatenate(draws)


def binned_coverage(terms, theta: np.ndarray, names: list[str]) -> dict:
    """Coverage (joint and per parameter) overall and in bins of true log mass.

    Per region: max |empirical − nominal| over the levels, the empirical coverage of the nominal
    50 % and 95 % regions, the verdict against the 99 % binomial band, and the noise floor
    ``1.96 sqrt(0.25 / n)`` (95 % binomial half-width at the 50 % level).
    """
    from sbicluster.diagnostics.coverage import joint_coverage, marginal_coverage

    log_true, log_draws, draws = terms
    lm = theta[:, names.index("log_mass")]
    bins = {"all": np.ones(len(lm), bool)}
    for lo, hi in zip(MASS_EDGES[:-1], MASS_EDGES[1:], strict=True):
        bins[f"log M {lo:g}–{hi:g}"] = (lm >= lo) & (lm < hi)
    out = {}
    for label, sel in bins.items():
        res = {"joint": joint_coverage(log_true[sel], log_draws[sel])}
        marg = marginal_coverage(draws[sel], theta[sel])
        res.update({names[j]: marg[j] for j in range(len(names)) if names[j] != "log_rh"})
        n = int(sel.sum())
        out[label] = {
            "n": n,
            "noise_floor": float(1.96 * np.sqrt(0.25 / n)),
            **{
                k: {
                    "max_abs_deviation": c.max_abs_deviation,
                    "at_0.5": float(c.empirical[np.argmin(np.abs(c.levels - 0.5))]),
                    "at_0.95": float(c.empirical[np.argmin(np.abs(c.levels - 0.95))]),
                    "verdict": c.verdict,
                }
                for k, c in res.items()
            },
        }
    return out


def coverage_side_by_side(
    models: dict, stochastic, deterministic, n: int, samples: int, seed: int
) -> dict:
    """Both models on the same stochastic simulations; the twin also on deterministic ones."""
    g = torch.Generator().manual_seed(seed)
    batch = stochastic.simulate(n, g)
    # the same θ, nuisances and noise seed; only the clusters' light is IMF-expected
    det_batch = deterministic.simulate(n, torch.Generator().manual_seed(seed), theta=batch.theta)
    names = list(next(iter(models.values())).prior.names)
    theta = batch.theta.numpy()
    out = {"n": n, "samples": samples, "seed": seed, "regions": {}}
    for name, model in models.items():
        out["regions"][f"{name} on stochastic"] = binned_coverage(
            posterior_terms(model, batch, samples, seed + 1), theta, names
        )
    out["regions"]["deterministic on deterministic"] = binned_coverage(
        posterior_terms(models["deterministic"], det_batch, samples, seed + 1), theta, names
    )
    return out


# ---------------------------------------------------------------------- 2–3. real clusters
def catalogue_residuals(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The catalogue's per-band SED-fit residuals (N, 5) (columns 26–30; NaN where not given)
    and its number of fitted bands (N,)."""
    data = np.loadtxt(path)
    shift = 2 if data.shape[1] in (37, 39) else 0
    res = data[:, 25 + shift : 30 + shift].copy()
    res[np.abs(res) >= 99] = np.nan
    return res, data[:, 32 + shift]


def predicted_magnitudes(result, simulator, rows: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """Posterior-predictive median absolute magnitudes (len(rows), bands of the file)."""
    cat, samples = result.catalog, result.samples
    proxies = simulator.preset.get("file_band_proxies", {})
    cols = [simulator.bands.index(proxies.get(b, b)) for b in cat.bands]
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    out = np.full((len(rows), len(cols)), np.nan)
    for k, i in enumerate(rows):
        pick = rng.choice(samples.shape[1], draws, replace=False)
        th = torch.as_tensor(samples[i, pick], dtype=torch.float32)
        with torch.no_grad():
            out[k] = np.median(simulator.integrated_magnitudes(th, g)[:, cols].numpy(), 0)
    return out


def residuals_by_age(resid: np.ndarray, age: np.ndarray, bands: list[str]) -> dict:
    """Median and n of each band's residual in the age bins of :data:`CAT_AGE_BINS`."""
    table = {}
    for lo, hi, label in CAT_AGE_BINS:
        sel = (age >= lo) & (age < hi)
        if sel.sum() < 3:
            continue
        row = {"n": int(sel.sum())}
        for j, b in enumerate(bands):
            v = resid[sel, j]
            v = v[np.isfinite(v)]
            row[SHORT.get(b, b)] = [float(np.median(v)) if len(v) else None, int(len(v))]
        table[label] = row
    return table


def _offset_by_mass(result, sel: np.ndarray) -> dict:
    """Median log-age/log-mass/A_V offsets (ours − catalogue) in catalogue-mass bins."""
    cat, samples = result.catalog, result.samples
    names = [p["name"] for p in result.card["prior"]["parameters"]]
    theirs = {
        "log_age": np.log10(cat.extra["age_best"]),
        "log_mass": np.log10(cat.extra["mass_best"]),
        "av": 3.1 * cat.extra["ebv_best"],
    }
    out = {}
    for lo, hi in zip(MASS_EDGES[:-1], MASS_EDGES[1:], strict=True):
        b = sel & (theirs["log_mass"] >= lo) & (theirs["log_mass"] < hi)
        if b.sum() < 3:
            continue
        med = np.median(samples[b], 1)
        out[f"catalogue log M {lo:g}–{hi:g}"] = {
            "n": int(b.sum()),
            **{p: float(np.median(med[:, names.index(p)] - theirs[p][b])) for p in PARAMS},
        }
    return out


def run_field(
    field: dict, data: Path, models: dict, simulators: dict, samples: int, draws: int
) -> dict:
    """Both models on one field: SED-fit offsets and per-band residuals by age."""
    from sbicluster.catalog_infer import infer_catalog

    path = data / field["file"]
    cat_res, _ = catalogue_residuals(path)
    out = {"field": field["name"], "models": {}}
    for name, model in models.items():
        t0 = time.perf_counter()
        res = infer_catalog(
            path,
            model=model,
            distance_modulus=field["distance_modulus"],
            num_samples=samples,
            device="cpu",
            seed=0,
            progress=False,
        )
        cat = res.catalog
        n_meas = (cat.state == 1).sum(1)
        good = np.isin(cat.extra["class_mode"], (1, 2)) & (n_meas >= 4)
        good &= np.all(np.isfinite(res.samples[:, 0]), 1)
        fitted = good & (cat.extra["n_bands_fit"] >= 4) & (cat.extra["age_best"] > 0)
        fitted &= cat.extra["mass_best"] > 0
        rows = np.nonzero(fitted)[0]
        pred = predicted_magnitudes(res, simulators[name], rows, draws, seed=1)
        obs = np.where(cat.state[rows] == 1, cat.mag[rows] - field["distance_modulus"], np.nan)
        names = list(model.prior.names)
        our_age = np.median(res.samples[rows][:, :, names.index("log_age")], 1)
        entry = {
            "n": int(len(rows)),
            "inference_s": round(time.perf_counter() - t0, 1),
            "sed_comparison": sed_comparison(res, fitted),
            "offset_by_catalogue_mass": _offset_by_mass(res, fitted),
            # positive: observed brighter than our posterior-predictive median (catalogue sign)
            "our_residuals_by_our_age": residuals_by_age(pred - obs, our_age, list(cat.bands)),
        }
        if "catalogue_residuals_by_catalogue_age" not in out:
            cat_age = np.log10(cat.extra["age_best"][rows])
            out["bands"] = [SHORT.get(b, b) for b in cat.bands]
            out["catalogue_residuals_by_catalogue_age"] = residuals_by_age(
                cat_res[rows], cat_age, list(cat.bands)
            )
            out["our_residuals_binned_by_catalogue_age"] = {}
        out["our_residuals_binned_by_catalogue_age"][name] = residuals_by_age(
            pred - obs, np.log10(cat.extra["age_best"][rows]), list(cat.bands)
        )
        out["models"][name] = entry
    return out


# ---------------------------------------------------------------------- 4. physics choices
def grid_fit(pop, mags: np.ndarray, sigma: float = 0.05, log_age=None) -> np.ndarray:
    """Least-squares (log age, log mass, A_V) of noiseless absolute magnitudes ``mags`` (K, C)
    with the IMF-expected model of ``pop``: log age on its 0.01-dex nodes 6.05–10 (or held at
    ``log_age`` (K,) if given), A_V on a 0.02-mag grid 0–4, log mass analytic (the mean
    magnitude offset). Returns (K, 3)."""
    if log_age is not None:
        return np.concatenate(
            [
                _grid_fit(pop, mags[k : k + 1], sigma, torch.tensor([float(t)]))
                for k, t in enumerate(log_age)
            ]
        )
    return _grid_fit(pop, mags, sigma, torch.round(torch.arange(6.05, 10.0001, 0.01) * 100) / 100)


def _grid_fit(pop, mags: np.ndarray, sigma: float, ages: torch.Tensor) -> np.ndarray:
    """:func:`grid_fit` over the log ages ``ages``."""
    avs = torch.arange(0.0, 4.0001, 0.02)
    a, v = torch.meshgrid(ages, avs, indexing="ij")
    with torch.no_grad():
        grid = pop.integrated_magnitudes(a.flatten(), v.flatten(), torch.zeros(a.numel())).numpy()
    out = np.empty((len(mags), 3))
    for k, m in enumerate(mags):
        d = m[None, :] - grid  # = −2.5 log M + residual
        off = d.mean(1)
        chi2 = (((d - off[:, None]) / sigma) ** 2).sum(1)
        i = int(np.argmin(chi2))
        out[k] = (float(a.flatten()[i]), float(-off[i] / 2.5), float(v.flatten()[i]))
    return out


def physics_shifts(bands: tuple[str, ...]) -> dict:
    """A_band/A_V of integrated populations per law, and the parameter shift of fitting
    CCM89-reddened (or PARSEC) photometry with the default (MIST, ``mist`` law) model."""
    from simulators.population import StellarPopulation

    base = StellarPopulation(bands)
    ccm = StellarPopulation(bands, extinction_law="CCM89")
    ages = torch.tensor([6.5, 6.8, 7.0, 7.3, 7.6, 8.0, 8.5, 9.0])
    zero, one = torch.zeros(len(ages)), torch.ones(len(ages))
    ratios = {}
    with torch.no_grad():
        for name, pop in (("mist", base), ("CCM89", ccm)):
            a = (
                pop.integrated_magnitudes(ages, one, zero)
                - pop.integrated_magnitudes(ages, zero, zero)
            ).numpy()
            j = bands.index("WFC3_UVIS_F555W")
            ratios[name] = {
                f"{t:.1f}": dict(
                    zip([SHORT[b] for b in bands], (a[i] / a[i, j]).round(3).tolist(), strict=True)
                )
                for i, t in enumerate(ages.tolist())
            }
    fit_bands = [b for b in bands if b.startswith("WFC3")]
    cols = [bands.index(b) for b in fit_bands]
    shifts = {}
    truths = [(t, 1.0) for t in ages.tolist()]
    with torch.no_grad():
        truth_t = torch.tensor([t for t, _ in truths])
        truth_v = torch.tensor([v for _, v in truths])
        made = {
            "control: the default model itself": base.integrated_magnitudes(
                truth_t, truth_v, zero
            ).numpy(),
            "CCM89 law": ccm.integrated_magnitudes(truth_t, truth_v, zero).numpy(),
        }
        try:
            parsec = StellarPopulation(bands, family="parsec", on_incomplete_phases="ignore")
            made["PARSEC isochrones"] = parsec.integrated_magnitudes(truth_t, truth_v, zero).numpy()
        except Exception as err:  # noqa: BLE001 - record why the isochrone test was skipped
            shifts["PARSEC isochrones"] = f"not run: {type(err).__name__}: {err}"
    for label, mags in made.items():
        fit = grid_fit(_Subset(base, cols), mags[:, cols])
        fixed = grid_fit(_Subset(base, cols), mags[:, cols], log_age=truth_t.numpy())
        shifts[label] = [
            {
                "true_log_age": round(float(t), 2),
                "true_av": v,
                "d_log_age": round(f[0] - t, 3),
                "d_log_mass": round(f[1], 3),
                "d_av": round(f[2] - v, 3),
                "d_av_at_true_age": round(h[2] - v, 3),
                "d_log_mass_at_true_age": round(h[1], 3),
            }
            for (t, v), f, h in zip(truths, fit, fixed, strict=True)
        ]
    return {
        "fit_bands": [SHORT[b] for b in fit_bands],
        "a_band_over_a_v555": ratios,
        "shifts": shifts,
    }


class _Subset:
    """A population restricted to some band columns (for :func:`grid_fit`)."""

    def __init__(self, pop, cols):
        self.pop, self.cols = pop, cols

    def integrated_magnitudes(self, log_age, av, log_mass):
        return self.pop.integrated_magnitudes(log_age, av, log_mass)[:, self.cols]


# ---------------------------------------------------------------------- report
def _cov_table(cov: dict) -> list[str]:
    lines = [
        "| model on truth | log M bin | n | noise floor | joint | log_age | log_mass | av | joint cov. of 95 % region |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for region, bins in cov["regions"].items():
        for label, r in bins.items():
            cells = " | ".join(
                f"{r[k]['max_abs_deviation']:.3f} ({r[k]['verdict'][:5]})"
                for k in ("joint", *PARAMS)
            )
            lines.append(
                f"| {region} | {label} | {r['n']} | {r['noise_floor']:.3f} | {cells} | {r['joint']['at_0.95']:.3f} |"
            )
    return lines


def markdown(res: dict) -> str:
    env = res["environment"]
    cov = res["coverage"]
    lines = [
        "# Stochastic vs deterministic photometry: the `legus-uvis` model and its deterministic twin",
        "",
        f"Machine: {env['cpu']} ({env['cpu_cores']} cores, {env['torch_threads']} torch thread(s)), "
        f"device {env['device']}, no GPU; {env['date_utc']}; commit {env['git_commit']}.",
        f"Command: `{env['command']}`.",
        "",
        f"Models: **stochastic** = the shipped `legus-uvis` ({res['training']['stochastic']}); "
        f"**deterministic** = the same preset, architecture, batch, pool size, seeds and 20-min "
        f"budget with `stochastic_imf=False` ({res['training']['deterministic']}), made by "
        "`python -m benchmarks.train_legus_deterministic --out RUN`; its `RUN/model` is committed as "
        "`benchmarks/models/legus-uvis-deterministic` (1.3 MB).",
        "",
        "## 1. Coverage on the same held-out stochastic simulations",
        "",
        f"{cov['n']} simulations (seed {cov['seed']}), {cov['samples']} posterior draws each. Cells: "
        "max |empirical − nominal| over the levels 0.05–0.95 (verdict against the 99 % binomial "
        "band: calib(rated), overc(onfident), under(confident), mixed). Noise floor: 95 % binomial "
        "half-width at the 50 % level for the bin's n. Last column: fraction of truths inside the "
        "joint 95 % HPD region. The control row (deterministic on deterministic) uses the same θ, "
        "nuisances and noise seed with IMF-expected light.",
        "",
        *_cov_table(cov),
        "",
        "## 2. Real clusters: offsets from the catalogue's SED fits, both models",
        "",
        "Median offset (ours − catalogue; A_V = 3.1 E(B−V)) by catalogue age and by catalogue mass; "
        "Δ = deterministic − stochastic is the part of the offset that stochastic sampling makes.",
        "",
    ]
    for f in res["fields"]:
        st, de = f["models"]["stochastic"], f["models"]["deterministic"]
        lines += [
            f"### {f['field']} ({st['n']} fitted class 1–2 clusters)",
            "",
            "| parameter | bin | n | stochastic | deterministic | Δ |",
            "|---|---|---|---|---|---|",
        ]
        for p in PARAMS:
            a, b = st["sed_comparison"][p], de["sed_comparison"][p]
            lines.append(
                f"| {p} | all | {a['n']} | {a['median_offset']:+.2f} | {b['median_offset']:+.2f} | {b['median_offset'] - a['median_offset']:+.2f} |"
            )
            for k, v in a["by_age"].items():
                w = b["by_age"][k]
                lines.append(
                    f"| {p} | {k} | {v['n']} | {v['median_offset']:+.2f} | {w['median_offset']:+.2f} | {w['median_offset'] - v['median_offset']:+.2f} |"
                )
            for k, v in st["offset_by_catalogue_mass"].items():
                w = de["offset_by_catalogue_mass"].get(k)
                if w:
                    lines.append(
                        f"| {p} | {k} | {v['n']} | {v[p]:+.2f} | {w[p]:+.2f} | {w[p] - v[p]:+.2f} |"
                    )
        lines += [
            "",
            "Per-band residuals, median (n); positive = observed flux above the model (mag for ours):",
            "",
        ]
        head = "| residual | age bin | n | " + " | ".join(f["bands"]) + " |"
        lines += [head, "|" + "---|" * (3 + len(f["bands"]))]
        tables = [
            (
                "catalogue (Yggdrasil) fit, by catalogue age",
                f["catalogue_residuals_by_catalogue_age"],
            )
        ]
        for name in ("stochastic", "deterministic"):
            tables.append(
                (
                    f"ours ({name}), by catalogue age",
                    f["our_residuals_binned_by_catalogue_age"][name],
                )
            )
            tables.append(
                (f"ours ({name}), by our age", f["models"][name]["our_residuals_by_our_age"])
            )
        for label, t in tables:
            for age, row in t.items():
                cells = " | ".join(
                    "–" if row[b][0] is None else f"{row[b][0]:+.2f} ({row[b][1]})"
                    for b in f["bands"]
                )
                lines.append(f"| {label} | {age} | {row['n']} | {cells} |")
        lines.append("")
    ph = res["physics"]
    lines += [
        "## 3. Extinction law and isochrones, measured on the model alone",
        "",
        "A_band / A_F555W of integrated IMF-expected populations at A_V = 1 (default `mist` law vs "
        "CCM89, the Milky Way law of the catalogue's fits):",
        "",
    ]
    bands = list(next(iter(ph["a_band_over_a_v555"]["mist"].values())))
    lines += ["| law | log age | " + " | ".join(bands) + " |", "|" + "---|" * (2 + len(bands))]
    for law, per_age in ph["a_band_over_a_v555"].items():
        for age, r in per_age.items():
            lines.append(f"| {law} | {age} | " + " | ".join(f"{r[b]:.3f}" for b in bands) + " |")
    lines += [
        "",
        f"Shift of a deterministic χ² grid fit (bands {', '.join(ph['fit_bands'])}, σ = 0.05 mag, "
        "default model) to noiseless photometry made with another choice (true A_V = 1):",
        "",
        "| made with | true log age | Δ log age | Δ log mass | Δ A_V | Δ A_V, age held at truth | Δ log mass, age held |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, rows in ph["shifts"].items():
        if isinstance(rows, str):
            lines.append(f"| {label} | {rows} | | | | | |")
            continue
        for r in rows:
            lines.append(
                f"| {label} | {r['true_log_age']:.1f} | {r['d_log_age']:+.2f} | {r['d_log_mass']:+.2f} | {r['d_av']:+.2f} | {r['d_av_at_true_age']:+.2f} | {r['d_log_mass_at_true_age']:+.2f} |"
            )
    lines += ["", res.get("conclusions", ""), ""]
    return "\n".join(lines)


def _training_note(model) -> str:
    t = model.card["training"]
    return f"{t['steps_done']} steps of {t['config']['batch_size']}, stop: {t['stop_reason']}, {t['wall_time_s']:.0f} s"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.legus_deterministic")
    parser.add_argument("--deterministic-model", type=Path, default=DETERMINISTIC_MODEL)
    parser.add_argument(
        "--render", type=Path, help="rewrite the report from this results JSON (runs nothing)"
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data/legus"))
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument(
        "--draws", type=int, default=50, help="posterior-predictive draws per cluster"
    )
    parser.add_argument("--coverage-n", type=int, default=2000)
    parser.add_argument("--conclusions", type=Path, help="markdown appended to the report")
    parser.add_argument(
        "--out", type=Path, default=None, help="results folder (default: committed)"
    )
    args = parser.parse_args(argv)
    if args.render is not None:
        import json

        res = json.loads(args.render.read_text())
        if args.conclusions:
            res["conclusions"] = args.conclusions.read_text()
        write_results("legus_deterministic", res, markdown(res), args.out)
        return res
    torch.set_num_threads(1)
    from sbicluster.artifact import load_model
    from simulators.registry import simulator_from_card

    models = {
        "stochastic": load_model("legus-uvis"),
        "deterministic": load_model(args.deterministic_model),
    }
    sims = {k: simulator_from_card(m.card["simulator"]) for k, m in models.items()}
    if (
        sims["deterministic"].options.stochastic_imf
        or not sims["stochastic"].options.stochastic_imf
    ):
        raise SystemExit("--deterministic-model must be trained with stochastic_imf=False")
    res = {
        "environment": environment("cpu"),
        "training": {k: _training_note(m) for k, m in models.items()},
    }
    t0 = time.perf_counter()
    res["coverage"] = coverage_side_by_side(
        models, sims["stochastic"], sims["deterministic"], args.coverage_n, args.samples, 12345
    )
    res["coverage_s"] = round(time.perf_counter() - t0, 1)
    res["fields"] = [
        run_field(f, args.data, models, sims, args.samples, args.draws) for f in FIELDS
    ]
    res["physics"] = physics_shifts(sims["stochastic"].bands)
    if args.conclusions:
        res["conclusions"] = args.conclusions.read_text()
    write_results("legus_deterministic", res, markdown(res), args.out)
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
