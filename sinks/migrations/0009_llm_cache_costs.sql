-- The response cache keeps, with each answer, the cost events of the paid calls that
-- produced it, so a hit re-emits them (same event ids: the ledger counts them once) and
-- a delivery that crashed between paying and producing its costs still bills the job.
-- From this version on the key also hashes the customer, job and stage: an answer is
-- reused only by the same job's same call. Rows stored before (keyed without the job)
-- are never found again; the default only lets workers of the previous version, still
-- running during a rolling deploy, keep storing.
ALTER TABLE llm_cache ADD COLUMN cost_events jsonb NOT NULL DEFAULT '[]';
