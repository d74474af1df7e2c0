"""The selection function p_det(θ) and the normalisation α(Λ) = ∫ p_det(θ) p(θ | Λ) dθ.

This module owns the probability that a cluster of parameters θ enters the catalogue, a smooth
function of θ fitted to simulations, its file format, and the Monte Carlo integral α(Λ).

Definition: a simulated cluster is *detected* when the model gives P(cluster) ≥ ``threshold``
and visibility ≥ ``visibility_cut`` (the same cuts :func:`.results.read_results` applies to the
catalogue). The nuisances of the simulator (EFF slope, position, field, noise) are marginalised
by simulation. p_det(θ) is a logistic regression on all monomials of the prior-scaled θ
(each parameter mapped to [−1, 1]) up to degree :data:`DEGREE`, fitted by L-BFGS with a small
ridge penalty.

File (JSON): ``kind``, ``degree``, ``coef``, the prior, the cuts (``threshold``,
``visibility_cut``, ``views``) and the provenance (model name and fingerprint, simulations, seed,
detected fraction, held-out log loss, software). :func:`load_selection` refuses a file whose cuts
differ from the ones asked for; :func:`shipped_selection` returns a shipped file only for the
model it was fitted with (the same :func:`model_fingerprint`), since a model retrained or
recalibrated under the same name detects clusters differently.

α(Λ) = E_π[p_det(θ) p(θ | Λ) / π(θ)] is evaluated on a fixed scrambled Sobol set of
:data:`ALPHA_POINTS` points of the prior box (same points at every Λ, so α is smooth and
differentiable in Λ). It must not read catalogues or run NUTS.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from simulators.priors import ClusterPrior

from ..errors import InputError
from .distributions import PopulationModel

__all__ = [
    "SelectionFunction",
    "SelectionNormaliser",
    "estimate_selection",
    "fit_selection",
    "load_selection",
    "model_fingerprint",
    "shipped_selection",
    "DEGREE",
    "ALPHA_POINTS",
    "SHIPPED_DIR",
]

log = logging.getLogger(__name__)

DEGREE = 3
"""Largest total degree of the monomials of the logistic selection function."""

ALPHA_POINTS = 1 << 14
"""Sobol points over the prior box on which α(Λ) is averaged."""

RIDGE = 1e-3
"""L2 penalty (per simulation) on the logistic coefficients."""

SHIPPED_DIR = Path(__file__).resolve().parent / "data"
"""Folder of the selection functions shipped for the default model."""


def _exponents(dim: int, degree: int) -> list[tuple[int, ...]]:
    exps = [e for e in itertools.product(range(degree + 1), repeat=dim) if sum(e) <= degree]
    return sorted(exps, key=lambda e: (sum(e), tuple(-x for x in e)))


@dataclass
class SelectionFunction:
    """p_det(θ): a logistic function of the monomials of prior-scaled θ (or 1 everywhere).

    Parameters
    ----------
    prior : ClusterPrior
        The box θ is scaled by.
    coef : numpy.ndarray or None
        Logistic coefficients, one per monomial of :func:`_exponents`; ``None`` means p_det = 1
        (selection ignored).
    degree : int
        Largest total degree of the monomials.
    threshold, visibility_cut : float
        The detection cuts on P(cluster) and visibility this function describes.
    views : int or None
        Symmetric views that P(cluster) and visibility were averaged over.
    provenance : dict
        How it was made (model, simulations, seed, quality).
    """

    prior: ClusterPrior
    coef: np.ndarray | None
    degree: int = DEGREE
    threshold: float = 0.5
    visibility_cut: float = 0.0
    views: int | None = None
    provenance: dict = field(default_factory=dict)

    @classmethod
    def none(cls, prior: ClusterPrior) -> SelectionFunction:
        """p_det = 1: every cluster enters the catalogue (selection ignored)."""
        return cls(prior, None, provenance={"kind": "none"})

    @property
    def ignored(self) -> bool:
        """True when p_det = 1 everywhere."""
        return self.coef is None

    def features(self, theta: torch.Tensor) -> torch.Tensor:
        """(..., F) monomials of θ scaled to [−1, 1] per parameter (float64)."""
        low = self.prior.low().double()
        high = self.prior.high().double()
        z = 2 * (theta.double() - low) / (high - low) - 1
        cols = [
            torch.prod(torch.stack([z[..., j] ** k for j, k in enumerate(e)], -1), -1)
            for e in _exponents(self.prior.dim, self.degree)
        ]
        return torch.stack(cols, -1)

    def logit(self, theta) -> torch.Tensor:
        """log[p_det / (1 − p_det)] at θ (..., D); +inf when selection is ignored."""
        theta = torch.as_tensor(np.asarray(theta), dtype=torch.float64)
        if self.coef is None:
            return torch.full(theta.shape[:-1], math.inf, dtype=torch.float64)
        return self.features(theta) @ torch.as_tensor(self.coef, dtype=torch.float64)

    def __call__(self, theta) -> np.ndarray:
        """p_det(θ) for θ (..., D) in prior units, as float64 numpy (...,)."""
        return torch.sigmoid(self.logit(theta)).numpy()

    def matches(self, threshold: float, visibility_cut: float, views: int | None) -> bool:
        """Whether this function describes the catalogue cuts given (views: None = any)."""
        return (
            self.ignored
            or math.isclose(self.threshold, threshold, abs_tol=1e-9)
            and math.isclose(self.visibility_cut, visibility_cut, abs_tol=1e-9)
            and (views is None or self.views is None or int(self.views) == int(views))
        )

    def to_dict(self) -> dict:
        """JSON-serialisable description (see the module notes)."""
        return {
            "kind": "none" if self.coef is None else "logistic-polynomial",
            "degree": self.degree,
            "coef": None if self.coef is None else [float(c) for c in self.coef],
            "prior": self.prior.to_dict(),
            "threshold": self.threshold,
            "visibility_cut": self.visibility_cut,
            "views": self.views,
            "provenance": self.provenance,
        }

    def save(self, path: str | Path) -> Path:
        """Write the JSON file atomically."""
        from ..files import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: dict) -> SelectionFunction:
        """Inverse of :meth:`to_dict`."""
        prior = ClusterPrior.from_dict(data["prior"])
        coef = data.get("coef")
        fn = cls(
            prior,
            None if coef is None else np.asarray(coef, dtype=float),
            int(data.get("degree", DEGREE)),
            float(data["threshold"]),
            float(data["visibility_cut"]),
            data.get("views"),
            dict(data.get("provenance", {})),
        )
        if coef is not None and len(coef) != len(_exponents(prior.dim, fn.degree)):
            raise ValueError(f"{len(coef)} coefficients do not match degree {fn.degree}")
        return fn


def load_selection(path: str | Path) -> SelectionFunction:
    """Read a selection-function JSON file.

    Raises
    ------
    InputError
        Missing, unreadable or malformed file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--selection {path}: no such file; give a selection.json or 'none'")
    try:
        return SelectionFunction.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(
            f"--selection {path}: not a selection function written by sbicluster ({err})"
        ) from err


FINGERPRINT_KEYS = ("training", "metrics", "recalibration", "prior", "architecture")
"""Card entries that :func:`model_fingerprint` hashes: what a training or recalibration run
writes, which differs between any two trained models, and not the name or software versions."""


def model_fingerprint(card: dict) -> str:
    """A short hash (16 hex digits) identifying a trained model by its card.

    Parameters
    ----------
    card : dict
        The model's card (``model.card``, or the one a results folder carries).

    Returns
    -------
    str
        SHA-256 of the canonical JSON of the card's :data:`FINGERPRINT_KEYS` entries.
    """
    content = {key: card.get(key) for key in FINGERPRINT_KEYS}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=float)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def shipped_selection(
    card: dict, threshold: float, visibility_cut: float, views: int | None
) -> SelectionFunction | None:
    """The shipped selection function fitted with the model of ``card`` for these cuts, or None
    (also when a model of the same name but another fingerprint was used)."""
    name, fingerprint = card.get("name"), model_fingerprint(card)
    for path in sorted(SHIPPED_DIR.glob("selection_*.json")):
        fn = load_selection(path)
        if (
            fn.provenance.get("model") == name
            and fn.provenance.get("model_fingerprint") == fingerprint
            and fn.matches(threshold, visibility_cut, views)
        ):
            return fn
    return None


def fit_selection(
    theta: np.ndarray,
    detected: np.ndarray,
    prior: ClusterPrior,
    *,
    degree: int = DEGREE,
    ridge: float = RIDGE,
) -> np.ndarray:
    """Logistic-regression coefficients of ``detected`` on the monomials of θ.

    Parameters
    ----------
    theta : numpy.ndarray
        (n, D) simulated parameters, prior units.
    detected : numpy.ndarray
        (n,) booleans.
    prior : ClusterPrior
        Scaling box.
    degree, ridge : int, float
        Monomial degree and L2 penalty (per simulation) on the non-constant coefficients.

    Returns
    -------
    numpy.ndarray
        float64 coefficients.
    """
    fn = SelectionFunction(prior, None, degree)
    x = fn.features(torch.as_tensor(theta, dtype=torch.float64))
    y = torch.as_tensor(np.asarray(detected, dtype=float))
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500, line_search_fn="strong_wolfe", tolerance_grad=1e-9)

    def closure():
        opt.zero_grad()
        eta = x @ w
        loss = torch.nn.functional.binary_cross_entropy_with_logits(eta, y)
        loss = loss + ridge * (w[1:] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy()


def estimate_selection(
    model,
    simulator,
    *,
    threshold: float,
    visibility_cut: float,
    views: int = 8,
    n: int = 4000,
    seed: int = 0,
    batch: int = 256,
    progress: bool = False,
) -> SelectionFunction:
    """Simulate ``n`` clusters from the training prior, detect them with ``model``, fit p_det.

    Parameters
    ----------
    model : sbicluster.model.ClusterModel
        The model whose P(cluster) and visibility define detection.
    simulator : simulators.base.Simulator
        The simulator of the model's card (``simulate(n, generator, label=...)``).
    threshold, visibility_cut : float
        Detection: P(cluster) ≥ ``threshold`` and visibility ≥ ``visibility_cut``.
    views : int
        Symmetric views averaged in P(cluster) and visibility (as ``infer --views``).
    n : int
        Simulated clusters (all with label 1); a few thousand give p_det to a few per cent.
    seed : int
        Seed of the simulations.
    batch : int
        Clusters simulated and classified at a time.
    progress : bool
        Show a progress bar (on a terminal).

    Returns
    -------
    SelectionFunction
        With a 20 % held-out log loss and accuracy in its provenance.
    """
    from tqdm.auto import tqdm

    from ..inference import view_averaged_heads

    generator = torch.Generator(device=simulator.device).manual_seed(seed)
    prior = model.prior
    thetas, detected = [], []
    bar = tqdm(total=n, desc="selection function", unit="cluster", disable=not progress)
    model.eval()
    for start in range(0, n, batch):
        b = min(batch, n - start)
        sim = simulator.simulate(b, generator, label=torch.ones(b, dtype=torch.long))
        with torch.no_grad():
            logit, log_vis = view_averaged_heads(model, sim.images.to(model.device), views)
        p_cluster = torch.sigmoid(logit).cpu().numpy()
        vis = torch.expm1(log_vis).clamp(min=0).cpu().numpy()
        thetas.append(sim.theta.cpu().numpy())
        detected.append((p_cluster >= threshold) & (vis >= visibility_cut))
        bar.update(b)
    bar.close()
    theta, det = np.concatenate(thetas), np.concatenate(detected)
    return selection_from_simulations(
        theta,
        det,
        prior,
        threshold=threshold,
        visibility_cut=visibility_cut,
        views=views,
        provenance={
            "model": model.card.get("name", "unnamed"),
            "model_fingerprint": model_fingerprint(model.card),
            "seed": seed,
        },
    )


def selection_from_simulations(
    theta: np.ndarray,
    detected: np.ndarray,
    prior: ClusterPrior,
    *,
    threshold: float,
    visibility_cut: float,
    views: int | None,
    provenance: dict | None = None,
    degree: int = DEGREE,
) -> SelectionFunction:
    """Fit p_det to labelled simulations; record a held-out check (last 20 %) and provenance."""
    n = len(theta)
    n_fit = int(0.8 * n)
    coef = fit_selection(theta[:n_fit], detected[:n_fit], prior, degree=degree)
    held = SelectionFunction(prior, coef, degree)(theta[n_fit:])
    y = detected[n_fit:].astype(float)
    eps = 1e-12
    log_loss = float(-np.mean(y * np.log(held + eps) + (1 - y) * np.log(1 - held + eps)))
    coef = fit_selection(theta, detected, prior, degree=degree)  # final fit on all
    import sbicluster

    info = {
        "kind": "simulated",
        "n_simulations": int(n),
        "detected_fraction": float(np.mean(detected)),
        "heldout_log_loss": log_loss,
        "heldout_accuracy": float(np.mean((held >= 0.5) == (y > 0.5))),
        "created_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "sbicluster": getattr(sbicluster, "__version__", "unknown"),
        **(provenance or {}),
    }
    return SelectionFunction(prior, coef, degree, threshold, visibility_cut, views, info)


class SelectionNormaliser:
    """α(Λ) = ∫ p_det(θ) p(θ | Λ) dθ on a fixed Sobol set of the prior box.

    Parameters
    ----------
    selection : SelectionFunction
        p_det; when it is ignored, α = 1 exactly.
    population : PopulationModel
        p(θ | Λ) and π(θ).
    points : int
        Sobol points (:data:`ALPHA_POINTS`).
    seed : int
        Scrambling seed of the Sobol sequence.
    """

    def __init__(
        self,
        selection: SelectionFunction,
        population: PopulationModel,
        points: int = ALPHA_POINTS,
        seed: int = 0,
    ) -> None:
        self.population = population
        self.ignored = selection.ignored
        prior = population.prior
        engine = torch.quasirandom.SobolEngine(prior.dim, scramble=True, seed=seed)
        u = engine.draw(points, dtype=torch.float64)
        low, high = prior.low().double(), prior.high().double()
        self.theta = low + u * (high - low)
        self.p_det = (
            torch.ones(points, dtype=torch.float64)
            if selection.ignored
            else torch.sigmoid(selection.logit(self.theta))
        )
        self.log_pi = population.log_prior_density(self.theta)

    def log_alpha(self, hyper: dict[str, torch.Tensor]) -> torch.Tensor:
        """log α(Λ) (scalar tensor, differentiable in Λ); 0 when selection is ignored."""
        if self.ignored:
            return torch.zeros((), dtype=torch.float64)
        lw = self.population.log_density(self.theta, hyper) - self.log_pi
        return torch.logsumexp(lw + torch.log(self.p_det), 0) - math.log(len(self.theta))

    def sample_detected(
        self, n: int, hyper: dict[str, float], selection: SelectionFunction, rng
    ) -> np.ndarray:
        """``n`` θ from p(θ | Λ) p_det(θ) / α(Λ) by rejection (for predictive checks)."""
        out, have = [], 0
        for _ in range(1000):
            theta = self.population.sample(max(4 * n, 1024), hyper, rng)
            keep = rng.random(len(theta)) < (1.0 if selection.ignored else selection(theta))
            out.append(theta[keep])
            have += int(keep.sum())
            if have >= n:
                break
        return np.concatenate(out)[:n]
