-- Epochs belong to one lease (attempt) of a trial: a requeued trial reports epoch 1 again
-- without touching the curve of the attempt it replaces. Existing rows belong to the lease the
-- trial holds (or last held).
CREATE TABLE trial_epochs_by_lease (
    trial_id     INTEGER NOT NULL REFERENCES trials(id),
    lease_token  INTEGER NOT NULL,
    attempt      INTEGER NOT NULL,
    epoch        INTEGER NOT NULL,
    metrics_json TEXT    NOT NULL,
    PRIMARY KEY (trial_id, lease_token, epoch)
);
INSERT INTO trial_epochs_by_lease (trial_id, lease_token, attempt, epoch, metrics_json)
    SELECT e.trial_id, t.lease_token, t.attempt, e.epoch, e.metrics_json
    FROM trial_epochs e JOIN trials t ON t.id = e.trial_id;
DROP TABLE trial_epochs;
ALTER TABLE trial_epochs_by_lease RENAME TO trial_epochs;
