"""`fleet robot`: its flags, and how they choose the driver and the teleop source by name
(robot_client/plugins.py), the older flags (--sim, --env, --lerobot-robot, ...) included."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path


def _token(args) -> str:
    if args.token:
        return args.token
    if args.token_file:
        lines = [l.strip() for l in Path(args.token_file).read_text().splitlines() if l.strip() and not l.startswith("#")]
        if lines:
            return lines[0]
    sys.exit("a robot needs --token or --token-file (the learner's token file holds the accepted tokens)")


def _client_tls(args):
    from core.tls import ClientTLS

    if not args.tls_ca:
        if args.tls_cert or args.tls_key:
            sys.exit("--tls-cert/--tls-key (mTLS) need --tls-ca, the CA of the learner's certificate")
        if not args.insecure:
            sys.exit("give the robot the learner's CA (--tls-ca) or connect in plaintext with --insecure")
        from core.tls import warn_insecure

        warn_insecure(f"robot {args.robot_id}")
        return None
    if args.insecure:
        sys.exit("--insecure and --tls-ca contradict each other")
    return ClientTLS(Path(args.tls_ca), Path(args.tls_cert) if args.tls_cert else None,
                     Path(args.tls_key) if args.tls_key else None)


ROBOT_PLUGIN_KINDS = ("driver", "teleop")
# Plug-in modules `fleet robot` always loads: each registers its drivers and teleop sources.
ROBOT_PLUGIN_MODULES = ("robot_client.plugins", "fleet_lerobot.plugins")


def _old_robot_flags(args) -> tuple[str | None, dict, str | None, dict]:
    """The flags from before the registries (--sim, --env, --lerobot-robot, ...) as (driver,
    its settings, teleop source, its settings); the deploy manifests and scripts still use them."""
    driver, settings = None, {}
    if args.sim:
        driver, settings = "sim", {"tasks": args.sim}
    elif args.env:
        driver, settings = "gym", {"env": args.env}
    elif args.lerobot_robot:
        driver, settings = "lerobot", {"type": args.lerobot_robot}
        settings.update({f"robot.{key}": value for key, value in _key_values(args.lerobot_arg, "--lerobot-arg").items()})
    for flag in ("expert", "task", "instruction", "control_hz", "max_steps", "variant", "shift"):
        if getattr(args, flag) is not None:
            settings[flag] = getattr(args, flag)
    teleop, teleop_settings = None, {}
    if args.lerobot_teleop:
        teleop, teleop_settings = "lerobot", {"type": args.lerobot_teleop}
        teleop_settings.update({f"teleop.{key}": value for key, value in
                                _key_values(args.lerobot_teleop_arg, "--lerobot-teleop-arg").items()})
    return driver, settings, teleop, teleop_settings


def _robot_plugins(args, dotted: dict[str, dict[str, str]]):
    """(driver, teleop source, the help rule's reference action or None) for `fleet robot`, from
    --driver/--teleop and their dotted settings, the old flags, and --config."""
    import importlib

    from core.registry import choose, chosen_settings, read_config_file
    from robot_client.plugins import DRIVERS, TELEOPS, default_teleop

    if (args.lerobot_teleop or args.lerobot_arg or args.lerobot_teleop_arg) and not args.lerobot_robot:
        sys.exit("fleet robot: --lerobot-teleop, --lerobot-arg and --lerobot-teleop-arg go with --lerobot-robot")
    # MODULE may live in the current directory, as it would for `python -m`.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in (*ROBOT_PLUGIN_MODULES, *(args.plugin or ())):
        importlib.import_module(module)
    old_driver, old_settings, old_teleop, old_teleop_settings = _old_robot_flags(args)
    file = read_config_file(Path(args.config)) if args.config else None
    name, config = choose(DRIVERS, args.driver or old_driver, {**old_settings, **dotted["driver"]}, file)
    driver = DRIVERS.make(name, config)
    try:
        # Settings from the file, then the operator flags (the scripted operator's), then dotted ones.
        teleop_name, settings = chosen_settings(TELEOPS, args.teleop or old_teleop, {}, file,
                                                default=default_teleop(driver))
        if teleop_name == "scripted":
            operator = dict(segment_steps=args.operator_steps, noise_std=args.operator_noise,
                            reaction_delay_steps=args.operator_delay, suboptimality=args.operator_suboptimality,
                            seed=args.seed)
            settings.update({k: v for k, v in operator.items() if v is not None})
        if args.demos > 0 and teleop_name == "none":
            sys.exit("fleet robot: --demos needs an expert to record them: --driver.expert MODULE:FACTORY (--expert) "
                     "for a gym env, or a person's device (--teleop lerobot --teleop.type TYPE)")
        settings.update({**old_teleop_settings, **dotted["teleop"]})
        teleop = TELEOPS.make(teleop_name, TELEOPS.config(teleop_name, settings), driver)
    except BaseException:
        driver.close()  # a LeRobot arm connected already
        raise
    return driver, teleop, getattr(teleop, "reference_action", None)


def _key_values(items: list[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            sys.exit(f"fleet robot: {flag} takes KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def cmd_robot(args) -> None:
    import torch

    from policy.device import resolve_device
    from robot_client.loop import RobotClient, RobotConfig

    torch.set_num_threads(1)
    try:
        # ValueError covers a bad MODULE:FACTORY, an env breaking the contract, unknown sim tasks,
        # variants and settings (ConfigError): all of them are the command line's to fix, so a
        # message beats a traceback.
        device = str(resolve_device(args.device))
        driver, teleop, help_reference = _robot_plugins(args, args.plugin_settings)
    except (ValueError, ImportError, ConnectionError) as error:  # ConfigError is a ValueError
        sys.exit(f"fleet robot: {error}")
    eval_seeds = tuple(range(args.eval_seeds))[args.eval_index::args.eval_stride] if args.eval_seeds else ()
    config = RobotConfig(robot_id=args.robot_id, tasks=tuple(driver.tasks), learner=args.learner, token=_token(args),
                         work_dir=Path(args.work_dir or f"runs/robots/{args.robot_id}"), demos=args.demos,
                         eval_seeds=eval_seeds, max_episodes=args.max_episodes, realtime=not args.fast,
                         help_gate=args.help_gate,
                         help_wait_s=args.help_wait_s, preview_hz=args.preview_hz, seed=args.seed,
                         tls=_client_tls(args), ack_log=args.ack_log,
                         device=device)
    client = RobotClient(config, driver, teleop, expert_action=help_reference)
    # SIGTERM (the demo, a process manager) stops the robot cleanly: the running episode ends as
    # "stopped", the spool drains for a moment and the loop's figures are written.
    signal.signal(signal.SIGTERM, lambda *_: client.stopped.set())
    client.run()


def robot_flags(p: argparse.ArgumentParser) -> None:
    """The flags of `fleet robot`; --driver.SETTING and --teleop.SETTING are taken out before
    argparse sees them (fleetlearn.cli.main)."""
    from robot_client.driver import DEFAULT_MAX_STEPS
    from robot_client.operators import OperatorModel

    source = p.add_mutually_exclusive_group()
    source.add_argument("--driver", metavar="NAME", help="the arm: sim (MuJoCo tasks), gym (your Gymnasium env), "
                        "lerobot (any LeRobot robot), or one a --plugin registers; its settings as --driver.SETTING")
    source.add_argument("--sim", metavar="TASKS", help="same as --driver sim --driver.tasks TASKS: a name "
                        "(push_cube), a comma-separated list, or 'all'")
    source.add_argument("--env", metavar="MODULE:FACTORY", help="same as --driver gym --driver.env MODULE:FACTORY: "
                        "FACTORY() returns your Gymnasium env (contract in README)")
    source.add_argument("--lerobot-robot", metavar="TYPE", help="same as --driver lerobot --driver.type TYPE: "
                        "so101_follower, koch_follower, fleet_sim_arm, ... (needs make setup-lerobot)")
    p.add_argument("--teleop", metavar="NAME", help="who drives takeovers and records demonstrations: scripted (the "
                   "driver's expert, simulated), none, lerobot (a person's device); default: scripted where the "
                   "driver has an expert, else none; its settings as --teleop.SETTING")
    p.add_argument("--config", metavar="FILE", help="a TOML file with [driver] and [teleop] tables (name = ..., "
                   "settings); flags override it")
    p.add_argument("--plugin", action="append", metavar="MODULE", help="import MODULE first: it registers drivers "
                   "or teleop sources of its own")
    p.add_argument("--lerobot-arg", action="append", metavar="KEY=VALUE",
                   help="same as --driver.robot.KEY VALUE: a setting of the LeRobot robot's config")
    p.add_argument("--lerobot-teleop", metavar="TYPE", help="same as --teleop lerobot --teleop.type TYPE "
                   "(so101_leader, gamepad, keyboard_ee, fleet_expert, ...)")
    p.add_argument("--lerobot-teleop-arg", action="append", metavar="KEY=VALUE",
                   help="same as --teleop.teleop.KEY VALUE: a setting of the LeRobot teleoperator's config")
    p.add_argument("--expert", metavar="MODULE:FACTORY", help="same as --driver.expert: FACTORY() returns the expert "
                   "(observation, env) -> action that plays the operator; without one the robot runs policy only")
    p.add_argument("--instruction", help="same as --driver.instruction (gym, lerobot)")
    p.add_argument("--task", help="same as --driver.task (gym, lerobot)")
    p.add_argument("--control-hz", type=float, help="same as --driver.control-hz (gym, lerobot)")
    p.add_argument("--max-steps", type=int, help="same as --driver.max-steps: steps per episode (default: the sim "
                   f"task's; gym: env.spec.max_episode_steps, else {DEFAULT_MAX_STEPS})")
    p.add_argument("--variant", help="same as --driver.variant (sim): sim, or real-proxy")
    p.add_argument("--shift", type=float, help="same as --driver.shift (sim, real-proxy): size of the reality gap")
    p.add_argument("--learner", required=True, help="learner address HOST:PORT, or a comma-separated list of "
                   "ingest replicas to fail over between (HOST:PORT,HOST:PORT,...)")
    p.add_argument("--robot-id", default=f"robot-{os.getpid()}")
    p.add_argument("--token")
    p.add_argument("--token-file")
    p.add_argument("--tls-ca", help="TLS: the CA that signed the learner's certificate (PEM)")
    p.add_argument("--tls-cert", help="mTLS: this robot's certificate (PEM)")
    p.add_argument("--tls-key", help="mTLS: this robot's private key (PEM)")
    p.add_argument("--insecure", action="store_true", help="connect in plaintext (logged as a warning)")
    p.add_argument("--ack-log", action="store_true", help="log each chunk's ack latency to WORK_DIR/acks.csv")
    p.add_argument("--work-dir", help="spool and weight cache (default runs/robots/ROBOT_ID)")
    p.add_argument("--demos", type=int, default=0, help="record this many expert demonstrations first")
    p.add_argument("--eval-seeds", type=int, default=20, help="size of the fleet's fixed evaluation seed list")
    p.add_argument("--eval-index", type=int, default=0, help="this robot's share: seeds index, index+stride, ...")
    p.add_argument("--eval-stride", type=int, default=1)
    p.add_argument("--operator-steps", type=int, help="same as --teleop.segment-steps (scripted): steps a "
                   "simulated operator drives per takeover (default 20)")
    p.add_argument("--operator-noise", type=float, help="same as --teleop.noise-std (scripted): Gaussian noise std "
                   f"on its actions (default {OperatorModel.noise_std})")
    p.add_argument("--operator-delay", type=int, help="same as --teleop.reaction-delay-steps (scripted): ticks it "
                   f"holds still after taking over (default {OperatorModel.reaction_delay_steps})")
    p.add_argument("--operator-suboptimality", type=float, help="same as --teleop.suboptimality (scripted): motion "
                   f"scaled by 1-S plus a slow wander of size S (default {OperatorModel.suboptimality})")
    p.add_argument("--help-gate", choices=["float", "rule", "off"], default="float",
                   help="when to ask for a human: FLOAT above its threshold (hold still until answered), the "
                        "sim's fixed expert-disagreement rule, or never")
    p.add_argument("--help-wait-s", type=float, default=60.0, help="with --help-gate float: give up waiting after this")
    p.add_argument("--preview-hz", type=float, default=4.0,
                   help="live camera pictures sent to the dashboard per second (0: none)")
    p.add_argument("--max-episodes", type=int)
    p.add_argument("--device", default="cpu", help="where the policy runs: cpu (default), auto (a GPU when torch "
                   "sees one) or cuda[:N]")
    p.add_argument("--fast", action="store_true", help="run ticks back to back instead of in real time")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_robot, plugin_kinds=ROBOT_PLUGIN_KINDS)
