-- The orchestrator's durable state: sagas (with their ownership lease), steps, history, client keys.

CREATE TABLE sagas (
    id                 uuid PRIMARY KEY,
    saga_type          text        NOT NULL,
    definition_version integer     NOT NULL,
    status             text        NOT NULL
        CHECK (status IN ('PENDING', 'EXECUTING', 'COMPENSATING', 'COMPLETED', 'COMPENSATED', 'FAILED')),
    payload            jsonb       NOT NULL,
    context            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    error              text,
    deadline           timestamptz NOT NULL,
    on_timeout         text        NOT NULL CHECK (on_timeout IN ('compensate', 'fail')),
    cancel_requested   boolean     NOT NULL DEFAULT false,
    trace_context      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- Ownership lives on the saga row, so a claim is one UPDATE and needs no outer join.
    -- fence increments at every acquisition; every owner write is conditional on it.
    owner_id           text,
    fence              bigint      NOT NULL DEFAULT 0,
    lease_expires_at   timestamptz,
    -- When the saga next needs work (backoff, breaker delay); the poller ignores it until then.
    next_attempt_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    created_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at        timestamptz
);

-- The poller's scan touches only live sagas; terminal ones never slow it down.
CREATE INDEX sagas_live_idx ON sagas (next_attempt_at)
    WHERE status IN ('PENDING', 'EXECUTING', 'COMPENSATING');
-- Newest-first listing with keyset pagination, optionally by status or type.
CREATE INDEX sagas_created_idx ON sagas (created_at DESC, id DESC);
CREATE INDEX sagas_status_created_idx ON sagas (status, created_at DESC, id DESC);

CREATE TABLE saga_steps (
    saga_id               uuid        NOT NULL REFERENCES sagas (id) ON DELETE CASCADE,
    position              integer     NOT NULL,
    name                  text        NOT NULL,
    status                text        NOT NULL
        CHECK (status IN ('PENDING', 'EXECUTING', 'SUCCEEDED', 'FAILED', 'COMPENSATING', 'COMPENSATED',
                          'COMPENSATION_FAILED')),
    attempts              integer     NOT NULL DEFAULT 0,
    compensation_attempts integer     NOT NULL DEFAULT 0,
    next_attempt_at       timestamptz,
    idempotency_key       text        NOT NULL,
    compensation_key      text        NOT NULL,
    request               jsonb,
    response              jsonb,
    error                 text,
    started_at            timestamptz,
    finished_at           timestamptz,
    PRIMARY KEY (saga_id, position)
);

CREATE TABLE saga_events (
    id          bigserial   PRIMARY KEY,
    saga_id     uuid        NOT NULL REFERENCES sagas (id) ON DELETE CASCADE,
    fence       bigint      NOT NULL,
    owner_id    text,
    kind        text        NOT NULL,
    step        text,
    from_status text,
    to_status   text,
    detail      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX saga_events_saga_idx ON saga_events (saga_id, id);

CREATE TABLE idempotency_keys (
    key          text        PRIMARY KEY,
    request_hash text        NOT NULL,
    -- Deferred: the key is inserted first, so a duplicate is detected before the saga is written.
    saga_id      uuid        NOT NULL REFERENCES sagas (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX idempotency_keys_expiry_idx ON idempotency_keys (expires_at);
