"""Configuration read once from the environment, one small class per concern.

Every variable is documented in the README's configuration table; the defaults are the
embedded ones (SQLite, a local-folder object store, a local Prefect server), but no secret
has a default: `audioflow up` and `make demo` generate them (`cli/stack_secrets.py`).
`get_settings()` is cached: call it, don't build settings by hand, except in tests that
pass their own values.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

Environment = Literal["development", "test", "production"]


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


def _env_float_where(
    name: str, default: float, valid: Callable[[float], bool], must_be: str
) -> float:
    """`_env_float`, refused (`{name} must be {must_be}, got ...`) unless `valid(value)`."""
    value = _env_float(name, default)
    if not valid(value):
        raise SettingsError(f"{name} must be {must_be}, got {value}")
    return value


def _env_bool(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    raw = (os.environ if environ is None else environ).get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be a boolean (true/false), got {raw!r}")


def warm_start_enabled(environ: Mapping[str, str]) -> bool:
    """`AUDIOFLOW_WARM_START` (default true): whether a worker forks its flow runs from a
    warm parent (`flows/forkserver.py`) instead of starting each as a cold interpreter."""
    return _env_bool("AUDIOFLOW_WARM_START", True, environ)


def _env_list(name: str) -> tuple[str, ...]:
    """A comma-separated list from the environment, blanks dropped, lower-cased."""
    return tuple(p.strip().lower() for p in os.environ.get(name, "").split(",") if p.strip())


#: Loopback names, always allowed as `Host` when no allow-list is configured.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def audioflow_home() -> Path:
    """The one data folder of the embedded stack (`AUDIOFLOW_HOME`, default `./.audioflow`)."""
    return Path(_env("AUDIOFLOW_HOME", str(Path.cwd() / ".audioflow"))).resolve()


def default_temp_dir() -> Path:
    """`audioflow/` under the system temp folder (`TMPDIR`), where run folders go by default."""
    return Path(tempfile.gettempdir()) / "audioflow"


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
    #: Bearer token for the internal progress endpoint; no default (required everywhere).
    internal_token: str
    #: API key for the public endpoints (`X-API-Key`); no default. Required in production;
    #: outside it an empty key means none is required.
    api_key: str
    #: Largest upload accepted by `POST /uploads` (and signed into presigned uploads), in bytes.
    max_upload_bytes: int
    #: Uploads checked (probed and decoded) at once per API process; past it, 503.
    upload_checks: int = 2
    #: Longest validity a presigned upload may ask for, in seconds.
    presign_max_expires_s: int = 3600
    #: Host names the API answers to (`Host` header, any port); `*.example.com` covers
    #: subdomains. Empty: loopback plus the host of `public_url`. Stops DNS rebinding.
    allowed_hosts: tuple[str, ...] = ()
    #: Origins a browser may call the API from (CORS); empty: no CORS headers at all.
    cors_origins: tuple[str, ...] = ()
    #: Seconds between keep-alive comments on an idle event stream (`GET /tasks/{id}/events`):
    #: proxies close connections that stay silent, and each one also re-reads the event log.
    sse_keepalive_s: float = 15.0

    @classmethod
    def from_env(cls) -> ApiSettings:
        return cls(
            public_url=_env("AUDIOFLOW_API_URL", "http://127.0.0.1:8000").rstrip("/"),
            internal_token=_env("AUDIOFLOW_INTERNAL_TOKEN", ""),
            api_key=_env("AUDIOFLOW_API_KEY", ""),
            max_upload_bytes=env_int("AUDIOFLOW_MAX_UPLOAD_BYTES", 2 * 1024**3),
            upload_checks=env_int("AUDIOFLOW_UPLOAD_CHECKS", 2, minimum=1),
            presign_max_expires_s=env_int("AUDIOFLOW_PRESIGN_MAX_EXPIRES_S", 3600, minimum=60),
            allowed_hosts=_env_list("AUDIOFLOW_ALLOWED_HOSTS"),
            cors_origins=_env_list("AUDIOFLOW_CORS_ORIGINS"),
            sse_keepalive_s=_env_float_where(
                "AUDIOFLOW_SSE_KEEPALIVE_S", 15.0, lambda s: 0.1 <= s <= 300, "0.1 to 300 seconds"
            ),
        )

    def hosts_allowed(self) -> tuple[str, ...]:
        """The `Host` names in force: the configured list, else loopback and the host of
        `AUDIOFLOW_API_URL` (what flows and remote workers call)."""
        if self.allowed_hosts:
            return self.allowed_hosts
        public = urlsplit(self.public_url).hostname
        return tuple(dict.fromkeys([*LOOPBACK_HOSTS, *([public.lower()] if public else [])]))


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
    #: 0: this process creates none (another API process sharing the database must; bench/
    #: uses it to time the request path without the dispatcher's share of the CPU).
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
            dispatch_threads=env_int("AUDIOFLOW_DISPATCH_THREADS", 4, minimum=0),
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
    #: Output versions no manifest names are removed by the reprocessing run once they are
    #: this many days old; None (the default) keeps every version.
    output_retention_days: float | None = None

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
            # Unset keeps everything.
            output_retention_days=_env_float_where(
                "AUDIOFLOW_OUTPUT_RETENTION_DAYS",
                0.0,
                lambda days: 0 < days < float("inf"),
                "a positive number",
            )
            if os.environ.get("AUDIOFLOW_OUTPUT_RETENTION_DAYS")
            else None,
        )


@dataclass(frozen=True)
class MediaSettings:
    """Bounds on the work one source may cause (the API's upload check and the flows)."""

    #: Longest source accepted, in seconds: checked from the header before decoding and
    #: again while decoding (a header can lie). Timeouts scale with it.
    max_duration_s: float = 21600.0
    #: Zoom of the waveform file (BBC audiowaveform JSON): samples per pixel at the rate of
    #: the decode it is computed from (16 kHz); a task asks for the file (`waveform`).
    waveform_samples_per_pixel: int = 256
    #: Largest cover image (`metadata.coverKey`) accepted, in bytes.
    cover_max_bytes: int = 512 * 1024
    #: Where the store's objects are served to podcast apps (a CDN in front of the bucket),
    #: e.g. `https://cdn.example.com/`; a chapter's `imageKey` becomes `img` = this + key in
    #: the chapters file. Unset: `img` is the object key as it is.
    public_base_url: str | None = None

    @classmethod
    def from_env(cls) -> MediaSettings:
        max_duration_s = _env_float_where(
            "AUDIOFLOW_MAX_DURATION_S", 21600.0, lambda s: not s <= 0, "positive"
        )
        base = _env("AUDIOFLOW_PUBLIC_BASE_URL", "").strip()
        if base and not re.match(r"^https?://[^\s/?#]+(/[^\s?#]*)?$", base):
            raise SettingsError(
                f"AUDIOFLOW_PUBLIC_BASE_URL must be an http(s) URL without query, got {base!r}"
            )
        return cls(
            max_duration_s=max_duration_s,
            waveform_samples_per_pixel=env_int(
                "AUDIOFLOW_WAVEFORM_SAMPLES_PER_PIXEL", 256, minimum=1
            ),
            cover_max_bytes=env_int("AUDIOFLOW_COVER_MAX_BYTES", 512 * 1024, minimum=1024),
            public_base_url=(base.rstrip("/") + "/") if base else None,
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
    #: Voice activity detection (Silero, shipped inside faster-whisper): only speech is
    #: decoded, by either engine, so music, noise and silence give no words and cost no
    #: decoding time.
    vad: bool = True
    #: Silero speech probability above which a 32 ms frame counts as speech.
    vad_threshold: float = 0.5
    #: Silence shorter than this stays inside a speech region (milliseconds).
    vad_min_silence_ms: int = 2000
    #: Audio kept on each side of a speech region, so that soft word onsets survive (ms).
    vad_speech_pad_ms: int = 400
    #: Give the decoder the previous segment's text as its prompt (both engines' default).
    #: Off here: on the bench's looped-speech episode the prompt fed repetition loops and
    #: temperature fallbacks (WER 0.162-0.180 with it, 0.112 without, 5 minutes of speech),
    #: and its sampled fallbacks made the same audio give other words on every run.
    condition_on_previous_text: bool = False

    @classmethod
    def from_env(cls) -> WhisperSettings:
        return cls(
            engine=_env("AUDIOFLOW_WHISPER_ENGINE", "faster-whisper"),
            model=_env("AUDIOFLOW_WHISPER_MODEL", "tiny.en"),
            compute_type=_env("AUDIOFLOW_WHISPER_COMPUTE_TYPE", "float32"),
            beam_size=env_int("AUDIOFLOW_WHISPER_BEAM_SIZE", 1),
            threads=env_int("AUDIOFLOW_WHISPER_THREADS", 0),
            slots=max(1, env_int("AUDIOFLOW_TRANSCRIPTION_SLOTS", 1)),
            vad=_env_bool("AUDIOFLOW_WHISPER_VAD", True),
            vad_threshold=_env_float_where(
                "AUDIOFLOW_WHISPER_VAD_THRESHOLD", 0.5, lambda p: 0.0 < p < 1.0, "between 0 and 1"
            ),
            vad_min_silence_ms=env_int("AUDIOFLOW_WHISPER_VAD_MIN_SILENCE_MS", 2000, minimum=0),
            vad_speech_pad_ms=env_int("AUDIOFLOW_WHISPER_VAD_SPEECH_PAD_MS", 400, minimum=0),
            condition_on_previous_text=_env_bool(
                "AUDIOFLOW_WHISPER_CONDITION_ON_PREVIOUS_TEXT", False
            ),
        )


@dataclass(frozen=True)
class CaptionSettings:
    """How WebVTT and SRT captions are laid out (the cues themselves follow word times)."""

    #: SRT characters per line: the Podcasting 2.0 guidance for SRT transcripts.
    srt_max_line_chars: int = 32
    #: SRT lines per cue.
    srt_max_lines: int = 2
    #: WebVTT characters per line: the common broadcast guideline.
    vtt_max_line_chars: int = 42
    #: WebVTT lines per cue.
    vtt_max_lines: int = 2

    @classmethod
    def from_env(cls) -> CaptionSettings:
        return cls(
            srt_max_line_chars=env_int("AUDIOFLOW_SRT_MAX_LINE_CHARS", 32, minimum=10),
            srt_max_lines=env_int("AUDIOFLOW_SRT_MAX_LINES", 2, minimum=1),
            vtt_max_line_chars=env_int("AUDIOFLOW_VTT_MAX_LINE_CHARS", 42, minimum=10),
            vtt_max_lines=env_int("AUDIOFLOW_VTT_MAX_LINES", 2, minimum=1),
        )


#: Waits between webhook attempts (seconds): attempts at 0, 5 and 15 s (three within a
#: minute), then back off to 12 hours; the last try is 27.6 hours after the first.
DEFAULT_WEBHOOK_RETRY_S: tuple[float, ...] = (5, 10, 30, 120, 300, 1800, 3600, 7200, 14400)
DEFAULT_WEBHOOK_RETRY_S += (28800, 43200)


@dataclass(frozen=True)
class WebhookSettings:
    """Signed webhooks (Standard Webhooks) for task events; off without a secret."""

    #: `whsec_...` (base64 after the prefix): the HMAC key of every signature. No default:
    #: without it no webhook is sent and `callbackUrl` is refused.
    secret: str | None = None
    #: Endpoints that receive every task's events (`AUDIOFLOW_WEBHOOK_URLS`, comma-separated).
    urls: tuple[str, ...] = ()
    #: Allow loopback, private and link-local receivers (the embedded stack, tests).
    allow_private: bool = False
    #: Waits between attempts, in seconds; after the last one the delivery has failed.
    retry_schedule_s: tuple[float, ...] = DEFAULT_WEBHOOK_RETRY_S
    #: Seconds for each of connect, send and the start of the answer; and the whole attempt
    #: may take at most twice this.
    timeout_s: float = 5.0
    #: Delivery threads per API process.
    threads: int = 2
    #: How often an idle delivery thread looks for new events and due retries (seconds).
    poll_s: float = 1.0
    #: How long a claimed delivery is left to its thread before another process may take
    #: it (a process that died mid-send): well over one attempt (`AUDIOFLOW_WEBHOOK_LEASE_S`,
    #: which must exceed 2 x `timeout_s`).
    lease_s: float = 60.0
    #: An event older than this when a process with the secret first sees it gets no
    #: deliveries (`AUDIOFLOW_WEBHOOK_MAX_EVENT_AGE_S`): webhooks switched on after a time
    #: off do not send that time's backlog, only its last day (the retry schedule's span).
    max_event_age_s: float = 86400.0

    @property
    def enabled(self) -> bool:
        """Webhooks are sent only with a secret to sign them."""
        return bool(self.secret)

    @property
    def attempt_limit_s(self) -> float:
        """The longest one attempt can take: a timeout for each of name resolution,
        connect, send and the answer's start, and one more read past the two-timeout
        deadline on the answer's body (`domain.webhooks.send`)."""
        return 5 * self.timeout_s

    @property
    def claim_lease_s(self) -> float:
        """The lease a claim takes: `lease_s`, but never less than an attempt can last.

        A lease shorter than an attempt lets another thread take a delivery that is still
        being sent, and the receiver gets it twice; so a long `AUDIOFLOW_WEBHOOK_TIMEOUT_S`
        lengthens the lease rather than breaking it.
        """
        return max(self.lease_s, self.attempt_limit_s + 1.0)

    @classmethod
    def from_env(cls) -> WebhookSettings:
        secret = _env("AUDIOFLOW_WEBHOOK_SECRET", "").strip() or None
        if secret is not None:
            _check_webhook_secret(secret)
        urls = tuple(
            part.strip()
            for part in os.environ.get("AUDIOFLOW_WEBHOOK_URLS", "").split(",")
            if part.strip()
        )
        for url in urls:
            if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
                raise SettingsError(f"AUDIOFLOW_WEBHOOK_URLS: not an http(s) URL: {url!r}")
        if urls and secret is None:
            raise SettingsError(
                "AUDIOFLOW_WEBHOOK_URLS is set but AUDIOFLOW_WEBHOOK_SECRET is not: webhooks "
                "are signed, set it to a whsec_... secret (base64 of 24 to 64 random bytes)"
            )
        raw = os.environ.get("AUDIOFLOW_WEBHOOK_RETRY_SCHEDULE_S", "").strip()
        schedule = DEFAULT_WEBHOOK_RETRY_S
        if raw:
            try:
                schedule = tuple(float(part) for part in raw.split(","))
            except ValueError as exc:
                raise SettingsError(
                    "AUDIOFLOW_WEBHOOK_RETRY_SCHEDULE_S must be comma-separated seconds, "
                    f"got {raw!r}"
                ) from exc
            if any(not 0 <= wait < float("inf") for wait in schedule):
                raise SettingsError("AUDIOFLOW_WEBHOOK_RETRY_SCHEDULE_S: waits must be >= 0")
        timeout_s = _env_float_where(
            "AUDIOFLOW_WEBHOOK_TIMEOUT_S", 5.0, lambda s: 0.1 <= s <= 120, "0.1 to 120 seconds"
        )
        lease_s = _env_float("AUDIOFLOW_WEBHOOK_LEASE_S", 60.0)
        attempt_limit_s = cls(timeout_s=timeout_s).attempt_limit_s
        if not attempt_limit_s < lease_s < float("inf"):
            # A shorter lease lets another thread send the same delivery while the first is
            # still waiting for its answer.
            raise SettingsError(
                "AUDIOFLOW_WEBHOOK_LEASE_S must be longer than one attempt can last (5 x "
                f"AUDIOFLOW_WEBHOOK_TIMEOUT_S = {attempt_limit_s:g} s), got {lease_s:g}"
            )
        return cls(
            secret=secret,
            urls=urls,
            allow_private=_env_bool("AUDIOFLOW_WEBHOOK_ALLOW_PRIVATE", False),
            retry_schedule_s=schedule,
            timeout_s=timeout_s,
            threads=env_int("AUDIOFLOW_WEBHOOK_THREADS", 2, minimum=1),
            lease_s=lease_s,
            max_event_age_s=_env_float_where(
                "AUDIOFLOW_WEBHOOK_MAX_EVENT_AGE_S",
                86400.0,
                lambda s: 60 <= s < float("inf"),
                "at least 60 seconds",
            ),
        )


def _check_webhook_secret(secret: str) -> None:
    """A Standard Webhooks secret: `whsec_` and the base64 of at least 24 bytes."""
    if not secret.startswith("whsec_"):
        raise SettingsError("AUDIOFLOW_WEBHOOK_SECRET must start with whsec_")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SettingsError("AUDIOFLOW_WEBHOOK_SECRET: not base64 after whsec_") from exc
    if not 24 <= len(key) <= 64:
        raise SettingsError(
            f"AUDIOFLOW_WEBHOOK_SECRET must hold 24 to 64 bytes (base64), got {len(key)}"
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
    #: Source length bounds (`AUDIOFLOW_MAX_DURATION_S`).
    media: MediaSettings = field(default_factory=MediaSettings)
    #: Caption line limits of the WebVTT and SRT transcripts.
    captions: CaptionSettings = field(default_factory=CaptionSettings)
    #: Signed webhooks for task events (off without AUDIOFLOW_WEBHOOK_SECRET).
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    #: Retry budget for transient failures (reprocessing).
    max_attempts: int = field(default=3)
    #: Wait before the first automatic retry; doubles with each attempt (capped at an hour).
    retry_backoff_s: float = field(default=30.0)
    #: Root of the flows' run folders and the API's upload spool; run folders are named
    #: after their flow run so the reprocessing flow can sweep those of dead runs.
    temp_dir: Path = field(default_factory=default_temp_dir)

    @property
    def internal_token(self) -> str:
        """The configured token; there is no fallback in any environment (a public default
        would let anyone who reads the source report progress)."""
        if not self.api.internal_token:
            raise SettingsError(
                "AUDIOFLOW_INTERNAL_TOKEN is not set; `audioflow up` generates one in "
                "$AUDIOFLOW_HOME/secrets.json, otherwise set it to a long random string"
            )
        return self.api.internal_token

    def validate(self) -> None:
        """Refuse to start without the secrets: the internal token always, the API key
        unless AUDIOFLOW_ENV explicitly says development or test."""
        _ = self.internal_token
        if self.env == "production" and not self.api.api_key:
            raise SettingsError(
                "AUDIOFLOW_API_KEY must be set (production rules apply unless AUDIOFLOW_ENV "
                "is development or test; `audioflow up` generates one)"
            )

    @classmethod
    def from_env(cls) -> Settings:
        env = _env("AUDIOFLOW_ENV", "production")
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
            media=MediaSettings.from_env(),
            captions=CaptionSettings.from_env(),
            webhooks=WebhookSettings.from_env(),
            max_attempts=env_int("AUDIOFLOW_MAX_ATTEMPTS", 3),
            retry_backoff_s=_env_float("AUDIOFLOW_RETRY_BACKOFF_S", 30.0),
            temp_dir=Path(_env("AUDIOFLOW_TEMP_DIR", str(default_temp_dir()))).resolve(),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings.from_env()
