"""deploy/: the Dockerfile, the compose file and the Kubernetes manifests, checked offline.

- Kubernetes manifests are validated in strict mode (unknown fields are errors) against the
  Kubernetes JSON schemas that the kubernetes-validate package ships inside itself.
- deploy/compose.yaml is validated against the Compose Specification schema that check-jsonschema
  ships (vendor.compose-spec), with jsonschema.
- Every `fleet ...` command line in them (and the `torchrun ... -m fleetlearn.cli train ...` ones)
  is parsed with fleetlearn.cli.build_parser(), so the manifests cannot drift from the CLI.
- Secure by default: every server (`fleet ingest`/`fleet learner`) in compose, Kubernetes, the
  systemd units and deploy/README.md serves TLS, every robot verifies it (`--tls-ca`), and the
  certificate files they name are provided read-only at that path (the compose `certs` service's
  volume, the Kubernetes Secret fleet-tls). `--insecure` appears only with loopback addresses.
- Each validator is shown to reject a broken document, so these tests can fail.

No network, no docker, no cluster.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

# The validators are in the dev extra (pip install -e '.[dev]'); a missing one is an error, not a skip.
import jsonschema
import kubernetes_validate
import pytest
import yaml
from check_jsonschema import builtin_schemas

from core.registry import ConfigError, split_dotted
from fleetlearn.cli import build_parser
from fleetlearn.robot import ROBOT_PLUGIN_KINDS

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
README = DEPLOY / "README.md"
SYSTEMD = DEPLOY / "systemd"

# The oldest Kubernetes release the manifests are meant for, and the newest schemas shipped.
K8S_VERSIONS = ["1.30", kubernetes_validate.utils.latest_version()]
SHARED_DATA = "/data"


# ---------------------------------------------------------------------------------------------
# helpers


class CommandError(AssertionError):
    pass


def strict_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The parser with abbreviations off, here and in its subcommands: a manifest spells flags out
    (`--replica` works today as an abbreviation of --replica-id, until another flag shares it)."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                strict_parser(sub)
    return parser


def parse_fleet(argv: list[str]):
    """Parse `fleet ARGS...` (argv without the program name) as the CLI does; no unknown args."""
    try:
        argv, _ = split_dotted(argv, ROBOT_PLUGIN_KINDS)  # --driver.SETTING: read by the plug-in's config
        args, unknown = strict_parser(build_parser()).parse_known_args(argv)
    except SystemExit as exc:  # argparse reports errors by exiting
        raise CommandError(f"fleet {shlex.join(argv)}: rejected by the CLI parser (exit {exc.code})") from None
    except ConfigError as exc:
        raise CommandError(f"fleet {shlex.join(argv)}: {exc}") from None
    if unknown:
        raise CommandError(f"fleet {shlex.join(argv)}: unknown arguments {unknown}")
    return args


SHELL_SEPARATORS = (";", "&&", "||")


def shell_words(script: str) -> list[str]:
    """Words and operators (`;`, `&&`, `||`, `|`, `>`, ...) of a POSIX sh script, comments dropped."""
    lexer = shlex.shlex(script.replace("\n", " ; "), posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    return list(lexer)


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of an `sh -c` script: lines, or commands joined by `;`, `&&`, `||`.
    Pipes, redirections and background jobs are not expected in a container's command."""
    commands, current = [], []
    for word in shell_words(script):
        if word in SHELL_SEPARATORS:
            if current:
                commands.append(current)
            current = []
        elif word and set(word) <= set(";&|<>"):
            raise CommandError(f"sh -c {script!r}: unexpected {word!r}")
        else:
            current.append(word)
    if current:
        commands.append(current)
    return commands


def parse_command(argv: list[str]):
    """A container's command line -> the parsed `fleet` arguments.

    Understands `fleet ...`, `torchrun ... -m fleetlearn.cli ...` and `sh -c SCRIPT`, where the
    script runs exactly one `[exec] fleet ...` among other simple commands (`set -e`, `test`, `cp`).
    """
    if not argv:
        raise CommandError("empty command")
    prog = Path(argv[0]).name
    if prog == "fleet":
        return parse_fleet(argv[1:])
    if prog == "torchrun":
        from torch.distributed.run import get_args_parser

        try:
            launch, unknown = strict_parser(get_args_parser()).parse_known_args(argv[1:])
        except SystemExit as exc:
            raise CommandError(f"{shlex.join(argv)}: rejected by torchrun's parser (exit {exc.code})") from None
        if unknown:
            raise CommandError(f"{shlex.join(argv)}: unknown torchrun arguments {unknown}")
        if not (launch.module and launch.training_script == "fleetlearn.cli"):
            raise CommandError(f"{shlex.join(argv)}: torchrun must run `-m fleetlearn.cli`")
        if not str(launch.nproc_per_node).isdigit():
            raise CommandError(f"{shlex.join(argv)}: --nproc-per-node must be a number of ranks")
        return parse_fleet(launch.training_script_args)
    if prog in ("sh", "bash") and len(argv) == 3 and argv[1] == "-c":
        commands = [words[1:] if words[0] == "exec" else words for words in shell_commands(argv[2])]
        fleet = [words for words in commands if Path(words[0]).name in ("fleet", "torchrun")]
        if len(fleet) != 1:
            raise CommandError(f"{shlex.join(argv)}: expected one fleet command, found {len(fleet)}")
        return parse_command(fleet[0])
    raise CommandError(f"{shlex.join(argv)}: not a fleet command")


TLS_FILE_FLAGS = ("tls_cert", "tls_key", "tls_client_ca", "tls_ca")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def tls_problems(args) -> list[str]:
    """Why a parsed server or robot command would not use TLS ([] for other commands)."""
    need = {"ingest": ("tls_cert", "tls_key"), "learner": ("tls_cert", "tls_key"), "robot": ("tls_ca",)}
    if args.command not in need:
        return []
    problems = [f"no --{flag.replace('_', '-')}" for flag in need[args.command] if not getattr(args, flag)]
    if args.insecure:
        problems.append("--insecure")
    return problems


def tls_files(args) -> list[str]:
    """The certificate and key paths a parsed command reads."""
    return [path for path in (getattr(args, flag, None) for flag in TLS_FILE_FLAGS) if path]


def learner_hosts(args) -> set[str]:
    return {address.rsplit(":", 1)[0] for address in args.learner.split(",")}


def load_yaml_docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


# ---------------------------------------------------------------------------------------------
# the command-line check itself


def test_command_parser_accepts_each_form():
    assert parse_command(["fleet", "ingest", "--redis", "redis://r:6379/0", "--token-file", "t"]).command == "ingest"
    args = parse_command(["torchrun", "--standalone", "--nproc-per-node", "2", "-m", "fleetlearn.cli",
                          "train", "--redis", "redis://r:6379/0", "--data", "/data"])
    assert (args.command, args.data) == ("train", "/data")
    args = parse_command(["sh", "-c", 'exec fleet robot --sim push_cube --learner a:1,b:2 --robot-id "x-$(hostname)"'])
    assert (args.command, args.robot_id) == ("robot", "x-$(hostname)")
    args = parse_command(["sh", "-c", "set -e\ntest -f /c/server.pem || fleet certs --out /c --hosts a,b\n"
                                      "cp /c/ca.pem /ca/ca.pem  # the CA certificate alone\n"])
    assert (args.command, args.out, args.hosts) == ("certs", "/c", "a,b")
    assert shell_commands("set -e\ntest -f /c/x || fleet certs --out /c\ncp /c/ca.pem /ca/") == [
        ["set", "-e"], ["test", "-f", "/c/x"], ["fleet", "certs", "--out", "/c"], ["cp", "/c/ca.pem", "/ca/"]]


@pytest.mark.parametrize("argv", [
    ["fleet", "ingest", "--redis", "redis://r:6379/0", "--token-file", "t", "--reddis", "x"],  # unknown flag
    ["fleet", "ingest", "--redis", "redis://r:6379/0", "--token-file", "t", "--replica", "a"],  # abbreviation
    ["fleet", "robot", "--sim", "push_cube", "--tls-ca", "ca.pem"],                              # missing --learner
    ["fleet", "ingest", "--token-file", "t", "--port", "fifty"],                                 # wrong type
    ["fleet", "train", "--data", "/data"],                                                       # train needs --redis
    ["torchrun", "--nproc-per-node", "2", "-m", "fleetlearn.cli", "train", "--redis", "r", "--typo"],
    ["torchrun", "--nproc-per-node", "2", "-m", "other.module", "train", "--redis", "r"],
    ["python", "-m", "fleetlearn.cli", "train"],
    ["sh", "-c", "exec flet robot --sim push_cube --learner a:1"],                               # no fleet command
    ["sh", "-c", "fleet certs --out /c; fleet certs --out /d"],                                  # two of them
    ["sh", "-c", "fleet robot --sim push_cube --learner a:1 | tee log"],                         # a pipe
])
def test_command_parser_rejects_drift(argv):
    with pytest.raises(CommandError):
        parse_command(argv)


def test_tls_policy():
    ok = ["--tls-cert", "/c/server.pem", "--tls-key", "/c/server.key"]
    assert tls_problems(parse_command(["fleet", "ingest", "--redis", "redis://r:6379/0", *ok])) == []
    assert tls_problems(parse_command(["fleet", "learner", *ok, "--tls-client-ca", "/c/ca.pem"])) == []
    assert tls_problems(parse_command(["fleet", "robot", "--sim", "push_cube", "--learner", "a:1",
                                       "--tls-ca", "/c/ca.pem"])) == []
    assert tls_problems(parse_command(["fleet", "certs", "--out", "/c"])) == []
    assert tls_files(parse_command(["fleet", "learner", *ok, "--tls-client-ca", "/c/ca.pem"])) == [
        "/c/server.pem", "/c/server.key", "/c/ca.pem"]
    # ... and what the policy refuses (the CLI accepts all of these; some exit at start).
    assert tls_problems(parse_command(["fleet", "ingest", "--redis", "redis://r:6379/0"])) == [
        "no --tls-cert", "no --tls-key"]
    assert tls_problems(parse_command(["fleet", "ingest", "--redis", "redis://r:6379/0", "--insecure"])) == [
        "no --tls-cert", "no --tls-key", "--insecure"]
    assert tls_problems(parse_command(["fleet", "learner", "--tls-cert", "/c/server.pem"])) == ["no --tls-key"]
    assert tls_problems(parse_command(["fleet", "robot", "--sim", "push_cube", "--learner", "a:1"])) == ["no --tls-ca"]
    assert tls_problems(parse_command(["fleet", "robot", "--sim", "push_cube", "--learner", "a:1", "--insecure",
                                       "--tls-ca", "/c/ca.pem"])) == ["--insecure"]


# ---------------------------------------------------------------------------------------------
# Kubernetes


def k8s_documents() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [(path.name, doc) for doc in load_yaml_docs(path)]
    return docs


def k8s_validate(doc: dict, version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def pod_spec(doc: dict) -> dict | None:
    spec = doc.get("spec", {})
    if doc["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet"):
        return spec["template"]["spec"]
    if doc["kind"] == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]
    if doc["kind"] == "Pod":
        return spec
    return None


def container_problems(spec: dict) -> list[str]:
    """Policy checks the schema leaves out (the API lets `image` be defaulted by other tooling)."""
    problems = []
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        if not c.get("image"):
            problems.append(f"container {c.get('name')!r} has no image")
    return problems


def expand_k8s_vars(arg: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command/args (with $$ as an escaped $)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), arg)


def container_env(container: dict, configmaps: dict[str, dict]) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        assert name in configmaps, f"envFrom names ConfigMap {name!r}, which deploy/k8s does not define"
        env.update(configmaps[name])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "fieldRef" in var.get("valueFrom", {}):
            env[var["name"]] = f"<{var['valueFrom']['fieldRef']['fieldPath']}>"
    return env


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    on_disk = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk
    for _, doc in k8s_documents():
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == kustomization["namespace"], doc["metadata"]["name"]


def test_k8s_manifests_cover_the_deployment():
    kinds = {(doc["kind"], doc["metadata"]["name"]) for _, doc in k8s_documents()}
    for expected in [("Namespace", "fleetlearn"), ("ConfigMap", "fleet-settings"), ("Secret", "fleet-tokens"),
                     ("PersistentVolumeClaim", "fleet-data"), ("StatefulSet", "redis"), ("Service", "redis"),
                     ("Deployment", "fleet-ingest"), ("Service", "fleet-ingest"), ("Job", "fleet-trainer"),
                     ("Deployment", "fleet-robot"), ("Secret", "fleet-tls")]:
        assert expected in kinds


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_validate(version):
    docs = k8s_documents()
    assert len(docs) >= 10
    for name, doc in docs:
        try:
            k8s_validate(doc, version)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} {doc['kind']}/{doc['metadata']['name']} (k8s {version}): "
                        f"{'.'.join(map(str, exc.path))}: {exc.message}")
        spec = pod_spec(doc)
        if spec is not None:
            assert container_problems(spec) == [], name


def _valid_deployment() -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "x"}},
                     "template": {"metadata": {"labels": {"app": "x"}},
                                  "spec": {"containers": [{"name": "x", "image": "fleetlearn:0.1.0"}]}}}}


def test_k8s_validator_rejects_broken_manifests():
    k8s_validate(_valid_deployment(), K8S_VERSIONS[-1])

    bad = _valid_deployment()
    bad["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        k8s_validate(bad, K8S_VERSIONS[-1])

    bad = _valid_deployment()
    bad["spec"]["template"]["spec"]["containers"][0]["comand"] = ["fleet"]  # strict: unknown field
    with pytest.raises(kubernetes_validate.ValidationError):
        k8s_validate(bad, K8S_VERSIONS[-1])

    bad = _valid_deployment()
    del bad["spec"]["template"]["spec"]["containers"]
    with pytest.raises(kubernetes_validate.ValidationError):
        k8s_validate(bad, K8S_VERSIONS[-1])

    # A container without an image passes the API schema (image is optional there) but not ours.
    bad = _valid_deployment()
    del bad["spec"]["template"]["spec"]["containers"][0]["image"]
    k8s_validate(bad, K8S_VERSIONS[-1])
    assert container_problems(bad["spec"]["template"]["spec"]) == ["container 'x' has no image"]


def k8s_secrets() -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for _, doc in k8s_documents() if doc["kind"] == "Secret"}


def secret_keys(secret: dict) -> set[str]:
    return set(secret.get("stringData") or {}) | set(secret.get("data") or {})


def k8s_secret_file(path: str, mounts: dict[str, tuple[dict, bool]], secrets: dict[str, dict]) -> tuple[str, str]:
    """(Secret name, key) of the file at `path`, which must come from a Secret volume mounted
    read-only on its directory (with `items`, only the listed keys are there, at their paths)."""
    directory, _, filename = path.rpartition("/")
    assert directory in mounts, f"{path}: nothing is mounted on {directory}"
    volume, read_only = mounts[directory]
    assert "secret" in volume, f"{path}: {directory} is not a Secret volume"
    assert read_only, f"{path}: mount {directory} read-only"
    name = volume["secret"]["secretName"]
    assert name in secrets, f"{path}: deploy/k8s defines no Secret {name}"
    items = volume["secret"].get("items")
    files = {i["path"]: i["key"] for i in items} if items else {k: k for k in secret_keys(secrets[name])}
    assert filename in files, f"{path}: not a file of Secret {name}'s volume (it has {sorted(files)})"
    assert files[filename] in secret_keys(secrets[name]), f"{path}: Secret {name} has no key {files[filename]}"
    return name, files[filename]


def k8s_fleet_containers() -> list[tuple[str, dict, dict, argparse.Namespace, dict[str, tuple[dict, bool]]]]:
    """(file, document, container, parsed args, {mountPath: (volume, readOnly)}) per fleet container."""
    docs = k8s_documents()
    configmaps = {doc["metadata"]["name"]: doc.get("data", {}) for _, doc in docs if doc["kind"] == "ConfigMap"}
    found = []
    for name, doc in docs:
        spec = pod_spec(doc)
        if spec is None:
            continue
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            if not c["image"].startswith("fleetlearn"):
                continue
            assert "command" not in c, f"{name}: use args, so the image's tini entrypoint stays PID 1"
            env = container_env(c, configmaps)
            argv = [expand_k8s_vars(a, env) for a in c["args"]]
            unresolved = [a for a in argv if "$(" in a]
            assert not unresolved, f"{name}: unresolved variables {unresolved}"
            mounts = {m["mountPath"]: (volumes[m["name"]], m.get("readOnly", False)) for m in c.get("volumeMounts", [])}
            found.append((name, doc, c, parse_command(argv), mounts))
    return found


def test_k8s_commands_parse_with_the_cli():
    docs = k8s_documents()
    secrets = k8s_secrets()
    pvcs = {doc["metadata"]["name"]: doc for _, doc in docs if doc["kind"] == "PersistentVolumeClaim"}
    roles: dict[str, list] = {}
    for name, doc, c, args, mounts in k8s_fleet_containers():
        roles.setdefault(args.command, []).append((doc, c, args))
        if args.command in ("ingest", "train"):
            assert args.data == SHARED_DATA
            claim = mounts[SHARED_DATA][0]["persistentVolumeClaim"]["claimName"]
            assert "ReadWriteMany" in pvcs[claim]["spec"]["accessModes"], "the store is shared: RWX"
            assert args.redis.startswith(("redis://", "rediss://"))
        for flag in ("token_file", "operator_token_file"):
            path = getattr(args, flag, None)
            if path is not None:
                k8s_secret_file(path, mounts, secrets)

    assert set(roles) == {"ingest", "train", "robot"}
    (ingest_doc, ingest_c, ingest_args), = roles["ingest"]
    assert ingest_doc["spec"]["replicas"] >= 2
    ports = {p["name"]: p["containerPort"] for p in ingest_c["ports"]}
    assert ports == {"grpc": ingest_args.port, "dashboard": ingest_args.dashboard_port}
    for probe in ("readinessProbe", "livenessProbe"):
        assert ingest_c[probe]["tcpSocket"]["port"] == "grpc"
    assert ingest_args.replica_id == "<metadata.name>"
    (robot_doc, robot_c, robot_args), = roles["robot"]
    assert robot_args.robot_id == "<metadata.name>", "robot ids must be distinct per pod"
    host, port = robot_args.learner.split(":")
    services = {doc["metadata"]["name"]: doc for _, doc in docs if doc["kind"] == "Service"}
    assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}
    (trainer_doc, trainer_c, trainer_args), = roles["train"]
    assert trainer_doc["kind"] == "Job"
    assert trainer_c["resources"]["requests"]["cpu"]


def test_k8s_redis_persists_every_write():
    (redis,) = [doc for _, doc in k8s_documents() if doc["kind"] == "StatefulSet" and doc["metadata"]["name"] == "redis"]
    (c,) = redis["spec"]["template"]["spec"]["containers"]
    args = " ".join(c["args"])
    assert "--appendonly yes" in args and "--appendfsync always" in args
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert {m["name"]: m["mountPath"] for m in c["volumeMounts"]}[claim["metadata"]["name"]] == "/data"


def test_k8s_secret_holds_placeholders_only():
    secrets = k8s_secrets()
    assert set(secrets) == {"fleet-tokens", "fleet-tls"}
    for name, secret in secrets.items():
        assert "data" not in secret, name
        for key, value in secret["stringData"].items():
            assert "PLACEHOLDER" in value, f"{name}/{key}: real tokens and keys do not belong in the repository"


def test_k8s_servers_and_robots_use_tls():
    secrets = k8s_secrets()
    tls_secret = secrets["fleet-tls"]
    # The keys cert-manager writes, so that a Certificate can manage the same Secret.
    assert tls_secret.get("type") == "kubernetes.io/tls", "fleet-tls: type kubernetes.io/tls"
    assert secret_keys(tls_secret) == {"tls.crt", "tls.key", "ca.crt"}, "fleet-tls: cert-manager's keys"
    roles = {}
    for name, doc, c, args, mounts in k8s_fleet_containers():
        roles[args.command] = args
        assert tls_problems(args) == [], f"{name}: {tls_problems(args)}"
        files = {flag: k8s_secret_file(path, mounts, secrets)
                 for flag in TLS_FILE_FLAGS if (path := getattr(args, flag, None))}
        if args.command in ("ingest", "learner"):
            assert files["tls_cert"] == ("fleet-tls", "tls.crt") and files["tls_key"] == ("fleet-tls", "tls.key"), name
        if args.command == "robot":
            assert files["tls_ca"] == ("fleet-tls", "ca.crt"), name
            # A robot gets the CA certificate, never the server's private key.
            for volume, _ in mounts.values():
                if volume.get("secret", {}).get("secretName") == "fleet-tls":
                    keys = [i["key"] for i in volume["secret"].get("items", [])]
                    assert keys == ["ca.crt"], f"{name}: mount only ca.crt of fleet-tls on robots, not {keys or 'all'}"
        if args.command == "train":
            assert not files, "the trainer talks only to Redis and the volume"
    assert {"ingest", "robot"} <= set(roles)

    # The `fleet certs` command in tls-secret.yaml's instructions names the host robots dial.
    text = (K8S / "tls-secret.yaml").read_text()
    comment = "\n".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
    commands = [line for line in re.sub(r"\\\n\s*", " ", comment).splitlines() if line.startswith("fleet certs")]
    assert commands, "tls-secret.yaml explains how to make the files with fleet certs"
    for line in commands:
        certs = parse_command(shlex.split(line))
        names = LOOPBACK | set(certs.hosts.split(","))
        assert learner_hosts(roles["robot"]) <= names, f"{line}: the certificate must name {roles['robot'].learner}"


# ---------------------------------------------------------------------------------------------
# compose


@pytest.fixture(scope="module")
def compose_schema() -> dict:
    return builtin_schemas.get_builtin_schema("vendor.compose-spec")


def compose_errors(doc: dict, schema: dict) -> list[str]:
    cls = jsonschema.validators.validator_for(schema)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def compose_unescape(word: str) -> str:
    """Compose interpolation: the file uses none but `$$` (a literal `$`)."""
    assert not re.search(r"(?<!\$)\$(?!\$)", word.replace("$$", "")), f"unexpected interpolation in {word!r}"
    return word.replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_validates(compose, compose_schema):
    assert compose_errors(compose, compose_schema) == []


def test_compose_validator_rejects_broken_files(compose, compose_schema):
    bad = copy.deepcopy(compose)
    bad["services"]["ingest-a"]["comand"] = bad["services"]["ingest-a"].pop("command")
    assert compose_errors(bad, compose_schema)

    bad = copy.deepcopy(compose)
    bad["services"]["robot"]["depends_on"]["ingest-a"]["condition"] = "service_ready"
    assert compose_errors(bad, compose_schema)

    bad = copy.deepcopy(compose)
    bad["services"]["robot"]["deploy"]["replicas"] = [4]
    assert compose_errors(bad, compose_schema)


def test_compose_references_resolve(compose):
    services = compose["services"]
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
            if svc["depends_on"][dep].get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy; it has no healthcheck"
        for secret in svc.get("secrets", []):
            assert (secret if isinstance(secret, str) else secret["source"]) in compose["secrets"]
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if not source.startswith((".", "/")):
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"


def compose_fleet_services(compose) -> list[tuple[str, dict, argparse.Namespace]]:
    found = []
    for name, svc in compose["services"].items():
        if not str(svc.get("image", "")).startswith("fleetlearn"):
            continue
        assert "entrypoint" not in svc, f"{name}: keep the image's tini entrypoint"
        found.append((name, svc, parse_command([compose_unescape(w) for w in svc["command"]])))
    return found


def compose_mounts(svc: dict) -> dict[str, tuple[str, bool]]:
    """{container path: (volume or host path, read-only)} of a service's short-syntax volumes."""
    mounts = {}
    for volume in svc.get("volumes", []):
        source, target, *options = volume.split(":")
        mounts[target] = (source, "ro" in (options[0].split(",") if options else []))
    return mounts


def compose_certs_volumes(compose) -> tuple[str, argparse.Namespace, dict[str, set[str]]]:
    """The service that runs `fleet certs`, its arguments, and what it leaves in each volume:
    the files `fleet certs --out` writes, and those its script copies elsewhere with `cp`."""
    (name, svc, args), = [(n, s, a) for n, s, a in compose_fleet_services(compose) if a.command == "certs"]
    mounts = compose_mounts(svc)
    assert args.out in mounts and not mounts[args.out][1], f"{name}: --out {args.out} must be a writable volume"
    clients = [c for c in (args.clients or "").split(",") if c]
    written = ["ca", "server"] + [f"client-{c}" for c in clients]
    volumes = {mounts[args.out][0]: {f"{stem}{ext}" for stem in written for ext in (".pem", ".key")}}
    script = compose_unescape(svc["command"][2])
    commands = shell_commands(script)
    assert commands[0] == ["set", "-e"], f"{name}: a failed step must fail the service"
    # Files are made once: server.pem (written last) is the guard.
    assert re.search(rf"test -f {re.escape(args.out)}/server\.pem\s*\|\|\s*(exec )?fleet certs", script), \
        f"{name}: run fleet certs only when {args.out}/server.pem is missing (`test -f ... || fleet certs ...`)"
    for words in commands:
        if words[0] != "cp":
            continue
        (src, dst) = words[1:]
        src_dir, _, src_file = src.rpartition("/")
        assert src_file in volumes.get(mounts[src_dir][0], set()), f"{name}: cp {src}: no such file"
        dst_dir, dst_file = (dst.rstrip("/"), src_file) if dst.endswith("/") or dst in mounts else dst.rsplit("/", 1)
        assert dst_dir in mounts, f"{name}: cp to {dst}: not a volume"
        volumes.setdefault(mounts[dst_dir][0], set()).add(dst_file)
    return name, args, volumes


def test_compose_commands_parse_with_the_cli(compose):
    services = compose["services"]
    roles: dict[str, list] = {}
    for name, svc, args in compose_fleet_services(compose):
        roles.setdefault(args.command, []).append((name, args))
        mounts = {v.split(":")[1]: v.split(":")[0] for v in svc.get("volumes", [])}
        if args.command in ("ingest", "train"):
            assert args.data == SHARED_DATA and mounts[SHARED_DATA] == "fleet-data", name
            assert args.redis == "redis://redis:6379/0"
        for flag in ("token_file", "operator_token_file"):
            path = getattr(args, flag, None)
            if path is not None:
                assert path.startswith("/run/secrets/") and path.rsplit("/", 1)[1] in svc["secrets"], (name, path)

    assert set(roles) == {"ingest", "train", "robot", "certs"}
    ingest = dict(roles["ingest"])
    assert len(ingest) == 2
    assert len({a.replica_id for a in ingest.values()}) == 2, "replica ids must differ"
    (robot_name, robot), = roles["robot"]
    assert "$(hostname)" in robot.robot_id, "replicas share one command: ids come from the hostname"
    assert services[robot_name]["deploy"]["replicas"] >= 2
    assert sorted(robot.learner.split(",")) == sorted(f"{n}:{a.port}" for n, a in ingest.items())
    published = [p for n in ingest for p in services[n].get("ports", []) if str(p).endswith(":8080")]
    assert published, "one ingest replica publishes the dashboard"
    (trainer_name, trainer), = roles["train"]
    assert "--nproc-per-node" in services[trainer_name]["command"]


def test_compose_servers_and_robots_use_tls(compose):
    services = compose["services"]
    certs_name, certs, volumes = compose_certs_volumes(compose)
    assert services[certs_name].get("restart", "no") == "no", "a one-shot service"
    names = LOOPBACK | set((certs.hosts or "").split(","))
    roles = {}
    for name, svc, args in compose_fleet_services(compose):
        roles.setdefault(args.command, []).append(args)
        assert tls_problems(args) == [], f"{name}: {tls_problems(args)}"
        mounts = compose_mounts(svc)
        for path in tls_files(args):
            directory, _, filename = path.rpartition("/")
            assert directory in mounts, f"{name}: {path}: nothing is mounted on {directory}"
            volume, read_only = mounts[directory]
            assert read_only, f"{name}: mount {volume} on {directory} read-only"
            assert filename in volumes.get(volume, set()), f"{name}: {path}: {certs_name} puts no {filename} in {volume}"
        if tls_files(args):
            condition = svc.get("depends_on", {}).get(certs_name, {}).get("condition")
            assert condition == "service_completed_successfully", f"{name}: start after {certs_name} has made the files"
        if args.command == "robot":
            # Robots get the CA certificate, not the server's or the CA's private key.
            for volume, _ in mounts.values():
                assert not {f for f in volumes.get(volume, set()) if f.endswith(".key")}, \
                    f"{name}: volume {volume} holds private keys"
            assert learner_hosts(args) <= names, f"{name}: the server certificate must name {args.learner}"
        if args.command == "train":
            assert not any(m[0] in volumes for m in mounts.values()), "the trainer needs no certificate"
    assert {"ingest", "robot"} <= set(roles)


def test_compose_redis_persists_every_write(compose):
    command = " ".join(compose["services"]["redis"]["command"])
    assert "--appendonly yes" in command and "--appendfsync always" in command
    assert any(v.endswith(":/data") for v in compose["services"]["redis"]["volumes"])


# ---------------------------------------------------------------------------------------------
# systemd units and the README's commands


def systemd_exec_start(path: Path) -> list[str]:
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    (line,) = [l for l in text.splitlines() if l.startswith("ExecStart=")]
    # Specifiers and environment variables as systemd would fill them in for an example instance.
    line = line.replace("%i", "lab-arm-1").replace("${FLEET_LEARNER}", "learner.lab:50051")
    return shlex.split(line.removeprefix("ExecStart="))


def test_systemd_units_use_tls():
    units = sorted(SYSTEMD.glob("*.service"))
    assert len(units) == 2
    for unit in units:
        args = parse_command(systemd_exec_start(unit))
        assert tls_problems(args) == [], f"{unit.name}: {tls_problems(args)}"
        assert all(path.startswith("/etc/fleetlearn/tls/") for path in tls_files(args)), unit.name


def readme_fleet_commands(text: str) -> list[list[str]]:
    """`fleet ...` (or `.venv/bin/fleet ...`) invocations in the sh blocks of a Markdown text, up to
    the first shell operator; also after `--` (`kubectl exec ... -- fleet ...`) or in `docker compose exec`."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            words = shell_words(line)
            starts = [i for i, w in enumerate(words) if Path(w).name == "fleet"]
            if not starts:
                continue
            words = words[starts[0]:]
            ends = [i for i, w in enumerate(words) if set(w) <= set(";&|<>")]
            commands.append(words[:ends[0]] if ends else words)
    return commands


def test_readme_commands_parse_and_use_tls():
    commands = readme_fleet_commands(README.read_text())
    assert readme_fleet_commands("```sh\n.venv/bin/fleet robot --sim a \\\n  --learner h:1 | tail -n 1 > x  # c\n```\n") \
        == [[".venv/bin/fleet", "robot", "--sim", "a", "--learner", "h:1"]]
    seen = set()
    for argv in commands:
        args = parse_command(argv)
        seen.add(args.command)
        problems = tls_problems(args)
        if problems == ["no --tls-cert", "no --tls-key", "--insecure"]:
            assert args.host in LOOPBACK and (args.dashboard_host or args.host) in LOOPBACK, \
                f"{shlex.join(argv)}: plaintext only on the loopback"
        elif problems == ["no --tls-ca", "--insecure"]:
            assert learner_hosts(args) <= LOOPBACK, f"{shlex.join(argv)}: plaintext only on the loopback"
        else:
            assert problems == [], f"{shlex.join(argv)}: {problems}"
    assert {"learner", "ingest", "robot", "certs", "token"} <= seen


# ---------------------------------------------------------------------------------------------
# Dockerfile


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, continuation lines joined."""
    instructions, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        word, _, rest = current.partition(" ")
        instructions.append((word.upper(), rest.strip()))
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return instructions


def test_dockerfile_structure():
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    words = [w for w, _ in instructions]
    first_from = words.index("FROM")
    assert set(words[:first_from]) <= {"ARG"}, "only ARG may come before the first FROM"
    stages = [rest.split() for w, rest in instructions if w == "FROM"]
    names = {s[2] for s in stages if len(s) == 3 and s[1].upper() == "AS"}
    for w, rest in instructions:
        m = re.search(r"--from=(\S+)", rest)
        if w == "COPY" and m:
            assert m.group(1) in names, f"COPY --from={m.group(1)}: no such stage"

    final = instructions[len(instructions) - 1 - words[::-1].index("FROM"):]
    final_words = [w for w, _ in final]
    users = [rest for w, rest in final if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image runs as a non-root user"
    entrypoint = json.loads(dict(final)["ENTRYPOINT"])
    cmd = json.loads(dict(final)["CMD"])
    assert entrypoint[0].endswith("tini") and cmd[0] == "fleet"
    assert "fleet" in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert final_words.index("USER") > max(i for i, w in enumerate(final_words) if w == "RUN"), \
        "USER comes after the last RUN that needs root"

    # torch: the version the Dockerfile installs is the one constraints.txt pins.
    args = dict(rest.split("=", 1) for w, rest in instructions if w == "ARG" and "=" in rest)
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert args["TORCH_VERSION"] == pins["torch"]
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu")

    # Files copied from the context exist and are not excluded by .dockerignore.
    ignore = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()
              if l.strip() and not l.startswith("#")]
    for w, rest in instructions:
        if w == "COPY" and "--from" not in rest and rest.split()[0] != ".":
            for src in rest.split()[:-1]:
                assert (ROOT / src).exists(), src
                assert src in ignore or f"!{src}" in ignore or not any(
                    src == p or src.startswith(p + "/") for p in ignore), f"{src} is excluded by .dockerignore"


def test_dockerignore_keeps_the_context_small():
    ignore = {l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()
              if l.strip() and not l.startswith("#")}
    for entry in (".git", ".venv", ".venv*", "runs", "bench/results", "**/__pycache__", ".pytest_cache"):
        assert entry in ignore, entry
    assert "deploy" in ignore, "deploy/secrets must stay out of the build context"
    # ... but not what `pip install .` needs: pyproject.toml, its readme and the packages.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = ["pyproject.toml", "constraints.txt", project["project"]["readme"]]
    needed += [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]
               if (ROOT / p.rstrip("*")).is_dir()]
    needed += ["proto/fleet"]
    for path in needed:
        assert not any(path == p or path.startswith(p + "/") for p in ignore), f"{path} is needed in the image"


def test_dockerfile_requirements_script():
    script = DEPLOY / "pyproject_deps.py"
    out = subprocess.run([sys.executable, str(script), str(ROOT / "pyproject.toml")],
                         check=True, capture_output=True, text=True).stdout.splitlines()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert out == project["dependencies"]
    out = subprocess.run([sys.executable, str(script), str(ROOT / "pyproject.toml"), "dev"],
                         check=True, capture_output=True, text=True).stdout.splitlines()
    assert out == project["dependencies"] + project["optional-dependencies"]["dev"]
    bad = subprocess.run([sys.executable, str(script), str(ROOT / "pyproject.toml"), "nope"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "no extra 'nope'" in bad.stderr


def _image_requirements() -> list[str]:
    """What the Dockerfile's dependency layer installs: the dependencies plus FLEET_EXTRAS' default."""
    args = dict(rest.split("=", 1) for w, rest in dockerfile_instructions(DOCKERFILE.read_text())
                if w == "ARG" and "=" in rest)
    extras = args.get("FLEET_EXTRAS", "").strip('"').split()
    sys.path.insert(0, str(DEPLOY))
    try:
        from pyproject_deps import requirements
    finally:
        sys.path.remove(str(DEPLOY))
    return requirements(str(ROOT / "pyproject.toml"), extras)


def test_image_installs_the_redis_client():
    names = {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower() for r in _image_requirements()}
    assert "redis" in names, "`fleet ingest --redis` and `fleet train` import redis: the image must install it"
