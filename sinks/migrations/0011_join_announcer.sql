-- Which run announced a job's join. A part redelivered after the join is complete (its
-- worker killed between recording and marking the message done) also finds the job
-- ready; only the run that claimed the announcement announces again, so a job is
-- announced by one run, and again only by that run's own redelivery.
CREATE TABLE job_joins (
  job_id text PRIMARY KEY,
  announced_by text NOT NULL,
  announced_at timestamptz NOT NULL DEFAULT now()
);
