"""The deployment files in deploy/ are checked offline, since no container daemon or cluster is at hand:

- every `agilenn ...` command line in the manifests, the systemd unit and the container files is
  parsed by the real argument parsers, so a wrong or missing flag fails here;
- the built-in Kubernetes objects validate against the schema of a Kubernetes version
  (kubernetes-validate), the RayCluster's pod templates as Pods; the RayCluster itself (a custom
  resource) is checked for structure and for agreement with its Services, NetworkPolicy and Secrets;
- `kubectl kustomize` renders the manifests, with and without the gRPC-probe component;
- `systemd-analyze verify` accepts the device unit and its socket;
- the Dockerfiles parse, run as non-root and copy only what exists and .dockerignore lets through;
- every metric and label the Grafana dashboard queries exists in cloud_worker/metrics.py.

Each check skips when its tool or package is missing (a device-only install runs this file too).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "kubernetes"
UNIT = DEPLOY / "agilenn-device.service"
SOCKET = DEPLOY / "agilenn-device.socket"
DASHBOARD = DEPLOY / "grafana" / "agilenn-workers.json"
DOCKERFILES = {name: DEPLOY / f"{name}.Dockerfile" for name in ("device", "cloud", "bundle")}
# 1.37 is the first schema with the gRPC probe's TLS mode, which grpc-probe/ sets
KUBERNETES_VERSION = "1.37.0"
# the manifests kustomization.yaml applies; secrets.example.yaml and servicemonitor.yaml are applied by hand
APPLIED_MANIFESTS = ("namespace.yaml", "configmap.yaml", "raycluster.yaml", "services.yaml", "networkpolicy.yaml")
# where the unit's ExecStart expects the `agilenn` command; the verify test points it at a stub
UNIT_AGILENN = "/usr/local/bin/agilenn"


def yaml_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def one(path: Path, kind: str, name: str | None = None) -> dict:
    found = [doc for doc in yaml_documents(path)
             if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)]
    assert len(found) == 1, f"{path.name}: expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


# -- command lines ------------------------------------------------------------------------------

_SHELL_OPERATORS = {"&&", "||", ";", "|", "&"}


def commands_in_shell(text: str) -> list[list[str]]:
    """The argument lists after `agilenn` (or a path ending in /agilenn) in shell-like text."""
    found = []
    for line in text.replace("\\\n", " ").splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        for i, word in enumerate(words):
            if word == "agilenn" or word.endswith("/agilenn"):
                rest = []
                for token in words[i + 1:]:
                    if token in _SHELL_OPERATORS:
                        break
                    rest.append(token)
                found.append(rest)
    return found


def commands_in_raycluster() -> dict[str, list[list[str]]]:
    cluster = one(K8S / "raycluster.yaml", "RayCluster")
    pods = {"head": cluster["spec"]["headGroupSpec"]["template"]}
    pods.update({group["groupName"]: group["template"] for group in cluster["spec"]["workerGroupSpecs"]})
    found = {}
    for pod_name, template in pods.items():
        spec = template["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            argv = container.get("command", []) + container.get("args", [])
            # a shell's script (its last argument) is read as shell text; any other command as one line
            text = argv[-1] if "-c" in argv else shlex.join(argv)
            found[f"raycluster.yaml:{pod_name}:{container['name']}"] = commands_in_shell(text)
            probe = container.get("readinessProbe", {}).get("exec")
            if probe:
                found[f"raycluster.yaml:{pod_name}:{container['name']}:readiness"] = commands_in_shell(
                    shlex.join(probe["command"]))
    return found


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined; enough to find ENTRYPOINT and CMD."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, arguments = line.partition(" ")
            pairs.append((instruction.upper(), arguments.strip()))
    return pairs


def dockerfile_argv(path: Path) -> list[str]:
    """The final stage's ENTRYPOINT followed by its CMD (both in JSON form)."""
    entrypoint, cmd = [], []
    for instruction, arguments in dockerfile_instructions(path):
        if instruction == "FROM":
            entrypoint, cmd = [], []
        elif instruction == "ENTRYPOINT":
            entrypoint = json.loads(arguments)
        elif instruction == "CMD":
            cmd = json.loads(arguments)
    return entrypoint + cmd


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Setting -> values (a setting may repeat), continuation lines joined, comments dropped."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text().replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def all_command_lines() -> dict[str, list[list[str]]]:
    found = commands_in_raycluster()
    for path in DOCKERFILES.values():
        argv = dockerfile_argv(path)
        found[path.name] = [argv[1:]] if argv and argv[0] == "agilenn" else []
    found[UNIT.name] = [cmd for line in unit_settings(UNIT)["ExecStart"] for cmd in commands_in_shell(line)]
    return found


# the sources that must hold an `agilenn` command: a parse test that finds none would pass for nothing
EXPECTED_COMMANDS = {"raycluster.yaml:head:ray-head": ["cloud", "serve"], "cloud.Dockerfile": ["cloud", "serve"],
                     "raycluster.yaml:grpc:ray-worker:readiness": ["cloud", "health"],
                     "device.Dockerfile": ["device", "run"], UNIT.name: ["device", "run"]}

COMMAND_LINES = [(source, argv) for source, commands in all_command_lines().items() for argv in commands]


def test_every_expected_command_line_is_found() -> None:
    found = all_command_lines()
    assert {source for source, commands in found.items() if commands} == set(EXPECTED_COMMANDS)
    for source, subcommand in EXPECTED_COMMANDS.items():
        assert [argv[:2] for argv in found[source]] == [subcommand], (source, found[source])


def _parser_for(argv: list[str]):
    """The real parser of `agilenn <argv[0]>`; skips when that side's packages are not installed."""
    modules = {"cloud": "cloud_worker.cli", "device": "device_agent.cli"}
    assert argv and argv[0] in modules, f"no parser known for `agilenn {' '.join(argv)}`"
    try:
        module = __import__(modules[argv[0]], fromlist=["build_parser"])
    except ModuleNotFoundError as exc:
        pytest.skip(f"agilenn {argv[0]} cannot be imported here: {exc}")
    return module.build_parser()


@pytest.mark.parametrize(("source", "argv"), COMMAND_LINES, ids=[f"{s}:{' '.join(a[:2])}" for s, a in COMMAND_LINES])
def test_command_line_parses(source: str, argv: list[str], capsys) -> None:
    parser = _parser_for(argv)
    try:
        parser.parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"{source}: `agilenn {shlex.join(argv)}` does not parse: {capsys.readouterr().err.strip()}")


# -- flags read without argparse (the structure checks below hold even while a flag is unknown) ----

def flag(argv: list[str], name: str) -> str:
    assert argv.count(name) == 1, f"{name} given {argv.count(name)} times in {argv}"
    return argv[argv.index(name) + 1]


def serve_command() -> list[str]:
    (argv,) = commands_in_raycluster()["raycluster.yaml:head:ray-head"]
    return argv


# -- Kubernetes ---------------------------------------------------------------------------------

def pod_templates() -> dict[str, dict]:
    cluster = one(K8S / "raycluster.yaml", "RayCluster")
    templates = {"head": cluster["spec"]["headGroupSpec"]["template"]}
    templates.update({g["groupName"]: g["template"] for g in cluster["spec"]["workerGroupSpecs"]})
    return templates


def as_pod(name: str, template: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, **template.get("metadata", {})},
            "spec": template["spec"]}


def apply_json_patch(document: dict, operations: list[dict]) -> dict:
    """The `replace` operations of an RFC 6902 patch (all the component uses), on a copy."""
    document = json.loads(json.dumps(document))
    for operation in operations:
        assert operation["op"] == "replace", operation
        *parents, last = [int(p) if p.isdigit() else p for p in operation["path"].strip("/").split("/")]
        target = document
        for part in parents:
            target = target[part]
        assert last in target if isinstance(target, dict) else last < len(target), operation["path"]
        target[last] = operation["value"]
    return document


def grpc_probe_raycluster() -> dict:
    component = yaml.safe_load((K8S / "grpc-probe" / "kustomization.yaml").read_text())
    (patch,) = component["patches"]
    assert patch["target"]["kind"] == "RayCluster"
    return apply_json_patch(one(K8S / "raycluster.yaml", "RayCluster"), yaml.safe_load(patch["patch"]))


@pytest.fixture(scope="module")
def validate():
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (the dev extra)")
    if KUBERNETES_VERSION not in kubernetes_validate.utils.all_versions():
        pytest.skip(f"this kubernetes-validate has no schema for Kubernetes {KUBERNETES_VERSION}")

    def check(document: dict, where: str) -> None:
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.path)
            pytest.fail(f"{where}: {document['kind']} {document['metadata'].get('name')}: {path}: {exc.message}")

    return check


@pytest.mark.parametrize("name", [n for n in APPLIED_MANIFESTS if n != "raycluster.yaml"] + ["secrets.example.yaml"])
def test_builtin_objects_validate(name: str, validate) -> None:
    documents = yaml_documents(K8S / name)
    assert documents
    for document in documents:
        validate(document, name)


def test_raycluster_pod_templates_validate_as_pods(validate) -> None:
    for name, template in pod_templates().items():
        validate(as_pod(name, template), f"raycluster.yaml {name}")
    for group in grpc_probe_raycluster()["spec"]["workerGroupSpecs"]:
        validate(as_pod(group["groupName"], group["template"]), "raycluster.yaml with grpc-probe/")


def test_raycluster_structure() -> None:
    cluster = one(K8S / "raycluster.yaml", "RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    # the containers' commands run as written, so the head can start Ray before the driver
    assert cluster["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    head = cluster["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0", "the head runs the driver only"
    (head_container,) = head["template"]["spec"]["containers"]
    (group,) = cluster["spec"]["workerGroupSpecs"]
    (worker_container,) = group["template"]["spec"]["containers"]
    assert head_container["image"] == worker_container["image"], "one image for every Ray node"
    assert head_container["image"].startswith("agilenn-cloud:")
    for container in (head_container, worker_container):
        script = container["args"][0]
        assert "$KUBERAY_GEN_RAY_START_CMD" in script and "ulimit -n" in script, container["name"]
    assert "agilenn" not in worker_container["args"][0], "worker pods run Ray only; the driver places the workers"

    argv = serve_command()
    assert argv[:2] == ["cloud", "serve"] and flag(argv, "--ray-address") == "auto"
    assert flag(argv, "--host") == "0.0.0.0"
    port, workers, metrics = int(flag(argv, "--port")), int(flag(argv, "--workers")), int(flag(argv, "--metrics-port"))
    cpus = float(flag(argv, "--cpus-per-worker"))
    # every worker actor fits on the one serving pod, and only there
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 1
    assert float(group["rayStartParams"]["num-cpus"]) == workers * cpus
    assert float(worker_container["resources"]["requests"]["cpu"]) >= workers * cpus
    ports = {p["name"]: p["containerPort"] for p in worker_container["ports"]}
    assert ports == {**{f"grpc-{i}": port + i for i in range(workers)},
                     **{f"metrics-{i}": metrics + i for i in range(workers)}}
    probe_argv = worker_container["readinessProbe"]["exec"]["command"]
    assert probe_argv[:3] == ["agilenn", "cloud", "health"] and flag(probe_argv, "--address") == f"127.0.0.1:{port}"
    ca_mount = {m["mountPath"]: m["name"] for m in worker_container["volumeMounts"]}["/etc/agilenn/tls"]
    (ca_volume,) = [v for v in group["template"]["spec"]["volumes"] if v["name"] == ca_mount]
    assert ca_volume["secret"]["secretName"] == "agilenn-tls"
    assert [item["key"] for item in ca_volume["secret"]["items"]] == ["ca.crt"]  # never the server's key
    assert flag(probe_argv, "--ca") == "/etc/agilenn/tls/ca.crt"
    (probe_group,) = grpc_probe_raycluster()["spec"]["workerGroupSpecs"]
    probe = probe_group["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe["grpc"] == {"port": port, "mode": "TLS"} and "exec" not in probe

    # the bundle: an init container fills the volume that --bundle names
    (init,) = head["template"]["spec"]["initContainers"]
    assert init["image"].startswith("agilenn-bundle:")
    bundle_dockerfile_cmd = dockerfile_argv(DOCKERFILES["bundle"])
    assert init["command"] == bundle_dockerfile_cmd, "the init container runs the bundle image's own copy command"
    copy_target = init["command"][-1].rstrip("/")
    assert {m["mountPath"].rstrip("/"): m["name"] for m in init["volumeMounts"]}[copy_target] == "bundle"
    mounts = {m["mountPath"]: m for m in head_container["volumeMounts"]}
    assert mounts[flag(argv, "--bundle")]["name"] == "bundle"


def _file_source(path: str, mounts: list[dict], volumes: dict[str, dict]) -> tuple[str, str, str]:
    """(kind, name, key) of the Secret or ConfigMap that puts `path` into the container."""
    directory, key = path.rsplit("/", 1)
    (mount,) = [m for m in mounts if m["mountPath"].rstrip("/") == directory]
    assert "subPath" not in mount, f"{path}: a subPath mount never sees an updated Secret or ConfigMap"
    volume = volumes[mount["name"]]
    if "secret" in volume:
        return "Secret", volume["secret"]["secretName"], key
    return "ConfigMap", volume["configMap"]["name"], key


def test_head_files_come_from_the_secrets_and_configmap() -> None:
    head = pod_templates()["head"]["spec"]
    (container,) = head["containers"]
    volumes = {v["name"]: v for v in head["volumes"]}
    argv = serve_command()
    objects = {(doc["kind"], doc["metadata"]["name"]): doc
               for name in ("secrets.example.yaml", "configmap.yaml") for doc in yaml_documents(K8S / name)}
    for option in ("--tls-cert", "--tls-key", "--tokens", "--config"):
        kind, name, key = _file_source(flag(argv, option), container["volumeMounts"], volumes)
        document = objects[(kind, name)]
        assert key in {**document.get("data", {}), **document.get("stringData", {})}, (option, kind, name, key)
    assert objects[("Secret", "agilenn-tls")]["type"] == "kubernetes.io/tls"


def test_configmap_and_token_placeholder_are_valid_files() -> None:
    from cloud_worker.config import ServeConfig

    serve = one(K8S / "configmap.yaml", "ConfigMap", "agilenn-cloud")["data"]["serve.yaml"]
    config = ServeConfig.model_validate(yaml.safe_load(serve))
    head = pod_templates()["head"]["spec"]
    assert config.worker.drain_timeout_s < head["terminationGracePeriodSeconds"], "draining must end before SIGKILL"
    tokens = pytest.importorskip("cloud_worker.tokens", reason="the token file module")
    placeholder = one(K8S / "secrets.example.yaml", "Secret", "agilenn-tokens")["stringData"]["tokens.yaml"]
    assert tokens.TokenFile.model_validate(yaml.safe_load(placeholder)).tokens == []


def test_services_and_networkpolicy_match_the_worker_ports() -> None:
    argv = serve_command()
    port, workers, metrics = int(flag(argv, "--port")), int(flag(argv, "--workers")), int(flag(argv, "--metrics-port"))
    serving_labels = pod_templates()["grpc"]["metadata"]["labels"]
    services = {doc["metadata"]["name"]: doc for doc in yaml_documents(K8S / "services.yaml")}
    for name, first, prefix in (("agilenn-workers", port, "grpc"), ("agilenn-metrics", metrics, "metrics")):
        spec = services[name]["spec"]
        assert spec["selector"].items() <= serving_labels.items(), f"{name} selects the serving pod"
        assert [(p["port"], p["targetPort"]) for p in spec["ports"]] == [
            (first + i, f"{prefix}-{i}") for i in range(workers)]
    assert services["agilenn-workers"]["spec"]["externalTrafficPolicy"] == "Local"

    policy = one(K8S / "networkpolicy.yaml", "NetworkPolicy")["spec"]
    cluster_labels = policy["podSelector"]["matchLabels"]
    for template in pod_templates().values():
        assert cluster_labels.items() <= template["metadata"]["labels"].items(), "the policy covers every Ray pod"
    open_ranges = []
    for rule in policy["ingress"]:
        if "ports" not in rule:  # all ports: only from the cluster's own pods
            assert rule["from"] == [{"podSelector": {"matchLabels": cluster_labels}}]
            continue
        for entry in rule["ports"]:
            open_ranges.append((entry["port"], entry.get("endPort", entry["port"])))
    assert sorted(open_ranges) == sorted([(port, port + workers - 1), (metrics, metrics + workers - 1)])


def test_device_config_names_every_service_port() -> None:
    from device_agent.config import load_device_config

    config = load_device_config(DEPLOY / "device.yaml")
    service_ports = [p["port"] for p in one(K8S / "services.yaml", "Service", "agilenn-workers")["spec"]["ports"]]
    assert sorted(int(address.rsplit(":", 1)[1]) for address in config.cloud) == sorted(service_ports)


@pytest.fixture(scope="module")
def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed")
    return path


def kustomize(kubectl: str, folder: Path) -> list[dict]:
    result = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_kustomize_renders_the_manifests(kubectl: str, tmp_path: Path) -> None:
    rendered = kustomize(kubectl, K8S)
    expected = [doc for name in APPLIED_MANIFESTS for doc in yaml_documents(K8S / name)]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in rendered) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in expected)
    assert all(d["metadata"].get("namespace") == "agilenn" for d in rendered if d["kind"] != "Namespace")
    # every image comes from the registry kustomization.yaml names
    (cluster,) = [d for d in rendered if d["kind"] == "RayCluster"]
    templates = [cluster["spec"]["headGroupSpec"]["template"]] + [g["template"] for g in cluster["spec"]["workerGroupSpecs"]]
    images = {c["image"] for t in templates for c in t["spec"].get("initContainers", []) + t["spec"]["containers"]}
    registries = {image["newName"].rsplit("/", 1)[0]
                  for image in yaml.safe_load((K8S / "kustomization.yaml").read_text())["images"]}
    assert {image.rsplit("/", 1)[0] for image in images} == registries, images

    # the same with the grpc-probe component (kustomize takes relative paths only)
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = os.path.relpath(K8S, overlay)
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": [base], "components": [f"{base}/grpc-probe"]}))
    (cluster,) = [d for d in kustomize(kubectl, overlay) if d["kind"] == "RayCluster"]
    probe = cluster["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe["grpc"]["mode"] == "TLS"


# -- systemd ------------------------------------------------------------------------------------

def test_device_unit_is_sandboxed_and_takes_its_token_as_a_credential() -> None:
    settings = unit_settings(UNIT)
    for key, value in {"DynamicUser": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "NoNewPrivileges": "yes", "PrivateTmp": "yes", "Restart": "on-failure"}.items():
        assert settings.get(key) == [value], key
    assert settings["RestartSec"]
    (credential,) = settings["LoadCredential"]
    name = credential.split(":", 1)[0]
    (argv,) = [cmd for line in settings["ExecStart"] for cmd in commands_in_shell(line)]
    assert flag(argv, "--token-file") in (f"${{CREDENTIALS_DIRECTORY}}/{name}", f"%d/{name}")
    assert flag(argv, "--config") == "/etc/agilenn/device.yaml"
    assert settings["ExecStart"][0].split()[0] == UNIT_AGILENN
    # standard input is the socket unit's FIFO, by the name that unit gives it
    socket = unit_settings(SOCKET)
    assert flag(argv, "--source") == "-"
    assert settings["StandardInput"] == [f"fd:{socket['FileDescriptorName'][0]}"]
    assert settings["Sockets"] == [SOCKET.name]


def test_systemd_analyze_verifies_the_device_unit(tmp_path: Path) -> None:
    """verify also checks that ExecStart's binary exists: the copies under test point at a stub."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    stub = tmp_path / "agilenn"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    (tmp_path / UNIT.name).write_text(UNIT.read_text().replace(UNIT_AGILENN, str(stub)))
    shutil.copy(SOCKET, tmp_path / SOCKET.name)
    result = subprocess.run([analyze, "verify", str(tmp_path / UNIT.name), str(tmp_path / SOCKET.name)],
                            capture_output=True, text=True, timeout=120, check=False)
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if str(tmp_path) in line or "agilenn-device" in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


# -- container files ----------------------------------------------------------------------------

def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")]
    assert not any(p.startswith("!") for p in patterns), "exceptions are not modelled by this check"
    return patterns


def _pattern_matches(pattern: str, path: str) -> bool:
    """Docker's matching for the pattern forms .dockerignore uses: `*` within one path element,
    a leading `**/` for any number of leading elements."""
    parts = path.split("/")
    if pattern.startswith("**/"):
        rest = pattern[3:].split("/")
        return any(_pattern_matches("/".join(rest), "/".join(parts[i:])) for i in range(len(parts)))
    elements = pattern.split("/")
    return len(elements) == len(parts) and all(fnmatch.fnmatchcase(p, e) for p, e in zip(parts, elements))


def dockerignored(path: str) -> bool:
    """A path is left out of the build context when it or a folder above it matches a pattern."""
    parts = Path(path).parts
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    return any(_pattern_matches(p, prefix) for p in dockerignore_patterns() for prefix in prefixes)


def test_dockerignore_keeps_secrets_and_environments_out() -> None:
    for path in ("certs/ca.key", "tokens.yaml", "deploy/tokens.yaml", "server.key", ".venv/bin/python", ".git/HEAD",
                 "runs/x/checkpoint.pt", "agilenn/__pycache__/codec.cpython-311.pyc"):
        assert dockerignored(path), path
    for path in ("pyproject.toml", "agilenn/codec.py", "bundles/fashion-mnist/remote.onnx", "configs/fashion_mnist.yaml"):
        assert not dockerignored(path), path


def copy_sources(path: Path) -> list[str]:
    """The build-context sources of the COPY instructions (not those copying from another stage),
    with ARG defaults substituted."""
    args: dict[str, str] = {}
    sources = []
    for instruction, arguments in dockerfile_instructions(path):
        if instruction == "ARG" and "=" in arguments:
            key, _, value = arguments.partition("=")
            args[key] = value
        if instruction == "COPY" and "--from=" not in arguments:
            words = [w for w in arguments.split() if not w.startswith("--")]
            for source in words[:-1]:
                sources.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], source))
    return sources


@pytest.mark.parametrize("name", list(DOCKERFILES))
def test_dockerfile_parses_runs_as_non_root_and_copies_what_the_context_holds(name: str) -> None:
    dockerfile = pytest.importorskip("dockerfile", reason="the dockerfile parser (the dev extra)")
    path = DOCKERFILES[name]
    commands = dockerfile.parse_file(str(path))  # BuildKit's own parser: a syntax error raises
    final_stage = commands[max(i for i, c in enumerate(commands) if c.cmd == "FROM"):]
    users = [c.value[0] for c in final_stage if c.cmd == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), f"{path.name} ends as root"
    sources = copy_sources(path)
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"{path.name} copies {source}, which does not exist"
        assert not dockerignored(source.rstrip("/")), f"{path.name} copies {source}, which .dockerignore leaves out"


def test_images_install_their_extra_only() -> None:
    device_runs = " ".join(a for i, a in dockerfile_instructions(DOCKERFILES["device"]) if i == "RUN")
    assert "'.[device]'" in device_runs and "cloud" not in device_runs and "torch" not in device_runs
    cloud = dockerfile_instructions(DOCKERFILES["cloud"])
    cloud_runs = " ".join(a for i, a in cloud if i == "RUN")
    assert "[cloud]" in cloud_runs and "torch" not in cloud_runs
    ray_version = dict(a.split("=", 1) for i, a in cloud if i == "ARG" and "=" in a)["RAY_VERSION"]
    assert '"ray[default]==${RAY_VERSION}"' in cloud_runs, "Ray stays the base image's version"
    assert one(K8S / "raycluster.yaml", "RayCluster")["spec"]["rayVersion"] == ray_version
    # pip needs the README the package metadata names
    for name in ("device", "cloud"):
        assert "README.md" in copy_sources(DOCKERFILES[name])


def test_bundle_image_copies_a_whole_bundle() -> None:
    (source,) = copy_sources(DOCKERFILES["bundle"])
    manifest = json.loads((REPO / source / "manifest.json").read_text())
    for file_name in ["manifest.json", *manifest["files"].values()]:
        assert not dockerignored(f"{source.rstrip('/')}/{file_name}"), file_name


# -- Grafana ------------------------------------------------------------------------------------

def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def test_dashboard_is_well_formed() -> None:
    board = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
    assert {v["name"] for v in board["templating"]["list"]} >= {"datasource", "instance"}


def test_dashboard_queries_only_metrics_and_labels_the_workers_export() -> None:
    pytest.importorskip("prometheus_client", reason="prometheus-client (the cloud extra)")
    from cloud_worker.metrics import WorkerMetrics

    metrics = WorkerMetrics("worker-0")
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "gauge": ("",)}
    exported = {family.name + suffix for family in metrics.registry.collect() for suffix in suffixes[family.type]}
    # labels: the metrics' own, Prometheus' target labels, and the histograms' bucket bound
    labels = {"instance", "job", "le"}
    for collector in getattr(metrics.registry, "_collector_to_names", {}):  # no public API lists label names
        labels.update(getattr(collector, "_labelnames", ()))
    check_labels = len(labels) > 3
    queried = set()
    for query in dashboard_queries():
        names = set(re.findall(r"\bagilenn_\w+", query))
        assert names, f"a query reads no agilenn metric: {query}"
        queried |= names
        used = {label.strip() for group in re.findall(r"\bby \(([^)]*)\)", query) for label in group.split(",")}
        used |= set(re.findall(r"[{,]\s*(\w+)\s*(?:=~|!=|!~|=)", query))
        assert not check_labels or used <= labels, f"unknown labels {used - labels} in {query}"
    assert queried <= exported, f"not exported by cloud_worker/metrics.py: {sorted(queried - exported)}"
    assert any("shed" in name for name in queried), "a panel shows the shed requests"


def test_ray_pods_mount_no_service_account_token_and_keep_their_root_read_only() -> None:
    for name, template in pod_templates().items():
        spec = template["spec"]
        assert spec.get("automountServiceAccountToken") is False, name
        for container in spec["containers"]:
            assert container["securityContext"].get("readOnlyRootFilesystem") is True, (name, container["name"])
            mounts = {mount["mountPath"] for mount in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{name}: Ray writes its sessions under /tmp, an emptyDir"
            assert {"name": "HOME", "value": "/tmp"} in container.get("env", []), name


def test_the_network_policy_lets_the_pods_reach_only_each_other_and_dns() -> None:
    policy = one(K8S / "networkpolicy.yaml", "NetworkPolicy")["spec"]
    assert "Egress" in policy["policyTypes"]
    cluster = {"podSelector": {"matchLabels": policy["podSelector"]["matchLabels"]}}
    for rule in policy["egress"]:
        if rule["to"] == [cluster]:
            continue
        assert {(p["protocol"], p["port"]) for p in rule["ports"]} == {("UDP", 53), ("TCP", 53)}
        assert rule["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}


def test_every_ray_pod_runs_its_worker_actors_at_normal_priority() -> None:
    """Ray starts worker processes at nice 15, which a pod without CAP_SYS_NICE cannot lower: the
    worker actors would yield to everything else on the node and answer devices late."""
    cluster = one(K8S / "raycluster.yaml", "RayCluster")
    spec = cluster["spec"]
    pods = [spec["headGroupSpec"]["template"]] + [group["template"] for group in spec["workerGroupSpecs"]]
    for pod in pods:
        for container in pod["spec"]["containers"]:
            env = {item["name"]: item.get("value") for item in container.get("env", [])}
            assert env.get("RAY_worker_niceness") == "0", container["name"]


def test_every_image_starts_from_a_base_named_by_a_build_argument() -> None:
    """So that a registry mirror, or a local stand-in base, replaces any base without editing a file."""
    bases = {path.name: path for path in (DEPLOY / "bases").glob("*.Containerfile")}
    assert set(bases) == {"python.Containerfile", "ray.Containerfile", "busybox.Containerfile"}
    for name, path in {**DOCKERFILES, **bases}.items():
        instructions = dockerfile_instructions(path)
        args = {a.split("=", 1)[0] for i, a in instructions if i == "ARG"}
        stages = {a.split()[-1] for i, a in instructions if i == "FROM" and " AS " in a.upper()}
        for instruction, arguments in instructions:
            if instruction == "FROM":
                base = arguments.split()[0]
                named = re.fullmatch(r"\$\{(\w+)\}", base)
                assert (named and named.group(1) in args) or base in stages or base == "scratch", \
                    f"{name}: FROM {base}"


def test_every_image_installs_its_packages_pinned_by_one_constraints_file() -> None:
    constraints = (REPO / "deploy" / "constraints.txt").read_text().splitlines()
    pins = dict(line.split("==", 1) for line in constraints if line and not line.startswith("#"))
    assert all(re.fullmatch(r"[0-9][\w.+!-]*", version) for version in pins.values())
    for name in ("device", "cloud"):
        installs = [a for i, a in dockerfile_instructions(DOCKERFILES[name]) if i == "RUN" and "pip install" in a]
        assert installs and all(re.search(r"-c \S*constraints\.txt", a) for a in installs), name
        assert "deploy/constraints.txt" in copy_sources(DOCKERFILES[name])
    # everything the images' extras ask for is pinned (the file holds what they require in turn too)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = pyproject["dependencies"] + pyproject["optional-dependencies"]["device"] \
        + pyproject["optional-dependencies"]["cloud"]
    for requirement in wanted:
        name = re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pins, f"{name} is installed by an image but not pinned in deploy/constraints.txt"
    assert pins["ray"] == dict(a.split("=", 1) for i, a in dockerfile_instructions(DOCKERFILES["cloud"])
                               if i == "ARG" and "=" in a)["RAY_VERSION"]


def test_the_device_image_runs_as_a_user_and_group_that_have_names() -> None:
    runs = " ".join(a for i, a in dockerfile_instructions(DOCKERFILES["device"]) if i == "RUN")
    user = [a for i, a in dockerfile_instructions(DOCKERFILES["device"]) if i == "USER"][-1]
    uid, gid = user.split(":")
    assert f"groupadd --system --gid {gid} agilenn" in runs and f"--uid {uid} --gid {gid}" in runs
