#!/usr/bin/env python
"""Build deploy/'s three images with no registry, and run them: the cloud image serving over TLS with
device tokens and mutual TLS on an internal container network, the device image streaming test
inputs to both of its workers, health asked from a container, a draining stop.

    sudo .venv/bin/python scripts/images.py [--inputs 500] [--keep] [--json]      (make test-images)

Needs root, podman (rootful, runc), debootstrap and a Debian mirror (the machine's apt sources). The
bases the Dockerfiles name by build argument are made locally (deploy/bases/): Debian bookworm by
debootstrap, imported; a Python base; a Ray base; busybox. Everything made is removed at the end
unless --keep (then a second run reuses the bases). Prints a report; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from agilenn.cli_flags import DEFAULT_BUNDLE

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "agilenn-it"
BASES = {"debian": "localhost/debian-base:bookworm", "python": "localhost/python-base:3.11-bookworm",
         "ray": "localhost/ray-base:py311", "busybox": "localhost/busybox-base:stable"}
IMAGES = {name: f"localhost/{PREFIX}-{name}:test" for name in ("device", "cloud", "bundle")}
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
SERVICE = "agilenn-cloud"  # the cloud container's name on the network, and the name its certificate carries
CLOUD_UID, DEVICE_UID = "1000:100", "10001:10001"


class ImagesError(RuntimeError):
    pass


def podman_environment(folder: Path) -> dict[str, str]:
    """Podman's settings for this kind of machine: runc (crun refuses a hybrid cgroup layout), default
    ulimits root may set (it cannot raise its own), no registry to search."""
    hard_nofile = subprocess.run(["sh", "-c", "ulimit -Hn"], capture_output=True, text=True, check=False).stdout.strip()
    nofile = hard_nofile if hard_nofile.isdigit() else "65536"
    (folder / "containers.conf").write_text(
        '[engine]\nruntime = "runc"\n\n[containers]\n'
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc=32768:32768"]\n')
    (folder / "registries.conf").write_text("unqualified-search-registries = []\n")
    return dict(os.environ, CONTAINERS_CONF=str(folder / "containers.conf"),
                CONTAINERS_REGISTRIES_CONF=str(folder / "registries.conf"))


class Podman:
    def __init__(self, env: dict[str, str], log) -> None:
        self.env, self.log = env, log

    def __call__(self, *args: str, check: bool = True, stdin: bytes | None = None,
                 timeout: float = 600) -> subprocess.CompletedProcess:
        done = subprocess.run(["podman", *args], env=self.env, input=stdin, capture_output=True, timeout=timeout,
                              check=False)
        if check and done.returncode != 0:
            raise ImagesError(f"podman {' '.join(args[:3])} ... failed ({done.returncode}): "
                              f"{done.stderr.decode(errors='replace')[-2000:]}")
        return done

    def exists(self, image: str) -> bool:
        return self("image", "exists", image, check=False).returncode == 0

    def build(self, containerfile: str, tag: str, args: dict[str, str], host_ca: bool) -> None:
        """`host_ca`: mount the host's CA bundle, so that pip reaches PyPI as the host does (the bases
        that install ca-certificates themselves must not have it mounted over theirs)."""
        command = ["build", "--pull=never", "-f", containerfile, "-t", tag]
        for key, value in args.items():
            command += ["--build-arg", f"{key}={value}"]
        if host_ca:
            command += ["-v", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
        started = time.monotonic()
        self(*command, str(ROOT), timeout=900)
        self.log(f"built {tag} in {time.monotonic() - started:.0f} s")


def debian_mirror() -> str:
    """The Debian mirror of this machine's apt sources."""
    for path in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        if path.exists():
            found = re.search(r"^(?:URIs:|deb)\s+(\S+/debian)/?\s", path.read_text() + "\n", re.MULTILINE)
            if found:
                return found.group(1)
    return "http://deb.debian.org/debian"


def make_bases(podman: Podman, work: Path) -> list[str]:
    """The stand-in bases (deploy/bases/), each made only when missing; returns the ones made."""
    made = []
    if not podman.exists(BASES["debian"]):
        rootfs = work / "rootfs"
        started = time.monotonic()
        subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), debian_mirror()],
                       check=True, capture_output=True, timeout=900)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["podman", "import", "-", BASES["debian"]], stdin=tar.stdout, env=podman.env, check=True,
                       capture_output=True, timeout=600)
        tar.wait()
        shutil.rmtree(rootfs)
        podman.log(f"made {BASES['debian']} by debootstrap in {time.monotonic() - started:.0f} s")
        made.append(BASES["debian"])
    for name, depends in (("python", {"DEBIAN_IMAGE": BASES["debian"]}), ("busybox", {"DEBIAN_IMAGE": BASES["debian"]}),
                          ("ray", {"PYTHON_IMAGE": BASES["python"]})):
        if not podman.exists(BASES[name]):
            podman.build(f"deploy/bases/{name}.Containerfile", BASES[name], depends, host_ca=False)
            made.append(BASES[name])
    return made


def build_images(podman: Podman, bundle: str) -> None:
    podman.build("deploy/device.Dockerfile", IMAGES["device"], {"PYTHON_IMAGE": BASES["python"]}, host_ca=True)
    podman.build("deploy/cloud.Dockerfile", IMAGES["cloud"],
                 {"PYTHON_IMAGE": BASES["python"], "RAY_IMAGE": BASES["ray"]}, host_ca=True)
    podman.build("deploy/bundle.Dockerfile", IMAGES["bundle"], {"BUSYBOX_IMAGE": BASES["busybox"], "BUNDLE": bundle},
                 host_ca=False)


def security_material(folder: Path) -> dict[str, Path]:
    """Dev certificates naming the service, a token for one device, each file owned by the uid that reads it."""
    sys.path.insert(0, str(ROOT))
    from cloud_worker.dev_credentials import write_dev_security

    security = write_dev_security(folder / "dev-security", device="cam-1", hosts=[SERVICE])
    certs = security.certificates
    cloud, device = folder / "cloud", folder / "device"
    cloud.mkdir()
    device.mkdir()
    shutil.copy(certs.server_pem, cloud / "tls.crt")
    shutil.copy(certs.server_key, cloud / "tls.key")
    shutil.copy(certs.ca_pem, cloud / "ca.crt")
    shutil.copy(certs.client_pem, cloud / "client.pem")  # for the health check, with mutual TLS
    shutil.copy(certs.client_key, cloud / "client.key")
    shutil.copy(security.tokens_file, cloud / "tokens.yaml")
    shutil.copy(certs.ca_pem, device / "ca.pem")
    shutil.copy(certs.client_pem, device / "client.pem")
    shutil.copy(certs.client_key, device / "client.key")
    shutil.copy(security.token_file, device / "agilenn-token")
    (device / "device.yaml").write_text(
        f"cloud: ['{SERVICE}:50051']\ndeadline_ms: 10000\nconnect_timeout_s: 10\n"
        "cert_file: /etc/agilenn/client.pem\nkey_file: /etc/agilenn/client.key\n")
    for owner, where in ((CLOUD_UID, cloud), (DEVICE_UID, device)):
        uid, gid = (int(x) for x in owner.split(":"))
        for path in [where, *where.iterdir()]:
            os.chown(path, uid, gid)
    return {"cloud": cloud, "device": device}


def offline_labels(bundle: str, images: np.ndarray) -> list[int]:
    from agilenn.bundle import Bundle
    from agilenn.predict import predict

    return predict(Bundle(ROOT / bundle), images).mixed_logits.argmax(1).tolist()


def run(podman: Podman, bundle: str, inputs: int, work: Path) -> dict:
    from agilenn.datasets import load_dataset

    network, volume = f"{PREFIX}-net", f"{PREFIX}-bundle"
    secrets = security_material(work)
    report: dict = {}
    podman("network", "create", "--internal", network)
    podman("volume", "create", volume)
    # the bundle image copies as its own user (1000), as into a pod's emptyDir that user may write
    mountpoint = podman("volume", "inspect", volume, "--format", "{{.Mountpoint}}").stdout.decode().strip()
    os.chown(mountpoint, 1000, 1000)
    # the bundle image's own command fills the volume the cloud reads its bundle from
    podman("run", "--rm", "-v", f"{volume}:/mnt/bundle", IMAGES["bundle"])
    started = time.monotonic()
    podman("run", "-d", "--name", SERVICE, "--network", network, "--shm-size", "1g",
           "-v", f"{volume}:/bundle:ro", "-v", f"{secrets['cloud']}:/etc/agilenn/tls:ro",
           "-v", f"{secrets['cloud']}/tokens.yaml:/etc/agilenn/tokens/tokens.yaml:ro",
           IMAGES["cloud"], "agilenn", "cloud", "serve", "--bundle", "/bundle", "--host", "0.0.0.0", "--port", "50051",
           "--workers", "2", "--tls-cert", "/etc/agilenn/tls/tls.crt", "--tls-key", "/etc/agilenn/tls/tls.key",
           "--client-ca", "/etc/agilenn/tls/ca.crt", "--tokens", "/etc/agilenn/tokens/tokens.yaml")
    health = None
    while time.monotonic() - started < 180:
        health = podman("run", "--rm", "--network", network, "-v", f"{secrets['cloud']}:/etc/agilenn/tls:ro",
                        IMAGES["cloud"], "agilenn", "cloud", "health", "--address", f"{SERVICE}:50051",
                        "--ca", "/etc/agilenn/tls/ca.crt", "--cert", "/etc/agilenn/tls/client.pem",
                        "--key", "/etc/agilenn/tls/client.key", check=False)
        if health.returncode == 0:
            break
        time.sleep(2)
    report["health_from_a_container"] = health.stdout.decode().strip() if health is not None else None
    report["cloud_ready_s"] = round(time.monotonic() - started, 1)
    if health is None or health.returncode != 0:
        logs = podman("logs", SERVICE, check=False)
        raise ImagesError("the cloud container never reported healthy: "
                          + (logs.stdout + logs.stderr).decode(errors="replace")[-3000:])
    test = load_dataset("fashion-mnist").test
    images, labels = test.images[:inputs], np.asarray(test.labels[:inputs])
    stream = io.BytesIO()
    np.save(stream, images)
    device = podman("run", "-i", "--rm", "--network", network, "-v", f"{volume}:/bundle:ro",
                    "-v", f"{secrets['device']}/device.yaml:/etc/agilenn/device.yaml:ro",
                    "-v", f"{secrets['device']}/ca.pem:/etc/agilenn/ca.pem:ro",
                    "-v", f"{secrets['device']}/client.pem:/etc/agilenn/client.pem:ro",
                    "-v", f"{secrets['device']}/client.key:/etc/agilenn/client.key:ro",
                    "-v", f"{secrets['device']}/agilenn-token:/run/secrets/agilenn-token:ro",
                    IMAGES["device"], stdin=stream.getvalue(), check=False, timeout=600)
    results = [json.loads(line) for line in device.stdout.decode().splitlines() if line.strip()]
    logs = [json.loads(line) for line in device.stderr.decode().splitlines() if line.startswith("{")]
    expected = offline_labels(bundle, images)
    report.update(
        device_exit_code=device.returncode, inputs=inputs, answered=len(results),
        device_stderr_tail=device.stderr.decode(errors="replace")[-1500:] if device.returncode else "",
        mixed=sum(r["source"] == "mixed" for r in results),
        workers=sorted({r["worker_id"] for r in results if r["worker_id"]}),
        equal_to_offline=sum(r["label"] == e for r, e in zip(results, expected)),
        accuracy=float(np.mean([r["label"] for r in results] == labels[:len(results)])) if results else None,
        device_warnings=[entry["msg"] for entry in logs if entry.get("level") in ("warning", "error")],
        tls_warnings=[entry["msg"] for entry in logs if "tls" in entry.get("msg", "").lower()
                      and entry.get("level") in ("warning", "error")])
    stopped = time.monotonic()
    podman("stop", "--time", "60", SERVICE)
    report["cloud_stop_s"] = round(time.monotonic() - stopped, 1)
    report["cloud_exit_code"] = int(podman("inspect", SERVICE, "--format", "{{.State.ExitCode}}").stdout.strip())
    cloud_logs = podman("logs", SERVICE, check=False)
    report["cloud_drained"] = b"draining" in cloud_logs.stdout + cloud_logs.stderr
    return report


def cleanup(podman: Podman, made_bases: list[str], keep: bool) -> None:
    podman("rm", "-f", SERVICE, check=False)
    podman("network", "rm", "-f", f"{PREFIX}-net", check=False)
    podman("volume", "rm", "-f", f"{PREFIX}-bundle", check=False)
    if not keep:
        for image in [*IMAGES.values(), *reversed(made_bases)]:
            podman("rmi", "-f", image, check=False)
        podman("image", "prune", "-f", check=False)  # the build stages' dangling layers


def checks(report: dict) -> list[str]:
    """What must hold; each failure as a sentence."""
    n = report["inputs"]
    failed = []
    if report["device_exit_code"] != 0:
        failed.append(f"the device container exited {report['device_exit_code']}")
    if report["answered"] != n or report["mixed"] != n:
        failed.append(f"{report['mixed']} of {n} inputs mixed ({report['answered']} answered)")
    if report["equal_to_offline"] != n:
        failed.append(f"{report['equal_to_offline']} of {n} labels equal offline evaluation")
    if len(report["workers"]) < 2:
        failed.append(f"answers came from {report['workers']}, not both workers")
    if report["tls_warnings"]:
        failed.append(f"TLS warnings in the device's log: {report['tls_warnings'][:3]}")
    if report["cloud_exit_code"] != 0 or not report["cloud_drained"]:
        failed.append(f"the cloud stopped with exit code {report['cloud_exit_code']}, drained: {report['cloud_drained']}")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=500, help="Fashion-MNIST test inputs the device streams")
    parser.add_argument("--bundle", default=DEFAULT_BUNDLE)
    parser.add_argument("--keep", action="store_true", help="keep the images and bases made")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("scripts/images.py: needs root (rootful podman, debootstrap)", file=sys.stderr)
        return 2
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    if missing:
        print(f"scripts/images.py: missing {', '.join(missing)} (apt-get install podman runc debootstrap)",
              file=sys.stderr)
        return 2
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # the containers' users read their mounted files below it
        podman = Podman(podman_environment(work), lambda line: print(line, file=sys.stderr, flush=True))
        made: list[str] = []
        try:
            made = make_bases(podman, work)
            build_images(podman, args.bundle)
            report = run(podman, args.bundle, args.inputs, work)
        finally:
            cleanup(podman, made, args.keep)
    report["seconds"] = round(time.monotonic() - started, 1)
    report["failed"] = checks(report)
    if args.json:
        print(json.dumps(report))
    else:
        print(json.dumps(report, indent=1))
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
