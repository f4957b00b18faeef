"""The shared vision-language-action policy: model, normalisation and checkpoint format.

Depends on torch, numpy and safetensors only; both the learner and the robot client import it.
"""

from policy.config import PolicyConfig
from policy.vla import VLAPolicy
from policy.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from policy.runner import PolicyRunner

__all__ = ["PolicyConfig", "VLAPolicy", "Checkpoint", "CheckpointError", "load_checkpoint", "save_checkpoint",
           "PolicyRunner"]
