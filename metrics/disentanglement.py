"""Disentanglement metrics between codes and true factors, with disentanglement_lib's definitions
(Locatello et al., ICML 2019): MIG, DCI, SAP, Modularity and the FactorVAE score.

Plain functions over ``N x K`` codes (one row per image, one column per code, e.g. an
encoder's estimate of each direction's coefficient) and ``N x F`` true factors (torch tensors or
numpy arrays); each returns a dict of floats and numpy arrays (per-factor and per-code detail).

Factors. disentanglement_lib's data sets have discrete factors given as labels; here a factor is
one of three kinds (``kinds``, one name per factor; ``WORLD_KINDS`` for the shapes world of
``datamodules.world``):

- ``categorical``: its distinct values are the labels (the world's shape kind: 3 classes).
- ``continuous``: cut into ``factor_bins`` (20) equal-width bins over its observed range, the
  same histogram discretisation disentanglement_lib applies to codes (scale, x, y).
- ``circular``: a fraction of a turn, ``period`` (1.0) a full turn; cut into ``factor_bins``
  equal arcs of the whole circle (fixed arcs, not the observed range), so values just below
  ``period`` and just above 0 fall in one bin (the world's rotation and hue). MIG, Modularity
  and DCI see only the bin labels, and the order of the labels does not matter to mutual
  information or to a classifier, so the wrap-around needs no more care there; SAP, which
  correlates codes with the factor's value, treats an angle apart (below).

20 bins a factor, as the codes': a code equal to a continuous factor then has the factor's own
bins and MIG 1, and the plug-in mutual information of 20 x 20 bins is biased upwards by about
``361 / (2N)`` nats (0.02 at N = 10,000, against a factor entropy of ln 20 = 3.0): pass
thousands of points (MIG and Modularity refuse fewer than 10 a bin).

``kinds=None`` takes every factor as categorical (disentanglement_lib's convention) and refuses a
factor with more than 64 distinct values: pass ``kinds`` for continuous factors.

Definitions (every metric is in [0, 1], 1 the best; codes are never rescaled, as in
disentanglement_lib: SAP's linear SVMs see each code in its own units):

- MIG (Chen et al. 2018): codes cut into ``bins`` (20) equal-width bins over their observed
  range (disentanglement_lib's histogram discretiser, edges as numpy's), the discrete mutual
  information ``I(code_i; factor_j)`` (natural log), and per factor the gap between the two most
  informative codes over the factor's entropy; ``mig`` is the mean over factors.
- Modularity (Ridgeway & Mozer 2018): per code, ``1 - (sum_j I_ij^2 - max_j I_ij^2) /
  (max_j I_ij^2 (F - 1))`` over the same mutual information, 0 for a code that carries none;
  ``modularity`` is the mean over codes (disentanglement_lib's explicitness is not computed).
- DCI (Eastwood & Williams 2018): for every factor a gradient-boosted classifier from all codes
  to the factor's labels, trained on a random ``1 - test_fraction`` of the points; the
  importance matrix ``R`` (K x F) is the classifiers' feature importances. Disentanglement is
  ``sum_i rho_i (1 - H_F(P_i.))`` with ``P_i.`` code i's importances normalised over factors and
  ``rho_i`` code i's share of all importance; completeness is the same with codes and factors
  swapped; informativeness is the mean test accuracy (``informativeness_train`` the training
  one). ``model="gbt"``: scikit-learn's ``GradientBoostingClassifier()`` with its defaults and
  its impurity importances, exactly disentanglement_lib's (and DisCo's) choice, and slow: one
  tree per class per stage, up to two minutes per 20-class factor on 6,667 training points
  (bench/disentanglement_metrics.py).
  ``model="hist_gbt"``: ``HistGradientBoostingClassifier`` with the same budget (100 stages,
  depth 3, learning rate 0.1, no early stopping) and the total split gain of each code as its
  importance (LightGBM's ``importance_type="gain"``), several times faster; its figures are
  close to ``gbt``'s, a little lower for a clean code (it bins each code into 255 quantiles, so
  a factor's bin edges fall inside its bins and later trees spend gain on other codes).
- SAP (Kumar et al. 2018): a score matrix ``S`` (K x F) and, per factor, the gap between the
  two best codes; ``sap`` is the mean over factors. ``S_ij``: for a categorical factor the test
  accuracy of ``LinearSVC(C=0.01, class_weight="balanced")`` from code i alone (the same split as
  DCI; disentanglement_lib's discrete branch); for a continuous factor the squared Pearson
  correlation (its continuous branch, over all points); for a circular factor the larger of two
  squared correlations, since a single number can hold an angle only as a sawtooth or as a
  wave: the best squared Pearson correlation with the angle cut open at any point of the circle
  (searched to about 1e-4 of a turn), and Mardia's circular-linear correlation (the R^2 of the
  code on the angle's cosine and sine). A code with variance under 1e-12 scores 0. For a
  categorical factor an uninformative code still scores chance, so its gap is at most
  ``1 - 1/L`` (2/3 for the world's three shapes), as in disentanglement_lib.
- FactorVAE score (Kim & Mnih 2018): groups of ``batch_size`` (64) codes of images that share
  one factor's value (the others drawn at random); each code's variance in the group over its
  variance in ``codes`` (the global sample), the code with the smallest ratio votes for the held
  factor; a majority-vote classifier (each code predicts the factor that gave it most training
  votes) is scored by its accuracy on ``num_train`` (10,000) training and ``num_eval`` (5,000)
  fresh groups. Codes whose global standard deviation is under ``prune_threshold`` (0.05, as
  disentanglement_lib's study configs) never vote. Two departures from disentanglement_lib, both
  fixes: the held factor cycles through the factors in a shuffled order (equal counts, the same
  expectation as its uniform draw, less noise), and a vote goes to the winning code's own index
  when some codes are pruned (disentanglement_lib indexes the active codes' list).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from common.checks import integer, number
from common.errors import UserError
from datamodules.world import FACTOR_KINDS, FACTORS

KINDS = ("categorical", "continuous", "circular")
# The kind of each factor of the shapes world, in the order of its factor columns.
WORLD_KINDS: tuple[str, ...] = tuple(FACTOR_KINDS[name] for name in FACTORS)
MAX_CLASSES = 64  # a "categorical" factor with more distinct values is taken for a continuous one
MIN_POINTS_PER_BIN = 10  # MIG and Modularity: points per code bin, at least
MIN_POINTS = 50
DCI_MODELS = ("gbt", "hist_gbt")
_VAR_EPS = 1e-12  # disentanglement_lib's SAP: a code with less variance scores 0
_ENTROPY_EPS = 1e-11  # disentanglement_lib's DCI: added to the importances before the entropies


# ---------------------------------------------------------------------------------------------
# Inputs


def _array(values: Any, name: str) -> np.ndarray:
    """A float64 matrix from a tensor, array or nested list, or a UserError."""
    if hasattr(values, "detach"):  # a torch tensor, on any device
        values = values.detach().cpu().numpy()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise UserError(f"{name} must be a matrix of numbers (a tensor or array, points x columns): "
                        f"{err}") from None
    if array.ndim != 2:
        raise UserError(f"{name} must be a 2-D matrix, points x columns (N x K codes, N x F factors), "
                        f"got shape {array.shape}")
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
        raise UserError(f"{name} has a value that is not finite (NaN or infinity), first at row {bad[0]}, "
                        f"column {bad[1]}: drop those points or fix what made them")
    return array


def _codes_and_factors(codes: Any, factors: Any, min_codes: int = 1, min_factors: int = 1,
                       what: str = "this metric") -> tuple[np.ndarray, np.ndarray]:
    codes, factors = _array(codes, "codes"), _array(factors, "factors")
    if codes.shape[0] != factors.shape[0]:
        raise UserError(f"codes and factors must have one row per point, the same number of rows: got "
                        f"{codes.shape[0]} codes and {factors.shape[0]} factor rows")
    if codes.shape[0] < MIN_POINTS:
        raise UserError(f"{what} needs at least {MIN_POINTS} points (rows of codes and factors), got "
                        f"{codes.shape[0]}: pass more points (thousands are usual)")
    if codes.shape[1] < min_codes:
        raise UserError(f"{what} needs at least {min_codes} codes (columns of codes), got {codes.shape[1]}")
    if factors.shape[1] < min_factors:
        raise UserError(f"{what} needs at least {min_factors} factors (columns of factors), got "
                        f"{factors.shape[1]}")
    return codes, factors


def _kinds(kinds: Sequence[str] | None, num_factors: int) -> tuple[str, ...]:
    if kinds is None:
        return ("categorical",) * num_factors
    if isinstance(kinds, str) or len(kinds) != num_factors:
        raise UserError(f"kinds must name the kind of each of the {num_factors} factors (a list of "
                        f"{', '.join(KINDS)}), got {kinds!r}; for the shapes world pass "
                        f"metrics.disentanglement.WORLD_KINDS")
    for j, kind in enumerate(kinds):
        if kind not in KINDS:
            raise UserError(f"kinds[{j}]={kind!r}: a factor's kind is one of {', '.join(KINDS)}")
    return tuple(kinds)


def _bins(value: Any, name: str) -> int:
    return integer(value, name, low=2, hint="the number of equal-width bins (20 as disentanglement_lib)")


# ---------------------------------------------------------------------------------------------
# Discretisation and mutual information


def histogram_discretize(values: Any, bins: int = 20) -> np.ndarray:
    """Labels ``0 .. bins-1`` (``N x D`` ints) of each column cut into ``bins`` equal-width bins
    over its observed range: disentanglement_lib's histogram discretiser, the same edges as
    ``np.histogram`` (a constant column falls in the middle bin of a range of one around it)."""
    values = np.asarray(values, dtype=np.float64)
    low, high = values.min(0), values.max(0)
    same = low == high
    low, high = np.where(same, low - 0.5, low), np.where(same, high + 0.5, high)
    edges = np.linspace(low, high, bins + 1, axis=-1)  # D x (bins + 1), np.histogram's edges
    labels = np.empty(values.shape, dtype=np.int64)
    for d in range(values.shape[1]):  # np.digitize against the left edges, minus one
        labels[:, d] = np.searchsorted(edges[d, :-1], values[:, d], side="right") - 1
    return labels


def discretize_factors(factors: Any, kinds: Sequence[str] | None = None, bins: int = 20,
                       period: float = 1.0) -> np.ndarray:
    """Labels ``0 .. L_j - 1`` (``N x F`` ints) of each factor by its kind (see the module
    docstring): categorical values relabelled in sorted order, continuous ones in ``bins``
    histogram bins, circular ones in ``bins`` equal arcs of ``period``."""
    factors = _array(factors, "factors")
    kinds = _kinds(kinds, factors.shape[1])
    bins = _bins(bins, "factor_bins")
    period = number(period, "period", low=0, low_open=True, hint="the length of a full turn of the circular "
                    "factors (1.0 for the world's fractions of a turn)")
    labels = np.empty(factors.shape, dtype=np.int64)
    for j, kind in enumerate(kinds):
        column = factors[:, j]
        if kind == "categorical":
            values, labels[:, j] = np.unique(column, return_inverse=True)
            if len(values) > MAX_CLASSES:
                raise UserError(f"factor {j} has {len(values)} distinct values, too many for a categorical "
                                f"factor (at most {MAX_CLASSES}): pass kinds naming it continuous or circular "
                                f"(for the shapes world, kinds=metrics.disentanglement.WORLD_KINDS)")
        elif kind == "continuous":
            labels[:, j] = histogram_discretize(column[:, None], bins)[:, 0]
        else:
            labels[:, j] = np.floor(np.mod(column, period) / period * bins).astype(np.int64) % bins
        if np.all(labels[:, j] == labels[0, j]):
            raise UserError(f"factor {j} takes a single value (one bin) in these points: the metrics need "
                            f"every factor to vary; drop that column or sample points where it varies")
    return labels


def _entropy_of_labels(labels: np.ndarray) -> float:
    counts = np.bincount(labels).astype(np.float64)
    p = counts[counts > 0] / labels.shape[0]
    return float(-(p * np.log(p)).sum())


def discrete_mutual_info(code_labels: np.ndarray, factor_labels: np.ndarray) -> np.ndarray:
    """``I(code_i; factor_j)`` in nats (``K x F``) between discrete codes and factors (both
    ``N x .`` label matrices with labels from 0), from their joint counts; the plug-in estimate
    that scikit-learn's ``mutual_info_score`` gives pair by pair, all pairs of a factor at once."""
    n, num_codes = code_labels.shape
    code_classes = int(code_labels.max()) + 1
    info = np.empty((num_codes, factor_labels.shape[1]))
    offsets = (np.arange(num_codes) * code_classes)[None, :]
    for j in range(factor_labels.shape[1]):
        classes = int(factor_labels[:, j].max()) + 1
        index = (offsets + code_labels) * classes + factor_labels[:, j, None]
        joint = np.bincount(index.ravel(), minlength=num_codes * code_classes * classes)
        joint = joint.reshape(num_codes, code_classes, classes).astype(np.float64)
        code_marginal = joint.sum(2, keepdims=True)
        factor_marginal = joint.sum(1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = joint / n * np.log(joint * n / (code_marginal * factor_marginal))
        info[:, j] = np.where(joint > 0, terms, 0.0).sum((1, 2)).clip(min=0.0)
    return info


def _information(codes, factors, kinds, bins, factor_bins, period, min_codes, min_factors, what):
    """The mutual information (``K x F``) of the binned codes and factors, and the factors' labels."""
    codes, factors = _codes_and_factors(codes, factors, min_codes=min_codes, min_factors=min_factors, what=what)
    bins = _bins(bins, "bins")
    if codes.shape[0] < MIN_POINTS_PER_BIN * bins:
        raise UserError(f"{what} needs at least {MIN_POINTS_PER_BIN} points per code bin, "
                        f"{MIN_POINTS_PER_BIN * bins} points for bins={bins}, got {codes.shape[0]}: pass more "
                        f"points (the mutual information of few points is biased upwards) or fewer bins")
    factor_labels = discretize_factors(factors, kinds, factor_bins, period)
    return discrete_mutual_info(histogram_discretize(codes, bins), factor_labels), factor_labels


# ---------------------------------------------------------------------------------------------
# MIG and Modularity


def mig(codes: Any, factors: Any, kinds: Sequence[str] | None = None, *, bins: int = 20,
        factor_bins: int = 20, period: float = 1.0) -> dict[str, Any]:
    """Mutual Information Gap of ``codes`` (``N x K``, K >= 2) about ``factors`` (``N x F``).

    Returns ``{"mig": mean gap, "mig_per_factor": (F,), "mutual_information": (K, F) nats,
    "entropy": (F,) nats}``.
    """
    info, factor_labels = _information(codes, factors, kinds, bins, factor_bins, period, 2, 1, "MIG")
    entropy = np.array([_entropy_of_labels(factor_labels[:, j]) for j in range(factor_labels.shape[1])])
    top = np.sort(info, axis=0)[::-1]
    gap = (top[0] - top[1]) / entropy
    return {"mig": float(gap.mean()), "mig_per_factor": gap, "mutual_information": info, "entropy": entropy}


def modularity(codes: Any, factors: Any, kinds: Sequence[str] | None = None, *, bins: int = 20,
               factor_bins: int = 20, period: float = 1.0) -> dict[str, Any]:
    """Modularity of ``codes`` (``N x K``) about ``factors`` (``N x F``, F >= 2).

    Returns ``{"modularity": mean over codes, "modularity_per_code": (K,),
    "mutual_information": (K, F) nats}``.
    """
    info, _ = _information(codes, factors, kinds, bins, factor_bins, period, 1, 2, "Modularity")
    squared = info**2
    top = squared.max(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_code = 1.0 - (squared.sum(1) - top) / (top * (squared.shape[1] - 1.0))
    per_code = np.where(top == 0.0, 0.0, per_code)
    return {"modularity": float(per_code.mean()), "modularity_per_code": per_code, "mutual_information": info}


# ---------------------------------------------------------------------------------------------
# DCI


def _split(n: int, test_fraction: Any, seed: Any) -> tuple[np.ndarray, np.ndarray]:
    """A random split of ``n`` points into train and test indices."""
    test_fraction = number(test_fraction, "test_fraction", low=0, high=1, low_open=True, high_open=True)
    seed = integer(seed, "seed", low=0)
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    if n_test < 10 or n - n_test < 10:
        raise UserError(f"test_fraction={test_fraction} of {n} points leaves {n - n_test} training and {n_test} "
                        f"test points: each needs at least 10; pass more points or another fraction")
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def _normalised_entropy(p: np.ndarray, axis: int, base: int) -> np.ndarray:
    """``scipy.stats.entropy`` of ``p`` along ``axis`` (normalised first) in ``base``."""
    p = p / p.sum(axis=axis, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return terms.sum(axis=axis) / math.log(base)


def dci_scores(importance: np.ndarray) -> dict[str, Any]:
    """Disentanglement and completeness (Eastwood & Williams) of an importance matrix
    ``K x F`` (codes x factors), as disentanglement_lib computes them."""
    importance = np.abs(np.asarray(importance, dtype=np.float64))
    num_codes, num_factors = importance.shape
    per_code = 1.0 - _normalised_entropy(importance + _ENTROPY_EPS, axis=1, base=num_factors)
    per_factor = 1.0 - _normalised_entropy(importance + _ENTROPY_EPS, axis=0, base=num_codes)
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    code_share = weights.sum(1) / weights.sum()
    factor_share = weights.sum(0) / weights.sum()
    return {"disentanglement": float((per_code * code_share).sum()),
            "completeness": float((per_factor * factor_share).sum()),
            "disentanglement_per_code": per_code, "completeness_per_factor": per_factor}


def _hist_gbt_importances(model, num_features: int) -> np.ndarray:
    """Total split gain of each feature over every tree of a fitted HistGradientBoostingClassifier
    (normalised to sum 1; LightGBM's ``importance_type="gain"``). scikit-learn keeps the trees'
    nodes, with their gains, in ``_predictors``: a private attribute, checked here."""
    predictors = getattr(model, "_predictors", None)
    if predictors is None:
        raise RuntimeError("this scikit-learn's HistGradientBoostingClassifier keeps no _predictors: "
                           "DCI's hist_gbt importances need them (use model='gbt')")
    gain = np.zeros(num_features)
    for stage in predictors:
        for tree in stage:
            nodes = tree.nodes
            split = nodes["is_leaf"] == 0
            np.add.at(gain, nodes["feature_idx"][split], nodes["gain"][split])
    return gain / gain.sum() if gain.sum() > 0 else gain


def dci(codes: Any, factors: Any, kinds: Sequence[str] | None = None, *, model: str = "gbt",
        factor_bins: int = 20, period: float = 1.0, test_fraction: float = 1 / 3, seed: int = 0) -> dict[str, Any]:
    """Disentanglement, completeness and informativeness of ``codes`` (``N x K``, K >= 2) about
    ``factors`` (``N x F``, F >= 2), with one gradient-boosted classifier per factor
    (``model``: ``"gbt"`` as disentanglement_lib, or the faster ``"hist_gbt"``; see the module
    docstring). ``seed`` draws the train/test split and seeds the classifiers.

    Returns ``{"disentanglement", "completeness", "informativeness" (mean test accuracy),
    "informativeness_train", "informativeness_per_factor": (F,) test accuracies,
    "importance": (K, F), "disentanglement_per_code": (K,), "completeness_per_factor": (F,)}``.
    """
    codes, factors = _codes_and_factors(codes, factors, min_codes=2, min_factors=2, what="DCI")
    if model not in DCI_MODELS:
        raise UserError(f"model={model!r}: DCI's classifiers are one of {', '.join(DCI_MODELS)}")
    labels = discretize_factors(factors, kinds, factor_bins, period)
    train, test = _split(codes.shape[0], test_fraction, seed)
    importance, train_accuracy, test_accuracy = _importance_gbt(
        codes[train], labels[train], codes[test], labels[test], model, int(seed))
    return {**dci_scores(importance), "informativeness": float(test_accuracy.mean()),
            "informativeness_train": float(train_accuracy.mean()),
            "informativeness_per_factor": test_accuracy, "importance": importance}


def _importance_gbt(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                    model: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier

    num_codes, num_factors = x_train.shape[1], y_train.shape[1]
    importance = np.zeros((num_codes, num_factors))
    train_accuracy, test_accuracy = np.zeros(num_factors), np.zeros(num_factors)
    for j in range(num_factors):
        if np.all(y_train[:, j] == y_train[0, j]):
            raise UserError(f"factor {j} takes a single value among the training points: DCI needs it to vary; "
                            f"pass more points")
        if model == "gbt":
            classifier = GradientBoostingClassifier(random_state=seed).fit(x_train, y_train[:, j])
            importance[:, j] = np.abs(classifier.feature_importances_)
        else:
            classifier = HistGradientBoostingClassifier(
                max_iter=100, learning_rate=0.1, max_depth=3, max_leaf_nodes=None, min_samples_leaf=1,
                early_stopping=False, random_state=seed).fit(x_train, y_train[:, j])
            importance[:, j] = _hist_gbt_importances(classifier, num_codes)
        train_accuracy[j] = np.mean(classifier.predict(x_train) == y_train[:, j])
        test_accuracy[j] = np.mean(classifier.predict(x_test) == y_test[:, j])
    return importance, train_accuracy, test_accuracy


# ---------------------------------------------------------------------------------------------
# SAP


def _squared_correlation(codes: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Squared Pearson correlation (``K x T``) of every code with every target column; 0 for a
    code with variance under 1e-12 (disentanglement_lib's ``np.cov`` with ddof 1)."""
    n = codes.shape[0]
    centred_codes = codes - codes.mean(0)
    centred_targets = targets - targets.mean(0)
    covariance = centred_codes.T @ centred_targets / (n - 1)
    code_var = (centred_codes**2).sum(0) / (n - 1)
    target_var = (centred_targets**2).sum(0) / (n - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = covariance**2 / (code_var[:, None] * target_var[None, :])
    return np.where(code_var[:, None] > _VAR_EPS, score, 0.0)


def _sawtooth_score(codes: np.ndarray, turn: np.ndarray, grid: int = 32, rounds: int = 3) -> np.ndarray:
    """Per code (``K``): the best squared correlation with the angle (``turn``, in [0, 1)) cut
    open at any point, ``max_phi corr^2(code, (turn - phi) mod 1)``: ``grid`` cut points around
    the circle, then ``rounds - 1`` finer grids around each code's best (a resolution of about
    1e-4 of a turn)."""
    best_cut, best = np.zeros(codes.shape[1]), np.zeros(codes.shape[1])
    for k in range(codes.shape[1]):
        cuts, spacing = np.arange(grid) / grid, 1.0 / grid
        for _ in range(rounds):
            opened = np.mod(turn[:, None] - cuts[None, :], 1.0)  # N x grid
            score = _squared_correlation(codes[:, k:k + 1], opened)[0]
            at = int(score.argmax())
            if score[at] >= best[k]:
                best[k], best_cut[k] = score[at], cuts[at]
            cuts = best_cut[k] + np.linspace(-spacing, spacing, grid)
            spacing = 2 * spacing / (grid - 1)
    return best


def _circular_score(codes: np.ndarray, angle: np.ndarray, period: float) -> np.ndarray:
    """Per code (``K``): the larger of the sawtooth score (``_sawtooth_score``) and Mardia's
    circular-linear correlation, the R^2 of the code on the angle's cosine and sine (a wave)."""
    turn = np.mod(angle, period) / period
    basis = np.stack([np.cos(2 * math.pi * turn), np.sin(2 * math.pi * turn)], 1)
    basis = basis - basis.mean(0)
    centred = codes - codes.mean(0)
    fitted = basis @ np.linalg.lstsq(basis, centred, rcond=None)[0]
    total = (centred**2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        wave = (fitted**2).sum(0) / total
    wave = np.where(total / (codes.shape[0] - 1) > _VAR_EPS, wave, 0.0)
    return np.maximum(_sawtooth_score(codes, turn), wave)


def sap(codes: Any, factors: Any, kinds: Sequence[str] | None = None, *, period: float = 1.0,
        test_fraction: float = 1 / 3, seed: int = 0) -> dict[str, Any]:
    """Separated Attribute Predictability of ``codes`` (``N x K``, K >= 2) about ``factors``
    (``N x F``); the score of each pair by the factor's kind (see the module docstring).
    ``test_fraction`` and ``seed`` split the points for a categorical factor's classifiers (as
    DCI's).

    Returns ``{"sap": mean gap, "sap_per_factor": (F,), "score_matrix": (K, F)}``.
    """
    codes, factors = _codes_and_factors(codes, factors, min_codes=2, what="SAP")
    kinds = _kinds(kinds, factors.shape[1])
    labels = discretize_factors(factors, kinds, 20, period)  # categorical labels; checks every factor varies
    score = np.zeros((codes.shape[1], factors.shape[1]))
    continuous = [j for j, kind in enumerate(kinds) if kind == "continuous"]
    if continuous:
        score[:, continuous] = _squared_correlation(codes, factors[:, continuous])
    for j, kind in enumerate(kinds):
        if kind == "circular":
            score[:, j] = _circular_score(codes, factors[:, j], float(period))
    categorical = [j for j, kind in enumerate(kinds) if kind == "categorical"]
    if categorical:
        train, test = _split(codes.shape[0], test_fraction, seed)
        score[:, categorical] = _sap_classification(codes[train], labels[train][:, categorical],
                                                    codes[test], labels[test][:, categorical])
    top = np.sort(score, axis=0)
    gap = top[-1] - top[-2]
    return {"sap": float(gap.mean()), "sap_per_factor": gap, "score_matrix": score}


def _sap_classification(x_train, y_train, x_test, y_test) -> np.ndarray:
    """Test accuracy (``K x F``) of a linear SVM from each code alone to each factor's labels."""
    from sklearn.svm import LinearSVC

    score = np.zeros((x_train.shape[1], y_train.shape[1]))
    for j in range(y_train.shape[1]):
        if np.all(y_train[:, j] == y_train[0, j]):
            raise UserError("a categorical factor takes a single value among SAP's training points: pass more points")
        for i in range(x_train.shape[1]):
            classifier = LinearSVC(C=0.01, class_weight="balanced").fit(x_train[:, i:i + 1], y_train[:, j])
            score[i, j] = np.mean(classifier.predict(x_test[:, i:i + 1]) == y_test[:, j])
    return score


# ---------------------------------------------------------------------------------------------
# FactorVAE score


SampleFixed = Callable[[np.ndarray, int], Any]


def fixed_factor_sampler(sample_factors: Callable[[int], Any], encode: Callable[[Any], Any]) -> SampleFixed:
    """A ``sample_fixed`` for ``factor_vae`` from a factor sampler and an encoder.

    ``sample_factors(n)`` draws ``n x F`` factors (a tensor or an array: e.g.
    ``lambda n: world.sample_factors(n, generator)``); ``encode(factors)`` gives the codes of the
    images of those factors (``n x K``: e.g. ``lambda f: encoder(world.render(f))``). For held
    factors ``held`` (``M``) and a group size ``B``, the sampler draws ``M x B`` factor rows,
    gives every row of group m the first row's value of factor ``held[m]``, and returns the
    ``M x B x K`` codes.
    """

    def sample_fixed(held: np.ndarray, batch_size: int):
        m = len(held)
        factors = sample_factors(m * batch_size)
        factors = factors.reshape(m, batch_size, -1)
        rows = np.arange(m)
        if hasattr(factors, "detach"):  # a torch tensor: index it with tensors
            import torch

            rows, held_index = torch.as_tensor(rows), torch.as_tensor(np.asarray(held), dtype=torch.long)
        else:
            held_index = np.asarray(held)
        factors[rows, :, held_index] = factors[rows, 0, held_index][:, None]
        codes = encode(factors.reshape(m * batch_size, -1))
        return codes.reshape(m, batch_size, -1)

    return sample_fixed


def _groups(sample_fixed: SampleFixed, held: np.ndarray, batch_size: int, num_codes: int,
            groups_per_call: int) -> np.ndarray:
    out = np.empty((len(held), batch_size, num_codes))
    for start in range(0, len(held), groups_per_call):
        chunk = held[start:start + groups_per_call]
        codes = sample_fixed(chunk, batch_size)
        if hasattr(codes, "detach"):
            codes = codes.detach().cpu().numpy()
        codes = np.asarray(codes, dtype=np.float64)
        if codes.shape != (len(chunk), batch_size, num_codes):
            raise UserError(f"sample_fixed(held, {batch_size}) must return codes of shape (len(held), "
                            f"batch_size, K) = {(len(chunk), batch_size, num_codes)}, one group of "
                            f"batch_size codes per held factor, got {codes.shape}")
        if not np.isfinite(codes).all():
            raise UserError("sample_fixed returned codes that are not finite (NaN or infinity)")
        out[start:start + len(chunk)] = codes
    return out


def factor_vae_votes(groups: np.ndarray, held: np.ndarray, global_variances: np.ndarray,
                     active: np.ndarray, num_factors: int) -> np.ndarray:
    """Votes (``F x K``): for each group (``groups``: ``G x B x K``, ``held``: ``G``) the code
    with the smallest variance in the group relative to its global variance, among the active
    codes, votes for the held factor."""
    local = groups.var(axis=1, ddof=1)
    ratio = local[:, active] / global_variances[active]
    winner = np.flatnonzero(active)[ratio.argmin(1)]
    votes = np.zeros((num_factors, groups.shape[2]), dtype=np.int64)
    np.add.at(votes, (held, winner), 1)
    return votes


def factor_vae_from_groups(codes: Any, train_groups: Any, train_held: Any, eval_groups: Any, eval_held: Any,
                           num_factors: int, *, prune_threshold: float = 0.05) -> dict[str, Any]:
    """The FactorVAE score from precomputed groups: ``*_groups`` ``G x B x K`` codes whose
    group shares the value of factor ``*_held[g]`` (ints in ``0 .. num_factors-1``); ``codes``
    (``N x K``) the global sample whose variances standardise the codes.

    Returns ``{"train_accuracy", "eval_accuracy", "num_active_dims", "classifier": (K,) the
    factor each code predicts, "train_votes": (F, K)}``.
    """
    codes = _array(codes, "codes")
    num_factors = integer(num_factors, "num_factors", low=1)
    prune_threshold = number(prune_threshold, "prune_threshold", low=0)
    if codes.shape[0] < 2:
        raise UserError(f"the FactorVAE score needs at least 2 global codes for their variances, got {codes.shape[0]}")
    groups = []
    for name, group, held in (("train", train_groups, train_held), ("eval", eval_groups, eval_held)):
        if hasattr(group, "detach"):
            group = group.detach().cpu().numpy()
        group = np.asarray(group, dtype=np.float64)
        held = np.asarray(held.detach().cpu().numpy() if hasattr(held, "detach") else held)
        if group.ndim != 3 or group.shape[2] != codes.shape[1] or group.shape[1] < 2 or group.shape[0] < 1:
            raise UserError(f"{name}_groups must be G x B x K codes (groups of B >= 2 codes, K = {codes.shape[1]} "
                            f"as codes), got shape {group.shape}")
        if held.shape != (group.shape[0],) or not np.issubdtype(held.dtype, np.integer) or \
                held.min() < 0 or held.max() >= num_factors:
            raise UserError(f"{name}_held must hold one factor index in 0..{num_factors - 1} per group "
                            f"({group.shape[0]} ints), got shape {held.shape} and dtype {held.dtype}")
        if not np.isfinite(group).all():
            raise UserError(f"{name}_groups has codes that are not finite (NaN or infinity)")
        groups.append((group, held))
    return _factor_vae_score(codes, groups[0], groups[1], num_factors, prune_threshold)


def _factor_vae_score(codes, train, evaluation, num_factors, prune_threshold) -> dict[str, Any]:
    global_variances = codes.var(axis=0, ddof=1)
    active = np.sqrt(global_variances) >= prune_threshold
    active &= global_variances > 0
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0,
                "classifier": np.zeros(codes.shape[1], dtype=np.int64),
                "train_votes": np.zeros((num_factors, codes.shape[1]), dtype=np.int64)}
    train_votes = factor_vae_votes(*train, global_variances, active, num_factors)
    eval_votes = factor_vae_votes(*evaluation, global_variances, active, num_factors)
    classifier = train_votes.argmax(0)
    columns = np.arange(codes.shape[1])
    return {"train_accuracy": float(train_votes[classifier, columns].sum() / train_votes.sum()),
            "eval_accuracy": float(eval_votes[classifier, columns].sum() / eval_votes.sum()),
            "num_active_dims": int(active.sum()), "classifier": classifier, "train_votes": train_votes}


def factor_vae(codes: Any, sample_fixed: SampleFixed, num_factors: int, *, batch_size: int = 64,
               num_train: int = 10000, num_eval: int = 5000, prune_threshold: float = 0.05, seed: int = 0,
               groups_per_call: int = 64) -> dict[str, Any]:
    """The FactorVAE score (see the module docstring).

    Args:
        codes: ``N x K`` codes of images with all factors drawn at random (the global sample).
        sample_fixed: ``sample_fixed(held, batch_size)`` returns ``len(held) x batch_size x K``
            codes, group m from images that share one random value of factor ``held[m]`` (an int
            array) with the other factors drawn at random (``fixed_factor_sampler`` makes one).
            It is called with at most ``groups_per_call`` groups at a time.
        num_factors: F, the number of factors.
        batch_size: codes per group (64 as disentanglement_lib).
        num_train, num_eval: groups (votes) that train and score the majority-vote classifier.
        prune_threshold: codes with a global standard deviation below it never vote.
        seed: the order in which the factors are held.

    Returns ``{"train_accuracy", "eval_accuracy", "num_active_dims", "classifier": (K,),
    "train_votes": (F, K)}``; ``eval_accuracy`` is the score.
    """
    codes = _array(codes, "codes")
    num_factors = integer(num_factors, "num_factors", low=1)
    batch_size = integer(batch_size, "batch_size", low=2, hint="codes per group, 64 as disentanglement_lib")
    num_train = integer(num_train, "num_train", low=1)
    num_eval = integer(num_eval, "num_eval", low=1)
    prune_threshold = number(prune_threshold, "prune_threshold", low=0)
    groups_per_call = integer(groups_per_call, "groups_per_call", low=1)
    rng = np.random.default_rng(integer(seed, "seed", low=0))
    if codes.shape[0] < 2:
        raise UserError(f"the FactorVAE score needs at least 2 global codes for their variances, got {codes.shape[0]}")
    if not callable(sample_fixed):
        raise UserError("sample_fixed must be a function (held factor indices, batch_size) -> codes; "
                        "metrics.disentanglement.fixed_factor_sampler makes one")
    sets = []
    for count in (num_train, num_eval):
        held = rng.permutation(np.resize(np.arange(num_factors), count))
        sets.append((_groups(sample_fixed, held, batch_size, codes.shape[1], groups_per_call), held))
    return _factor_vae_score(codes, sets[0], sets[1], num_factors, prune_threshold)
