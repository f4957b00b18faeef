"""RECAP's advantage labels against a small hand-computed case (issue 11 groundwork)."""

from __future__ import annotations

import numpy as np
import pytest

from learner.algorithms.recap_labels import binarise, n_step_advantages, returns_to_go, step_rewards, task_norm


def test_advantage_labels_match_a_hand_computed_case():
    # A succeeds in 3 steps, B fails in 2 (failure penalty -10).
    rewards_a, rewards_b = step_rewards(3, True, -10.0), step_rewards(2, False, -10.0)
    assert rewards_a.tolist() == [-1, -1, 0] and rewards_b.tolist() == [-1, -11]
    g_a, g_b = returns_to_go(rewards_a), returns_to_go(rewards_b)
    assert g_a.tolist() == [-2, -1, 0] and g_b.tolist() == [-12, -11]
    norm = task_norm([g_a, g_b])
    assert norm == 12  # normalised returns lie in [-1, 0]
    # Given values on the normalised scale, one-step advantages (G_t - G_t+1)/12 + V_t+1 - V_t:
    a = n_step_advantages(g_a, [-0.5, -0.25, 0.0], norm, n=1)
    b = n_step_advantages(g_b, [-0.9, -0.95], norm, n=1)
    assert a == pytest.approx([-1 / 12 + 0.25, -1 / 12 + 0.25, 0.0])
    assert b == pytest.approx([-1 / 12 - 0.05, -11 / 12 + 0.95])
    # 70th percentile of the five advantages: 0.0333 + 0.8 * (0.1667 - 0.0333) = 0.14. Positive: A's
    # first two steps; and B's last step, which a human chose.
    labels = binarise([a, b], [np.zeros(3, bool), np.array([False, True])], percentile=70)
    assert [l.tolist() for l in labels] == [[True, True, False], [False, True]]


def test_n_steps_stop_at_the_end_of_the_episode():
    g = returns_to_go(step_rewards(4, True))
    values = np.array([-0.3, -0.2, -0.1, 0.0])
    # With n past the end, the advantage is the remaining normalised return minus V_t.
    assert n_step_advantages(g, values, 4.0, n=10) == pytest.approx(g / 4.0 - values)
