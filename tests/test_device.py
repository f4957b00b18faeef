"""Device-agnosticism, checked on the CPU: on PyTorch's "meta" device every op runs on shapes only
and refuses a tensor that lives elsewhere, so a tensor the policy builds on the CPU by default
(instead of on the policy's device) makes these fail."""

from __future__ import annotations

import pytest
import torch

from policy import PolicyConfig, VLAPolicy
from policy.chain import GaussianChain
from policy.device import resolve_device

META = torch.device("meta")


def meta_policy(**overrides) -> VLAPolicy:
    policy = VLAPolicy(PolicyConfig(cameras=("front",), image_size=32, encoder_image_size=16, vocab=("reach",),
                                    **overrides))
    return policy.to(META)


def meta_batch(policy: VLAPolicy, b: int = 4) -> dict[str, torch.Tensor]:
    c = policy.config
    return {"image/front": torch.zeros(b, 32, 32, 3, dtype=torch.uint8, device=META),
            "state": torch.zeros(b, c.state_dim, device=META),
            "tokens": policy.tokenize(["reach the goal"] * b),
            "action": torch.zeros(b, c.horizon, c.action_dim, device=META),
            "label_mask": torch.ones(b, c.horizon, dtype=torch.bool, device=META)}


@pytest.mark.parametrize("overrides", [{}, {"advantage_conditioned": True}])
def test_loss_and_backward_make_every_tensor_on_the_policys_device(overrides):
    policy = meta_policy(**overrides).train()
    loss = policy.compute_loss(meta_batch(policy))
    assert loss.device == META
    loss.backward()
    assert all(p.grad is None or p.grad.device == META for p in policy.parameters())


def test_sampling_and_the_rl_chain_run_on_the_policys_device():
    policy = meta_policy().eval()
    batch = meta_batch(policy, b=2)
    frames, text = policy._observation(batch, augment=False)
    assert policy.sample_normalized(frames, text).device == META
    chunk, chain, logp = GaussianChain(policy, steps=3, sigma=0.1).sample(frames, text)
    assert chunk.device == chain.device == logp.device == META


def test_a_cpu_generator_seeds_the_same_chunk_whatever_the_policys_device():
    policy = VLAPolicy(PolicyConfig(cameras=("front",), image_size=32, encoder_image_size=16, vocab=("reach",))).eval()
    frames = torch.randn(1, 1, policy.config.frame_tokens, policy.config.d_model)
    text = torch.randn(1, policy.config.d_model)
    runs = [policy.sample_normalized(frames, text, torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda:0")
