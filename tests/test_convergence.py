"""``last_quarter_change``: the relative change of a curve's last quarter, half against half."""

import numpy as np
import pytest

from bonjax.evaluation import curve_changes, last_quarter_change


def test_a_flat_curve_has_settled():
    assert last_quarter_change([3.0] * 12) == 0.0


def test_a_linear_ramp_by_hand():
    # last quarter of 0..15 is 12, 13, 14, 15: halves 12.5 and 14.5 about a mean of 13.5
    assert last_quarter_change(np.arange(16.0)) == pytest.approx(2.0 / 13.5)
    assert last_quarter_change(-np.arange(16.0)) == pytest.approx(-2.0 / 13.5)


def test_noise_before_the_last_quarter_does_not_count():
    values = np.concatenate([np.random.default_rng(0).normal(size=18), [1.0, 1.0, 1.1, 1.1,
                                                                        1.0, 1.0]])
    assert last_quarter_change(values) == pytest.approx((1.1 + 1.0 + 1.0 - 1.0 - 1.0 - 1.1)
                                                        / 3 / (6.2 / 6))


def test_too_short_a_curve_is_refused():
    with pytest.raises(ValueError, match="at least 4 values"):
        last_quarter_change([1.0, 2.0, 3.0])


def test_curve_changes_count_a_resumed_step_once():
    records = [{"step": s, "reward": float(s)} for s in range(1, 9)]
    records.insert(6, {"step": 8, "reward": 100.0})  # logged, then re-run after a resume
    changes = curve_changes(records, ("reward", "kl_k1"))
    assert set(changes) == {"reward"}
    assert changes["reward"] == pytest.approx(last_quarter_change(np.arange(1.0, 9.0)))
