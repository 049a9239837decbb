"""A real S3 endpoint for tests: moto's server mode in a subprocess, over HTTP.

Used instead of in-process mocks so that the code under test goes through the whole
boto3 stack (signing, retries, timeouts, multipart, presigned URLs) exactly as against
AWS, R2 or MinIO. `moto_server()` starts `python -m moto.server` on a free loopback port,
waits (bounded) until it answers HTTP, yields its endpoint URL and kills it on exit.
`fake_aws_env()` gives boto3 throwaway credentials and hides the developer's own AWS
configuration, so a test can never reach a real account.

Reuse from any test module::

    from tests.support.moto_server import fake_aws_env, moto_server

    @pytest.fixture(scope="session")
    def s3_endpoint():
        with fake_aws_env(), moto_server() as url:
            yield url
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

__all__ = ["MotoServerError", "fake_aws_env", "free_port", "moto_server", "reset_moto"]

#: Credentials and region handed to boto3 while talking to moto.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
#: Variables that would point boto3 somewhere else; removed for the duration.
_HIDDEN_AWS_ENV = ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


class MotoServerError(RuntimeError):
    """The moto server did not start; the message carries the end of its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def fake_aws_env() -> Iterator[None]:
    """Set throwaway AWS credentials and hide real AWS config; restore on exit."""
    saved = {name: os.environ.get(name) for name in (*FAKE_AWS_ENV, *_HIDDEN_AWS_ENV)}
    os.environ.update(FAKE_AWS_ENV)
    for name in _HIDDEN_AWS_ENV:
        os.environ.pop(name, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _answers(url: str) -> bool:
    """Whether an HTTP server answers at `url` (any status code counts)."""
    try:
        with urllib.request.urlopen(f"{url}/moto-api/", timeout=1.0):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _log_tail(log: tempfile._TemporaryFileWrapper[bytes], limit: int = 2000) -> str:
    log.flush()
    log.seek(0)
    return log.read().decode("utf-8", "replace")[-limit:].strip() or "(no output)"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextlib.contextmanager
def moto_server(
    *, host: str = "127.0.0.1", startup_timeout_s: float = 30.0, attempts: int = 3
) -> Iterator[str]:
    """Run `python -m moto.server` on a free port; yield `http://host:port`.

    Waits at most `startup_timeout_s` for the server to answer, then raises
    MotoServerError with the server's output. The port is chosen just before the start,
    so a rare clash with another process is retried on a new port (`attempts` times).
    The server's output goes to a temporary file: it logs every request, and a pipe
    nobody reads would eventually block it.
    """
    last_error = ""
    for _ in range(attempts):
        port = free_port(host)
        url = f"http://{host}:{port}"
        with tempfile.NamedTemporaryFile(prefix="moto-server-", suffix=".log") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                deadline = time.monotonic() + startup_timeout_s
                while True:
                    if proc.poll() is not None:
                        last_error = (
                            f"moto server exited with status {proc.returncode} on port {port}:"
                            f"\n{_log_tail(log)}"
                        )
                        break
                    if _answers(url):
                        yield url
                        return
                    if time.monotonic() > deadline:
                        raise MotoServerError(
                            f"moto server on {url} did not answer within "
                            f"{startup_timeout_s:.0f} s; its output:\n{_log_tail(log)}"
                        )
                    time.sleep(0.1)
            finally:
                _stop(proc)
    raise MotoServerError(f"could not start a moto server after {attempts} tries: {last_error}")


def reset_moto(url: str) -> None:
    """Forget every bucket and object on the server (between tests that share it)."""
    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass
