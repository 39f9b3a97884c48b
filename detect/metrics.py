"""Detection metrics as plain functions: ROC AUC, TPR at a false-positive rate, threshold calibration."""

from __future__ import annotations

import numpy as np


def roc_auc(real: np.ndarray, fake: np.ndarray) -> float:
    """Probability that a random fake scores above a random real (ties count half): the ROC AUC."""
    real = np.asarray(real, np.float64).ravel()
    fake = np.asarray(fake, np.float64).ravel()
    if len(real) == 0 or len(fake) == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([real, fake]))  # ties get their average rank
    r_fake = ranks[len(real):].sum()
    return float((r_fake - len(fake) * (len(fake) + 1) / 2) / (len(real) * len(fake)))


def threshold_at_fpr(real: np.ndarray, fpr: float = 0.01) -> float:
    """The smallest threshold t with at most ``fpr`` of ``real`` scoring strictly above t."""
    real = np.sort(np.asarray(real, np.float64).ravel())
    if len(real) == 0:
        raise ValueError("no real scores to calibrate on")
    allowed = int(np.floor(fpr * len(real)))  # real scores allowed above the threshold
    return float(real[len(real) - 1 - allowed])


def tpr_at(fake: np.ndarray, threshold: float) -> float:
    """Fraction of fakes flagged (score strictly above ``threshold``)."""
    fake = np.asarray(fake, np.float64).ravel()
    return float((fake > threshold).mean()) if len(fake) else float("nan")


def fpr_at(real: np.ndarray, threshold: float) -> float:
    """Fraction of reals wrongly flagged at ``threshold``."""
    return tpr_at(real, threshold)


def summary(real: np.ndarray, fake: np.ndarray, threshold: float, fpr: float = 0.01) -> dict[str, float]:
    """AUC; TPR/FPR at the calibrated ``threshold``; TPR at this set's own ``fpr`` operating point."""
    own = threshold_at_fpr(real, fpr)
    return {
        "auc": round(roc_auc(real, fake), 4),
        "tpr_at_threshold": round(tpr_at(fake, threshold), 4),
        "fpr_at_threshold": round(fpr_at(real, threshold), 4),
        f"tpr_at_{fpr:g}_fpr_oracle": round(tpr_at(fake, own), 4),
        "n_real": int(np.asarray(real).size),
        "n_fake": int(np.asarray(fake).size),
    }
