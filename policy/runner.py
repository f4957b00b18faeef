"""Running a policy on a robot: receding-horizon execution of sampled action chunks.

Every step the runner embeds the current frame with the policy's encoder into a rolling buffer of
the last `obs_steps` frame embeddings (the first frame stands in for those before the episode
start), and remembers the actions executed. When its plan runs out it samples `horizon` action
tokens from the buffer and executes `n_action_steps` of them, from the current step's token on
(after the past tokens of a long-context policy).

Self-verification (`verify_candidates` N > 1 in the policy config): N candidate chunks are sampled
in one batched pass and the one whose predicted past tokens lie closest to the actions actually
executed is kept. It starts once an action has been executed and compares up to the past tokens
the policy was trained to predict.

RL rollouts (`rl` = (denoise_steps, sigma), from an RL version's checkpoint): chunks are sampled
as a chain of Gaussian denoising steps (policy/chain.py) and the runner keeps, for the
step that planned the chunk, the chain and its per-step log-likelihoods (`rl_extras`), which the robot
streams with the step so that the learner's PPO can score the chunk under newer weights.

The robot loop, benchmarks and evaluation scripts all run a policy through this one class, so
they behave the same.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

from policy.chain import GaussianChain
from policy.vla import VLAPolicy


class PolicyRunner:
    def __init__(self, policy: VLAPolicy, seed: int = 0, rl: tuple[int, float] | None = None):
        self.policy = policy
        config = policy.config
        self.chain = None
        if rl is not None:
            if config.verify_candidates > 1:
                raise ValueError("RL sampling and self-verification do not combine")
            self.chain = GaussianChain(policy, steps=int(rl[0]), sigma=float(rl[1]))
        self.planned: dict[str, np.ndarray] | None = None  # the chain of the chunk planned this step
        self.frames: deque[torch.Tensor] = deque(maxlen=config.obs_steps)
        self.executed: deque[np.ndarray] = deque(maxlen=config.past_tokens)
        self.plan: list[np.ndarray] = []
        self.last_distances: np.ndarray | None = None  # of the latest verification, for inspection
        self.generator = torch.Generator()
        self._text: dict[str, torch.Tensor] = {}
        self.reset(seed)

    def reset(self, seed: int) -> None:
        """Starts an episode: forgets the plan and the history and reseeds the sampler (same seed,
        same actions)."""
        self.plan = []
        self._embedded = False
        self.frames.clear()
        self.executed.clear()
        self.generator.manual_seed(seed % (2**31))

    def _embed(self, images: dict[str, np.ndarray], state: np.ndarray) -> None:
        frame = self.policy.embed_frames(*self.policy.frame_inputs(images, state))
        while len(self.frames) < self.policy.config.obs_steps - 1:  # episode start: the first frame fills the past
            self.frames.append(frame)
        self.frames.append(frame)
        self._embedded = True

    @torch.no_grad()
    def window(self, images: dict[str, np.ndarray], state: np.ndarray) -> torch.Tensor:
        """The (1, To, F, d) observation window of the step `act` just ran on (`images`, `state`):
        what a failure monitor watches. Embeds the frame only if `act` did not need to."""
        if not self._embedded:
            self._embed(images, state)
        return torch.stack(list(self.frames), dim=1)

    def replan(self) -> None:
        """Drops the rest of the current chunk (e.g. after an operator moved the arm)."""
        self.plan = []

    def executed_instead(self, action: np.ndarray) -> None:
        """The robot executed `action` instead of the one `act` returned last (an operator's)."""
        if self.executed:
            self.executed[-1] = np.asarray(action, np.float32)

    def rl_extras(self) -> dict[str, np.ndarray] | None:
        """For RL rollouts, the step extras of the step `act` just ran: whether it planned a new
        chunk, and then that chunk's denoising chain and log-likelihood (zeros otherwise, so every
        step carries the same extras)."""
        if self.chain is None:
            return None
        c = self.policy.config
        planned = self.planned
        return {"rl/planned": np.array(planned is not None),
                "rl/chain": planned["chain"] if planned else np.zeros((len(self.chain.timesteps) + 1, c.horizon,
                                                                          c.action_dim), np.float32),
                "rl/logp": planned["logp"] if planned else np.zeros(len(self.chain.timesteps), np.float32)}

    @torch.no_grad()
    def act(self, images: dict[str, np.ndarray], state: np.ndarray, instruction: str) -> np.ndarray:
        policy, config = self.policy, self.policy.config
        self._embedded = False
        self.planned = None
        if not self.plan or config.obs_steps > 1:  # one frame of context is only needed to plan
            self._embed(images, state)
        if not self.plan:
            window = torch.stack(list(self.frames), dim=1)  # (1, To, F, d)
            text = self._text.get(instruction)
            if text is None:
                text = self._text[instruction] = policy.embed_text(policy.tokenize([instruction]))
            compared = min(len(self.executed), config.verified_past_tokens())
            if self.chain is not None:
                normalized, steps, logp = self.chain.sample(window, text, self.generator)
                chunk = policy.action_norm.unnormalize(normalized)[0].cpu().numpy()
                self.planned = {"chain": steps[0].cpu().numpy(), "logp": logp[0].cpu().numpy()}
            elif config.verify_candidates > 1 and compared > 0:
                executed = np.stack(list(self.executed)[-compared:])
                chunk, self.last_distances = policy.verified_chunk(window, text, executed, config.verify_candidates,
                                                                   self.generator)
            else:
                normalized = policy.sample_normalized(window, text, self.generator)
                chunk = policy.action_norm.unnormalize(normalized)[0].cpu().numpy()
            start = config.past_tokens
            self.plan = list(chunk[start:start + config.n_action_steps])
        action = np.clip(self.plan.pop(0), -1.0, 1.0).astype(np.float32)
        self.executed.append(action)
        return action
