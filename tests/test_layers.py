"""The layering rule of docs/ARCHITECTURE.md, checked on the source: every import (lazy ones inside
functions included) points down, the robot side never reaches learner code, policy/ needs no
more than torch, numpy and safetensors, and no import circle spans two packages or two modules
of different concepts."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lower numbers sit lower. A package may import only packages on a lower layer: two packages on
# one layer (robot_client and learner, sim and policy) know nothing of each other.
LAYERS = {
    "fleet": 0,          # generated gRPC stubs
    "core": 1,           # wire conversions, TLS, EpisodeArrays, durable files, plug-in registries
    "sim": 2, "policy": 2,
    "monitor": 3,        # FLOAT: both sides run it
    "robot_client": 4, "learner": 4,
    "dashboard": 5, "fleet_lerobot": 5,
    "harness": 6,        # starting and stopping fleet processes (tests, benchmarks and the demo use it)
    "bench": 7,          # benchmarks
    "fleetlearn": 8,     # the command line and the demo
}
# What robots run: none of it may import learner or dashboard code, directly or through others.
ROBOT_SIDE = ("robot_client", "policy", "sim", "monitor", "fleet_lerobot.driver", "fleet_lerobot.shim",
              "fleet_lerobot.sim_arm", "fleet_lerobot.devices", "fleet_lerobot.plugins")
POLICY_THIRD_PARTY = {"torch", "numpy", "safetensors"}
POLICY_MAY_USE = {"core.durable", "core.registry"}  # bottom-layer helpers of the standard library only


def _modules() -> dict[str, Path]:
    out = {}
    for package in LAYERS:
        base = ROOT / package if package != "fleet" else ROOT / "proto" / "fleet"
        for path in base.rglob("*.py"):
            rel = path.relative_to(ROOT / "proto" if package == "fleet" else ROOT).with_suffix("")
            name = ".".join(rel.parts).removesuffix(".__init__")
            out[name] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> tuple[set[str], set[str]]:
    """(project modules, third-party top-level names) that `module` imports anywhere in its file."""
    project, external = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                if path.name != "__init__.py":
                    parts = parts[:-1]
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module
            # `from pkg import sub` imports the submodule; `from mod import name` the module.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            resolved = _resolve(target)
            if resolved is not None:
                if resolved != module:
                    project.add(resolved)
            elif target.split(".")[0] not in sys.stdlib_module_names:
                external.add(target.split(".")[0])
    return project, external


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _package(module: str) -> str:
    return module.split(".")[0]


def test_every_import_points_down():
    wrong = []
    for module, (imported, _) in GRAPH.items():
        for target in imported:
            a, b = _package(module), _package(target)
            if a != b and LAYERS[b] >= LAYERS[a]:
                wrong.append(f"{module} -> {target} (layer {LAYERS[a]} -> {LAYERS[b]})")
    assert not wrong, "imports that point sideways or up:\n" + "\n".join(sorted(wrong))


def _closure(start: str) -> dict[str, str]:
    """Every project module `start` imports, directly or not: module -> the module importing it."""
    seen, todo = {start: ""}, [start]
    while todo:
        current = todo.pop()
        for target in GRAPH[current][0]:
            if target not in seen:
                seen[target] = current
                todo.append(target)
    return seen


def test_robot_side_never_reaches_learner_code():
    wrong = []
    for module in MODULES:
        if not module.startswith(ROBOT_SIDE):
            continue
        for target, via in _closure(module).items():
            if _package(target) in ("learner", "dashboard", "bench", "fleetlearn"):
                wrong.append(f"{module} reaches {target} (through {via})")
    assert not wrong, "\n".join(sorted(wrong))


def test_policy_depends_on_torch_numpy_and_safetensors_only():
    wrong = []
    for module, (imported, external) in GRAPH.items():
        if _package(module) != "policy":
            continue
        wrong += [f"{module} imports {name}" for name in external - POLICY_THIRD_PARTY]
        wrong += [f"{module} imports {target}" for target in imported
                  if _package(target) != "policy" and target not in POLICY_MAY_USE]
    assert not wrong, "\n".join(sorted(wrong))


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]
    for root in GRAPH:
        if root in index:
            continue
        work = [(root, iter(sorted(GRAPH[root][0])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(GRAPH[child][0]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


# A package and the modules it gathers (sim/__init__ re-exports its tasks, and they use its
# helpers) form one concept; any other circle is a design fault.
def _allowed(component: list[str]) -> bool:
    packages = {_package(m) for m in component}
    return len(packages) == 1 and next(iter(packages)) in component


def test_no_import_circle_spans_two_concepts():
    wrong = [component for component in _cycles() if not _allowed(component)]
    assert not wrong, "import circles:\n" + "\n".join(" <-> ".join(c) for c in wrong)


@pytest.mark.parametrize("rule", [test_every_import_points_down, test_robot_side_never_reaches_learner_code,
                                  test_no_import_circle_spans_two_concepts])
def test_the_checks_catch_a_violation(rule, monkeypatch):
    """Each rule fails on a planted violation: robot_client importing learner code, learner
    importing the dashboard, and a circle between two learner modules."""
    planted = {
        test_every_import_points_down: ("learner.server", "dashboard.app"),
        test_robot_side_never_reaches_learner_code: ("robot_client.loop", "learner.store"),
        test_no_import_circle_spans_two_concepts: ("learner.versions", "learner.store"),
    }[rule]
    graph = {module: (set(imported), external) for module, (imported, external) in GRAPH.items()}
    graph[planted[0]][0].add(planted[1])
    if rule is test_no_import_circle_spans_two_concepts:
        graph[planted[1]][0].add(planted[0])
    monkeypatch.setitem(globals(), "GRAPH", graph)
    with pytest.raises(AssertionError):
        rule()


MAX_MODULE_LINES, MAX_CLASS_LINES = 450, 250


def _oversized(modules: dict[str, Path]) -> list[str]:
    """Hand-written modules over MAX_MODULE_LINES lines and classes over MAX_CLASS_LINES."""
    found = []
    for name, path in modules.items():
        if name.split(".")[0] == "fleet":  # generated gRPC stubs
            continue
        source = path.read_text()
        if (lines := len(source.splitlines())) > MAX_MODULE_LINES:
            found.append(f"{name}: {lines} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef) and (size := node.end_lineno - node.lineno + 1) > MAX_CLASS_LINES:
                found.append(f"{name}.{node.name}: {size} lines")
    return found


def test_no_module_or_class_outgrows_its_bound(tmp_path):
    oversized = _oversized(MODULES)
    assert not oversized, "split these:\n" + "\n".join(oversized)
    # The check sees a class that grew too long.
    planted = tmp_path / "big.py"
    planted.write_text("class Big:\n" + "    x = 1\n" * MAX_CLASS_LINES)
    assert _oversized({"learner.big": planted}) == [f"learner.big.Big: {MAX_CLASS_LINES + 1} lines"]
