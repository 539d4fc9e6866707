-- Jobs and the history of each, shared by every Herald node that uses this schema.
--
-- Times are timestamptz, written to the millisecond (the precision of the API's
-- cursors). JSON is text, as in SQLite: Herald never looks inside it, and jsonb
-- would refuse the \u0000 escape that JSON allows.
CREATE TABLE jobs (
    id uuid PRIMARY KEY,
    app_id text NOT NULL,
    event_type text NOT NULL,
    status text NOT NULL
        CHECK (status IN ('queued', 'started', 'completed', 'failed', 'cancelled')),
    channel text,
    callback_url text,
    payload text NOT NULL,
    metadata text NOT NULL,
    result text,
    error text,
    attempts integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    progress text,
    idempotency_key text,
    request_digest text,
    run_at timestamptz NOT NULL,
    -- While started: until when the claiming node holds it. Past that, its node is
    -- taken for dead and another node claims the job again.
    lease_until timestamptz,
    created_at timestamptz NOT NULL,
    started_at timestamptz,
    completed_at timestamptz
);

CREATE UNIQUE INDEX jobs_by_idempotency_key ON jobs (app_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_due ON jobs (app_id, event_type, run_at) WHERE status = 'queued';
CREATE INDEX jobs_leased ON jobs (app_id, event_type, lease_until) WHERE status = 'started';
CREATE INDEX jobs_by_creation ON jobs (app_id, created_at, id);
CREATE INDEX jobs_finished ON jobs (completed_at) WHERE completed_at IS NOT NULL;

CREATE TABLE job_steps (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id uuid NOT NULL REFERENCES jobs (id),
    at timestamptz NOT NULL,
    kind text NOT NULL,
    fraction double precision,
    message text
);

CREATE INDEX job_steps_by_job ON job_steps (job_id, seq);
