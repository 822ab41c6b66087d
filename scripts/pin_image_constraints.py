#!/usr/bin/env python
"""Write deploy/constraints.txt: every Python package the images install (the core, the `device` and
`cloud` extras, and all they require), pinned to the version installed in this environment.

    .venv/bin/python scripts/pin_image_constraints.py      # after `make setup`; commit the result

Every Dockerfile installs with `-c deploy/constraints.txt`, so an image built today and one built next
month hold the same packages; tests/test_deploy.py checks the file covers what the images install.

    .venv/bin/python scripts/pin_image_constraints.py --names-for device

prints what the device install holds, by name: tests/test_device_install.py compares it with
deploy/device-packages.txt.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = ("device", "cloud")
OUT = ROOT / "deploy" / "constraints.txt"


def closure(roots: list[Requirement]) -> dict[str, str]:
    """name -> installed version of `roots` and everything they require (markers evaluated here)."""
    pinned: dict[str, str] = {}
    todo = list(roots)
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
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


def project_requirements(extras: tuple[str, ...]) -> list[Requirement]:
    """The core's requirements and those of `extras`, as pyproject.toml states them now."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    texts = project["dependencies"] + [text for extra in extras for text in project["optional-dependencies"][extra]]
    return [Requirement(text) for text in texts]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names-for", metavar="EXTRA", nargs="+",
                        help="print the names that the core and these extras install (agilenn included) instead")
    args = parser.parse_args(argv)
    if args.names_for:
        print("\n".join(sorted({"agilenn", *closure(project_requirements(tuple(args.names_for)))})))
        return 0
    pinned = closure(project_requirements(EXTRAS))
    lines = ["# Every package the images install (the core, the device and cloud extras, all they require),",
             "# pinned: written by scripts/pin_image_constraints.py, used by every Dockerfile (pip -c).",
             *(f"{name}=={version}" for name, version in sorted(pinned.items()))]
    OUT.write_text("\n".join(lines) + "\n")
    print(f"{OUT.relative_to(ROOT)}: {len(pinned)} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
