"""The embedded stack's secrets: generated once per AUDIOFLOW_HOME, kept in `secrets.json`.

`audioflow up` and `make demo` need an API key, the internal progress token and the Prefect
server's auth string, and none of them may have a default value (a constant in the source
is known to everyone). They are drawn from `secrets.token_urlsafe` on the first start and
reused afterwards, so that a restarted stack, its CLI and the flows it left in the database
agree. The file is created with mode 0600 in one `os.open(O_CREAT | O_EXCL)`: it is never
world-readable, not even between creating and writing it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from core.settings import SettingsError

SECRETS_FILE = "secrets.json"
#: The user name in the Prefect auth string (`user:password`, HTTP basic auth).
PREFECT_USER = "audioflow"


class SecretsFileError(SettingsError):
    """The secrets file exists but cannot be used; the message says what to do (the CLI
    shows it as a configuration error)."""


@dataclass(frozen=True)
class StackSecrets:
    """What guards an embedded stack: see README, "Threat model"."""

    #: `X-API-Key` of the public endpoints (AUDIOFLOW_API_KEY).
    api_key: str
    #: Bearer token of `/internal/workflow-progress` (AUDIOFLOW_INTERNAL_TOKEN).
    internal_token: str
    #: `user:password` of the embedded Prefect server (PREFECT_API_AUTH_STRING on its
    #: clients; `cli.stack.start_prefect_server` gives the server the same value as
    #: PREFECT_SERVER_API_AUTH_STRING).
    prefect_auth_string: str

    @classmethod
    def generate(cls) -> StackSecrets:
        return cls(
            api_key=secrets.token_urlsafe(32),
            internal_token=secrets.token_urlsafe(32),
            prefect_auth_string=f"{PREFECT_USER}:{secrets.token_urlsafe(32)}",
        )

    def env(self) -> dict[str, str]:
        """The variables that hand these secrets to the API, workers, flows and CLI."""
        return {
            "AUDIOFLOW_API_KEY": self.api_key,
            "AUDIOFLOW_INTERNAL_TOKEN": self.internal_token,
            "PREFECT_API_AUTH_STRING": self.prefect_auth_string,
        }


def secrets_path(home: Path) -> Path:
    """`$AUDIOFLOW_HOME/secrets.json`."""
    return home / SECRETS_FILE


def read_secrets(home: Path) -> StackSecrets | None:
    """The stack's secrets, or None when the file does not exist yet."""
    path = secrets_path(home)
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SecretsFileError(f"cannot read {path}: {exc}") from exc
    try:
        data = json.loads(raw)
        loaded = StackSecrets(**{k: str(data[k]) for k in StackSecrets.__dataclass_fields__})
    except (ValueError, KeyError, TypeError) as exc:
        raise SecretsFileError(
            f"{path} is not a valid secrets file ({exc}); delete it to generate new secrets"
        ) from exc
    if not all(asdict(loaded).values()):
        raise SecretsFileError(f"{path} has an empty secret; delete it to generate new ones")
    return loaded


def ensure_secrets(home: Path) -> StackSecrets:
    """The secrets of the stack rooted at `home`, generated and written on first use.

    Two processes starting at once both end with the same secrets: the file is created
    exclusively, and whoever loses the race reads the winner's.
    """
    existing = read_secrets(home)
    if existing is not None:
        return existing
    home.mkdir(parents=True, exist_ok=True)
    path = secrets_path(home)
    fresh = StackSecrets.generate()
    # Written to a private temporary name, then linked into place: the final name never
    # holds a partly written file, and O_EXCL on both means nothing is overwritten.
    staging = path.with_name(f".{SECRETS_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(fresh), out, indent=2)
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):  # another process won: use its secrets
            os.link(staging, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()
    loaded = read_secrets(home)
    if loaded is None:  # pragma: no cover - the link above succeeded or the file existed
        raise SecretsFileError(f"{path} vanished while it was being created")
    return loaded
