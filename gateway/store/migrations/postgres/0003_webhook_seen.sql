-- Vendor webhooks already acted on, by WebhookEvent.dedupe_key, until they expire: a
-- replayed or retried delivery causes no second poll, also after a restart.
CREATE TABLE webhook_seen (
    key        text PRIMARY KEY,
    expires_at double precision NOT NULL
);
CREATE INDEX webhook_seen_expiry ON webhook_seen (expires_at);
