"""training.metrics against hand-computed values (and sklearn when it happens to be installed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.metrics import (
    average_precision,
    d_prime,
    event_f1,
    f1_at_thresholds,
    lwlrap,
    mean_excluding,
    roc_auc,
    scores_to_events,
    tune_thresholds,
)

SCORES = np.array([[0.9], [0.8], [0.7], [0.6]])
TARGETS = np.array([[1], [0], [1], [0]])


def test_average_precision_by_hand() -> None:
    # positives at ranks 1 and 3: precision 1/1 and 2/3, each worth half the recall
    assert average_precision(SCORES, TARGETS)[0] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_average_precision_ties_count_as_one_threshold() -> None:
    # all tied: one threshold, precision 2/4 at recall 1
    ap = average_precision(np.full((4, 1), 0.3), TARGETS)
    assert ap[0] == pytest.approx(0.5)


def test_roc_auc_and_dprime_by_hand() -> None:
    # positive-negative pairs ordered correctly: (.9,.8) (.9,.6) (.7,.6); wrong: (.7,.8)
    auc = roc_auc(SCORES, TARGETS)
    assert auc[0] == pytest.approx(0.75)
    assert d_prime(auc)[0] == pytest.approx(math.sqrt(2) * 0.6744897501960817)
    tied = roc_auc(np.array([[0.5], [0.5]]), np.array([[1], [0]]))
    assert tied[0] == pytest.approx(0.5)
    assert d_prime(0.5)[0] == pytest.approx(0.0)
    assert math.isfinite(d_prime(1.0)[0]) and d_prime(1.0)[0] > 6


def test_labels_without_positives_are_nan_and_excluded() -> None:
    scores = np.array([[0.9, 0.1], [0.2, 0.3]])
    targets = np.array([[1, 0], [0, 0]])
    ap = average_precision(scores, targets)
    assert ap[0] == pytest.approx(1.0) and math.isnan(ap[1])
    assert mean_excluding(ap) == (pytest.approx(1.0), 1)
    assert math.isnan(roc_auc(scores, targets)[1])
    f1 = f1_at_thresholds(scores, targets, [0.5, 0.5])
    assert f1.n_excluded == 1 and math.isnan(f1.f1[1]) and f1.macro_f1 == pytest.approx(1.0)
    assert math.isnan(mean_excluding(np.array([math.nan]))[0])


def test_lwlrap_by_hand() -> None:
    scores = np.array([[0.9, 0.2, 0.5], [0.1, 0.8, 0.3]])
    targets = np.array([[1, 0, 1], [1, 0, 0]])
    overall, per_label = lwlrap(scores, targets)
    # row 0: label 0 rank 1 -> 1; label 2 rank 2 with 2 positives at/above -> 1
    # row 1: label 0 rank 3 with 1 positive at/above -> 1/3
    assert overall == pytest.approx((1 + 1 + 1 / 3) / 3)
    assert per_label[0] == pytest.approx((1 + 1 / 3) / 2)
    assert math.isnan(per_label[1]) and per_label[2] == pytest.approx(1.0)


def test_f1_at_thresholds_macro_and_micro() -> None:
    scores = np.array([[0.9, 0.9], [0.6, 0.2], [0.4, 0.7], [0.1, 0.1]])
    targets = np.array([[1, 1], [1, 0], [0, 0], [0, 1]])
    f = f1_at_thresholds(scores, targets, [0.5, 0.5])
    # label 0: tp 2, fp 0, fn 0 -> 1; label 1: tp 1, fp 1, fn 1 -> 0.5
    assert f.f1 == pytest.approx([1.0, 0.5])
    assert f.macro_f1 == pytest.approx(0.75)
    assert f.micro_f1 == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert f.precision == pytest.approx([1.0, 0.5]) and f.recall == pytest.approx([1.0, 0.5])


def test_tune_thresholds_maximises_f1_and_sets_off() -> None:
    scores = np.array([[0.9, 0.3], [0.8, 0.3], [0.7, 0.3], [0.6, 0.3]])
    targets = np.array([[1, 0], [1, 0], [0, 0], [0, 0]])
    on, off = tune_thresholds(scores, targets, off_fraction=0.5)
    assert on[0] == pytest.approx(0.75)  # midway between kept 0.8 and rejected 0.7
    assert on[1] == pytest.approx(0.5)  # no positives: default
    assert off == pytest.approx(on * 0.5)
    assert f1_at_thresholds(scores, targets, on).f1[0] == pytest.approx(1.0)


def test_event_f1_collars() -> None:
    ref = [("a", 0, 1.0, 2.0), ("a", 0, 5.0, 15.0)]
    # onset within 0.2 s; offset off by 0.3 s > max(0.2, 0.2 * 1 s): miss
    late = event_f1(ref[:1], [("a", 0, 1.1, 2.3)], n_labels=1)
    assert late.tp[0] == 0 and late.f1[0] == 0.0
    ok = event_f1(ref[:1], [("a", 0, 1.15, 2.15)], n_labels=1)
    assert ok.f1[0] == pytest.approx(1.0)
    # a 10 s event tolerates 2 s offset error (20 % of its length)
    long = event_f1(ref[1:], [("a", 0, 5.1, 13.5)], n_labels=1)
    assert long.f1[0] == pytest.approx(1.0)
    # wrong file or label never matches
    other = event_f1(ref[:1], [("b", 0, 1.0, 2.0)], n_labels=2)
    assert other.tp.sum() == 0 and other.fp[0] == 1 and other.n_excluded == 1


def test_event_f1_uses_maximum_matching() -> None:
    # est X fits both refs, est Y only ref B; greedy B->X would leave A unmatched
    ref = [("f", 0, 1.3, 2.3), ("f", 0, 1.0, 2.0)]
    est = [("f", 0, 1.15, 2.15), ("f", 0, 1.45, 2.45)]
    res = event_f1(ref, est, n_labels=1)
    assert res.tp[0] == 2 and res.f1[0] == pytest.approx(1.0)


def test_scores_to_events_hysteresis() -> None:
    centres = np.arange(6) * 0.5 + 0.5
    scores = np.array([[0.1], [0.8], [0.4], [0.35], [0.1], [0.9]])
    events = scores_to_events(scores, centres, 0.5, on=[0.7], off=[0.3], duration_s=3.0)
    # on at centre 1.0, holds through 0.4 and 0.35 (>= off), drops at 0.1; second at the end
    assert events == [(0, 0.75, 2.25), (0, 2.75, 3.0)]


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="must both be"):
        average_precision(np.zeros((3, 2)), np.zeros((3, 1)))


def test_against_sklearn_when_installed() -> None:
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    targets = rng.random((200, 5)) < 0.3
    scores = np.round(rng.random((200, 5)) + targets * 0.3, 2)  # rounding makes ties
    for j in range(5):
        assert average_precision(scores, targets)[j] == pytest.approx(
            skm.average_precision_score(targets[:, j], scores[:, j]))
        assert roc_auc(scores, targets)[j] == pytest.approx(
            skm.roc_auc_score(targets[:, j], scores[:, j]))


def test_lwlrap_matches_dcase_reference_without_ties() -> None:
    rng = np.random.default_rng(2)
    targets = rng.random((50, 8)) < 0.25
    scores = rng.random((50, 8)) + 0.5 * targets
    # DCASE 2019 task 2 reference: per row, precision at each positive's rank
    num, den = np.zeros(8), np.zeros(8)
    for i in range(50):
        pos = np.flatnonzero(targets[i])
        if not pos.size:
            continue
        ranks = np.argsort(np.argsort(-scores[i])) + 1
        for j in pos:
            num[j] += np.sum(ranks[pos] <= ranks[j]) / ranks[j]
            den[j] += 1
    overall, per_label = lwlrap(scores, targets)
    assert overall == pytest.approx(num.sum() / den.sum())
    np.testing.assert_allclose(per_label, num / den)


def test_metrics_scale_to_audioset_size() -> None:
    import time

    rng = np.random.default_rng(0)
    targets = rng.random((2000, 527)) < 0.005
    scores = rng.random((2000, 527))
    t0 = time.perf_counter()
    average_precision(scores, targets)
    roc_auc(scores, targets)
    lwlrap(scores, targets)
    tune_thresholds(scores, targets)
    assert time.perf_counter() - t0 < 20


def test_tune_thresholds_bounds_keep_single_positive_labels_usable() -> None:
    # one positive scored 0.002: the F1 optimum sits at ~0.001, useless in a live stream
    scores = np.array([[0.002], [0.0005], [0.0001], [0.0]])
    targets = np.array([[1.0], [0.0], [0.0], [0.0]])
    on, off = tune_thresholds(scores, targets)
    assert on[0] < 0.01
    on, off = tune_thresholds(scores, targets, off_fraction=0.5, bounds=(0.2, 0.9))
    assert on[0] == 0.2 and off[0] == 0.1
    with pytest.raises(ValueError, match="bounds"):
        tune_thresholds(scores, targets, bounds=(0.9, 0.2))
