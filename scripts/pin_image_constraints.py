#!/usr/bin/env python
"""Write deploy/constraints.txt: every Python package the images install (the core, the `device` and
`cloud` extras, and all they require), pinned to the version installed in this environment.

    .venv/bin/python scripts/pin_image_constraints.py      # after `make setup`; commit the result

Every Dockerfile installs with `-c deploy/constraints.txt`, so an image built today and one built next
month hold the same packages; tests/test_deploy.py checks the file covers what the images install.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = ("device", "cloud")
OUT = ROOT / "deploy" / "constraints.txt"


def closure(roots: list[Requirement]) -> dict[str, str]:
    """name -> installed version of `roots` and everything they require (markers evaluated here)."""
    pinned: dict[str, str] = {}
    todo = list(roots)
    while todo:
        requirement = todo.pop()
        name = canonical(requirement.name)
        if name in pinned or name == "agilenn":
            continue
        dist = metadata.distribution(requirement.name)
        pinned[name] = dist.version
        for text in dist.requires or []:
            child = Requirement(text)
            extras = set(requirement.extras) or {""}
            if child.marker is None or any(child.marker.evaluate({"extra": extra}) for extra in extras):
                todo.append(child)
    return pinned


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project_requirements() -> list[Requirement]:
    dist = metadata.distribution("agilenn")
    wanted = []
    for text in dist.requires or []:
        requirement = Requirement(text)
        if requirement.marker is None or any(requirement.marker.evaluate({"extra": e}) for e in EXTRAS):
            wanted.append(requirement)
    return wanted


def main() -> int:
    pinned = closure(project_requirements())
    lines = ["# Every package the images install (the core, the device and cloud extras, all they require),",
             "# pinned: written by scripts/pin_image_constraints.py, used by every Dockerfile (pip -c).",
             *(f"{name}=={version}" for name, version in sorted(pinned.items()))]
    OUT.write_text("\n".join(lines) + "\n")
    print(f"{OUT.relative_to(ROOT)}: {len(pinned)} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
