-- Subscriptions, the outbox of deliveries, and each delivery's attempts.
CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY NOT NULL,
    app_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    callback_url TEXT NOT NULL,
    description TEXT,
    enabled INTEGER NOT NULL DEFAULT 1,
    disabled_reason TEXT,
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_until INTEGER,
    failing_since INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE UNIQUE INDEX subscriptions_by_target ON subscriptions (app_id, event_type, callback_url);

CREATE TABLE deliveries (
    id TEXT PRIMARY KEY NOT NULL,
    app_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    job_id TEXT,
    subscription_id TEXT,
    target TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    lease_until INTEGER,
    created_at INTEGER NOT NULL,
    completed_at INTEGER,
    last_error TEXT
);

CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX deliveries_by_job ON deliveries (app_id, job_id);
CREATE INDEX deliveries_by_subscription ON deliveries (subscription_id);

CREATE TABLE delivery_attempts (
    delivery_id TEXT NOT NULL REFERENCES deliveries (id),
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    status_code INTEGER,
    response TEXT,
    error TEXT
);

CREATE INDEX delivery_attempts_by_delivery ON delivery_attempts (delivery_id, seq);
