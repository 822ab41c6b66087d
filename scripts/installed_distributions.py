"""Print the distributions installed beside this interpreter, one normalized name per line, sorted;
the venv's own bootstrap tools (pip, setuptools, wheel) left out. `make test-device` compares a fresh
device install against deploy/device-packages.txt with it."""

from importlib import metadata

from packaging.utils import canonicalize_name  # installed with the device extra (onnxruntime needs it)

BOOTSTRAP = {"pip", "setuptools", "wheel"}


if __name__ == "__main__":
    names = {canonicalize_name(dist.metadata["Name"]) for dist in metadata.distributions()} - BOOTSTRAP
    print("\n".join(sorted(names)))
