-- Studies, trials (one row each, rewritten on every change), per-epoch metrics, workers.
CREATE TABLE studies (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    state       TEXT    NOT NULL,
    spec_toml   TEXT    NOT NULL,
    reason      TEXT    NOT NULL DEFAULT '',
    created_ms  INTEGER NOT NULL,
    finished_ms INTEGER
);

CREATE TABLE trials (
    id               INTEGER PRIMARY KEY,
    study_id         INTEGER NOT NULL REFERENCES studies(id),
    number           INTEGER NOT NULL,
    state            TEXT    NOT NULL,
    params_json      TEXT    NOT NULL,
    value            REAL,
    metrics_json     TEXT    NOT NULL,
    attempt          INTEGER NOT NULL,
    worker_id        TEXT    NOT NULL,
    lease_token      INTEGER NOT NULL,
    lease_expires_ms INTEGER NOT NULL,
    artifact         TEXT    NOT NULL,
    error            TEXT    NOT NULL,
    created_ms       INTEGER NOT NULL,
    started_ms       INTEGER,
    finished_ms      INTEGER,
    UNIQUE (study_id, number)
);

CREATE TABLE trial_epochs (
    trial_id     INTEGER NOT NULL REFERENCES trials(id),
    epoch        INTEGER NOT NULL,
    metrics_json TEXT    NOT NULL,
    PRIMARY KEY (trial_id, epoch)
);

CREATE TABLE workers (
    id            TEXT    PRIMARY KEY,
    hostname      TEXT    NOT NULL,
    devices       TEXT    NOT NULL,
    version       TEXT    NOT NULL,
    registered_ms INTEGER NOT NULL
);
