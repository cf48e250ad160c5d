-- Cancels asked at a replica that does not follow the job: the replica holding its lease
-- takes them on its next lease round (docs/deploy.md), so any replica can cancel any job.
CREATE TABLE cancel_requests (
    job_id TEXT PRIMARY KEY
);
