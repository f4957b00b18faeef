"""Bring your own environment: a tiny Gymnasium env (no MuJoCo) through the real `fleet robot`.

`make_env` and `make_expert` below are what a user writes; the end-to-end test runs
`python -m fleetlearn.cli robot --env tests.test_byo_env:make_env --expert tests.test_byo_env:make_expert`
against a real learner process, so this module must stay importable as `tests.test_byo_env`
from the repository root (no imports from conftest at module level).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

REPO = Path(__file__).resolve().parent.parent
ENV_ID = "fleetlearn-test/PointReach-v0"
MAX_STEPS = 40
INSTRUCTION = "move the red dot onto the green dot"


class PointReachEnv(gym.Env):
    """A point on the plane [-1, 1]^2 that must reach a goal, seen by one 16x16 top camera.

    Action (dx, dy) in [-1, 1] moves the point by up to STEP per axis. The state is the point's
    position only: the goal is visible in the image, as objects are in the sim tasks.
    """

    metadata = {"render_modes": [], "render_fps": 10}
    SIZE = 16
    STEP = 0.1
    GOAL_RADIUS = 0.05

    def __init__(self):
        camera = spaces.Box(0, 255, shape=(self.SIZE, self.SIZE, 3), dtype=np.uint8)
        self.observation_space = spaces.Dict({"images": spaces.Dict({"top": camera}),
                                              "state": spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)})
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.point = np.zeros(2)
        self.goal = np.zeros(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.point = self.np_random.uniform(-0.8, 0.8, 2)
        self.goal = self.np_random.uniform(-0.8, 0.8, 2)
        return self._observation(), {"is_success": False}

    def step(self, action):
        self.point = np.clip(self.point + self.STEP * np.clip(action, -1.0, 1.0), -1.0, 1.0)
        success = self.task_distance() <= self.GOAL_RADIUS
        return self._observation(), float(success), success, False, {"is_success": success}

    def task_distance(self) -> float:
        return float(np.linalg.norm(self.goal - self.point))

    def _pixel(self, xy: np.ndarray) -> tuple[int, int]:
        col, row = np.clip(((xy + 1.0) / 2.0 * (self.SIZE - 1)).round().astype(int), 0, self.SIZE - 1)
        return int(row), int(col)

    def _observation(self) -> dict:
        image = np.full((self.SIZE, self.SIZE, 3), 40, np.uint8)
        image[self._pixel(self.goal)] = (0, 200, 0)
        image[self._pixel(self.point)] = (220, 0, 0)
        return {"images": {"top": image}, "state": self.point.astype(np.float32)}


def make_env() -> gym.Env:
    """The env factory `fleet robot --env` calls; registered so the env carries its step limit."""
    if ENV_ID not in gym.registry:
        gym.register(ENV_ID, entry_point=PointReachEnv, max_episode_steps=MAX_STEPS)
    return gym.make(ENV_ID)


def make_expert():
    """The expert factory `fleet robot --expert` calls: returns (observation, env) -> action.

    It reads the point from the observation and the goal from the env (privileged state, as the
    sim's scripted experts do).
    """

    def expert(observation: dict, env) -> np.ndarray:
        delta = env.unwrapped.goal - observation["state"]
        return np.clip(delta / PointReachEnv.STEP, -1.0, 1.0).astype(np.float32)

    return expert


def expert_episode_length(seed: int) -> int:
    """Steps the (perfect) expert takes from `seed`: what a recorded demonstration must hold."""
    env, expert = make_env(), make_expert()
    observation, _ = env.reset(seed=seed)
    for step in range(1, MAX_STEPS + 1):
        observation, _, terminated, truncated, _ = env.step(expert(observation, env))
        if terminated or truncated:
            return step
    return MAX_STEPS


def robot_command(learner_address: str, token_file: Path, work_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fleetlearn.cli", "robot", "--env", "tests.test_byo_env:make_env",
            "--learner", learner_address, "--token-file", str(token_file), "--robot-id", "byo-arm",
            "--work-dir", str(work_dir), "--fast", "--insecure", *extra]


def test_module_is_importable_from_the_repo_root():
    result = subprocess.run([sys.executable, "-c", "import tests.test_byo_env as m; m.make_env(); m.make_expert()"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_fleet_robot_runs_a_byo_env_and_the_learner_stores_its_episodes(learner_process, token_file, tmp_path):
    from learner.store import StoreReader

    from conftest import wait_for

    learner = learner_process(["--no-train"]).start()
    # A perfect operator, so the recorded demonstrations can be replayed step for step.
    command = robot_command(learner.address, token_file, tmp_path / "robot",
                            "--expert", "tests.test_byo_env:make_expert", "--task", "point_reach",
                            "--instruction", INSTRUCTION, "--demos", "2", "--max-episodes", "2",
                            "--operator-noise", "0", "--operator-delay", "0", "--operator-suboptimality", "0")
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr

    def complete_episodes():
        reader = StoreReader(tmp_path / "learner")
        rows = [dict(row) for row in reader.complete_episodes()]
        episodes = [(row, reader.load_episode(reader.db.execute(
            "SELECT * FROM episodes WHERE episode_id=?", (row["episode_id"],)).fetchone())) for row in rows]
        reader.close()
        return episodes if len(episodes) == 2 else None

    episodes = wait_for(complete_episodes, 30, "both demonstrations in the learner's store")
    for row, episode in episodes:
        assert (row["robot_id"], row["task"], row["instruction"], row["kind"]) == \
            ("byo-arm", "point_reach", INSTRUCTION, "demonstration")
        steps = expert_episode_length(row["seed"])
        assert steps < MAX_STEPS, "the test env's expert should reach the goal"
        assert (row["num_steps"], bool(row["success"]), row["termination"]) == (steps, True, "success")
        assert episode.arrays["step_index"].tolist() == list(range(steps))
        assert episode.arrays["image/top"].shape == (steps, 16, 16, 3)
        assert episode.arrays["image/top"].dtype == np.uint8
        assert episode.arrays["state"].shape == (steps, 2)
        assert episode.arrays["action"].shape == (steps, 2)


def test_byo_env_without_an_expert_cannot_record_demonstrations(token_file, tmp_path):
    command = robot_command("127.0.0.1:1", token_file, tmp_path / "robot", "--demos", "1")
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "--demos needs an expert" in result.stderr


# -- the contract, checked by GymDriver ----------------------------------------------------------

def driver_for(env_class, **options):
    from robot_client.driver import GymDriver

    return GymDriver({"point_reach": env_class}, {"point_reach": INSTRUCTION}, max_steps=MAX_STEPS, **options)


def test_gym_driver_reads_the_embodiment_and_converts_observations():
    driver = driver_for(PointReachEnv)
    assert driver.cameras == {"top": (16, 16, 3)}
    assert (driver.state_dim, driver.action_dim, driver.control_hz, driver.max_steps) == (2, 2, 10.0, MAX_STEPS)
    assert driver.tasks == {"point_reach": INSTRUCTION}
    observation = driver.reset("point_reach", seed=3)
    assert observation.state.dtype == np.float32
    assert driver.task_distance() == pytest.approx(driver.env.task_distance())
    observation, _, _, _, info = driver.step(np.zeros(2, np.float32))
    assert observation.images["top"].shape == (16, 16, 3) and "is_success" in info
    driver.close()


def test_gym_driver_takes_limit_and_embodiment_from_an_undeclared_env():
    class Undeclared(PointReachEnv):  # declares no Dict observation space: the first observation tells
        def __init__(self):
            super().__init__()
            self.observation_space = spaces.Box(0, 1, shape=(1,))

    from robot_client.driver import GymDriver

    driver = GymDriver({"registered": make_env, "undeclared": Undeclared})
    assert driver.max_steps == MAX_STEPS  # from env.spec.max_episode_steps
    assert driver.tasks["undeclared"] == "undeclared"  # no --instruction, no env attribute: the name
    driver.reset("undeclared", seed=0)
    assert driver.max_steps == 200  # DEFAULT_MAX_STEPS: the env sets no limit
    driver.close()


@pytest.mark.parametrize("spec, message", [
    ("tests.test_byo_env", "is not MODULE:FACTORY"),
    ("tests.no_such_module:make_env", "no module named 'tests.no_such_module'"),
    ("tests.test_byo_env:make_nothing", "has no attribute 'make_nothing'"),
    ("tests.test_byo_env:ENV_ID", "not a callable"),
])
def test_bad_factory_specs_are_named(spec, message):
    from robot_client.driver import FactorySpecError, load_factory

    with pytest.raises(FactorySpecError, match=message):
        load_factory(spec, "env factory")


def test_bad_factory_spec_on_the_command_line_is_a_message(token_file, tmp_path):
    command = robot_command("127.0.0.1:1", token_file, tmp_path / "robot")
    command[command.index("--env") + 1] = "tests.test_byo_env:make_nothing"
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "fleet robot: env factory 'tests.test_byo_env:make_nothing'" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_demo_runs_a_byo_env_with_its_expert(tmp_path):
    from harness.fleet import FleetConfig

    config = FleetConfig(tasks=("point_reach",), env="tests.test_byo_env:make_env",
                         expert="tests.test_byo_env:make_expert")
    assert config.driver_flags == ["--env", "tests.test_byo_env:make_env", "--task", "point_reach",
                                   "--expert", "tests.test_byo_env:make_expert"]
    assert FleetConfig().driver_flags == []  # --sim TASKS
    command = [sys.executable, "-m", "fleetlearn.cli", "demo", "--env", "tests.test_byo_env:make_env",
               "--out", str(tmp_path / "no-expert")]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "--env needs --expert" in result.stderr


def _with_observation(change):
    """A PointReachEnv whose observations pass through `change` from the given step on."""

    class Changed(PointReachEnv):
        def __init__(self, from_step=0):
            super().__init__()
            self.from_step, self.steps = from_step, 0

        def reset(self, *, seed=None, options=None):
            self.steps = 0
            return super().reset(seed=seed, options=options)

        def step(self, action):
            self.steps += 1
            return super().step(action)

        def _observation(self):
            observation = super()._observation()
            return change(observation) if self.steps >= self.from_step else observation

    return Changed


@pytest.mark.parametrize("change, message", [
    (lambda o: {"state": o["state"]}, "no 'images' key"),
    (lambda o: {"images": o["images"]}, "no 'state' key"),
    (lambda o: {**o, "images": {"top": o["images"]["top"].astype(np.float32)}}, "has dtype float32, not uint8"),
    (lambda o: {**o, "images": {"top": o["images"]["top"][..., 0]}}, r"not \(H, W, 3\)"),
    (lambda o: {**o, "images": {"top": o["images"]["top"][:8]}}, "shapes must not change"),
    (lambda o: {**o, "images": {**o["images"], "side": o["images"]["top"]}}, "camera set must not change"),
    (lambda o: {**o, "state": np.zeros(3, np.float32)}, r"expected \(2,\)"),
])
def test_contract_violations_are_named_where_they_happen(change, message):
    from robot_client.driver import EnvContractError

    driver = driver_for(lambda: _with_observation(change)(from_step=2))
    driver.reset("point_reach", seed=0)
    driver.step(np.zeros(2, np.float32))
    with pytest.raises(EnvContractError, match=f"task 'point_reach', step 2: .*{message}"):
        driver.step(np.zeros(2, np.float32))


def test_undeclared_env_with_a_bad_first_observation_fails_at_construction():
    from robot_client.driver import EnvContractError

    class Bad(_with_observation(lambda o: {"pixels": o["images"]["top"], "state": o["state"]})):
        def __init__(self):
            super().__init__()
            self.observation_space = spaces.Box(0, 1, shape=(1,))

    with pytest.raises(EnvContractError, match="first observation: the observation has no 'images' key"):
        driver_for(Bad)


def test_declared_space_with_float_images_fails_at_construction():
    from robot_client.driver import EnvContractError

    class FloatCamera(PointReachEnv):
        def __init__(self):
            super().__init__()
            self.observation_space["images"]["top"] = spaces.Box(0, 1, shape=(16, 16, 3), dtype=np.float32)

    with pytest.raises(EnvContractError, match=r"observation_space\['images'\]\['top'\].*uint8 Box"):
        driver_for(FloatCamera)


def test_missing_is_success_and_missing_rate_are_errors():
    from robot_client.driver import EnvContractError

    class NoSuccess(PointReachEnv):
        def step(self, action):
            observation, reward, terminated, truncated, _ = super().step(action)
            return observation, reward, terminated, truncated, {}

    driver = driver_for(NoSuccess)
    driver.reset("point_reach", seed=0)
    with pytest.raises(EnvContractError, match="step 1: info has no 'is_success'"):
        driver.step(np.zeros(2, np.float32))

    class NoRate(PointReachEnv):
        metadata = {}

    with pytest.raises(EnvContractError, match="--control-hz"):
        driver_for(NoRate)
    assert driver_for(NoRate, control_hz=5).control_hz == 5.0
