"""Device-agnosticism, checked on the CPU: on PyTorch's "meta" device every op runs on shapes only
and refuses a tensor that lives elsewhere, so a tensor the policy builds on the CPU by default
(instead of on the policy's device) makes these fail."""

from __future__ import annotations

import pytest
import torch

from policy import PolicyConfig, VLAPolicy
from policy.chain import GaussianChain
from policy.device import autocast, cpu_has_bf16_matmul, resolve_device, resolve_precision
from policy.model import Decoder, DecoderLayer

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


def test_precision_names():
    cpu = torch.device("cpu")
    assert resolve_precision(cpu, "fp32") == "fp32"
    assert resolve_precision(cpu, "bf16") == "bf16"
    assert resolve_precision(cpu, "auto") == ("bf16" if cpu_has_bf16_matmul() else "fp32")
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision(cpu, "fp8")


def test_the_heads_decoder_is_torchs_decoder_in_function_and_weights():
    """policy/model.py's decoder is a faster implementation of nn.TransformerDecoder (norm first,
    no dropout): the same state-dict keys and shapes, so checkpoints written with either load,
    and the same outputs and gradients on the same weights."""
    torch.manual_seed(0)
    reference = torch.nn.TransformerDecoder(torch.nn.TransformerDecoderLayer(
        32, 4, 128, dropout=0.0, batch_first=True, norm_first=True), 2)
    mine = Decoder(DecoderLayer(32, 4, 128), 2)
    assert {k: v.shape for k, v in mine.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    mine.load_state_dict(reference.state_dict())
    x, memory = torch.randn(3, 8, 32), torch.randn(3, 5, 32)
    out_ref, out = reference(x, memory), mine(x, memory)
    assert torch.allclose(out, out_ref, atol=1e-5)
    out_ref.square().sum().backward()
    out.square().sum().backward()
    grads = dict(reference.named_parameters())
    for name, p in mine.named_parameters():
        assert torch.allclose(p.grad, grads[name].grad, atol=1e-4), name


def test_a_bf16_loss_is_the_fp32_loss_to_bf16_precision():
    torch.manual_seed(0)
    policy = VLAPolicy(PolicyConfig(cameras=("front",), image_size=32, encoder_image_size=16, vocab=("reach",))).train()
    c, b = policy.config, 8
    batch = {"frames": torch.randn(b, 1, c.frame_tokens, c.d_model), "tokens": policy.tokenize(["reach"] * b),
             "action": torch.randn(b, c.horizon, c.action_dim), "label_mask": torch.ones(b, c.horizon, dtype=torch.bool)}
    cpu = torch.device("cpu")
    losses = []
    for precision in ("fp32", "bf16"):
        torch.manual_seed(1)  # the same noise and timesteps
        with autocast(cpu, precision):
            losses.append(policy.compute_loss(batch))
    assert losses[1].dtype == torch.float32  # the loss is reduced in fp32 either way
    assert abs(float(losses[1]) - float(losses[0])) < 0.03 * float(losses[0])
    assert float(losses[1]) != float(losses[0])  # bf16 really ran


def test_a_robot_loads_each_version_on_its_device(tmp_path):
    from policy import save_checkpoint
    from robot_client.weights import load_downloaded

    policy = VLAPolicy(PolicyConfig(cameras=("front",), image_size=32, encoder_image_size=16, vocab=("reach",)))
    save_checkpoint(tmp_path / "v1", policy, 1)
    loaded = load_downloaded(tmp_path / "v1", "cpu").policy
    assert loaded.device == torch.device("cpu")
    assert all(t.device.type == "cpu" for t in [*loaded.parameters(), *loaded.buffers()])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_robot_asked_for_a_missing_gpu_stops_with_a_reason(capsys):
    from fleetlearn import cli

    with pytest.raises(SystemExit) as stopped:
        cli.main(["robot", "--sim", "reach", "--learner", "127.0.0.1:1", "--insecure", "--device", "cuda"])
    assert "no CUDA device" in str(stopped.value)
