"""TLS, mutual TLS and per-device tokens on a worker's gRPC server, on loopback (port 0): refusals and
their messages, reloading the token file without a restart, health and reflection, the serving
checks, the device's answer when refused, and the development certificates."""

import ipaddress
import logging
import os
import signal
import stat
import time

import grpc
import numpy as np
import pytest

pytest.importorskip("cryptography", reason="TLS material and dev certificates need the cloud extra")
pytest.importorskip("grpc_health", reason="the worker's server needs the cloud extra")

from forwarding import TcpForwarder
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from agilenn.v1 import inference_pb2, inference_pb2_grpc
from agilenn.v1.tensors import BUNDLE_HASH_METADATA
from cloud_worker.cli import build_config, build_parser, token_reload_handler
from cloud_worker.config import InsecureServingError, ServeConfig, WorkerConfig, check_serving_security
from cloud_worker.dev_credentials import write_dev_certificates
from cloud_worker.security import TlsConfigError, TlsMaterial
from cloud_worker.testing import ServerThread
from cloud_worker.tokens import (
    TokenFile,
    TokenFileWatcher,
    TokenTable,
    issue_token,
    read_token_file,
    revoke_tokens,
    write_token_file,
)
from device_agent import LOCAL_FALLBACK, MIXED, DeviceAgent, DeviceConfig


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return write_dev_certificates(tmp_path_factory.mktemp("certs"), hosts=["worker.example", "10.1.2.3"])


@pytest.fixture(scope="module")
def tls(certs):
    return TlsMaterial.from_files(certs.server_pem, certs.server_key)


@pytest.fixture(scope="module")
def mutual_tls(certs):
    return TlsMaterial.from_files(certs.server_pem, certs.server_key, certs.ca_pem)


@pytest.fixture
def token_file(tmp_path):
    """A token file with one token for cam-17 and one for cam-18: (path, {device: token})."""
    path = tmp_path / "tokens.yaml"
    tokens = TokenFile()
    issued = {device: issue_token(tokens, device)[0] for device in ("cam-17", "cam-18")}
    write_token_file(path, tokens)
    return path, issued


@pytest.fixture(scope="module")
def images(tiny_bundle):
    return np.random.default_rng(11).integers(0, 256, (12, *tiny_bundle.manifest.input.shape)).astype(np.uint8)


def client_credentials(certs, with_certificate=True):
    if with_certificate:
        return grpc.ssl_channel_credentials(certs.ca_pem.read_bytes(), certs.client_key.read_bytes(),
                                            certs.client_pem.read_bytes())
    return grpc.ssl_channel_credentials(certs.ca_pem.read_bytes())


def bearer(token):
    return (("authorization", f"Bearer {token}"),)


def service_info(address, credentials=None, metadata=(), timeout=10):
    channel = (grpc.secure_channel(address, credentials) if credentials is not None
               else grpc.insecure_channel(address))
    with channel:
        return inference_pb2_grpc.InferenceStub(channel).GetServiceInfo(
            inference_pb2.ServiceInfoRequest(), timeout=timeout, metadata=metadata)


def refusal(call):
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


def wait_for(predicate, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# -- TLS and mutual TLS --

def test_a_plaintext_client_gets_nothing_from_a_tls_worker(tiny_bundle, tls, certs):
    with ServerThread(tiny_bundle, tls=tls) as server:
        code, _ = refusal(lambda: service_info(server.address, timeout=5))
        assert code == grpc.StatusCode.UNAVAILABLE
        info = service_info(server.address, client_credentials(certs, with_certificate=False))
    assert info.bundle_hash == tiny_bundle.bundle_hash


def test_with_a_client_ca_a_client_without_a_certificate_it_signed_is_refused(tiny_bundle, mutual_tls, certs,
                                                                               tmp_path):
    other = write_dev_certificates(tmp_path / "other")  # a client certificate from another CA
    strangers = grpc.ssl_channel_credentials(certs.ca_pem.read_bytes(), other.client_key.read_bytes(),
                                             other.client_pem.read_bytes())
    with ServerThread(tiny_bundle, tls=mutual_tls) as server:
        code, _ = refusal(lambda: service_info(server.address, client_credentials(certs, with_certificate=False),
                                               timeout=5))
        assert code == grpc.StatusCode.UNAVAILABLE
        code, _ = refusal(lambda: service_info(server.address, strangers, timeout=5))
        assert code == grpc.StatusCode.UNAVAILABLE
        assert service_info(server.address, client_credentials(certs)).bundle_hash == tiny_bundle.bundle_hash


def test_tls_material_is_checked_where_it_is_read(certs, tmp_path):
    other = write_dev_certificates(tmp_path / "other")
    with pytest.raises(TlsConfigError, match="is not the key of the certificate"):
        TlsMaterial.from_files(certs.server_pem, other.server_key)
    with pytest.raises(TlsConfigError, match="no PEM certificate"):
        TlsMaterial.from_files(certs.server_key, certs.server_key)
    with pytest.raises(TlsConfigError, match="missing.pem"):
        TlsMaterial.from_files(tmp_path / "missing.pem", certs.server_key)
    assert "PRIVATE KEY" not in repr(TlsMaterial.from_files(certs.server_pem, certs.server_key))


# -- tokens --

def test_tls_without_a_token_is_unauthenticated_and_says_what_to_do(tiny_bundle, tls, certs, token_file):
    path, _ = token_file
    with ServerThread(tiny_bundle, tls=tls, tokens=TokenTable(read_token_file(path).tokens)) as server:
        code, message = refusal(lambda: service_info(server.address, client_credentials(certs)))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert "no token" in message and "agilenn tokens add" in message and "--token-file" in message
        metrics = server.server.metrics.exposition().decode()
    assert 'agilenn_auth_refusals_total{reason="missing"} 1.0' in metrics


def test_unknown_malformed_and_forged_tokens_are_unauthenticated(tiny_bundle, tls, certs, token_file):
    path, issued = token_file
    token_id, secret = issued["cam-17"].split(".")
    forged = f"{token_id}.{'A' * len(secret)}"
    unknown = f"{'0' * 16}.{secret}"
    with ServerThread(tiny_bundle, tls=tls, tokens=TokenTable(read_token_file(path).tokens)) as server:
        messages = {}
        for token, words in ((unknown, "token not accepted"), ("not-a-token", "malformed token"),
                             (forged, "token not accepted")):
            code, message = refusal(lambda token=token: service_info(server.address, client_credentials(certs),
                                                                     bearer(token)))
            assert code == grpc.StatusCode.UNAUTHENTICATED, token
            assert words in message and "agilenn tokens add" in message
            messages[token] = message
        # an unknown id and a known id with a wrong secret get the very same answer: ids are not secret
        assert messages[unknown] == messages[forged] and token_id not in messages[forged]
        code, _ = refusal(lambda: service_info(server.address, client_credentials(certs),
                                               (("authorization", f"Basic {issued['cam-17']}"),)))
        assert code == grpc.StatusCode.UNAUTHENTICATED


def test_a_valid_token_streams_every_input_mixed_and_labels_the_metrics(tiny_bundle, mutual_tls, certs, token_file,
                                                                        images, tmp_path):
    path, issued = token_file
    (tmp_path / "device.token").write_text(issued["cam-17"] + "\n")
    with ServerThread(tiny_bundle, tls=mutual_tls, tokens=TokenTable(read_token_file(path).tokens)) as server:
        config = DeviceConfig(cloud=[server.address], deadline_ms=5000, ca_file=str(certs.ca_pem),
                              cert_file=str(certs.client_pem), key_file=str(certs.client_key),
                              token_file=str(tmp_path / "device.token"))
        with DeviceAgent(tiny_bundle, config) as agent:
            assert agent.wait_ready(30)
            results = [agent.infer(image) for image in images]
        metrics = server.server.metrics.exposition().decode()
    assert [r.source for r in results] == [MIXED] * len(images), results[0].reason
    # every input, and the request the link warmed the worker with
    assert f'agilenn_requests_total{{code="OK",device="cam-17",rpc="InferStream"}} {len(images) + 1}.0' in metrics


def test_revoking_in_the_file_refuses_the_token_after_a_reload_by_mtime(tiny_bundle, tls, certs, token_file,
                                                                          tiny_bundle_request):
    path, issued = token_file
    table = TokenTable(read_token_file(path).tokens)
    credentials = client_credentials(certs)
    with ServerThread(tiny_bundle, tls=tls, tokens=table) as server:
        watcher = TokenFileWatcher(path, server.set_tokens, poll_s=0.1)
        watcher.load()
        watcher.start()
        try:
            channel = grpc.secure_channel(server.address, credentials)
            stub = inference_pb2_grpc.InferenceStub(channel)
            stub.GetServiceInfo(inference_pb2.ServiceInfoRequest(), timeout=10, metadata=bearer(issued["cam-17"]))
            # a stream opened before the revocation ends at its next request after it
            outbox = _Outbox()
            stream = stub.InferStream(iter(outbox), metadata=((BUNDLE_HASH_METADATA, tiny_bundle.bundle_hash),)
                                      + bearer(issued["cam-17"]))
            outbox.put(tiny_bundle_request(1))
            assert next(stream).status.code == 0

            tokens = read_token_file(path)
            assert [e.device for e in revoke_tokens(tokens, device="cam-17")] == ["cam-17"]
            write_token_file(path, tokens)
            assert wait_for(lambda: _code(lambda: stub.GetServiceInfo(
                inference_pb2.ServiceInfoRequest(), timeout=10, metadata=bearer(issued["cam-17"])))
                == grpc.StatusCode.PERMISSION_DENIED)
            _, message = refusal(lambda: stub.GetServiceInfo(inference_pb2.ServiceInfoRequest(), timeout=10,
                                                             metadata=bearer(issued["cam-17"])))
            assert "cam-17" in message and "revoked" in message and "agilenn tokens add" in message
            outbox.put(tiny_bundle_request(2))
            with pytest.raises(grpc.RpcError) as ended:
                next(stream)
            assert ended.value.code() == grpc.StatusCode.PERMISSION_DENIED
            outbox.close()
            # the other device's token is untouched
            stub.GetServiceInfo(inference_pb2.ServiceInfoRequest(), timeout=10, metadata=bearer(issued["cam-18"]))
            channel.close()
        finally:
            watcher.stop()
    assert watcher.reloads >= 1


def test_sighup_reloads_the_token_file(tiny_bundle, tls, certs, token_file):
    path, issued = token_file
    credentials = client_credentials(certs)
    with ServerThread(tiny_bundle, tls=tls, tokens=TokenTable(read_token_file(path).tokens)) as server:
        watcher = TokenFileWatcher(path, server.set_tokens, poll_s=3600)  # no polling: only the signal reloads
        watcher.load()
        watcher.start()
        try:
            tokens = read_token_file(path)
            revoke_tokens(tokens, device="cam-18")
            write_token_file(path, tokens)
            time.sleep(0.3)
            service_info(server.address, credentials, bearer(issued["cam-18"]))  # not reloaded yet
            token_reload_handler(watcher.request_reload)(signal.SIGHUP, None)
            assert wait_for(lambda: _code(lambda: service_info(server.address, credentials,
                                                               bearer(issued["cam-18"])))
                            == grpc.StatusCode.PERMISSION_DENIED)
        finally:
            watcher.stop()


def test_a_broken_token_file_keeps_the_previous_table(tmp_path, token_file, caplog):
    path, _ = token_file
    pushed = []
    watcher = TokenFileWatcher(path, pushed.append)
    watcher.load()
    path.write_text("tokens: [{id: nope}]\n")
    with caplog.at_level(logging.ERROR):
        assert not watcher.check()
    assert pushed == [] and "previous table stays in force" in caplog.text


def test_the_token_file_never_holds_a_token(token_file):
    path, issued = token_file
    text = path.read_text()
    for token in issued.values():
        token_id, secret = token.split(".")
        assert token not in text and secret not in text
        assert token_id in text  # the id names the entry
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    entry = read_token_file(path).tokens[0]
    assert entry.kdf == "scrypt" and entry.salt and entry.hash and entry.created and entry.revoked is False


def test_a_restarted_worker_refuses_calls_until_it_is_sent_the_table(tiny_bundle, tls, certs, token_file):
    path, issued = token_file
    with ServerThread(tiny_bundle, tls=tls, tokens=TokenTable(read_token_file(path).tokens)) as server:
        server.server.token_check.awaiting_table = True
        code, message = refusal(lambda: service_info(server.address, client_credentials(certs),
                                                     bearer(issued["cam-17"])))
        assert code == grpc.StatusCode.UNAVAILABLE and "token table" in message
        server.set_tokens(read_token_file(path).tokens)
        service_info(server.address, client_credentials(certs), bearer(issued["cam-17"]))


# -- health and reflection --

def test_health_answers_without_a_token(tiny_bundle, tls, certs, token_file):
    path, _ = token_file
    with (ServerThread(tiny_bundle, tls=tls, tokens=TokenTable(read_token_file(path).tokens)) as server,
          grpc.secure_channel(server.address, client_credentials(certs, with_certificate=False)) as channel):
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""),
                                                           timeout=10).status
    assert status == health_pb2.HealthCheckResponse.SERVING


def _list_services(address):
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                 timeout=10))
    return {service.name for service in answers[0].list_services_response.service}


def test_reflection_is_off_unless_asked_for(tiny_bundle):
    with ServerThread(tiny_bundle) as server:
        code, _ = refusal(lambda: _list_services(server.address))
        assert code == grpc.StatusCode.UNIMPLEMENTED
    with ServerThread(tiny_bundle, WorkerConfig(reflection=True)) as server:
        assert "agilenn.v1.Inference" in _list_services(server.address)


# -- what `cloud serve` accepts --

def serve_args(*flags):
    return build_parser().parse_args(["serve", "--bundle", "b", *flags])


def test_serve_refuses_a_public_host_without_tls_unless_insecure(certs, token_file):
    for host in ("0.0.0.0", "::", "10.0.0.7", "worker.example"):
        with pytest.raises(InsecureServingError, match="without TLS.*--tls-cert.*--insecure"):
            build_config(serve_args("--host", host))
    assert build_config(serve_args("--host", "0.0.0.0", "--insecure")).insecure
    assert build_config(serve_args("--host", "127.0.0.1")).host == "127.0.0.1"
    assert build_config(serve_args("--host", "localhost")).host == "localhost"
    secure = build_config(serve_args("--host", "0.0.0.0", "--tls-cert", str(certs.server_pem), "--tls-key",
                                     str(certs.server_key), "--client-ca", str(certs.ca_pem), "--tokens",
                                     str(token_file[0]), "--reflection"))
    assert secure.tls_cert_file == str(certs.server_pem) and secure.client_ca_file == str(certs.ca_pem)
    assert secure.tokens_file == str(token_file[0]) and secure.worker.reflection
    with pytest.raises(InsecureServingError, match="tokens.*without TLS"):
        build_config(serve_args("--host", "0.0.0.0", "--insecure", "--tokens", "t.yaml"))
    with pytest.raises(InsecureServingError, match="both --tls-cert and --tls-key"):
        build_config(serve_args("--tls-cert", "c.pem"))
    with pytest.raises(InsecureServingError, match="--client-ca"):
        build_config(serve_args("--client-ca", "ca.pem"))
    # tokens without TLS on loopback: allowed, for development
    assert build_config(serve_args("--tokens", "t.yaml")).tokens_file == "t.yaml"
    assert check_serving_security(ServeConfig(host="0.0.0.0", insecure=True))  # a warning, not an error


# -- the device when refused --

def test_a_refused_device_answers_locally_with_reason_auth_and_backs_off(tiny_bundle, tls, certs, token_file,
                                                                           images, tmp_path, caplog):
    path, _ = token_file
    (tmp_path / "wrong.token").write_text(f"{'0' * 16}.{'A' * 43}")
    with ServerThread(tiny_bundle, tls=tls, tokens=TokenTable(read_token_file(path).tokens)) as server:
        config = DeviceConfig(cloud=[server.address], deadline_ms=5000, ca_file=str(certs.ca_pem),
                              token_file=str(tmp_path / "wrong.token"), reconnect_initial_s=0.01, reconnect_max_s=1.0)
        refusals = server.server.metrics.auth_refusals.labels(reason="unknown")
        with caplog.at_level(logging.INFO, logger="device_agent.link"), DeviceAgent(tiny_bundle, config) as agent:
            assert wait_for(lambda: agent._unavailable_reason().startswith("auth"))
            started = time.perf_counter()
            result = agent.infer(images[0])
            assert time.perf_counter() - started < 1.0  # answered at once, not after the deadline
            before = refusals._value.get()
            time.sleep(2.0)
            attempts = refusals._value.get() - before
    assert result.source == LOCAL_FALLBACK and result.reason.startswith("auth")
    assert "UNAUTHENTICATED" in result.reason and "agilenn tokens add" in result.reason
    assert result.label == result.local_label
    # backing off at reconnect_max_s (1 s): about 2 handshakes in 2 s, where doubling from 10 ms would make 7
    assert 1 <= attempts <= 4, attempts
    assert sum("auth: UNAUTHENTICATED" in r.getMessage() for r in caplog.records) == 1  # once per change of state


def test_device_security_settings_are_checked(certs, tmp_path):
    with pytest.raises(ValueError, match="in clear to 10.0.0.7:50051"):
        DeviceConfig(cloud=["10.0.0.7:50051"], token_file="t")
    DeviceConfig(cloud=["127.0.0.1:50051", "localhost:1", "[::1]:2"], token_file="t")  # loopback: development
    DeviceConfig(cloud=["10.0.0.7:50051"], token_file="t", ca_file="ca.pem")
    with pytest.raises(ValueError, match="needs both cert_file"):
        DeviceConfig(ca_file="ca.pem", cert_file="c.pem")
    with pytest.raises(ValueError, match="give ca_file"):
        DeviceConfig(cert_file="c.pem", key_file="k.pem")


def test_a_device_with_a_ca_never_falls_back_to_plaintext(tiny_bundle, certs, images):
    with ServerThread(tiny_bundle) as plaintext:  # a worker without TLS
        config = DeviceConfig(cloud=[plaintext.address], deadline_ms=2000, ca_file=str(certs.ca_pem),
                              reconnect_max_s=0.5)
        with DeviceAgent(tiny_bundle, config) as agent:
            assert not agent.wait_ready(2.0)
            result = agent.infer(images[0])
        metrics = plaintext.server.metrics.exposition().decode()
    assert result.source == LOCAL_FALLBACK and result.reason.startswith("tls: the TLS handshake"), result.reason
    assert 'rpc="InferStream"' not in metrics and 'rpc="Infer"' not in metrics


# -- development certificates and the commands --

def test_the_dev_ca_verifies_the_server_certificate_for_its_names(certs):
    from cryptography import x509
    from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

    ca = x509.load_pem_x509_certificate(certs.ca_pem.read_bytes())
    server = x509.load_pem_x509_certificate(certs.server_pem.read_bytes())
    verifier = PolicyBuilder().store(Store([ca]))
    for name in (x509.DNSName("localhost"), x509.DNSName("worker.example"), x509.IPAddress(ipaddress.ip_address(
            "127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1")), x509.IPAddress(ipaddress.ip_address(
            "10.1.2.3"))):
        verifier.build_server_verifier(name).verify(server, [])
    with pytest.raises(VerificationError):
        verifier.build_server_verifier(x509.DNSName("elsewhere.example")).verify(server, [])
    client = x509.load_pem_x509_certificate(certs.client_pem.read_bytes())
    verifier.build_client_verifier().verify(client, [])
    for name in ("ca.key", "server.key", "client.key"):
        assert stat.S_IMODE(os.stat(certs.folder / name).st_mode) == 0o600


def test_certs_command_writes_the_six_files_and_refuses_to_overwrite(tmp_path, capsys):
    from commands.cli import main

    assert main(["certs", "dev", "--out", str(tmp_path / "c"), "--host", "edge-1"]) == 0
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == sorted(
        ["ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key"])
    assert main(["certs", "dev", "--out", str(tmp_path / "c")]) == 1
    assert "--force" in capsys.readouterr().err


def test_tokens_command_prints_the_token_alone_and_revokes_and_lists(tmp_path, capsys):
    from commands.cli import main

    path = tmp_path / "tokens.yaml"
    assert main(["tokens", "add", "--file", str(path), "--device", "cam-17"]) == 0
    out = capsys.readouterr().out
    token = out.strip()
    assert out == token + "\n" and token not in path.read_text()
    table = TokenTable(read_token_file(path).tokens)
    entry, secret, cached = table.lookup(token)
    assert entry.device == "cam-17" and not cached and table.secret_matches(entry, secret)
    assert main(["tokens", "list", "--file", str(path), "--json"]) == 0
    assert '"device": "cam-17"' in capsys.readouterr().out
    assert main(["tokens", "revoke", "--file", str(path), "--device", "cam-17"]) == 0
    assert read_token_file(path).tokens[0].revoked
    assert main(["tokens", "revoke", "--file", str(path), "--device", "cam-17"]) == 1  # nothing left to revoke


def test_device_labels_stay_bounded():
    from cloud_worker.metrics import DEVICE_LABELS_MAX, OTHER_DEVICES, WorkerMetrics

    metrics = WorkerMetrics("w")
    labels = {metrics.device_label(f"cam-{i}") for i in range(DEVICE_LABELS_MAX + 50)}
    assert len(labels) == DEVICE_LABELS_MAX + 1 and OTHER_DEVICES in labels
    assert metrics.device_label("") == ""


# -- helpers --

class _Outbox:
    """Requests for a client stream, handed over one at a time."""

    def __init__(self):
        import queue

        self._queue = queue.Queue()

    def put(self, request):
        self._queue.put(request)

    def close(self):
        self._queue.put(None)

    def __iter__(self):
        while (request := self._queue.get()) is not None:
            yield request


def _code(call):
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.fixture
def tiny_bundle_request(tiny_bundle):
    images = np.random.default_rng(2).integers(0, 256, (1, *tiny_bundle.manifest.input.shape)).astype(np.uint8)
    _, indices = tiny_bundle.session("device").run(None, {"image": tiny_bundle.prepare(images)})
    payload = tiny_bundle.codec.encode(indices[0])

    def request(request_id):
        return inference_pb2.InferRequest(request_id=request_id, features=inference_pb2.Tensor(
            data=payload, shape=list(tiny_bundle.remote_shape), codec=tiny_bundle.codec.codec_id))

    return request


@pytest.mark.cluster
def test_ray_workers_get_tls_and_tokens_through_ray_and_reloads_reach_them(local_ray, tiny_bundle, tmp_path,
                                                                           images):
    """The driver reads the files; the actors get contents (they would run on nodes without the files),
    and a revocation written to the file reaches every worker without a restart."""
    from cloud_worker.dev_credentials import write_dev_security
    from cloud_worker.service import CloudService

    security = write_dev_security(tmp_path / "secrets", device="cam-ray")
    service = CloudService(tiny_bundle.folder, ServeConfig(workers=2, port=0, cpus_per_worker=0.5, tokens_poll_s=0.2,
                                                           **security.serve_fields()))
    try:
        service.start()
        token = security.token_file.read_text().strip()
        config = DeviceConfig(cloud=[service.endpoints[0]], deadline_ms=5000, **security.device_fields())
        with DeviceAgent(tiny_bundle, config) as agent:
            assert agent.wait_ready(30, workers=2)
            results = [agent.infer(image) for image in images]
        assert [r.source for r in results] == [MIXED] * len(images), results[0].reason
        credentials = grpc.ssl_channel_credentials(security.certificates.ca_pem.read_bytes(),
                                                   security.certificates.client_key.read_bytes(),
                                                   security.certificates.client_pem.read_bytes())
        tokens = read_token_file(security.tokens_file)
        revoke_tokens(tokens, device="cam-ray")
        write_token_file(security.tokens_file, tokens)
        for endpoint in service.endpoints:
            assert wait_for(lambda endpoint=endpoint: _code(lambda: service_info(endpoint, credentials, bearer(token)))
                            == grpc.StatusCode.PERMISSION_DENIED, timeout_s=20), endpoint
    finally:
        service.stop(grace_s=5)


def test_the_health_probe_speaks_tls_and_needs_no_token(tiny_bundle, certs, mutual_tls, token_file):
    """`agilenn cloud health`: what the deployment's readiness probe runs in the worker's container."""
    from cloud_worker.cli import main as cloud_main

    path, _ = token_file
    with ServerThread(tiny_bundle, tls=mutual_tls, tokens=TokenTable(read_token_file(path).tokens)) as server:
        tls_args = ["--ca", str(certs.ca_pem), "--cert", str(certs.client_pem), "--key", str(certs.client_key)]
        assert cloud_main(["health", "--address", server.address, *tls_args]) == 0
        # plaintext to a TLS worker, and a mutual-TLS worker without a client certificate: not serving
        assert cloud_main(["health", "--address", server.address, "--timeout-s", "1"]) == 1
        assert cloud_main(["health", "--address", server.address, "--ca", str(certs.ca_pem),
                           "--timeout-s", "1"]) == 1
    assert cloud_main(["health", "--address", server.address, *tls_args, "--timeout-s", "0.5"]) == 1


def test_a_token_file_holding_more_than_the_token_is_refused_naming_the_file(tmp_path, token_file):
    from agilenn.config_files import ConfigFileError
    from device_agent.agent import read_credentials

    _, issued = token_file
    path = tmp_path / "cam-17.token"
    path.write_text(f"# cam-17\n{issued['cam-17']}\n")
    with pytest.raises(ConfigFileError, match="cam-17.token holds more than one token"):
        read_credentials(DeviceConfig(cloud=["127.0.0.1:1"], token_file=str(path)))
    path.write_text(issued["cam-17"] + "\n")
    assert read_credentials(DeviceConfig(cloud=["127.0.0.1:1"], token_file=str(path)))[1] == issued["cam-17"]


def test_a_refused_token_is_logged_by_its_id_only_when_well_formed(tiny_bundle, token_file, caplog):
    path, issued = token_file
    secret = issued["cam-17"].partition(".")[2]
    with (ServerThread(tiny_bundle, tokens=TokenTable(read_token_file(path).tokens)) as server,
          grpc.insecure_channel(server.address) as channel, caplog.at_level(logging.WARNING)):
        stub = inference_pb2_grpc.InferenceStub(channel)
        with pytest.raises(grpc.RpcError):
            stub.GetServiceInfo(inference_pb2.ServiceInfoRequest(), timeout=5,
                                metadata=(("authorization", f"Bearer {secret}"),))  # the secret alone
    assert secret[:8] not in caplog.text and "(token -)" in caplog.text


def test_workers_that_missed_a_token_table_are_pushed_it_again():
    from cloud_worker.service import CloudService

    service = CloudService.__new__(CloudService)  # only the bookkeeping, no cluster
    service._token_generation = 3
    service._confirmed_generation = [3, 2, 3]
    assert service._workers_behind_on_tokens(restarted=[]) == [1]
    assert service._workers_behind_on_tokens(restarted=[2]) == [1, 2]


def test_a_flood_of_wrong_secrets_for_a_known_id_does_not_crowd_out_real_devices(tiny_bundle, tmp_path):
    """300 calls with a known id and wrong secrets, while three devices make their first (uncached) calls:
    the id is locked out after a few failed checks, the devices' checks wait their turn, all are served."""
    import concurrent.futures

    from cloud_worker.tokens import TokenFile, write_token_file

    tokens = TokenFile()
    issued = {name: issue_token(tokens, name)[0] for name in ("victim", "cam-1", "cam-2", "cam-3")}
    write_token_file(tmp_path / "tokens.yaml", tokens)
    table = TokenTable(read_token_file(tmp_path / "tokens.yaml").tokens)
    victim_id = issued["victim"].partition(".")[0]
    with ServerThread(tiny_bundle, tokens=table) as server, grpc.insecure_channel(server.address) as channel:
        attacker = inference_pb2_grpc.InferenceStub(channel)

        def call(token: str, stub=attacker):
            try:
                stub.GetServiceInfo(inference_pb2.ServiceInfoRequest(), timeout=30,
                                    metadata=(("authorization", f"Bearer {token}"),))
                return "ok"
            except grpc.RpcError as exc:
                return exc.code().name

        own_connection = [("grpc.use_local_subchannel_pool", 1)]  # channels to one address share a connection otherwise
        device_channels = [grpc.insecure_channel(server.address, options=own_connection) for _ in range(3)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
            flood = [pool.submit(call, f"{victim_id}.{'A' * 43}") for _ in range(300)]
            devices = [pool.submit(call, issued[name], inference_pb2_grpc.InferenceStub(own))
                       for name, own in zip(("cam-1", "cam-2", "cam-3"), device_channels)]
            device_outcomes = [future.result() for future in devices]
            flood_outcomes = [future.result() for future in flood]
        metrics = server.server.metrics.exposition().decode()
        for own in device_channels:
            own.close()
    assert device_outcomes == ["ok", "ok", "ok"]
    assert set(flood_outcomes) == {"UNAUTHENTICATED"}
    assert 'agilenn_auth_refusals_total{reason="locked"}' in metrics


def test_a_connection_that_fails_checks_for_many_ids_is_locked_out(tiny_bundle, tmp_path):
    """Wrong secrets for five different known ids on one connection: the sixth id is refused unchecked on
    that connection, and served on another."""
    from cloud_worker.tokens import TokenFile, write_token_file

    tokens = TokenFile()
    issued = [issue_token(tokens, f"cam-{i}")[0] for i in range(7)]
    write_token_file(tmp_path / "tokens.yaml", tokens)
    table = TokenTable(read_token_file(tmp_path / "tokens.yaml").tokens)

    def call(channel, token: str) -> tuple[str, str]:
        try:
            inference_pb2_grpc.InferenceStub(channel).GetServiceInfo(
                inference_pb2.ServiceInfoRequest(), timeout=30, metadata=(("authorization", f"Bearer {token}"),))
            return "ok", ""
        except grpc.RpcError as exc:
            return exc.code().name, exc.details()

    with ServerThread(tiny_bundle, tokens=table) as server, grpc.insecure_channel(server.address) as prober:
        for token in issued[:5]:
            assert call(prober, token.partition(".")[0] + "." + "B" * 43)[0] == "UNAUTHENTICATED"
        code, message = call(prober, issued[5])
        with grpc.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)]) as other:
            assert call(other, issued[6]) == ("ok", "")
    assert code == "UNAUTHENTICATED" and "too many failed token checks" in message


def test_advertised_endpoints_are_verified_against_the_name_the_device_was_given(tiny_bundle, tls, certs,
                                                                               images, caplog):
    # the certificate names localhost (and 127.0.0.1), not 127.0.0.2, where the second worker is advertised
    with ServerThread(tiny_bundle, tls=tls, worker_id="w0") as first, \
            ServerThread(tiny_bundle, tls=tls, worker_id="w1") as second:
        advertised = TcpForwarder(second.port, host="127.0.0.2")
        try:
            for server in (first, second):
                server.server.servicer._endpoints = lambda: [f"localhost:{first.port}", advertised.address]
            config = DeviceConfig(cloud=[f"localhost:{first.port}"], deadline_ms=5000, ca_file=str(certs.ca_pem))
            with caplog.at_level("WARNING"), DeviceAgent(tiny_bundle, config) as agent:
                assert agent.wait_ready(30, workers=2), [link.reason for link in agent._links]
                results = [agent.infer(image) for image in images[:8]]
        finally:
            advertised.close()
    assert {r.worker_id for r in results} == {"w0", "w1"} and all(r.source == MIXED for r in results)
    assert not [record for record in caplog.records if "tls" in record.getMessage().lower()]
