-- Jobs that may have been billed without a result (an ambiguous submit, a job the vendor
-- lost): flagged so an operator can list them (`reelgate jobs --at-risk`). The amounts
-- stay in the document, as decimal strings.
ALTER TABLE jobs ADD COLUMN at_risk boolean NOT NULL DEFAULT false;
CREATE INDEX jobs_at_risk_newest ON jobs (created_at DESC, id DESC) WHERE at_risk;
