-- A completed trial's dev-set predictions (the protobuf DevPredictions its worker sent: labels
-- and class probabilities of its best epoch), and the 95 % bootstrap interval of the study's
-- objective computed from them when it completed. NULL: none sent.
ALTER TABLE trials ADD COLUMN evaluation BLOB;
ALTER TABLE trials ADD COLUMN objective_ci_low REAL;
ALTER TABLE trials ADD COLUMN objective_ci_high REAL;
-- The kept model's scores on the study's held-out test file ({} when none): shown beside the
-- dev scores, never used to choose anything.
ALTER TABLE trials ADD COLUMN test_metrics_json TEXT NOT NULL DEFAULT '{}';
