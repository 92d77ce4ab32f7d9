-- The payment ledger. Conservation, per customer, at all times:
--   initial_balance = balance + sum(amount of every payment) - sum(amount of REFUNDED payments)
-- Payments are never deleted; only their status moves CAPTURED -> REFUNDED, once.

CREATE TABLE accounts (
    customer_id     uuid          PRIMARY KEY,
    name            text          NOT NULL,
    currency        text          NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    balance         numeric(14,2) NOT NULL CHECK (balance >= 0),
    initial_balance numeric(14,2) NOT NULL CHECK (initial_balance >= 0),
    created_at      timestamptz   NOT NULL DEFAULT clock_timestamp()
);

-- One row per successful ProcessPayment; the unique key is what makes a repeated call a replay.
CREATE TABLE payments (
    id              uuid          PRIMARY KEY,
    saga_id         uuid          NOT NULL,
    idempotency_key text          NOT NULL UNIQUE,
    customer_id     uuid          NOT NULL REFERENCES accounts (customer_id),
    amount          numeric(14,2) NOT NULL CHECK (amount > 0),
    currency        text          NOT NULL,
    status          text          NOT NULL CHECK (status IN ('CAPTURED', 'REFUNDED')),
    created_at      timestamptz   NOT NULL DEFAULT clock_timestamp(),
    refunded_at     timestamptz,
    CHECK ((status = 'REFUNDED') = (refunded_at IS NOT NULL))
);

CREATE INDEX payments_customer_idx ON payments (customer_id);
CREATE INDEX payments_saga_idx ON payments (saga_id);

-- ProcessPayment keys compensated before any payment existed: such a key may never capture.
CREATE TABLE payment_tombstones (
    action_idempotency_key text        PRIMARY KEY,
    saga_id                uuid        NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- One row per answered RefundPayment, under the refund's own key, holding the answer it was given.
CREATE TABLE refunds (
    idempotency_key        text          PRIMARY KEY,
    saga_id                uuid          NOT NULL,
    action_idempotency_key text          NOT NULL,
    payment_id             uuid          REFERENCES payments (id),
    refunded_amount        numeric(14,2) NOT NULL CHECK (refunded_amount >= 0),
    reason                 text          NOT NULL DEFAULT '',
    created_at             timestamptz   NOT NULL DEFAULT clock_timestamp()
);
