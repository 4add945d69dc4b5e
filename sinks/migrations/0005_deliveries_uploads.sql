-- Webhook delivery attempts (what a customer's endpoint answered, attempt by attempt)
-- and media uploaded through the gateway before a job refers to it.

CREATE TABLE webhook_deliveries (
  id bigserial PRIMARY KEY,
  job_id text NOT NULL,
  url text NOT NULL,
  attempt int NOT NULL,
  status_code int,
  error text,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_job_idx ON webhook_deliveries (job_id, id);

CREATE TABLE uploads (
  upload_id text PRIMARY KEY,
  customer_id text NOT NULL,
  blob_uri text NOT NULL,
  bytes bigint NOT NULL,
  sha256 text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX uploads_customer_idx ON uploads (customer_id, created_at);
