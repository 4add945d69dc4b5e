-- Uploads bounded and paid for: a row exists from the moment an upload starts (its
-- bytes are the quota it has reserved until it completes), per-customer quota
-- overrides, and the storage charges waiting to be produced to vi.costs (an outbox).

-- Null while the body is still arriving; the API only ever shows completed uploads.
ALTER TABLE uploads ALTER COLUMN sha256 DROP NOT NULL;
ALTER TABLE uploads ADD COLUMN completed_at timestamptz;
-- Storage is charged up to here (the completion, then each charge's end).
ALTER TABLE uploads ADD COLUMN billed_until timestamptz;
-- Uploads stored before this migration were never billed nor bound to expire: their
-- billing and their TTL start now, not at their (possibly long past) creation.
UPDATE uploads SET completed_at = now(), billed_until = now();
CREATE INDEX uploads_created_idx ON uploads (created_at);

-- Which jobs read an upload (expiry, DELETE): equality on a URI of any length.
CREATE INDEX jobs_source_uri_idx ON jobs USING hash (source_uri);

-- A customer's own quotas; a null column, or no row, means the settings' default.
CREATE TABLE upload_quotas (
  customer_id text PRIMARY KEY REFERENCES customers (customer_id),
  max_count bigint CHECK (max_count >= 0),
  max_bytes bigint CHECK (max_bytes >= 0),
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Storage charges, written in the transaction that bills (or deletes) the upload and
-- produced by the sweeper until acknowledged; event_id is the CostEvent's, so a charge
-- is written once and the ledger counts it once however often it is produced.
CREATE TABLE upload_charges (
  event_id text PRIMARY KEY,
  customer_id text NOT NULL,
  upload_id text NOT NULL,
  record jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  published_at timestamptz
);
CREATE INDEX upload_charges_unpublished_idx ON upload_charges (created_at)
  WHERE published_at IS NULL;
