-- The most device memory any attempt of a trial reported holding, in bytes (0: none reported).
-- Reports only raise it; AcquireTrial tells workers the largest of a trial's shape.
ALTER TABLE trials ADD COLUMN peak_device_memory_bytes INTEGER NOT NULL DEFAULT 0;
