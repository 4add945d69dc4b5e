-- Stage runs are keyed per customer: a run key names a unit of work within one
-- customer's jobs, so a garbage message (no customer: '') or another customer's reused
-- job id can never shadow a job's run. A run can also end 'cancelled'.
UPDATE stage_runs SET customer_id = '' WHERE customer_id IS NULL;
ALTER TABLE stage_runs
  ALTER COLUMN customer_id SET DEFAULT '',
  ALTER COLUMN customer_id SET NOT NULL,
  DROP CONSTRAINT stage_runs_pkey,
  ADD PRIMARY KEY (stage, customer_id, run_key),
  DROP CONSTRAINT stage_runs_status_check,
  ADD CONSTRAINT stage_runs_status_check
    CHECK (status IN ('running', 'succeeded', 'failed', 'dead_lettered', 'cancelled'));
-- The quota counts a cancelled job while any of its runs is still running.
CREATE INDEX stage_runs_running_idx ON stage_runs (job_id) WHERE status = 'running';

-- A cancelled job is announced (JobCompleted, status cancelled) once: the first run that
-- ends cancelled claims the announcement by setting this.
ALTER TABLE jobs ADD COLUMN cancel_announced_at timestamptz;
