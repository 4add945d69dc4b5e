-- The stage runtime's record of each message it handled (the short-circuit on
-- redelivery reads it) and the append-only audit trail of every job.

CREATE TABLE stage_runs (
  stage text NOT NULL,
  run_key text NOT NULL,            -- the input message key: job_id, or job_id:chunk
  job_id text NOT NULL,
  customer_id text,
  status text NOT NULL CHECK (status IN ('running','succeeded','failed','dead_lettered')),
  attempts int NOT NULL DEFAULT 0,
  reason text,
  error_message text,
  outputs jsonb NOT NULL DEFAULT '[]'::jsonb,  -- the messages this run emits, re-emitted on redelivery
  source_topic text, source_partition int, source_offset bigint,
  started_at timestamptz, finished_at timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (stage, run_key)
);
CREATE INDEX stage_runs_job_idx ON stage_runs (job_id);

CREATE TABLE audit_log (
  id bigserial PRIMARY KEY,
  job_id text NOT NULL,
  customer_id text,
  stage text,
  event text NOT NULL,
  status text,
  reason text,
  attempt int,
  detail jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_job_idx ON audit_log (job_id, id);
