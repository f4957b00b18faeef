"""`fleet learner`, `fleet ingest` and `fleet train`: the learner side's commands and flags.

fleetlearn/cli.py builds the parser from these, as it does the robot's from fleetlearn/robot.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from learner.canary import DEFAULT_GUARD, TESTS


def trainer_settings(args) -> dict:
    """TrainerConfig overrides from the trainer flags (`fleet learner` and `fleet train`): the
    algorithm from --algorithm, else the --config file, else hg_dagger; its settings from the
    file, then the dotted flags over them."""
    from core.registry import ConfigError, choose, chosen_settings, read_config_file
    from learner.algorithms import ALGORITHMS
    from policy.registry import ALIASES, POLICIES, policy_class, policy_overrides

    try:
        file = read_config_file(Path(args.config)) if args.config else None
        algorithm, algorithm_config = choose(ALGORITHMS, args.algorithm, args.plugin_settings["algorithm"], file,
                                             default="hg_dagger")
    except ConfigError as exc:
        sys.exit(f"{exc} (`fleet plugins algorithm` lists every algorithm and its settings)")
    try:
        policy, settings = chosen_settings(POLICIES, args.policy, args.plugin_settings["policy"], file, default="vla")
        overrides, family = policy_overrides(policy, settings), policy_class(ALIASES.get(policy, policy)).family
    except ConfigError as exc:
        sys.exit(f"{exc} (`fleet plugins policy` lists every policy and its settings)")
    trainer = dict(min_demos=args.min_demos, bootstrap_updates=args.bootstrap_updates,
                   publish_every_updates=args.publish_every_updates, publish_every_s=args.publish_every_s,
                   algorithm=algorithm, algorithm_config=algorithm_config, sampler=args.sampler,
                   tasks=tuple(args.tasks.split(",")) if args.tasks else None,
                   policy=family, policy_overrides=overrides, head_updates=args.head_updates,
                   batch_size=args.batch_size, max_updates_per_s=args.max_updates_per_s, seed=args.trainer_seed,
                   ema_decay=args.ema_decay, encoder=args.encoder, encoder_lr=args.encoder_lr, device=args.device,
                   precision=args.precision, base=args.base)
    if args.publish_until:
        trainer["publish_until"] = args.publish_until
    return trainer


def serve_learner(args, train: bool, trainer: dict) -> None:
    from learner.canary import CanarySettings
    from learner.limits import RobotLimits
    from learner.server import LearnerConfig, serve

    extensions = ()
    if args.dashboard_port >= 0:
        from dashboard.extension import DashboardConfig, OperatorDashboard

        extensions = (OperatorDashboard(DashboardConfig(
            port=args.dashboard_port, host=args.dashboard_host,
            operator_token_file=Path(args.operator_token_file) if args.operator_token_file else None)),)
    serve(LearnerConfig(data_dir=Path(args.data), host=args.host, port=args.port,
                        token_file=Path(args.token_file) if args.token_file else None,
                        operators=args.operators, operator_priority=args.operator_priority,
                        min_operator_s=args.min_operator_s, train=train, trainer=trainer,
                        port_file=Path(args.port_file) if args.port_file else None,
                        redis_url=args.redis, replica_id=args.replica_id, tls=_server_tls(args),
                        insecure=args.insecure, canary=CanarySettings(args.canary_fraction, args.canary_episodes, args.canary_alpha,
                                                                      args.canary_test, args.canary_margin),
                        limits=RobotLimits(mb_per_s=args.robot_mb_per_s, previews_per_s=args.robot_previews_per_s,
                                           episode_open_s=args.episode_open_minutes * 60)),
          extensions)


def _server_tls(args):
    from core.tls import ServerTLS

    if not (args.tls_cert or args.tls_key):
        if args.tls_client_ca:
            sys.exit("--tls-client-ca (mTLS) needs --tls-cert and --tls-key")
        if not args.insecure:
            sys.exit("give the server a certificate (--tls-cert, --tls-key; `fleet certs` makes a development CA) "
                     "or serve plaintext with --insecure")
        return None
    if not (args.tls_cert and args.tls_key):
        sys.exit("TLS needs both --tls-cert and --tls-key")
    if args.insecure:
        sys.exit("--insecure and --tls-cert contradict each other")
    return ServerTLS(Path(args.tls_cert), Path(args.tls_key), Path(args.tls_client_ca) if args.tls_client_ca else None)


def cmd_learner(args) -> None:
    serve_learner(args, train=not args.no_train, trainer=trainer_settings(args))


def cmd_ingest(args) -> None:
    serve_learner(args, train=False, trainer={})


def cmd_train(args) -> None:
    from learner.train_process import train_main
    from learner.trainer import TrainerConfig

    train_main(TrainerConfig(data_dir=Path(args.data), **trainer_settings(args)), redis_url=args.redis)


def server_flags(p: argparse.ArgumentParser) -> None:
    """A server's flags: `fleet learner` and `fleet ingest`."""
    p.add_argument("--data", "--store", dest="data", default="runs/learner",
                   help="episode store and checkpoints directory (scaled out: the volume the replicas share)")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=50051)
    p.add_argument("--port-file", help="write the bound port here (useful with --port 0)")
    p.add_argument("--token-file", help="fleet-wide robot tokens, one per line, each good for any robot id (per-robot "
                   "credentials: fleet token create --robot ID)")
    p.add_argument("--operators", type=int, default=0, help="simulated operators to allocate to help requests")
    p.add_argument("--operator-priority", choices=["fifo", "float"], default="fifo",
                   help="help queue order: first come first served, or the highest FLOAT index first")
    p.add_argument("--min-operator-s", type=float, default=0.0,
                   help="an assigned operator stays with a robot at least this many seconds")
    p.add_argument("--dashboard-port", type=int, default=8080,
                   help="the operator dashboard's HTTP port (0: any free port, -1: no dashboard)")
    p.add_argument("--dashboard-host", help="the dashboard's address (default: --host)")
    p.add_argument("--operator-token-file",
                   help="operator tokens for the dashboard, 'name token' per line (default: one token made once "
                        "and kept in DATA/operator_token; the printed URL carries it)")
    p.add_argument("--redis", metavar="URL", help="scale-out: keep the episode index, robot registry, control relay "
                   "and policy versions in this Redis (redis://HOST:PORT/DB), shared by ingest replicas on one "
                   "--data volume (deploy/README.md)")
    p.add_argument("--replica-id", help="with --redis: this replica's name (default: HOSTNAME-PID)")
    p.add_argument("--tls-cert", help="TLS: the server's certificate (PEM), for gRPC and the dashboard")
    p.add_argument("--tls-key", help="TLS: its private key (PEM)")
    p.add_argument("--tls-client-ca", help="mTLS: accept only robots with a certificate signed by this CA")
    p.add_argument("--robot-mb-per-s", type=float, default=16.0,
                   help="episode data one robot may stream per second; above it the server reads it more slowly")
    p.add_argument("--episode-open-minutes", type=float, default=60.0,
                   help="an episode open longer than this (a robot that never ends it) takes no more chunks and is "
                   "closed as truncated: its steps up to the first gap are kept, not a success")
    p.add_argument("--robot-previews-per-s", type=float, default=10.0,
                   help="live pictures kept per robot per second; the rest are dropped")
    p.add_argument("--canary-fraction", type=float, default=DEFAULT_GUARD.fraction,
                   help="a new version goes to this fraction of the robots first, and to the rest once the canary "
                   "promotes it (0: to all at once, no guard)")
    p.add_argument("--canary-test", choices=TESTS, default=DEFAULT_GUARD.test,
                   help="paired: the candidate's evaluation episodes against the best promoted version on the same "
                   "evaluation seeds; fisher: a one-sided Fisher test on all episodes (learner/canary.py)")
    p.add_argument("--canary-episodes", type=int, default=DEFAULT_GUARD.episodes,
                   help="paired: evaluation seeds the candidate needs before the verdict; fisher: episodes per arm")
    p.add_argument("--canary-margin", type=float, default=DEFAULT_GUARD.margin,
                   help="paired: roll back when the candidate's success on the paired seeds is more than this below "
                   "the best promoted version's")
    p.add_argument("--canary-alpha", type=float, default=DEFAULT_GUARD.alpha,
                   help="fisher: roll back when the test says the new version succeeds less often, p < this")
    p.add_argument("--insecure", action="store_true", help="serve plaintext (logged as a warning): a trusted "
                   "loopback or a network TLS is terminated in front of")


def trainer_flags(p: argparse.ArgumentParser) -> None:
    """The trainer's flags: `fleet learner` and `fleet train`."""
    p.add_argument("--algorithm", metavar="NAME",
                   help="the training algorithm (default hg_dagger: learn from interventions; recap: "
                        "advantage-conditioned policy on all fleet data; rl_co: sim-real co-training, then PPO in "
                        "sim anchored on real data); set its fields with --algorithm.FIELD VALUE "
                        "(`fleet plugins algorithm` lists them)")
    p.add_argument("--config", metavar="FILE.toml",
                   help="plug-in settings: an [algorithm] table with `name` and fields; flags override it")
    p.set_defaults(plugin_kinds=("algorithm", "policy"))
    p.add_argument("--sampler", default="offline_online_mix", choices=["uniform", "offline_online_mix", "adaptive"],
                   help="offline_online_mix: a fixed 50/50 mix of demonstrations and fleet data; adaptive: "
                        "task-balanced, each task's online share rising with its failures and fresh data "
                        "(learner/samplers.py); uniform: every window alike")
    p.add_argument("--trainer-seed", type=int, default=0, help="the trainer's sampling and noise seed")
    p.add_argument("--ema-decay", type=float, default=0.999,
                   help="decay of the weights' moving average that robots run (about 1 / (1 - d) updates of lag)")
    p.add_argument("--encoder", choices=["frozen", "finetune"], default="frozen",
                   help="after version 0: frozen (default) trains on cached frame embeddings of version 0's encoder; "
                        "finetune keeps training the encoder on images at --encoder-lr")
    p.add_argument("--encoder-lr", type=float, default=1e-4, help="with --encoder finetune: the encoder's learning rate")
    p.add_argument("--device", default="auto", help="where the trainer runs: auto (a GPU when torch sees one), cpu, "
                   "cuda or cuda:N; under torchrun each rank takes the GPU of its LOCAL_RANK (NCCL)")
    p.add_argument("--base", default="default",
                   help="where version 0 starts: default (the shipped multi-task base, policy/bases/tabletop, "
                        "when it fits the robots), none (from scratch) or a `fleet pretrain` checkpoint directory")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="training precision: auto is bf16 autocast on CUDA and on CPUs with AMX or AVX512-BF16, "
                        "fp32 elsewhere")
    p.add_argument("--max-updates-per-s", type=float,
                   help="cap the trainer's update rate after version 0 (benchmarks: the same rate for every fleet size)")
    p.add_argument("--tasks", help="comma-separated tasks to train the one shared policy on (default: all received)")
    p.add_argument("--min-demos", type=int, default=20, help="demonstrations to wait for before version 0")
    p.add_argument("--policy", help="the policy (`fleet plugins policy`; default vla: one frame, trained end to "
                   "end; ptp: long context with past-token prediction, trained in three stages, README); "
                   "--policy.FIELD VALUE sets its config")
    p.add_argument("--bootstrap-updates", type=int, default=1500,
                   help="updates that train version 0 (with --policy ptp: stage 1, the encoder)")
    p.add_argument("--head-updates", type=int, default=2000,
                   help="with --policy ptp: stage-3 head updates on cached embeddings for version 0")
    p.add_argument("--publish-every-updates", type=int, default=800)
    p.add_argument("--publish-every-s", type=float, default=60.0)
    p.add_argument("--batch-size", type=int, default=64, help="windows per update (per rank under torchrun)")
    p.add_argument("--publish-until", type=float, help="Unix time after which no version is published")
