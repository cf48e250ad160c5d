-- Jobs: the full document as JSONB, plus the columns we filter, sort and lease on.
-- Times are Unix seconds (double precision), as on VideoJob; money lives only in the
-- document, as decimal strings, so it is exact.
CREATE TABLE jobs (
    id              text PRIMARY KEY,
    status          text NOT NULL
                    CHECK (status IN ('queued', 'submitted', 'running', 'succeeded', 'failed', 'cancelled')),
    owner           text,
    idempotency_key text,
    created_at      double precision NOT NULL,
    updated_at      double precision NOT NULL,
    lease_owner     text,
    lease_until     double precision,
    doc             jsonb NOT NULL
);

-- One job per (owner, key). NULLs are distinct in a unique index, so the owner is
-- folded to '' for local, ownerless use.
CREATE UNIQUE INDEX jobs_idempotency ON jobs ((coalesce(owner, '')), idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_newest ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_owner_newest ON jobs (owner, created_at DESC, id DESC);
-- claim() scans the active jobs oldest first; finished jobs are most of the table.
CREATE INDEX jobs_active ON jobs (created_at)
    WHERE status IN ('queued', 'submitted', 'running');
