"""metrics/disentanglement.py: known answers on the shapes world's factors (codes equal to the
factors, a random rotation of them, x and y mixed into two codes), the same numbers as `disent`
(a maintained port of disentanglement_lib) on the same inputs, independent loop implementations
of the definitions disent lacks (Modularity, the FactorVAE votes), and the refusals."""
from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import mutual_info_score

from common.errors import UserError
from datamodules.world import FACTORS, ShapesWorld
from metrics.disentanglement import (
    WORLD_KINDS,
    dci,
    dci_scores,
    discrete_mutual_info,
    discretize_factors,
    factor_vae,
    factor_vae_from_groups,
    factor_vae_votes,
    fixed_factor_sampler,
    histogram_discretize,
    mig,
    modularity,
    sap,
)

X, Y = FACTORS.index("x"), FACTORS.index("y")
WORLD = ShapesWorld()


def world_factors(n: int, seed: int = 0) -> np.ndarray:
    return WORLD.sample_factors(n, torch.Generator().manual_seed(seed)).double().numpy()


class Codes:
    """The three known-answer encoders, as functions of the factors (so that the FactorVAE score
    can encode groups with a factor held fixed): the identity, a random rotation of the
    standardised factors, and the identity with x and y replaced by (x + y) / sqrt 2 and
    (x - y) / sqrt 2 of the standardised x and y."""

    def __init__(self, reference: np.ndarray):
        self.mean, self.std = reference.mean(0), reference.std(0)
        self.rotation = np.linalg.qr(np.random.default_rng(0).normal(size=(6, 6)))[0]

    def identity(self, factors):
        return np.asarray(factors, dtype=np.float64)

    def rotated(self, factors):
        return ((np.asarray(factors, dtype=np.float64) - self.mean) / self.std) @ self.rotation

    def mixed(self, factors):
        codes = np.array(factors, dtype=np.float64)
        x, y = ((codes[:, [X, Y]] - self.mean[[X, Y]]) / self.std[[X, Y]]).T
        codes[:, X], codes[:, Y] = (x + y) / np.sqrt(2), (x - y) / np.sqrt(2)
        return codes


@pytest.fixture(scope="module")
def factors():
    return world_factors(4000)


@pytest.fixture(scope="module")
def codes(factors):
    return Codes(factors)


@pytest.fixture(scope="module")
def noisy(factors):
    """Ten codes: six noisy mixtures dominated by one factor each, and four of pure noise."""
    rng = np.random.default_rng(1)
    n = len(factors)
    mixtures = factors @ rng.normal(size=(6, 6)) * 0.3 + factors * 2
    return np.concatenate([mixtures, rng.normal(size=(n, 4))], 1) + 0.05 * rng.normal(size=(n, 10))


def others(*index):
    return [j for j in range(6) if j not in index]


# ----------------------------------------------------------------------------------- known answers


def test_mig_known_answers(factors, codes):
    identity = mig(codes.identity(factors), factors, WORLD_KINDS)
    assert identity["mig_per_factor"].min() > 0.97
    assert mig(codes.rotated(factors), factors, WORLD_KINDS)["mig"] < 0.2
    mixed = mig(codes.mixed(factors), factors, WORLD_KINDS)["mig_per_factor"]
    assert mixed[[X, Y]].max() < 0.05 and mixed[others(X, Y)].min() > 0.97


def test_modularity_known_answers(factors, codes):
    assert modularity(codes.identity(factors), factors, WORLD_KINDS)["modularity"] > 0.999
    per_code = modularity(codes.mixed(factors), factors, WORLD_KINDS)["modularity_per_code"]
    # a code tied equally to 2 of 6 factors: 1 - 1 / (6 - 1)
    assert per_code[[X, Y]] == pytest.approx([0.8, 0.8], abs=0.03)
    assert per_code[others(X, Y)].min() > 0.99


def test_sap_known_answers(factors, codes):
    identity = sap(codes.identity(factors), factors, WORLD_KINDS)["sap_per_factor"]
    assert identity[1:].min() > 0.95  # continuous and circular: R^2 1 for its code, ~0 for the rest
    # shape, categorical: accuracy ~1 for its code, chance (1/3) for an uninformative code
    assert identity[0] == pytest.approx(2 / 3, abs=0.05)
    assert sap(codes.rotated(factors), factors, WORLD_KINDS)["sap"] < 0.4
    mixed = sap(codes.mixed(factors), factors, WORLD_KINDS)["sap_per_factor"]
    assert mixed[[X, Y]].max() < 0.05 and mixed[others(X, Y, 0)].min() > 0.95


def test_sap_circular_factor_takes_a_sawtooth_or_a_wave_code():
    """An angle's code is a sawtooth (cut open anywhere) or a cosine: both score ~1, noise ~0."""
    rng = np.random.default_rng(0)
    turn = rng.random(2000)
    factors = np.stack([turn, rng.random(2000)], 1)
    codes = np.stack([(turn + 0.37) % 1.0, np.cos(2 * np.pi * turn), rng.normal(size=2000)], 1)
    score = sap(codes, factors, ["circular", "continuous"])["score_matrix"][:, 0]
    assert score[:2].min() > 0.99 and score[2] < 0.01


@pytest.mark.parametrize("model", [pytest.param("gbt", marks=pytest.mark.slow), "hist_gbt"])
def test_dci_known_answers(codes, model):
    """Small (600 points, 4 bins a factor) to stay fast, the rotation with hist_gbt only (gbt's
    slowest case; both give ~0.21 there). At 3,000 points and 20 bins: identity 1.0 (gbt) and
    0.96 (hist_gbt), rotation 0.10-0.13, in test_dci_full_size_known_answers."""
    factors = world_factors(600)
    identity = dci(codes.identity(factors), factors, WORLD_KINDS, model=model, factor_bins=4)
    assert min(identity["disentanglement"], identity["completeness"], identity["informativeness"]) > 0.97
    if model == "hist_gbt":
        rotated = dci(codes.rotated(factors), factors, WORLD_KINDS, model=model, factor_bins=4)
        assert max(rotated["disentanglement"], rotated["completeness"]) < 0.3
    mixed = dci(codes.mixed(factors), factors, WORLD_KINDS, model=model, factor_bins=4)
    assert mixed["completeness_per_factor"][[X, Y]].max() < 0.6
    assert mixed["completeness_per_factor"][others(X, Y)].min() > 0.95
    assert mixed["disentanglement_per_code"][[X, Y]].max() < 0.7
    assert mixed["disentanglement_per_code"][others(X, Y)].min() > 0.9


def world_sampler(encode, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return fixed_factor_sampler(lambda n: WORLD.sample_factors(n, generator), encode)


def test_factor_vae_known_answers(factors, codes):
    identity = factor_vae(codes.identity(factors), world_sampler(lambda f: f), 6, num_train=600, num_eval=600)
    assert identity["eval_accuracy"] == identity["train_accuracy"] == 1.0
    assert list(identity["classifier"]) == list(range(6)) and identity["num_active_dims"] == 6
    # holding x (or y) fixed lowers both mixed codes alike: half those groups are misread
    mixed = factor_vae(codes.mixed(factors), world_sampler(codes.mixed), 6, num_train=1200, num_eval=1200)
    assert mixed["eval_accuracy"] == pytest.approx(5 / 6, abs=0.05)
    assert list(mixed["classifier"][others(X, Y)]) == others(X, Y)
    # a factor no code follows (hue replaced by noise): its groups are misread
    rng = np.random.default_rng(0)

    def hue_lost(f):
        f = np.array(f, dtype=np.float64)
        f[:, 5] = rng.random(len(f))
        return f

    lost = factor_vae(hue_lost(factors), world_sampler(hue_lost), 6, num_train=1200, num_eval=1200)
    assert lost["eval_accuracy"] == pytest.approx(5 / 6, abs=0.05)


def test_metrics_take_tensors(factors):
    tensor = torch.from_numpy(factors).float()
    assert mig(tensor, tensor, WORLD_KINDS)["mig"] == pytest.approx(mig(factors, factors, WORLD_KINDS)["mig"])
    score = factor_vae(tensor[:500], fixed_factor_sampler(lambda n: WORLD.sample_factors(n), lambda f: f * 2.0), 6,
                       batch_size=16, num_train=120, num_eval=60, groups_per_call=7)
    assert score["eval_accuracy"] == 1.0


# ------------------------------------------------------------------------- against disent


@pytest.fixture(scope="module")
def disent_metrics():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "numba is not installed": disent's optional JIT
        pytest.importorskip("disent")
        from disent.metrics import _dci, _factor_vae, _mig, _sap, utils
    return {"dci": _dci, "factor_vae": _factor_vae, "mig": _mig, "sap": _sap, "utils": utils}


def test_mig_matches_disent(factors, noisy, disent_metrics):
    labels = discretize_factors(factors, WORLD_KINDS)
    utils = disent_metrics["utils"]
    bins = histogram_discretize(noisy)
    assert np.array_equal(bins + 1, utils.histogram_discretize(noisy.T).T)
    info = discrete_mutual_info(bins, labels)
    assert np.abs(info - utils.discrete_mutual_info(bins.T, labels.T)).max() < 1e-12
    reference = disent_metrics["mig"]._compute_mig(noisy.T, labels.T)["mig.discrete_score"]
    assert mig(noisy, factors, WORLD_KINDS)["mig"] == pytest.approx(reference, abs=1e-12)


def test_sap_matches_disent(factors, noisy, disent_metrics):
    score = sap(noisy, factors, WORLD_KINDS, seed=3)["score_matrix"]
    reference = disent_metrics["sap"]._compute_score_matrix
    continuous = [j for j, kind in enumerate(WORLD_KINDS) if kind == "continuous"]
    expected = reference(noisy.T, factors[:, continuous].T, None, None, True)
    assert np.abs(score[:, continuous] - expected).max() < 1e-12
    # the categorical factor: disentanglement_lib's discrete branch on the same split
    labels = discretize_factors(factors, WORLD_KINDS)
    test = np.sort(np.random.default_rng(3).permutation(len(factors))[:round(len(factors) / 3)])
    train = np.setdiff1d(np.arange(len(factors)), test)
    expected = reference(noisy[train].T, labels[train, :1].T, noisy[test].T, labels[test, :1].T, False)
    assert np.abs(score[:, :1] - expected).max() < 1e-12


@pytest.mark.slow
def test_dci_matches_disent(noisy, factors, disent_metrics, monkeypatch):
    """The same split, and the classifiers seeded alike (disentanglement_lib leaves
    GradientBoostingClassifier unseeded: its tie-breaking moves the figures by ~3e-3)."""
    import sklearn.ensemble

    kinds = ["categorical", "continuous", "circular"]
    codes, subset = noisy[:400, :4], factors[:400][:, [0, X, 5]]
    ours = dci(codes, subset, kinds, factor_bins=4, seed=0)
    monkeypatch.setattr(sklearn.ensemble, "GradientBoostingClassifier",
                        functools.partial(sklearn.ensemble.GradientBoostingClassifier, random_state=0))
    labels = discretize_factors(subset, kinds, bins=4)
    test = np.sort(np.random.default_rng(0).permutation(400)[:133])
    train = np.setdiff1d(np.arange(400), test)
    reference = disent_metrics["dci"]._compute_dci(codes[train].T, labels[train].T, codes[test].T, labels[test].T)
    assert ours["disentanglement"] == pytest.approx(reference["dci.disentanglement"], abs=1e-12)
    assert ours["completeness"] == pytest.approx(reference["dci.completeness"], abs=1e-12)
    assert ours["informativeness"] == pytest.approx(reference["dci.informativeness_test"], abs=1e-12)
    assert ours["informativeness_train"] == pytest.approx(reference["dci.informativeness_train"], abs=1e-12)
    rng = np.random.default_rng(0)
    for importance in (rng.random((8, 6)), rng.random((5, 3)) ** 4, np.zeros((4, 2))):
        scores = dci_scores(importance)
        assert scores["disentanglement"] == pytest.approx(disent_metrics["dci"]._disentanglement(importance),
                                                          abs=1e-12)
        assert scores["completeness"] == pytest.approx(disent_metrics["dci"]._completeness(importance), abs=1e-12)


class _GroundTruth:
    """The parts of a disent DisentDataset that its FactorVAE metric uses; observations are
    the factors themselves, and the representation function encodes them."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)
        self.gt_data = self
        self.num_factors = 6

    def sample_factors(self, n):
        return WORLD.sample_factors(n, self.generator).double().numpy()

    def dataset_sample_batch(self, n, mode):
        return self.sample_factors(n)

    def dataset_batch_from_factors(self, factors, mode):
        return factors


def test_factor_vae_matches_disent(factors, codes, disent_metrics):
    """disent draws from numpy's global generator and the held factor at random: the scores
    agree within sampling error (exactly where the answer is certain)."""
    metric = disent_metrics["factor_vae"].metric_factor_vae.unwrap
    np.random.seed(0)
    for encode, tolerance in ((codes.identity, 0.0), (codes.mixed, 0.06)):
        reference = metric(_GroundTruth(1), encode, batch_size=64, num_train=1200, num_eval=1200,
                           num_variance_estimate=4000)
        ours = factor_vae(encode(factors), world_sampler(encode, seed=2), 6, num_train=1200, num_eval=1200)
        assert ours["eval_accuracy"] == pytest.approx(reference["factor_vae.eval_accuracy"], abs=tolerance)


# ------------------------------------------------- against the definitions, written out plainly


def test_modularity_matches_its_definition(noisy, factors):
    """Ridgeway & Mozer's modularity as disentanglement_lib computes it, a pair at a time."""
    labels, bins = discretize_factors(factors, WORLD_KINDS), histogram_discretize(noisy)
    expected = []
    for i in range(noisy.shape[1]):
        squared = [mutual_info_score(labels[:, j], bins[:, i]) ** 2 for j in range(6)]
        top = max(squared)
        expected.append(0.0 if top == 0 else 1 - (sum(squared) - top) / (top * 5))
    result = modularity(noisy, factors, WORLD_KINDS)
    assert np.abs(result["modularity_per_code"] - expected).max() < 1e-12
    assert result["modularity"] == pytest.approx(np.mean(expected), abs=1e-12)


def test_factor_vae_votes_match_a_loop_and_skip_pruned_codes():
    rng = np.random.default_rng(0)
    groups = rng.normal(size=(300, 16, 5)) * rng.random((300, 1, 5))
    held = rng.integers(0, 3, 300)
    global_variances = rng.random(5) + 0.5
    active = np.array([True, False, True, True, True])
    expected = np.zeros((3, 5), dtype=np.int64)
    for group, factor in zip(groups, held):
        ratios = [np.var(group[:, i], ddof=1) / global_variances[i] if active[i] else np.inf for i in range(5)]
        expected[factor, int(np.argmin(ratios))] += 1
    votes = factor_vae_votes(groups, held, global_variances, active, 3)
    assert np.array_equal(votes, expected) and votes[:, 1].sum() == 0
    # the same through the public function: a code with a global standard deviation under 0.05 is pruned
    codes = rng.normal(size=(1000, 5)) * np.array([1.0, 0.01, 1.0, 1.0, 1.0])
    score = factor_vae_from_groups(codes, groups, held, groups, held, 3)
    assert score["num_active_dims"] == 4 and score["train_votes"][:, 1].sum() == 0
    assert score["train_accuracy"] == score["eval_accuracy"]


# ---------------------------------------------------------------------------------- refusals


def test_user_mistakes_are_refused_with_what_to_pass(factors):
    codes = factors + 0.0
    cases = [
        (lambda: mig(codes[:, 0], factors, WORLD_KINDS), "2-D"),
        (lambda: mig(codes[:100], factors, WORLD_KINDS), "same number of rows"),
        (lambda: mig(codes[:30], factors[:30], WORLD_KINDS), "at least 50 points"),
        (lambda: mig(codes[:150], factors[:150], WORLD_KINDS), "points per code bin"),
        (lambda: mig(codes, factors), "pass kinds"),
        (lambda: mig(codes, factors, WORLD_KINDS[:5]), "each of the 6 factors"),
        (lambda: mig(codes, factors, ["angle"] * 6), "kinds[0]='angle'"),
        (lambda: mig(codes[:, :1], factors, WORLD_KINDS), "at least 2 codes"),
        (lambda: mig(np.where(codes > 0.99, np.nan, codes), factors, WORLD_KINDS), "not finite"),
        (lambda: mig(codes, np.c_[factors[:, :5], np.zeros(len(factors))], WORLD_KINDS), "single value"),
        (lambda: mig(codes, factors, WORLD_KINDS, bins=1), "bins=1"),
        (lambda: dci(codes, factors[:, :1], ["continuous"]), "at least 2 factors"),
        (lambda: dci(codes, factors, WORLD_KINDS, model="lasso"), "gbt, hist_gbt"),
        (lambda: dci(codes[:60], factors[:60], WORLD_KINDS, test_fraction=0.1), "at least 10"),
        (lambda: modularity(codes, factors[:, :1], ["categorical"]), "at least 2 factors"),
        (lambda: sap(codes, factors, WORLD_KINDS, period=0), "period=0"),
        (lambda: factor_vae(codes, lambda held, b: np.zeros((len(held), b, 3)), 6), "(len(held), batch_size, K)"),
        (lambda: factor_vae(codes, None, 6), "sample_fixed must be a function"),
        (lambda: factor_vae(codes, world_sampler(lambda f: f), 6, batch_size=1), "batch_size=1"),
        (lambda: factor_vae_from_groups(codes, np.zeros((4, 8, 6)), np.array([0, 1, 2, 9]),
                                        np.zeros((4, 8, 6)), np.zeros(4, int), 6), "train_held"),
    ]
    for call, message in cases:
        with pytest.raises(UserError) as caught:
            call()
        assert message in str(caught.value), (message, str(caught.value))


# ------------------------------------------------------------------------------------ slow


@pytest.mark.slow
def test_dci_full_size_known_answers(codes):
    """disentanglement_lib's setting: 20 bins a factor, 2,000 training and 1,000 test points."""
    factors = world_factors(3000)
    identity = dci(codes.identity(factors), factors, WORLD_KINDS)
    assert min(identity["disentanglement"], identity["completeness"]) > 0.99 and identity["informativeness"] > 0.98
    rotated = dci(codes.rotated(factors), factors, WORLD_KINDS, model="hist_gbt")
    assert max(rotated["disentanglement"], rotated["completeness"]) < 0.2
    mixed = dci(codes.mixed(factors), factors, WORLD_KINDS, model="hist_gbt")
    assert mixed["completeness_per_factor"][[X, Y]].max() < 0.6
