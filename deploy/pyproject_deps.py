"""Print the project's runtime requirements from pyproject.toml, one per line.

The Dockerfile installs these in a layer of their own before it copies the source, so a code
change does not reinstall the dependencies. Extras named on the command line are added
(`python pyproject_deps.py pyproject.toml dev`). Standard library only (Python 3.11+: tomllib).
"""

from __future__ import annotations

import sys
import tomllib


def requirements(pyproject: str, extras: list[str]) -> list[str]:
    with open(pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    reqs = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"no extra {extra!r} in {pyproject} (have: {', '.join(sorted(optional))})")
        reqs.extend(optional[extra])
    return reqs


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: pyproject_deps.py PYPROJECT [EXTRA ...]")
    print("\n".join(requirements(sys.argv[1], [e for e in sys.argv[2:] if e])))
