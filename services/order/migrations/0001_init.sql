-- Orders, their lines, and the idempotency records of the order service.
--
-- A CreateOrder's idempotency key is `orders.idempotency_key` itself; ConfirmOrder and CancelOrder
-- record theirs in `order_receipts`. A CancelOrder that finds no order leaves a row in
-- `order_tombstones`, which refuses the late CreateOrder forever.

CREATE TABLE orders (
    id               uuid          PRIMARY KEY,
    saga_id          uuid          NOT NULL,
    idempotency_key  text          NOT NULL UNIQUE,
    customer_id      uuid          NOT NULL,
    status           text          NOT NULL CHECK (status IN ('CREATED', 'CONFIRMED', 'CANCELLED')),
    total_amount     numeric(14,2) NOT NULL CHECK (total_amount >= 0),
    currency         text          NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    created_at       timestamptz   NOT NULL DEFAULT clock_timestamp(),
    updated_at       timestamptz   NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX orders_saga_id_idx ON orders (saga_id);

-- Lines keep the order they were requested in (line_no from 1), so every read rebuilds the same response.
CREATE TABLE order_items (
    order_id    uuid          NOT NULL REFERENCES orders (id),
    line_no     integer       NOT NULL CHECK (line_no >= 1),
    sku         text          NOT NULL CHECK (sku <> ''),
    quantity    integer       NOT NULL CHECK (quantity >= 1),
    unit_price  numeric(14,2) NOT NULL CHECK (unit_price >= 0),
    PRIMARY KEY (order_id, line_no)
);

-- One row per completed ConfirmOrder or CancelOrder. `target` is what the request named (the order id
-- for CONFIRM, the CreateOrder key for CANCEL), so a reused key with another request is detected;
-- `order_id` is NULL when a cancellation found no order and left a tombstone instead.
CREATE TABLE order_receipts (
    operation        text        NOT NULL CHECK (operation IN ('CONFIRM', 'CANCEL')),
    idempotency_key  text        NOT NULL,
    saga_id          uuid        NOT NULL,
    target           text        NOT NULL,
    order_id         uuid        REFERENCES orders (id),
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (operation, idempotency_key),
    CHECK (operation = 'CANCEL' OR order_id IS NOT NULL)
);

-- A CreateOrder key compensated before (or without) its action: that CreateOrder is refused.
CREATE TABLE order_tombstones (
    action_idempotency_key  text        PRIMARY KEY,
    saga_id                 uuid        NOT NULL,
    cancel_idempotency_key  text        NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT clock_timestamp()
);
