-- Webhook signing secrets, one set per customer (docs/decisions/0010-webhook-signing.md).
-- A row holds no secret: the secret is derived from its nonce, the customer id and
-- VI_WEBHOOK_SECRETS_KEY, so reading this table does not give the ability to sign.
-- The current secret has no retires_at; a rotated-out one signs until its retires_at
-- (the overlap window), beside the current one.
CREATE TABLE webhook_secrets (
  secret_id text PRIMARY KEY,
  customer_id text NOT NULL,  -- no foreign key, like jobs: upstream systems name customers
  nonce bytea NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  retires_at timestamptz
);
CREATE UNIQUE INDEX webhook_secrets_current_idx
  ON webhook_secrets (customer_id) WHERE retires_at IS NULL;
CREATE INDEX webhook_secrets_customer_idx ON webhook_secrets (customer_id, created_at DESC);
