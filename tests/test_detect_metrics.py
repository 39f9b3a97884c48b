"""The detection metrics behind the published numbers (docs/DETECTOR.md), on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detect import metrics


def test_roc_auc_counts_pairs_and_ties_half():
    real = [0.1, 0.4, 0.35, 0.8]
    fake = [0.9, 0.4, 0.7]
    # fake 0.9 beats 4 reals; 0.4 beats 2 and ties 1 (½); 0.7 beats 3: (4 + 2.5 + 3) / (4·3)
    assert metrics.roc_auc(real, fake) == pytest.approx(9.5 / 12)
    assert metrics.roc_auc([0.1, 0.2], [0.8, 0.9]) == 1.0
    assert metrics.roc_auc([0.8, 0.9], [0.1, 0.2]) == 0.0
    assert metrics.roc_auc([0.5, 0.5], [0.5]) == 0.5
    assert math.isnan(metrics.roc_auc([], [0.3]))


def test_threshold_at_fpr_allows_at_most_that_share_of_reals_above():
    real = np.arange(100) / 100  # 0.00 ... 0.99
    t = metrics.threshold_at_fpr(real, 0.01)
    assert t == pytest.approx(0.98) and metrics.fpr_at(real, t) == pytest.approx(0.01)
    assert metrics.threshold_at_fpr(real, 0.0) == pytest.approx(0.99)  # nothing real above
    assert metrics.threshold_at_fpr(real[:10], 0.05) == pytest.approx(0.09)  # 5 % of 10 reals: none allowed
    assert metrics.threshold_at_fpr(real, 0.1) == pytest.approx(0.89)  # 0.90..0.99 above: 10 %
    with pytest.raises(ValueError):
        metrics.threshold_at_fpr([], 0.01)


def test_tpr_fpr_are_strictly_above_and_summary_adds_up():
    assert metrics.tpr_at([0.5, 0.6, 0.7, 0.8], 0.6) == 0.5  # 0.6 itself is not flagged
    assert math.isnan(metrics.tpr_at([], 0.5))
    real = np.linspace(0, 0.5, 200)
    fake = np.linspace(0.45, 1.0, 100)
    s = metrics.summary(real, fake, threshold=0.5, fpr=0.01)
    assert s["n_real"] == 200 and s["n_fake"] == 100
    assert s["fpr_at_threshold"] == 0.0 and s["tpr_at_threshold"] == pytest.approx((fake > 0.5).mean(), abs=1e-4)
    assert s["auc"] == pytest.approx(metrics.roc_auc(real, fake), abs=1e-4) and 0.99 < s["auc"] < 1.0
    own = metrics.threshold_at_fpr(real, 0.01)
    assert s["tpr_at_0.01_fpr_oracle"] == pytest.approx((fake > own).mean(), abs=1e-4)
