"""Algorithms as plug-ins: README's worked example ("Adding an algorithm") registered here and
trained with, and the command line's --algorithm, dotted settings and --config file reaching the
TrainerConfig that crosses into the trainer process."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import pytest

from fleet.v1 import fleet_pb2 as pb
from learner.algorithms.base import ALGORITHMS, Algorithm

CALLS: list[tuple[str, float]] = []  # what the example's methods saw, in order


# -- README's example, as written there (plus the record of its calls) ---------------------------

@dataclass
class BCConfig:
    loss_weight: float = 1.0


@ALGORITHMS.register("bc", BCConfig)
class BehaviourCloning(Algorithm):
    """Behaviour cloning on the offline demonstrations only."""

    def wants_episode(self, kind, success, human_steps):
        return kind == "demonstration"

    def step_labels(self, episode):
        return episode.arrays["source"] == pb.ACTION_SOURCE_OFFLINE_DEMO

    def loss(self, policy, batch):
        loss = self.config.loss_weight * policy.compute_loss(batch)
        CALLS.append(("loss", self.config.loss_weight))
        return loss, {"denoise_loss": float(loss.detach())}

    def relabel(self, index, policy, cached=False):  # a hook: figures logged after each refresh
        CALLS.append(("relabel", len(index.episodes)))
        return {"demonstrations": len(index.episodes)}


# -- the example trains ----------------------------------------------------------------------------

def test_the_readme_example_algorithm_trains_through_its_registration():
    from bench.sim import _demonstration
    from learner.trainer import TrainerConfig, fit_offline
    from test_fleet_e2e import SMALL_POLICY

    demos = [_demonstration(("reach", seed)) for seed in range(2)]
    CALLS.clear()
    config = TrainerConfig(data_dir=None, algorithm="bc", algorithm_config={"loss_weight": "0.5"}, batch_size=4,
                           policy_overrides=SMALL_POLICY)
    policy = fit_offline(demos, 3, config)
    assert CALLS == [("relabel", 2)] + [("loss", 0.5)] * 3  # the hook before version 0, then its loss per update
    assert not policy.training
    assert "algorithm bc: Behaviour cloning on the offline demonstrations only." in ALGORITHMS.describe()
    assert "--algorithm.loss-weight 1.0  (float)" in ALGORITHMS.describe()


def test_the_base_class_hooks_are_no_ops():
    algorithm = BehaviourCloning(BCConfig())
    assert algorithm.trainer() is None and algorithm.policy_overrides == {}
    assert Algorithm.extra_parameters(algorithm, None) == [] and Algorithm.relabel(algorithm, None, None) == {}
    assert algorithm.artifacts() == {} and algorithm.restore({}, None) is None
    with pytest.raises(NotImplementedError):
        Algorithm().loss(None, {})


# -- the command line ------------------------------------------------------------------------------

@pytest.fixture
def learner_settings(monkeypatch):
    """`fleet learner ARGS` up to the server: the TrainerConfig its trainer process would get."""
    import fleetlearn.cli as cli
    import fleetlearn.learner
    from learner.trainer import TrainerConfig

    def run(*args, data="runs/learner"):
        captured = {}
        monkeypatch.setattr(fleetlearn.learner, "serve_learner", lambda args, train, trainer: captured.update(trainer))
        cli.main(["learner", "--insecure", "--data", str(data), *args])
        config = TrainerConfig(data_dir=data, **captured)
        return pickle.loads(pickle.dumps(config))  # what multiprocessing's spawn does to it

    return run


def test_dotted_flags_reach_the_algorithm_config(learner_settings):
    from learner.algorithms import RecapConfig, RLCoSettings

    config = learner_settings("--algorithm", "recap", "--algorithm.top-fraction", "0.3")
    assert config.algorithm == "recap" and config.algorithm_config == RecapConfig(top_fraction=0.3)
    assert config.algorithm_config.percentile == 70.0
    config = learner_settings("--algorithm", "recap", "--algorithm.top-fraction=0.25", "--algorithm.n-step", "4")
    assert config.algorithm_config == RecapConfig(top_fraction=0.25, n_step=4)
    config = learner_settings("--algorithm", "rl_co", "--algorithm.loss.beta", "0.2", "--algorithm.real-only", "true")
    assert config.algorithm_config.loss.beta == 0.2 and config.algorithm_config.real_only
    assert config.algorithm_config.loss.sigma == RLCoSettings().loss.sigma
    default = learner_settings()
    assert default.algorithm == "hg_dagger" and not default.algorithm_config.use_autonomous_successes


def test_fleet_train_takes_the_same_settings(monkeypatch):
    import fleetlearn.cli as cli
    import learner.train_process
    from learner.algorithms import RecapConfig

    seen = []
    monkeypatch.setattr(learner.train_process, "train_main", lambda config, redis_url: seen.append(config))
    cli.main(["train", "--redis", "redis://localhost:1", "--algorithm", "recap", "--algorithm.top-fraction", "0.3"])
    assert seen[0].algorithm_config == RecapConfig(top_fraction=0.3)


def test_a_config_file_sets_the_same_fields_and_flags_override_it(learner_settings, tmp_path):
    from learner.algorithms import RecapConfig

    path = tmp_path / "recap.toml"
    path.write_text('[algorithm]\nname = "recap"\ntop_fraction = 0.25\nn_step = 4\n')
    config = learner_settings("--config", str(path), "--algorithm.n-step", "6")
    assert config.algorithm == "recap" and config.algorithm_config == RecapConfig(top_fraction=0.25, n_step=6)
    # Another algorithm named on the command line leaves the file's RECAP settings out.
    assert learner_settings("--config", str(path), "--algorithm", "hg_dagger").algorithm == "hg_dagger"


@pytest.mark.parametrize("args, message", [
    (["--algorithm", "recap", "--algorithm.top-fractoin", "0.3"], "has no setting 'top_fractoin'; its settings:"),
    (["--algorithm", "recap", "--algorithm.n-step", "many"], "'many' is not a int"),
    (["--algorithm", "recap", "--algorithm.top-fraction", "2"], "invalid RECAP config"),
    (["--algorithm", "dagger"], "unknown algorithm 'dagger'; registered:"),
    (["--algorithm", "recap", "--algorithm.n-step"], "--algorithm.n-step needs a value"),
])
def test_bad_settings_exit_with_the_registry_message(learner_settings, args, message):
    with pytest.raises(SystemExit) as exc:
        learner_settings(*args)
    assert message in str(exc.value.code)


def test_a_command_without_algorithms_refuses_their_settings():
    import fleetlearn.cli as cli

    with pytest.raises(SystemExit, match="fleet robot takes no algorithm settings"):
        cli.parse_args(["robot", "--sim", "reach", "--learner", "x:1", "--algorithm.n-step", "3"])


def test_fleet_plugins_lists_every_algorithm_with_its_settings(capsys):
    import fleetlearn.cli as cli

    cli.main(["plugins", "algorithm"])
    out = capsys.readouterr().out
    for line in ("algorithm hg_dagger:", "algorithm recap:", "algorithm rl_co:", "--algorithm.top-fraction 0.3",
                 "--algorithm.loss.beta 0.1", "--algorithm.real-fraction 0.5"):
        assert line in out
    with pytest.raises(SystemExit, match="no plug-in kind 'drivers'"):
        cli.main(["plugins", "drivers"])
