-- The latest resumable checkpoint of a trial (blob:sha256:… or an object storage URL) and the
-- epoch it was written after; a requeued attempt continues from it. Cleared when the trial ends.
ALTER TABLE trials ADD COLUMN checkpoint TEXT NOT NULL DEFAULT '';
ALTER TABLE trials ADD COLUMN checkpoint_epoch INTEGER NOT NULL DEFAULT 0;
