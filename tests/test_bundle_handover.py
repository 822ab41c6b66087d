"""Bundles travel to the workers through Ray: the files a server needs, a worker's private copy, the hash check,
and a service that keeps serving (and restarts a worker) after the driver's bundle folder is gone.
The Ray tests share one local Ray for the module."""

import os
import shutil
import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest

from agilenn.bundle import MANIFEST_NAME, Bundle, BundleError, serving_files, write_manifest, write_serving_files

FOREIGN_HASH = "sha256:" + "0" * 64


def test_serving_files_leave_the_checkpoint_behind_and_load_elsewhere_with_the_same_hash(tiny_bundle, tmp_path):
    # the committed bundle has no checkpoint: give a copy one, as exported bundles have
    source = tmp_path / "with-checkpoint"
    shutil.copytree(tiny_bundle.folder, source)
    (source / "partitioner.safetensors").write_bytes(b"torch weights no server reads")
    manifest = tiny_bundle.manifest
    write_manifest(source, manifest.model_copy(
        update={"files": {**manifest.files, "checkpoint": "partitioner.safetensors"}}))
    assert Bundle(source).bundle_hash == tiny_bundle.bundle_hash

    files = serving_files(source)
    assert sorted(files) == sorted([MANIFEST_NAME, *tiny_bundle.manifest.files.values()])
    copy = tmp_path / "copy"
    copy.mkdir()
    loaded = Bundle(write_serving_files(files, copy))
    assert loaded.bundle_hash == tiny_bundle.bundle_hash
    assert "checkpoint" not in loaded.manifest.files


@pytest.mark.parametrize("name", ["../manifest.json", "sub/remote.onnx", "", ".."])
def test_serving_files_are_written_only_as_plain_file_names(tmp_path, name):
    with pytest.raises(BundleError, match="not a plain file name"):
        write_serving_files({name: b"x"}, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_worker_refuses_a_bundle_other_than_the_expected_one_and_leaves_no_folder(tiny_bundle):
    from cloud_worker.service import _BUNDLE_FOLDER_PREFIX, BundleHashMismatch, unpack_bundle

    def own_folders():
        return set(Path(tempfile.gettempdir()).glob(f"{_BUNDLE_FOLDER_PREFIX}{os.getpid()}-*"))

    before = own_folders()
    with pytest.raises(BundleHashMismatch) as refused:
        unpack_bundle(serving_files(tiny_bundle.folder), FOREIGN_HASH, "worker-7")
    message = str(refused.value)
    assert tiny_bundle.bundle_hash in message and FOREIGN_HASH in message and "worker-7" in message
    assert own_folders() == before

    bundle = unpack_bundle(serving_files(tiny_bundle.folder), tiny_bundle.bundle_hash, "worker-7")
    try:
        assert bundle.bundle_hash == tiny_bundle.bundle_hash and bundle.folder != tiny_bundle.folder
    finally:
        shutil.rmtree(bundle.folder)


def test_a_worker_removes_the_folders_of_killed_workers(tiny_bundle):
    import subprocess

    from cloud_worker.service import _BUNDLE_FOLDER_PREFIX, unpack_bundle

    gone = subprocess.Popen(["true"])
    gone.wait()  # a process id that no longer runs
    left_behind = Path(tempfile.mkdtemp(prefix=f"{_BUNDLE_FOLDER_PREFIX}{gone.pid}-"))
    bundle = unpack_bundle(serving_files(tiny_bundle.folder), tiny_bundle.bundle_hash, "worker-0")
    try:
        assert not left_behind.exists()
    finally:
        shutil.rmtree(bundle.folder)
        shutil.rmtree(left_behind, ignore_errors=True)


# -- through Ray --


@pytest.fixture(scope="module")
def images(tiny_bundle):
    return np.random.default_rng(13).integers(0, 256, (6, *tiny_bundle.manifest.input.shape)).astype(np.uint8)


def all_mixed(bundle, address, images) -> list:
    from device_agent import DeviceAgent, DeviceConfig

    with DeviceAgent(bundle, DeviceConfig(cloud=[address], deadline_ms=5000)) as agent:
        assert agent.wait_ready(60)
        return [agent.infer(image) for image in images]


def _store(ray, bundle, name: str):
    """A named BundleStore holding `bundle`'s serving files, as CloudService makes one."""
    from cloud_worker.service import BundleStore

    store = ray.remote(num_cpus=0)(BundleStore).options(name=name).remote()
    ray.get(store.put.remote(serving_files(bundle.folder)), timeout=60)
    return store


@pytest.mark.cluster
def test_a_worker_actor_built_from_ray_carried_files_serves_and_reports_the_hash(local_ray, tiny_bundle, images):
    from cloud_worker.config import WorkerConfig
    from cloud_worker.service import WorkerActor

    ray = local_ray
    store = _store(ray, tiny_bundle, "handover-store-1")
    actor = ray.remote(num_cpus=0.5)(WorkerActor).remote(
        "handover-store-1", tiny_bundle.bundle_hash, WorkerConfig().model_dump_json(), "worker-x", "127.0.0.1", 0)
    try:
        described = ray.get(actor.describe.remote(), timeout=120)
        assert described["bundle_hash"] == tiny_bundle.bundle_hash
        assert Path(described["bundle_folder"]).resolve() != tiny_bundle.folder.resolve()
        assert {r.source for r in all_mixed(tiny_bundle, described["endpoint"], images)} == {"mixed"}
        ray.get(actor.drain.remote(5), timeout=60)
        assert not Path(described["bundle_folder"]).exists()  # drained: its private copy is gone
    finally:
        ray.kill(actor, no_restart=True)
        ray.kill(store, no_restart=True)


@pytest.mark.cluster
def test_a_worker_actor_refuses_a_mismatched_expected_hash_naming_both(local_ray, tiny_bundle):
    from cloud_worker.config import WorkerConfig
    from cloud_worker.service import WorkerActor

    ray = local_ray
    store = _store(ray, tiny_bundle, "handover-store-2")
    actor = ray.remote(num_cpus=0.5)(WorkerActor).remote(
        "handover-store-2", FOREIGN_HASH, WorkerConfig().model_dump_json(), "worker-x", "127.0.0.1", 0)
    with pytest.raises(Exception) as refused:  # Ray wraps the constructor's error in an actor error
        ray.get(actor.describe.remote(), timeout=120)
    message = str(refused.value)
    assert "refuses to serve" in message and tiny_bundle.bundle_hash in message and FOREIGN_HASH in message
    ray.kill(actor, no_restart=True)
    ray.kill(store, no_restart=True)


@pytest.mark.cluster
def test_the_service_serves_from_the_drivers_files_alone_even_after_a_worker_restart(
        local_ray, tiny_bundle, images, tmp_path):
    from cloud_worker.config import ServeConfig
    from cloud_worker.service import CloudService

    driver_folder = tmp_path / "only-on-the-driver"
    shutil.copytree(tiny_bundle.folder, driver_folder)
    service = CloudService(driver_folder, ServeConfig(workers=1, port=0, cpus_per_worker=0.5, endpoint_refresh_s=0.5))
    service.start()
    try:
        (worker,) = service.workers
        assert worker["bundle_hash"] == service.bundle_hash == tiny_bundle.bundle_hash
        worker_folder = Path(worker["bundle_folder"])
        assert worker_folder.resolve() != driver_folder.resolve()
        assert driver_folder.resolve() not in worker_folder.resolve().parents
        shutil.rmtree(driver_folder)  # from here on the bundle exists only in Ray's object store
        assert {r.source for r in all_mixed(tiny_bundle, service.endpoints[0], images)} == {"mixed"}

        os.kill(worker["pid"], signal.SIGKILL)
        restarted = service.wait_restarted(0, worker["pid"], timeout_s=120)
        assert restarted["bundle_hash"] == tiny_bundle.bundle_hash
        assert restarted["bundle_folder"] != worker["bundle_folder"]
        assert not worker_folder.exists()  # the restarted worker removed what its killed predecessor left
        assert {r.source for r in all_mixed(tiny_bundle, service.endpoints[0], images)} == {"mixed"}
    finally:
        service.stop(grace_s=5)
    assert not Path(restarted["bundle_folder"]).exists()
