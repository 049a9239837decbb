"""Configuration read once from the environment, one small class per concern.

Every variable is documented in the README's configuration table; the defaults are the
embedded ones (SQLite, a local-folder object store, a local Prefect server) so that
`make demo` runs with nothing set. `get_settings()` is cached: call it, don't build
settings by hand, except in tests that pass their own values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

Environment = Literal["development", "test", "production"]

#: The token the embedded stack uses when none is set. Refused in production.
DEVELOPMENT_TOKEN = "dev-internal-token"


class SettingsError(RuntimeError):
    """A configuration value is missing or unusable; the message names the variable."""


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    """An integer from the environment; a clear SettingsError when it is not one (or is
    below `minimum`)."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from exc
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from exc


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be a boolean (true/false), got {raw!r}")


def audioflow_home() -> Path:
    """The one data folder of the embedded stack (`AUDIOFLOW_HOME`, default `./.audioflow`)."""
    return Path(_env("AUDIOFLOW_HOME", str(Path.cwd() / ".audioflow"))).resolve()


@dataclass(frozen=True)
class DatabaseSettings:
    """Where the app's `tasks` and `workflows` tables live."""

    #: SQLAlchemy URL. PostgreSQL (psycopg2) in production; SQLite in the embedded stack.
    url: str
    #: Connections kept open per process (PostgreSQL only).
    pool_size: int = 10
    #: Milliseconds a SQLite writer waits for the lock before giving up.
    sqlite_busy_timeout_ms: int = 30_000

    @classmethod
    def from_env(cls, home: Path) -> DatabaseSettings:
        return cls(
            url=_env("DATABASE_URL", f"sqlite:///{home / 'audioflow.db'}"),
            pool_size=env_int("AUDIOFLOW_DB_POOL_SIZE", 10),
        )


@dataclass(frozen=True)
class ApiSettings:
    """The REST API: where it listens, where flows reach it, and its secrets."""

    #: Base URL flows use to reach `POST /internal/workflow-progress`.
    public_url: str
    #: Bearer token for the internal progress endpoint.
    internal_token: str
    #: API key for the public endpoints (`X-API-Key`); empty means none is required.
    api_key: str
    #: Largest upload accepted by `POST /uploads`, in bytes.
    max_upload_bytes: int

    @classmethod
    def from_env(cls) -> ApiSettings:
        return cls(
            public_url=_env("AUDIOFLOW_API_URL", "http://127.0.0.1:8000").rstrip("/"),
            internal_token=_env("AUDIOFLOW_INTERNAL_TOKEN", ""),
            api_key=_env("AUDIOFLOW_API_KEY", ""),
            max_upload_bytes=env_int("AUDIOFLOW_MAX_UPLOAD_BYTES", 2 * 1024**3),
        )


@dataclass(frozen=True)
class PrefectSettings:
    """How the API reaches Prefect and starts flow runs."""

    #: Prefect's API (`PREFECT_API_URL`, the variable Prefect itself reads); empty: not set.
    api_url: str
    #: `flow-name/deployment-name` of the audio-processing deployment.
    audio_deployment: str
    #: Seconds to wait for Prefect to accept a new flow run before the task is failed.
    trigger_timeout_s: float
    #: `flow-name/deployment-name` of the reprocessing deployment.
    reprocess_deployment: str = "reprocessing/reprocessing"
    #: Seconds a new task's workflow may wait for Prefect to accept its flow run (the
    #: dispatcher retries with back-off meanwhile) before the attempt fails as transient.
    dispatch_deadline_s: float = 60.0
    #: Threads per API process that create flow runs for new tasks (the outbox dispatcher).
    dispatch_threads: int = 4
    #: On-demand reprocessing runs that may wait to start at once; `POST /reprocess` past
    #: it is 429 (a repeat of a queued run's parameters returns that run instead).
    reprocess_queue_max: int = 10

    @classmethod
    def from_env(cls) -> PrefectSettings:
        return cls(
            api_url=os.environ.get("PREFECT_API_URL", "").rstrip("/"),
            audio_deployment=_env(
                "AUDIOFLOW_AUDIO_DEPLOYMENT", "audio-processing/audio-processing"
            ),
            trigger_timeout_s=_env_float("AUDIOFLOW_PREFECT_TIMEOUT", 10.0),
            reprocess_deployment=_env(
                "AUDIOFLOW_REPROCESS_DEPLOYMENT", "reprocessing/reprocessing"
            ),
            dispatch_deadline_s=_env_float("AUDIOFLOW_DISPATCH_DEADLINE_S", 60.0),
            dispatch_threads=env_int("AUDIOFLOW_DISPATCH_THREADS", 4, minimum=1),
            reprocess_queue_max=env_int("AUDIOFLOW_REPROCESS_QUEUE_MAX", 10, minimum=1),
        )


@dataclass(frozen=True)
class StorageSettings:
    """Object storage: a local folder (embedded default) or any S3-compatible store.

    Credentials, region and endpoint for S3 come from boto3's standard variables
    (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL_S3`), which
    boto3 reads itself; they are listed here only so that the README has one table.
    """

    #: `local` or `s3`.
    backend: Literal["local", "s3"]
    #: Root folder of the local backend.
    local_dir: Path
    #: Bucket of the S3 backend.
    bucket: str
    #: S3 endpoint (R2, MinIO, moto); None means AWS.
    endpoint_url: str | None
    #: Region; R2 accepts `auto`.
    region: str | None
    #: Objects larger than this go up in parts of this size (bytes).
    multipart_chunk_bytes: int = 16 * 1024 * 1024

    @classmethod
    def from_env(cls, home: Path) -> StorageSettings:
        backend = _env("AUDIOFLOW_STORAGE", "local")
        if backend not in ("local", "s3"):
            raise SettingsError(f"AUDIOFLOW_STORAGE must be 'local' or 's3', got {backend!r}")
        return cls(
            backend=backend,  # type: ignore[arg-type]
            local_dir=Path(_env("AUDIOFLOW_STORAGE_DIR", str(home / "storage"))).resolve(),
            bucket=_env("AUDIOFLOW_S3_BUCKET", "audioflow"),
            endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or None,
            region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None,
            multipart_chunk_bytes=env_int("AUDIOFLOW_S3_PART_BYTES", 16 * 1024 * 1024),
        )


@dataclass(frozen=True)
class WhisperSettings:
    """Which speech-to-text engine and model the flows use."""

    #: `faster-whisper` (default: same accuracy, about twice as fast here) or `openai-whisper`.
    engine: str
    #: A model name (`tiny.en`: the bundled one), a local directory or checkpoint path.
    model: str
    #: CTranslate2 compute type for faster-whisper (`float32`, `int8`, ...).
    compute_type: str
    #: Beam size; 1 is greedy decoding.
    beam_size: int
    #: CPU threads for inference; 0 lets the engine decide.
    threads: int
    #: Transcriptions that may run at once across the work pool (a Prefect tag limit
    #: set by `audioflow deploy`); one per machine's worth of cores is right.
    slots: int = 1

    @classmethod
    def from_env(cls) -> WhisperSettings:
        return cls(
            engine=_env("AUDIOFLOW_WHISPER_ENGINE", "faster-whisper"),
            model=_env("AUDIOFLOW_WHISPER_MODEL", "tiny.en"),
            compute_type=_env("AUDIOFLOW_WHISPER_COMPUTE_TYPE", "float32"),
            beam_size=env_int("AUDIOFLOW_WHISPER_BEAM_SIZE", 1),
            threads=env_int("AUDIOFLOW_WHISPER_THREADS", 0),
            slots=max(1, env_int("AUDIOFLOW_TRANSCRIPTION_SLOTS", 1)),
        )


@dataclass(frozen=True)
class Settings:
    """All of audioflow's configuration."""

    env: Environment
    home: Path
    database: DatabaseSettings
    api: ApiSettings
    prefect: PrefectSettings
    storage: StorageSettings
    whisper: WhisperSettings
    #: Retry budget for transient failures (reprocessing).
    max_attempts: int = field(default=3)
    #: Wait before the first automatic retry; doubles with each attempt (capped at an hour).
    retry_backoff_s: float = field(default=30.0)

    @property
    def internal_token(self) -> str:
        """The token in force: the configured one, or the development token outside production."""
        if self.api.internal_token:
            return self.api.internal_token
        if self.env == "production":
            raise SettingsError("AUDIOFLOW_INTERNAL_TOKEN must be set in production")
        return DEVELOPMENT_TOKEN

    def validate(self) -> None:
        """Refuse to run production with development secrets."""
        if self.env != "production":
            return
        if not self.api.internal_token or self.api.internal_token == DEVELOPMENT_TOKEN:
            raise SettingsError("AUDIOFLOW_INTERNAL_TOKEN must be set to a secret in production")
        if not self.api.api_key:
            raise SettingsError("AUDIOFLOW_API_KEY must be set in production")

    @classmethod
    def from_env(cls) -> Settings:
        env = _env("AUDIOFLOW_ENV", "development")
        if env not in ("development", "test", "production"):
            raise SettingsError(
                f"AUDIOFLOW_ENV must be development, test or production, got {env!r}"
            )
        home = audioflow_home()
        return cls(
            env=env,  # type: ignore[arg-type]
            home=home,
            database=DatabaseSettings.from_env(home),
            api=ApiSettings.from_env(),
            prefect=PrefectSettings.from_env(),
            storage=StorageSettings.from_env(home),
            whisper=WhisperSettings.from_env(),
            max_attempts=env_int("AUDIOFLOW_MAX_ATTEMPTS", 3),
            retry_backoff_s=_env_float("AUDIOFLOW_RETRY_BACKOFF_S", 30.0),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings.from_env()
