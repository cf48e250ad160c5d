-- Jobs that may have been billed without a result (an ambiguous submit, a job the vendor
-- lost): flagged so an operator can list them (`reelgate jobs --at-risk`). The amounts
-- stay in the document, as decimal strings.
ALTER TABLE jobs ADD COLUMN at_risk INTEGER NOT NULL DEFAULT 0 CHECK (at_risk IN (0, 1));
CREATE INDEX jobs_at_risk_newest ON jobs (created_at DESC, id DESC) WHERE at_risk = 1;
