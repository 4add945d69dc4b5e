"""The one settings object, read from the environment (prefix ``VI_``).

Every number that may change lives here with its unit in its name, so an operator
tunes the platform through the environment and a reader finds every knob in one file.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
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
    handler_timeout_seconds: float = 600.0
    batch_max_messages: int = 500
    batch_max_wait_ms: int = 5
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
    stall_budget_seconds: float = 900.0
    producer_flush_timeout_seconds: float = 30.0
    metrics_port: int = 0  # 0: pick a free port per process
    log_level: str = "INFO"
    # Comma-separated fault-injection points (tests only): see streams/runtime/failpoints.py.
    failpoints: str = ""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
