-- Verified vendor callbacks that named one of our attempts (fal's ?attempt=): the vendor
-- job that attempt adopts, kept across a restart so a callback that arrived before the
-- attempt was waiting for it (or just before a crash) is not lost. One-to-one: a vendor
-- job is adopted by one attempt at most, an attempt adopts one vendor job.
CREATE TABLE vendor_callbacks (
    provider    text NOT NULL,
    vendor_id   text NOT NULL,
    attempt_key text NOT NULL,
    expires_at  double precision NOT NULL,
    PRIMARY KEY (provider, vendor_id),
    UNIQUE (provider, attempt_key)
);
CREATE INDEX vendor_callbacks_expiry ON vendor_callbacks (expires_at);
