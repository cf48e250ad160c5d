-- The jobs' own webhooks (to apps), waiting to be delivered: a row per terminal event,
-- written in the same transaction as the terminal job, so a SIGKILL loses none; after a
-- restart delivery continues with the same message id (the Standard Webhooks webhook-id).
-- lease_owner / lease_until let one replica of several send a row at a time.
CREATE TABLE webhook_outbox (
    message_id  text PRIMARY KEY,
    job_id      text NOT NULL,
    -- the job's terminal status the message announces
    status      text NOT NULL,
    attempts    integer NOT NULL DEFAULT 0,
    next_at     double precision NOT NULL,
    -- fixed at the first attempt: every retry sends the same bytes
    body        text,
    -- set when acknowledged or given up
    done_at     double precision,
    delivered   boolean NOT NULL DEFAULT false,
    lease_owner text,
    lease_until double precision,
    UNIQUE (job_id, status)
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_at) WHERE done_at IS NULL;
