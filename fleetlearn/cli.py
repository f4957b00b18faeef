"""`fleet`: the command line. Each subcommand parses its flags and calls domain code."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from fleetlearn.learner import cmd_ingest, cmd_learner, cmd_train, server_flags, trainer_flags
from fleetlearn.robot import ROBOT_PLUGIN_KINDS, ROBOT_PLUGIN_MODULES, robot_flags

# One BLAS/torch thread per process: robots, learner and trainer share the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("MUJOCO_GL", "egl")


def _logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")


# Plug-in kinds whose settings come as dotted flags (--algorithm.top-fraction 0.3) or from the
# --config file's table of that name.
PLUGIN_KINDS = ("algorithm", "policy") + ROBOT_PLUGIN_KINDS


def _plugin_registries() -> dict:
    import importlib

    from learner.algorithms import ALGORITHMS
    from policy.registry import POLICIES
    from robot_client.plugins import DRIVERS, TELEOPS

    for module in ROBOT_PLUGIN_MODULES:  # the LeRobot plug-ins register without importing LeRobot
        importlib.import_module(module)
    return {r.kind: r for r in (ALGORITHMS, DRIVERS, TELEOPS, POLICIES)}


def cmd_certs(args) -> None:
    from core.tls import make_certs

    hosts = [h for h in (args.hosts or "").split(",") if h]
    clients = [c for c in (args.clients or "").split(",") if c]
    written = make_certs(Path(args.out), hosts, clients, days=args.days)
    for stem, path in written.items():
        print(f"{stem:24s} {path}  (key: {path.with_suffix('.key')})")
    print(f"learner: --tls-cert {written['server']} --tls-key {written['server'].with_suffix('.key')}"
          f" [--tls-client-ca {written['ca']} for mTLS]")
    print(f"robot:   --tls-ca {written['ca']} [--tls-cert/--tls-key client-NAME.pem/.key for mTLS]")


def cmd_export(args) -> None:
    try:
        from fleet_lerobot.dataset import export_store
    except ImportError as error:
        sys.exit(f"fleet export: {error}")

    try:
        figures = export_store(Path(args.data), Path(args.out), args.episodes)
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        sys.exit(f"fleet export: {error}")
    print(f"exported {figures['episodes']} episodes ({figures['frames']} frames, cameras {figures['cameras']}) "
          f"to {figures['out']}")


def cmd_import(args) -> None:
    try:
        from fleet_lerobot.dataset import import_dataset
    except ImportError as error:
        sys.exit(f"fleet import: {error}")

    try:
        figures = import_dataset(Path(args.lerobot), Path(args.data), robot_id=args.robot_id)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"fleet import: {error}")
    print(f"imported {figures['episodes']} episodes ({figures['frames']} frames) as demonstrations of "
          f"{figures['robot_id']} into {args.data}")


def cmd_demo(args) -> None:
    from fleetlearn.demo import DemoConfig, run_demo

    import sim

    if args.env:
        if not args.expert:
            sys.exit("fleet demo: --env needs --expert (it records the demonstrations and plays the operators)")
        tasks = (args.task or args.env,)
    else:
        try:
            tasks = tuple(sim.parse_tasks(args.tasks))
        except ValueError as error:
            sys.exit(f"fleet demo: {error}")
    run_demo(DemoConfig(minutes=args.minutes, robots=args.robots, operators=args.operators, out=Path(args.out),
                        tasks=tasks, env=args.env, expert=args.expert,
                        demos=args.demos, eval_seeds=args.eval_seeds, policy=args.policy,
                        base=args.base, help_gate=args.help_gate, dashboard_port=args.dashboard_port,
                        screenshot=Path(args.screenshot) if args.screenshot else None,
                        screenshot_at_min=args.screenshot_at_min))


def cmd_pretrain(args) -> None:
    from learner.pretrain import main as pretrain_main

    pretrain_main(args.extra)


def cmd_rollback(args) -> None:
    from learner.versions import open_registry

    registry = open_registry(Path(args.data), args.redis)
    registry.publish(args.version, note=args.note or f"rollback to {args.version}", rollback=True)
    print(f"published version {args.version} again; connected robots swap at their next episode boundary")


def cmd_token(args) -> None:
    import datetime

    from core.ids import robot_id_problem
    from learner.credentials import CredentialStore

    store = CredentialStore(Path(args.data))
    if args.action == "create":
        if bool(args.robot) == bool(args.operator):
            sys.exit("fleet token create needs exactly one of --robot ID or --operator NAME")
        kind, subject = ("robot", args.robot) if args.robot else ("operator", args.operator)
        if kind == "robot" and (problem := robot_id_problem(subject)):
            sys.exit(f"fleet token create: {problem}; the learner would refuse it")
        credential_id, token = store.create(kind, subject)
        # The token alone on stdout (`> arm-1.token` makes a --token-file); the rest on stderr.
        print(f"created {kind} credential {credential_id} for {subject!r}; its token, shown once, follows on stdout",
              file=sys.stderr)
        print(token)
    elif args.action == "revoke":
        if not args.id:
            sys.exit("fleet token revoke needs --id (fleet token list shows them)")
        try:
            row = store.revoke(args.id)
        except KeyError as exc:
            sys.exit(str(exc.args[0]))
        print(f"revoked {row['kind']} credential {args.id} of {row['subject']!r}; running servers refuse it within 5 s")
    else:
        for c in store.list():
            created = datetime.datetime.fromtimestamp(c["created_at"]).strftime("%Y-%m-%d %H:%M")
            state = "revoked" if c["revoked_at"] else "active"
            print(f"{c['id']}  {c['kind']:8s}  {c['subject']:24s}  {created}  {state}")


def cmd_plugins(args) -> None:
    registries = _plugin_registries()
    if args.kind and args.kind not in registries:
        sys.exit(f"no plug-in kind {args.kind!r}; kinds: {', '.join(sorted(registries))}")
    kinds = [args.kind] if args.kind else sorted(registries)
    print("\n\n".join(registries[kind].describe() for kind in kinds))


def cmd_bench(args) -> None:
    from bench import run_benchmark

    run_benchmark(args.name, args.json, args.extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleet", description="fleetlearn: fleet learning for robot arms")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("learner", help="run the learner: gRPC server, episode store, trainer, publisher")
    server_flags(p)
    trainer_flags(p)
    p.add_argument("--no-train", action="store_true", help="serve only (no trainer process)")
    p.set_defaults(fn=cmd_learner)

    p = sub.add_parser("ingest", help="scale-out: one ingest replica (gRPC server, publisher, control relay, dashboard; no trainer) on a shared --redis and --data")
    server_flags(p)
    p.set_defaults(fn=cmd_ingest)

    p = sub.add_parser("train", help="scale-out: the trainer alone, following the episode stream in --redis; "
                       "under torchrun --nproc-per-node K it trains data-parallel and rank 0 publishes")
    p.add_argument("--data", "--store", dest="data", default="runs/learner",
                   help="the shared store and checkpoints directory")
    p.add_argument("--redis", required=True, metavar="URL", help="the Redis the ingest replicas index episodes in")
    trainer_flags(p)
    p.set_defaults(fn=cmd_train)

    robot_flags(sub.add_parser("robot", help="run a robot client: a driver (--driver NAME --driver.SETTING VALUE) "
                                "and a teleop source (--teleop NAME --teleop.SETTING VALUE); README lists them"))

    p = sub.add_parser("export", help="write the episode store as a LeRobotDataset (needs make setup-lerobot)")
    p.add_argument("--format", choices=["lerobot"], default="lerobot")
    p.add_argument("--data", default="runs/learner", help="the learner's data directory")
    p.add_argument("--out", required=True, help="a new directory for the dataset")
    p.add_argument("--episodes", help="filter: KEY=VALUE,... with KEY kind, task, robot, success or version")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("import", help="seed the demonstrations from a local LeRobotDataset (needs make setup-lerobot)")
    p.add_argument("--lerobot", required=True, metavar="DIR", help="the LeRobotDataset's root directory")
    p.add_argument("--data", default="runs/learner", help="the learner's data directory")
    p.add_argument("--robot-id", default="lerobot-import", help="robot id the demonstrations are stored under")
    p.set_defaults(fn=cmd_import)

    p = sub.add_parser("demo", help="learner + simulated robots + simulated operators on this machine")
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--robots", type=int, default=4)
    p.add_argument("--operators", type=int, default=2)
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--tasks", default="push_cube", help="comma-separated sim tasks, or all: one policy learns them all")
    p.add_argument("--env", metavar="MODULE:FACTORY", help="a Gymnasium env instead of sim tasks (README \"Bring your "
                   "own environment\"); needs --expert")
    p.add_argument("--expert", metavar="MODULE:FACTORY", help="with --env: its expert, for demonstrations and operators")
    p.add_argument("--task", help="with --env: the task's name (default MODULE:FACTORY)")
    p.add_argument("--demos", type=int, default=12,
                   help="scripted demonstrations per task that version 0 trains on (10-20 is honest)")
    p.add_argument("--eval-seeds", type=int, help="evaluation seeds per task (default 30 for one task, 20 each for several)")
    p.add_argument("--policy", choices=["default", "ptp"], default="default",
                   help="ptp: the long-context policy with past-token prediction and self-verification")
    p.add_argument("--base", default="default",
                   help="where version 0 starts: default (the shipped base, which never saw push_cube), none "
                        "(from scratch) or a `fleet pretrain` checkpoint directory")
    p.add_argument("--help-gate", choices=["float", "rule", "off"], default="float",
                   help="when robots ask for help: FLOAT failure detection, the sim's fixed rule, or never")
    p.add_argument("--dashboard-port", type=int, default=8080,
                   help="the operator dashboard's port (a free one if taken; -1: no dashboard)")
    p.add_argument("--screenshot", help="save a PNG of the dashboard's fleet view (needs chromium and playwright)")
    p.add_argument("--screenshot-at-min", type=float, default=4.0, help="when to take it, minutes into the run")
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("pretrain", help="train a multi-task base policy on scripted episodes (`fleet pretrain --help`)",
                       add_help=False)
    p.set_defaults(fn=cmd_pretrain)

    p = sub.add_parser("rollback", help="publish an earlier policy version again")
    p.add_argument("--data", default="runs/learner")
    p.add_argument("--version", type=int, required=True)
    p.add_argument("--note")
    p.add_argument("--redis", metavar="URL", help="scale-out: the Redis that holds the policy versions")
    p.set_defaults(fn=cmd_rollback)

    p = sub.add_parser("certs", help="make a development CA, a server certificate and robot client certificates")
    p.add_argument("--out", required=True, help="directory for the PEM files")
    p.add_argument("--hosts", help="the learner's names and addresses, comma-separated (localhost and 127.0.0.1 "
                   "are always included)")
    p.add_argument("--clients", help="robot ids to make client certificates for (mTLS), comma-separated")
    p.add_argument("--days", type=int, default=365)
    p.set_defaults(fn=cmd_certs)

    p = sub.add_parser("token", help="robot and operator credentials: create (the token is shown once), list, revoke")
    p.add_argument("action", choices=["create", "list", "revoke"])
    p.add_argument("--data", "--store", dest="data", default="runs/learner", help="the learner's data directory")
    p.add_argument("--robot", metavar="ID", help="create: a credential that may act as this robot only")
    p.add_argument("--operator", metavar="NAME", help="create: a dashboard credential for this person")
    p.add_argument("--id", help="revoke: the credential's id")
    p.set_defaults(fn=cmd_token)

    p = sub.add_parser("plugins", help="list the registered plug-ins (algorithms) with their settings and defaults")
    p.add_argument("kind", nargs="?", help="only this kind (algorithm)")
    p.set_defaults(fn=cmd_plugins)

    p = sub.add_parser("bench", help="run a benchmark (ingest, weights); other flags go to the benchmark")
    p.add_argument("name")
    p.add_argument("--json", help="write the figures to this JSON file")
    p.set_defaults(fn=cmd_bench)

    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, dotted plug-in settings (--algorithm.top-fraction 0.3) taken out first
    into `args.plugin_settings` ({kind: {field: text}})."""
    from core.registry import ConfigError, split_dotted

    parser = build_parser()
    try:
        rest, settings = split_dotted(sys.argv[1:] if argv is None else list(argv), PLUGIN_KINDS)
    except ConfigError as exc:
        sys.exit(str(exc))
    args, extra = parser.parse_known_args(rest)
    if extra and args.command not in ("bench", "pretrain"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    for kind, fields in settings.items():
        if fields and kind not in getattr(args, "plugin_kinds", ()):
            sys.exit(f"fleet {args.command} takes no {kind} settings (--{kind}.{next(iter(fields)).replace('_', '-')})")
    args.extra = extra
    args.plugin_settings = settings
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    _logging(args.verbose)
    args.fn(args)


if __name__ == "__main__":
    main()
