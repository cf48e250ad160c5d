-- Jobs: the full document as JSON text, plus the columns we filter, sort and lease on.
-- Times are Unix seconds (REAL), as on VideoJob; money lives only in the document,
-- as decimal strings.
CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    status          TEXT NOT NULL
                    CHECK (status IN ('queued', 'submitted', 'running', 'succeeded', 'failed', 'cancelled')),
    owner           TEXT,
    idempotency_key TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    lease_owner     TEXT,
    lease_until     REAL,
    doc             TEXT NOT NULL CHECK (json_valid(doc))
);

-- One job per (owner, key). NULLs are distinct in a unique index, so the owner is
-- folded to '' for local, ownerless use.
CREATE UNIQUE INDEX jobs_idempotency ON jobs (coalesce(owner, ''), idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_newest ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_owner_newest ON jobs (owner, created_at DESC, id DESC);
CREATE INDEX jobs_active ON jobs (created_at)
    WHERE status IN ('queued', 'submitted', 'running');
