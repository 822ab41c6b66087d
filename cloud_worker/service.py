"""N inference workers as Ray actors, each hosting its own grpc.aio server.

Ray is only the manager here, never on the data path: it places the worker actors
(SPREAD across nodes), restarts one that dies (`max_restarts=-1`; the restarted actor
re-runs its constructor and binds the same port again) and carries the endpoint list to
every worker so that `GetServiceInfo` can tell devices where all workers are.

Bundles travel through Ray too, so a worker needs no shared filesystem: the driver reads the
bundle's serving files once and gives them to a small `BundleStore` actor; every worker gets the
store's handle with the hash it expects and fetches the files in its constructor. Each worker
writes them to a private temporary folder, loads and verifies the bundle there and refuses to
serve a bundle with another hash. A restarted worker fetches them again. Nothing a restart needs
lives in the object store as a constructor argument (ray#53727): a store that Ray restarts comes
back empty and the driver, which keeps the files, puts them in it again at its next refresh.

`CloudService` is the one thin wrapper through which everything touches the cluster.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloud_worker.config import ServeConfig, WorkerConfig

if TYPE_CHECKING:
    from cloud_worker.server import InferenceServer
    from cloud_worker.tokens import TokenFileWatcher

log = logging.getLogger(__name__)

# Ray starts worker processes at nice 15 so that they yield to its own daemons. A worker answers devices
# against a deadline: at nice 15 it yields to every other process on its machine, and on a busy machine
# its answers came 30 times later (benchmarks/RESULTS.md, a busy cloud). A local Ray started here runs
# them at 0; each worker also lowers its own niceness where it may (see serve_at_normal_priority).
WORKER_NICENESS_ENV = "RAY_worker_niceness"


def start_local_ray(**init_kwargs) -> None:
    """ray.init() of a local Ray whose worker processes run at normal priority."""
    import ray

    os.environ.setdefault(WORKER_NICENESS_ENV, "0")
    ray.init(**init_kwargs)


def serve_at_normal_priority() -> int:
    """Lower every thread of this process to niceness 0 when it runs niced (Ray's worker default); on
    Linux each thread has its own. Returns the niceness the process is left at."""
    niceness = os.getpriority(os.PRIO_PROCESS, 0)
    if niceness <= 0:
        return niceness
    try:
        for task in os.listdir("/proc/self/task"):
            try:
                os.setpriority(os.PRIO_PROCESS, int(task), 0)
            except ProcessLookupError:
                continue  # that thread ended meanwhile
    except OSError:  # PermissionError without CAP_SYS_NICE; no /proc
        log.warning("this worker runs at niceness %d (Ray's default for worker processes) and may not lower it: "
                    "on a busy machine its answers will be late. Start Ray with %s=0 in its environment",
                    niceness, WORKER_NICENESS_ENV)
        return niceness
    return os.getpriority(os.PRIO_PROCESS, 0)

# A worker's private bundle folder is named after its process, so that a restarted worker can remove
# what a killed predecessor left behind (a killed process runs no clean-up of its own).
_BUNDLE_FOLDER_PREFIX = "agilenn-worker-bundle-"


class BundleHashMismatch(RuntimeError):
    """The bundle handed to a worker is not the one the driver expects it to serve."""


def _remove_folders_of_dead_workers(parent: Path) -> None:
    for folder in parent.glob(f"{_BUNDLE_FOLDER_PREFIX}*-*"):
        try:
            pid = int(folder.name[len(_BUNDLE_FOLDER_PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        if pid == os.getpid() or _process_exists(pid):
            continue
        shutil.rmtree(folder, ignore_errors=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def unpack_bundle(bundle_files: dict[str, bytes], expected_bundle_hash: str, worker_id: str):
    """Write the files to a new private folder, load the bundle from it (which verifies its content
    hash) and check that it is the bundle the driver expects; returns the Bundle. On any failure the
    folder is removed again."""
    from agilenn.bundle import Bundle, write_serving_files

    parent = Path(tempfile.gettempdir())
    _remove_folders_of_dead_workers(parent)
    folder = Path(tempfile.mkdtemp(prefix=f"{_BUNDLE_FOLDER_PREFIX}{os.getpid()}-", dir=parent))
    try:
        bundle = Bundle(write_serving_files(bundle_files, folder))
        if bundle.bundle_hash != expected_bundle_hash:
            raise BundleHashMismatch(
                f"worker {worker_id} refuses to serve: the bundle it was handed hashes to {bundle.bundle_hash} "
                f"but the driver expects {expected_bundle_hash}")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return bundle


class BundleStore:
    """A bundle's serving files, held in this actor's memory for the workers' constructors. Ray restarts
    it empty when it dies; the service gives it the files again."""

    def __init__(self) -> None:
        self._files: dict[str, bytes] | None = None

    def put(self, files: dict[str, bytes]) -> bool:
        self._files = files
        return True

    def get(self) -> dict[str, bytes] | None:
        return self._files

    def has(self) -> bool:
        return self._files is not None


def fetch_bundle_files(store_name: str, timeout_s: float = 120.0) -> dict[str, bytes]:
    """The files from the BundleStore named `store_name` (in this job's namespace), waiting while it is
    empty (restarted, not yet refilled). A name, not a handle, is what the workers are given: Ray keeps an
    actor handle passed to a constructor in the object store, which is what a restart must not depend on."""
    import ray

    store: Any = ray.get_actor(store_name)  # its methods are untyped: what get returns is stated below
    deadline = time.monotonic() + timeout_s
    while True:
        files: dict[str, bytes] | None = ray.get(store.get.remote(), timeout=timeout_s)
        if files is not None:
            return files
        if time.monotonic() > deadline:
            raise RuntimeError(f"the bundle store stayed empty for {timeout_s:g} s: the service is gone")
        time.sleep(0.2)


class WorkerActor:
    """The body of one Ray worker actor (wrapped with `ray.remote` by CloudService).

    The gRPC server runs in an event loop on a thread of its own, started by the
    constructor, so that a restart by Ray brings the server back without a driver call.
    `bundle_store` names the BundleStore actor; the worker fetches the bundle's serving files from it
    (`agilenn.bundle.serving_files`) and never reads the driver's bundle folder.
    """

    def __init__(self, bundle_store: str, expected_bundle_hash: str, config_json: str,
                 worker_id: str, host: str, port: int, advertise_host: str | None = None, *,
                 tls=None, token_entries: list | None = None) -> None:
        """`tls`: a cloud_worker.security.TlsMaterial (PEM contents) to serve TLS with; `token_entries`: the
        token file's entries (hashes only) when calls need a token. Both arrive through Ray, never as paths."""
        from cloud_worker.security import DeviceLogFilter

        logging.basicConfig(level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s [device %(device)s]: %(message)s")
        for handler in logging.getLogger().handlers:
            handler.addFilter(DeviceLogFilter())  # names the device of the call being handled in every record
        self._tls = tls
        self._token_entries = token_entries
        self.worker_id = worker_id
        serve_at_normal_priority()  # before the server's threads start, which inherit it
        self._config = WorkerConfig.model_validate_json(config_json)
        self._bundle = unpack_bundle(fetch_bundle_files(bundle_store), expected_bundle_hash, worker_id)
        atexit.register(self._remove_bundle_folder)
        self._host = host
        self._advertise_host = advertise_host or _advertised_host(host)
        self._endpoints: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc-loop", daemon=True)
        self._thread.start()
        self._server: InferenceServer | None = None
        self._port = asyncio.run_coroutine_threadsafe(self._start(port), self._loop).result(timeout=120)
        self._endpoints = [self.endpoint()]
        log.info("worker %s serving %s at %s (pid %d)", worker_id, self._bundle.bundle_hash, self.endpoint(),
                 os.getpid())

    async def _start(self, port: int) -> int:
        from cloud_worker.server import create_server
        from cloud_worker.tokens import TokenTable

        tokens = TokenTable(self._token_entries) if self._token_entries is not None else None
        server, bound = create_server(self._bundle, self._config, f"{self._host}:{port}",
                                      worker_id=self.worker_id, endpoints=lambda: list(self._endpoints),
                                      tls=self._tls, tokens=tokens)
        self._server = server
        if server.token_check is not None and _restarted_by_ray():
            # the table this actor was created with may be older than the service's current one (a token
            # revoked since): refuse calls until the service sends the current table
            server.token_check.awaiting_table = True
        await server.start()
        return bound

    def _serving(self) -> InferenceServer:
        if self._server is None:
            raise RuntimeError(f"worker {self.worker_id} is not serving (drained)")
        return self._server

    def set_tokens(self, entries: list) -> int:
        """Serve with this token table from now on (the service pushes every reload); returns its size."""
        async def swap() -> None:
            self._serving().set_tokens(entries)

        asyncio.run_coroutine_threadsafe(swap(), self._loop).result(timeout=30)
        return len(entries)

    def endpoint(self) -> str:
        return f"{self._advertise_host}:{self._port}"

    def describe(self) -> dict:
        return {"worker_id": self.worker_id, "endpoint": self.endpoint(), "pid": os.getpid(),
                "metrics_port": self._serving().metrics_port, "node_ip": _node_ip(),
                "bundle_hash": self._bundle.bundle_hash, "bundle_folder": str(self._bundle.folder)}

    def _remove_bundle_folder(self) -> None:
        shutil.rmtree(self._bundle.folder, ignore_errors=True)

    def modules_loaded(self, prefixes: tuple[str, ...]) -> list[str]:
        """Which of these top-level packages this worker process has imported (tests keep torch out)."""
        import sys

        return sorted(m for m in sys.modules if m.split(".")[0] in prefixes)

    def set_endpoints(self, endpoints: list[str]) -> None:
        self._endpoints = list(endpoints)

    def drain(self, grace_s: float | None = None) -> bool:
        """Graceful shutdown of the gRPC server: answers owed are sent, then it closes."""
        if self._server is None:
            return False
        future = asyncio.run_coroutine_threadsafe(self._server.stop(grace_s), self._loop)
        future.result(timeout=(grace_s if grace_s is not None else self._config.drain_timeout_s) + 10)
        self._server = None
        # the service kills the actor next, and a killed process runs no exit handlers
        self._remove_bundle_folder()
        return True


def _restarted_by_ray() -> bool:
    try:
        import ray

        return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:  # noqa: BLE001 - outside an actor: not restarted
        return False


def _node_ip() -> str:
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - only informative
        return "127.0.0.1"


def _advertised_host(host: str) -> str:
    if host in ("0.0.0.0", "::", "[::]", ""):
        return _node_ip()
    return host


def _free_ports(host: str, count: int) -> list[int]:
    """Ports free on this machine now, held open together so that they differ."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host if host not in ("", "::", "[::]") else "0.0.0.0", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class CloudService:
    """Start, watch and stop the worker actors for one bundle."""

    def __init__(self, bundle_dir: str | Path, config: ServeConfig | None = None, name: str = "agilenn") -> None:
        self.bundle_dir = str(Path(bundle_dir).resolve())
        self.config = config or ServeConfig()
        self.name = name
        self.actors: list = []
        self.workers: list[dict] = []
        self.bundle_hash: str | None = None
        # the bundle's files, kept here to refill the store actor should Ray restart it empty
        self._bundle_files: dict[str, bytes] | None = None
        self._store: Any = None  # the BundleStore actor's handle
        self._started_ray = False
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        self._token_entries: list | None = None  # the table every worker should hold; None: no tokens
        self._token_watcher: TokenFileWatcher | None = None
        self._token_push_lock = threading.Lock()
        self._token_generation = 0  # bumped for every table the driver reads
        self._confirmed_generation: list[int] = []  # per worker, the table generation it confirmed holding

    @property
    def endpoints(self) -> list[str]:
        return [worker["endpoint"] for worker in self.workers]

    def start(self, ready_timeout_s: float = 120.0) -> list[str]:
        import ray

        from agilenn.bundle import Bundle, serving_files

        # fail here, with the bundle's own message, not inside an actor; and read the files once
        self.bundle_hash = Bundle(self.bundle_dir).bundle_hash
        bundle_files = serving_files(self.bundle_dir)
        tls = self._read_security()
        if not ray.is_initialized():
            if self.config.ray_address:
                ray.init(address=self.config.ray_address, logging_level=logging.WARNING)
            else:
                start_local_ray(include_dashboard=False, logging_level=logging.WARNING)
            self._started_ray = True
        cfg = self.config
        embedded = not cfg.ray_address
        if cfg.port == 0 and embedded:
            ports = _free_ports(cfg.host, cfg.workers)  # chosen once: a restarted worker binds its port again
        elif cfg.port == 0:
            ports = [0] * cfg.workers  # other nodes: any free port there; restarts get new ports
        else:
            ports = [cfg.port + i for i in range(cfg.workers)]
        remote_cls = ray.remote(
            num_cpus=cfg.cpus_per_worker, max_restarts=-1, max_task_retries=0, scheduling_strategy="SPREAD",
        )(WorkerActor)
        self._bundle_files = bundle_files
        self._store_name = f"{self.name}-bundle-store-{os.getpid()}-{id(self):x}"
        self._store = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(BundleStore).options(
            name=self._store_name).remote()
        ray.get(self._store.put.remote(bundle_files), timeout=ready_timeout_s)
        for i, port in enumerate(ports):
            worker_cfg = cfg.worker
            if worker_cfg.metrics_port:
                worker_cfg = worker_cfg.model_copy(update={"metrics_port": worker_cfg.metrics_port + i})
            actor = remote_cls.remote(self._store_name, self.bundle_hash, worker_cfg.model_dump_json(),
                                      f"worker-{i}", cfg.host, port, tls=tls, token_entries=self._token_entries)
            self.actors.append(actor)
        self._confirmed_generation = [self._token_generation] * len(self.actors)  # built with the current table
        self.workers = ray.get([actor.describe.remote() for actor in self.actors], timeout=ready_timeout_s)
        ray.get([actor.set_endpoints.remote(self.endpoints) for actor in self.actors], timeout=ready_timeout_s)
        self._refresher = threading.Thread(target=self._refresh_loop, name="endpoint-refresh", daemon=True)
        self._refresher.start()
        if self._token_watcher is not None:
            self._token_watcher.start()
        return self.endpoints

    def _read_security(self):
        """Check the configuration's exposure, read the TLS files and the token file here in the driver
        (workers on other nodes have none of them); returns the TLS material or None."""
        from cloud_worker.config import check_serving_security
        from cloud_worker.security import TlsMaterial
        from cloud_worker.tokens import TokenFileWatcher

        cfg = self.config
        for warning in check_serving_security(cfg):
            log.warning("%s", warning)
        tls = None
        if cfg.tls_cert_file is not None and cfg.tls_key_file is not None:  # both or neither: checked above
            tls = TlsMaterial.from_files(cfg.tls_cert_file, cfg.tls_key_file, cfg.client_ca_file)
        if cfg.tokens_file is not None:
            watcher = self._token_watcher = TokenFileWatcher(cfg.tokens_file, self._push_tokens, cfg.tokens_poll_s)
            self._token_entries = watcher.load()
            if all(entry.revoked for entry in self._token_entries):
                log.warning("%s holds no valid token: every device will be refused until one is added "
                            "(agilenn tokens add --file %s --device NAME)", cfg.tokens_file, cfg.tokens_file)
        return tls

    def reload_tokens(self) -> None:
        """Ask for the token file to be read again and pushed to every worker (SIGHUP does this); returns
        at once. Changes to the file are also picked up by polling, every tokens_poll_s."""
        if self._token_watcher is None:
            raise RuntimeError("this service runs without a token file (tokens_file)")
        self._token_watcher.request_reload()

    def _push_tokens(self, entries: list | None, indices: list[int] | None = None) -> None:
        """Make `entries` the table and give it to every worker; or, with `indices`, give those workers the
        current table. A worker that does not confirm it is pushed to again by the refresh loop, so a
        revocation reaches a worker that missed one push (a restarted worker refuses calls until then)."""
        import ray

        with self._token_push_lock:  # so that a worker never gets an older table after a newer one
            if indices is None:
                self._token_entries = entries
                self._token_generation += 1
                indices = list(range(len(self.actors)))
            entries, generation = self._token_entries, self._token_generation
            pending = {self.actors[i].set_tokens.remote(entries): i for i in indices}
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=30)
            for ref in ready:
                try:
                    ray.get(ref)
                    self._confirmed_generation[pending[ref]] = generation
                except Exception as exc:  # noqa: BLE001 - one unreachable worker must not stop the others
                    log.warning("could not give the token table to worker-%d (retried): %s", pending[ref], exc)
            if len(ready) < len(pending):
                log.warning("%d workers did not confirm the token table within 30 s (retried)",
                            len(pending) - len(ready))

    def _workers_behind_on_tokens(self, restarted: list[int]) -> list[int]:
        """Workers to give the current table: the restarted ones and those that never confirmed it."""
        for i in restarted:
            self._confirmed_generation[i] = -1  # rebuilt with the table of the service's start
        return [i for i, confirmed in enumerate(self._confirmed_generation) if confirmed < self._token_generation]

    def _refresh_loop(self) -> None:
        """Re-read the endpoints (a worker restarted on another node moves) and tell every worker."""
        import ray

        while not self._stop.wait(self.config.endpoint_refresh_s):
            self._refill_store()
            described = []
            for actor, old in zip(self.actors, self.workers):
                try:
                    described.append(ray.get(actor.describe.remote(), timeout=self.config.endpoint_refresh_s))
                except Exception:  # noqa: BLE001 - a worker being restarted keeps its last known endpoint
                    described.append(old)
            changed = [d["endpoint"] for d in described] != self.endpoints
            restarted = [d["worker_id"] for d, old in zip(described, self.workers) if d["pid"] != old["pid"]]
            restarted_indices = [i for i, (d, old) in enumerate(zip(described, self.workers)) if d["pid"] != old["pid"]]
            self.workers = described
            if self._token_entries is not None:
                behind = self._workers_behind_on_tokens(restarted_indices)
                if behind:
                    self._push_tokens(None, behind)  # restarted ones refuse calls until they have it
            if restarted:
                log.warning("Ray restarted %s", ", ".join(restarted))
            if changed or restarted:
                for actor in self.actors:
                    actor.set_endpoints.remote(self.endpoints)

    def _refill_store(self) -> None:
        """Give the store the bundle again when Ray restarted it empty (a restarting worker waits for it)."""
        import ray

        try:
            if not ray.get(self._store.has.remote(), timeout=self.config.endpoint_refresh_s):
                ray.get(self._store.put.remote(self._bundle_files), timeout=30)
                log.warning("the bundle store was restarted empty; it holds the bundle again")
        except Exception as exc:  # noqa: BLE001 - retried at the next refresh
            log.warning("could not reach the bundle store (retried): %s", exc)

    def stop(self, grace_s: float | None = None) -> None:
        """Drain every worker (in-flight requests are answered), then end the actors and, when this
        service started Ray, Ray itself."""
        import ray

        self._stop.set()
        if self._token_watcher is not None:
            self._token_watcher.stop()
        if self._refresher is not None:
            self._refresher.join(timeout=5)
        if self.actors:
            try:
                ray.get([actor.drain.remote(grace_s) for actor in self.actors],
                        timeout=(grace_s if grace_s is not None else self.config.worker.drain_timeout_s) + 30)
            except Exception as exc:  # noqa: BLE001 - stopping goes on regardless
                log.warning("draining workers: %s", exc)
            for actor in self.actors:
                ray.kill(actor, no_restart=True)
            self.actors = []
        if self._store is not None:
            ray.kill(self._store, no_restart=True)
            self._store = None
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    def wait_restarted(self, index: int, old_pid: int, timeout_s: float = 120.0) -> dict:
        """Block until worker `index` runs in a new process (after a crash), and return its description."""
        import ray

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):  # still restarting
                described = ray.get(self.actors[index].describe.remote(), timeout=5)
                if described["pid"] != old_pid:
                    return described
            time.sleep(0.2)
        raise TimeoutError(f"worker {index} was not restarted within {timeout_s} s")
