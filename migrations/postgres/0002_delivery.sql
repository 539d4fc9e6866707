-- Subscriptions, the outbox of deliveries, and each delivery's attempts.
CREATE TABLE subscriptions (
    id uuid PRIMARY KEY,
    app_id text NOT NULL,
    event_type text NOT NULL,
    callback_url text NOT NULL,
    description text,
    enabled boolean NOT NULL DEFAULT true,
    disabled_reason text,
    secret text NOT NULL,
    previous_secret text,
    previous_until timestamptz,
    failing_since timestamptz,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE UNIQUE INDEX subscriptions_by_target ON subscriptions (app_id, event_type, callback_url);

-- A delivery keeps its subscription's id after the subscription is deleted (it is
-- dead by then), so there is no foreign key to subscriptions.
CREATE TABLE deliveries (
    id text PRIMARY KEY,
    app_id text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('standard', 'pusher')),
    job_id uuid,
    subscription_id uuid,
    target text NOT NULL,
    url text NOT NULL,
    -- The exact bytes sent on every attempt.
    body text NOT NULL,
    status text NOT NULL CHECK (status IN ('pending', 'failed', 'succeeded', 'dead')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    lease_until timestamptz,
    created_at timestamptz NOT NULL,
    completed_at timestamptz,
    last_error text
);

CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status IN ('pending', 'failed');
CREATE INDEX deliveries_by_app ON deliveries (app_id, created_at);
CREATE INDEX deliveries_by_job ON deliveries (app_id, job_id);
CREATE INDEX deliveries_by_subscription ON deliveries (subscription_id);

CREATE TABLE delivery_attempts (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id text NOT NULL REFERENCES deliveries (id),
    at timestamptz NOT NULL,
    duration_ms bigint NOT NULL,
    status_code integer,
    response text,
    error text
);

CREATE INDEX delivery_attempts_by_delivery ON delivery_attempts (delivery_id, seq);
