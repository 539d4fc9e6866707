-- Jobs and the history of each. Times are Unix milliseconds; JSON is stored as text.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY NOT NULL,
    app_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    status TEXT NOT NULL,
    channel TEXT,
    callback_url TEXT,
    payload TEXT NOT NULL,
    metadata TEXT NOT NULL,
    result TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    progress TEXT,
    idempotency_key TEXT,
    request_digest TEXT,
    run_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    completed_at INTEGER
);

CREATE UNIQUE INDEX jobs_by_idempotency_key ON jobs (app_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_due ON jobs (app_id, event_type, status, run_at);
CREATE INDEX jobs_by_creation ON jobs (app_id, created_at, id);
CREATE INDEX jobs_finished ON jobs (completed_at) WHERE completed_at IS NOT NULL;

CREATE TABLE job_steps (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    fraction REAL,
    message TEXT
);

CREATE INDEX job_steps_by_job ON job_steps (job_id, seq);
