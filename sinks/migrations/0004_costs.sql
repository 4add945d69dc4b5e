-- The cost ledger (one row per cost event, deduplicated by event_id) and the spend
-- tables derived from it in the same transaction, so they always sum to the ledger
-- (invariant I5). Money is integer micro-dollars throughout.

CREATE TABLE cost_ledger (
  event_id text PRIMARY KEY,
  customer_id text NOT NULL,
  job_id text NOT NULL,
  stage text NOT NULL,
  provider text NOT NULL,
  model text NOT NULL,
  unit text NOT NULL,
  quantity double precision NOT NULL,  -- seconds, tokens, calls: a measure, not money
  input_tokens bigint,
  cached_tokens bigint,
  output_tokens bigint,
  amount_usd_micros bigint NOT NULL,
  occurred_at timestamptz NOT NULL,
  recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cost_ledger_customer_time_idx ON cost_ledger (customer_id, occurred_at);
CREATE INDEX cost_ledger_job_idx ON cost_ledger (job_id);

CREATE TABLE spend_customer_hour (
  customer_id text NOT NULL,
  hour timestamptz NOT NULL,
  amount_usd_micros bigint NOT NULL DEFAULT 0,
  event_count bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (customer_id, hour)
);

CREATE TABLE spend_customer_day (
  customer_id text NOT NULL,
  day date NOT NULL,  -- the UTC calendar day
  amount_usd_micros bigint NOT NULL DEFAULT 0,
  event_count bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (customer_id, day)
);

CREATE TABLE spend_customer_stage (
  customer_id text NOT NULL,
  stage text NOT NULL,
  amount_usd_micros bigint NOT NULL DEFAULT 0,
  event_count bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (customer_id, stage)
);

CREATE TABLE spend_job (
  job_id text NOT NULL,
  customer_id text NOT NULL,
  stage text NOT NULL,
  amount_usd_micros bigint NOT NULL DEFAULT 0,
  event_count bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (job_id, customer_id, stage)
);
CREATE INDEX spend_job_customer_idx ON spend_job (customer_id);

CREATE TABLE spend_model (
  customer_id text NOT NULL,
  provider text NOT NULL,
  model text NOT NULL,
  amount_usd_micros bigint NOT NULL DEFAULT 0,
  event_count bigint NOT NULL DEFAULT 0,
  input_tokens bigint NOT NULL DEFAULT 0,
  cached_tokens bigint NOT NULL DEFAULT 0,
  output_tokens bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (customer_id, provider, model)
);

-- One row per budget threshold crossed per customer and month, so an alert fires once.
CREATE TABLE budget_events (
  customer_id text NOT NULL,
  month date NOT NULL,  -- first day of the UTC month
  threshold text NOT NULL CHECK (threshold IN ('80pct', '100pct')),
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (customer_id, month, threshold)
);

-- Responses of deterministic LLM calls, keyed by a hash of model, prompt and parameters.
CREATE TABLE llm_cache (
  cache_key text PRIMARY KEY,
  model text NOT NULL,
  response jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  hits bigint NOT NULL DEFAULT 0
);
