"""Print the distributions installed beside this interpreter, one normalized name per line, sorted;
the venv's own bootstrap tools (pip, setuptools, wheel) left out. `make test-device` compares a fresh
device install against deploy/device-packages.txt with it."""

import re
from importlib import metadata

BOOTSTRAP = {"pip", "setuptools", "wheel"}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


if __name__ == "__main__":
    names = {normalized(dist.metadata["Name"]) for dist in metadata.distributions()} - BOOTSTRAP
    print("\n".join(sorted(names)))
