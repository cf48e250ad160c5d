-- Caller keys of the HTTP service, beside the jobs, so a key made once works on every
-- replica (gateway/store/postgres_keys.py). Only a SHA-256 digest of the secret is kept.
CREATE TABLE api_keys (
    id text PRIMARY KEY,
    name text NOT NULL UNIQUE,
    secret_sha256 text NOT NULL,
    created_at double precision NOT NULL,
    revoked_at double precision,
    budget_usd_per_day double precision,
    allowed_providers text
);
