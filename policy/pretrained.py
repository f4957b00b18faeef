"""Base policies: where a fleet's version 0 starts.

A base is an ordinary checkpoint directory (policy/checkpoint.py) of a policy trained offline on
broad scripted data (`fleet pretrain`, learner/pretrain.py); its meta's info names the tasks it
saw. The project ships one, `SHIPPED_BASE`, trained on every sim task but push_cube (the demo's),
so the demo meets its task as a generalist policy meets a new one.

`start_from_base` builds the fleet's policy for its own data (its cameras, its instruction words)
from a base: every weight of matching name and shape is copied, instruction words the base knows
keep their embedding, new words start fresh, and the base's normalisers stay (the encoder and
head were trained in their units). A base for another embodiment (cameras, image size, state or
action size, network width) does not fit: `BaseMismatch` says why.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from policy.checkpoint import Checkpoint, load_checkpoint
from policy.config import PolicyConfig

log = logging.getLogger("fleetlearn.policy")

SHIPPED_BASE = Path(__file__).resolve().parent / "bases" / "tabletop"

# What must agree between a base and the policy it starts: the embodiment and the network shape.
_MUST_MATCH = ("cameras", "image_size", "encoder_image_size", "state_dim", "action_dim", "d_model", "ffn_dim",
               "keypoints", "keypoint_stride")


class BaseMismatch(ValueError):
    """The base cannot start this policy (another embodiment or network shape)."""


def resolve_base(spec: str | Path | None) -> Path | None:
    """The checkpoint directory a `--base` value names: "default" the shipped base, "none" (or
    None) no base (version 0 from scratch), anything else a directory."""
    if spec is None or str(spec).lower() == "none":
        return None
    if str(spec).lower() == "default":
        return SHIPPED_BASE
    path = Path(spec)
    if not path.is_dir():
        raise FileNotFoundError(f"base {spec!r}: no checkpoint directory there (`fleet pretrain` writes one)")
    return path


def base_tasks(base: Checkpoint) -> list[str]:
    return list(base.meta.get("info", {}).get("tasks", []))


def check_fits(base: Checkpoint, policy_class, config: PolicyConfig) -> None:
    own = base.policy.config
    if base.policy.family != policy_class.family:
        raise BaseMismatch(f"the base is a {base.policy.family!r} policy, this run trains {policy_class.family!r}")
    wrong = [f"{name} {getattr(own, name)!r} != {getattr(config, name)!r}"
             for name in _MUST_MATCH if getattr(own, name) != getattr(config, name)]
    if wrong:
        raise BaseMismatch("the base is for another embodiment or network: " + "; ".join(wrong))


def start_from_base(policy_class, config: PolicyConfig, base: Checkpoint):
    """A `policy_class` policy of `config` (its vocabulary: the fleet's words) starting from
    `base`; returns (policy, {"copied": tensors copied, "tensors": tensors in all, "new_words": [...]})."""
    check_fits(base, policy_class, config)
    old = base.policy
    vocab = tuple(dict.fromkeys(old.config.vocab + tuple(config.vocab)))  # the base's words first, then new ones
    policy = policy_class(dataclasses.replace(config, vocab=vocab), old.state_norm, old.action_norm)
    own, theirs = policy.state_dict(), old.state_dict()
    copied = 0
    with torch.no_grad():
        for name, value in theirs.items():
            if name == "word_embedding.weight":
                continue
            if name in own and own[name].shape == value.shape:
                own[name].copy_(value)
                copied += 1
        words = policy.word_embedding.weight
        for word, row in old.word_index.items():
            words[policy.word_index[word]] = old.word_embedding.weight[row]
        words[:2] = old.word_embedding.weight[:2]  # padding and <unk>
        copied += 1
    policy.load_state_dict(own)
    new_words = [w for w in config.vocab if w not in old.word_index]
    return policy, {"copied": copied, "tensors": len(own), "new_words": new_words}


def load_base(spec: str | Path | None) -> Checkpoint | None:
    path = resolve_base(spec)
    return load_checkpoint(path) if path is not None else None


def start_fleet_policy(policy_class, config: PolicyConfig, spec: str | Path | None, fleet_tasks: set[str]):
    """A fleet's version-0 policy from base `spec`, and what to record of where it started:
    (policy, info), or (None, info) when there is no base or the default base does not fit this
    fleet (version 0 then starts from scratch). A base named explicitly that does not fit raises
    `BaseMismatch`."""
    try:
        base = load_base(spec)
        if base is None:
            return None, {"base": "none"}
        policy, report = start_from_base(policy_class, config, base)
    except BaseMismatch as exc:
        if spec != "default":
            raise
        log.warning("the shipped base does not fit this fleet (%s): version 0 starts from scratch", exc)
        return None, {"base": "none", "base_skipped": str(exc)}
    tasks = base_tasks(base)
    log.info("version 0 starts from base %s (trained on %s; %d of %d tensors copied; new words %s)", spec,
             ",".join(tasks) or "?", report["copied"], report["tensors"], report["new_words"])
    if seen := sorted(fleet_tasks & set(tasks)):
        log.warning("the base was trained on this fleet's task(s) %s: its gain is not the fleet's alone", seen)
    return policy, {"base": str(spec), "base_tasks": tasks, "base_tensors_copied": report["copied"]}
