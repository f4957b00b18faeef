"""Policy families by name (policy/registry.py): a family registered in one module is saved,
verified, loaded back as its own class and run by the robot's runner, with no change to the
checkpoint code or the runner; variants and dotted settings reach the config by type."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from core.registry import ConfigError
from policy import PolicyRunner, load_checkpoint, save_checkpoint
from policy.checkpoint import CheckpointError
from policy.config import PolicyConfig
from policy.registry import POLICIES, Policy, policy_class, policy_overrides
from policy.vla import VLAPolicy

SMALL = dict(d_model=32, n_heads=2, n_layers=1, keypoints=8, encoder_image_size=32, image_size=32,
             vocab=("reach", "the", "target"))


# -- the worked example of docs/ARCHITECTURE.md: one module, one registration ------------------
@dataclasses.dataclass
class DampedConfig(PolicyConfig):
    damping: float = 0.5  # scales every action the policy proposes


@POLICIES.register("damped_vla", DampedConfig)
class DampedPolicy(VLAPolicy):
    """A VLA whose actions are damped: a family of its own for the checkpoint and the runner."""

    family = "damped_vla"

    def sample_normalized(self, *args, **kwargs):
        return super().sample_normalized(*args, **kwargs) * self.config.damping
# ----------------------------------------------------------------------------------------------


def test_a_registered_family_round_trips_through_a_checkpoint_and_runs(tmp_path):
    torch.manual_seed(0)
    policy = DampedPolicy(DampedConfig(damping=0.25, **SMALL)).eval()
    assert isinstance(policy, Policy)
    save_checkpoint(tmp_path / "v1", policy, 1)
    meta = json.loads((tmp_path / "v1" / "meta.json").read_text())
    assert meta["policy"] == "damped_vla" and meta["config"]["damping"] == 0.25
    loaded = load_checkpoint(tmp_path / "v1").policy
    assert type(loaded) is DampedPolicy and loaded.config.damping == 0.25
    for name, tensor in policy.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name

    # The runner acts with it; the same seed gives the plain VLA's sample scaled by the damping.
    images = {cam: np.full((32, 32, 3), 90, np.uint8) for cam in loaded.config.cameras}
    state = np.zeros(loaded.config.state_dim, np.float32)
    plain = VLAPolicy(PolicyConfig(**SMALL), state_norm=loaded.state_norm, action_norm=loaded.action_norm).eval()
    plain.load_state_dict(loaded.state_dict())
    damped_action = PolicyRunner(loaded, seed=3).act(images, state, "reach the target")
    plain_action = PolicyRunner(plain, seed=3).act(images, state, "reach the target")
    centre = loaded.action_norm.centre.numpy()
    half = loaded.action_norm.half_range.numpy()
    np.testing.assert_allclose((damped_action - centre) / half, 0.25 * (plain_action - centre) / half, atol=1e-5)


def test_a_checkpoint_of_an_unknown_family_is_refused_with_the_known_ones(tmp_path):
    save_checkpoint(tmp_path / "v1", VLAPolicy(PolicyConfig(**SMALL)), 1)
    meta_path = tmp_path / "v1" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["policy"] = "no_such_family"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="unknown policy 'no_such_family'; registered: .*vla"):
        load_checkpoint(tmp_path / "v1")
    del meta["policy"]  # a checkpoint from before families: a VLA
    meta_path.write_text(json.dumps(meta))
    assert type(load_checkpoint(tmp_path / "v1").policy) is VLAPolicy


def test_variants_and_settings_become_overrides_of_the_family():
    assert policy_overrides("vla") == {}
    assert policy_overrides("default") == {} and policy_class("default") is VLAPolicy
    ptp = policy_overrides("ptp")
    assert ptp == dict(obs_steps=16, horizon=24, past_token_prediction=True, verify_candidates=10)
    assert policy_overrides("ptp", {"obs_steps": "8", "horizon": "16"})["obs_steps"] == 8
    assert policy_overrides("damped_vla", {"damping": "0.1"}) == {"damping": 0.1}
    with pytest.raises(ConfigError, match="no setting 'dmodel'"):
        policy_overrides("vla", {"dmodel": "64"})
    with pytest.raises(ConfigError, match="horizon"):  # PolicyConfig's own check: horizon too short
        policy_overrides("ptp", {"horizon": "4"})
