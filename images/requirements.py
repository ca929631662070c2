"""Print requirement lines taken from pyproject.toml, for the image builds.

The Dockerfiles install the dependencies in a layer of their own, before the code is copied,
so a code change does not reinstall torch. The versions come from pyproject.toml only (one
source of truth); this script reads them with the standard library, as the build stage has
nothing else yet.

    python images/requirements.py pyproject.toml                 # dependencies
    python images/requirements.py pyproject.toml city-models     # ... and the extra's
    python images/requirements.py pyproject.toml --only torch,numpy,nvidia-pytriton

An extra that names ``citybrain[other]`` pulls in that extra's lines too.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_SELF = re.compile(r"^\s*citybrain\s*\[([^\]]+)\]\s*$")


def _name(requirement: str) -> str:
    match = _NAME.match(requirement)
    if match is None:
        raise SystemExit(f"cannot read a name from requirement {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def requirements(project: dict[str, object], extras: list[str]) -> list[str]:
    deps = list(project.get("dependencies", []))  # type: ignore[call-overload]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})  # type: ignore[assignment]
    seen: set[str] = set()
    todo = list(extras)
    while todo:
        extra = todo.pop(0)
        if extra in seen:
            continue
        if extra not in optional:
            raise SystemExit(f"pyproject.toml has no extra {extra!r} (it has {sorted(optional)})")
        seen.add(extra)
        for line in optional[extra]:
            nested = _SELF.match(line)
            if nested:
                todo.extend(e.strip() for e in nested.group(1).split(","))
            else:
                deps.append(line)
    return deps


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    project = tomllib.loads(Path(argv[0]).read_text(encoding="utf-8"))["project"]
    args = argv[1:]
    if args[:1] == ["--only"]:
        wanted = [_name(n) for n in args[1].split(",") if n]
        deps = requirements(project, [])
        picked = [d for d in deps if _name(d) in wanted]
        missing = set(wanted) - {_name(d) for d in picked}
        if missing:
            raise SystemExit(f"pyproject.toml's dependencies lack {sorted(missing)}")
        lines = picked
    else:
        extras = [e for arg in args for e in arg.split(",") if e.strip()]
        lines = requirements(project, [e.strip() for e in extras])
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
