import pytest


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """A real bundle trained in seconds on synthetic 16x16 data (see partitioner.testing)."""
    from partitioner.testing import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("tiny") / "bundle")
