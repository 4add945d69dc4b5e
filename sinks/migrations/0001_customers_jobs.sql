-- Tenants, their API keys and the jobs they submit.
-- The jobs table doubles as the outbox: a row whose published_at is null is an
-- accepted request not yet produced to vi.jobs.requested; a relay produces it and
-- stamps published_at, so an accepted job survives a broker outage (invariant I1).

CREATE TABLE customers (
  customer_id text PRIMARY KEY,
  name text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  monthly_budget_usd_micros bigint,
  firebase_uid text UNIQUE
);

CREATE TABLE api_keys (
  key_id text PRIMARY KEY,
  customer_id text NOT NULL REFERENCES customers (customer_id),
  key_sha256 bytea NOT NULL UNIQUE,  -- only the hash is stored, never the key
  created_at timestamptz NOT NULL DEFAULT now(),
  revoked_at timestamptz
);
CREATE INDEX api_keys_customer_idx ON api_keys (customer_id);

CREATE TABLE jobs (
  job_id text PRIMARY KEY,
  customer_id text NOT NULL,  -- no foreign key: upstream systems may name customers we do not hold
  source_uri text NOT NULL,
  webhook_url text,
  options jsonb NOT NULL DEFAULT '{}'::jsonb,
  status text NOT NULL DEFAULT 'queued'
    CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
  error_reason text,
  error_message text,
  error_stage text,
  idempotency_key text,
  request_hash text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  completed_at timestamptz,
  published_at timestamptz,
  UNIQUE (customer_id, idempotency_key)
);
-- Listing a customer's jobs newest first, with a keyset cursor.
CREATE INDEX jobs_customer_created_idx ON jobs (customer_id, created_at DESC, job_id DESC);
-- The outbox relay's scan: only unpublished rows are indexed.
CREATE INDEX jobs_unpublished_idx ON jobs (created_at) WHERE published_at IS NULL;
