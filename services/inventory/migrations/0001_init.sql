-- Inventory: stock levels, the reservations sagas hold, and the releases (compensations) that return
-- them or, when nothing was reserved, tombstone the action key.

-- One row per SKU. Stock only ever moves between `available` and `reserved`, so their sum is the
-- quantity the SKU was stocked with: the conservation invariant is a constraint, not a hope.
CREATE TABLE stock (
    sku        text    PRIMARY KEY CHECK (sku <> ''),
    available  integer NOT NULL CHECK (available >= 0),
    reserved   integer NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    initial    integer NOT NULL,
    CONSTRAINT stock_conserved CHECK (available + reserved = initial)
);

-- One row per successful ReserveStock; the unique key makes a second effect for one key impossible.
CREATE TABLE reservations (
    id               uuid        PRIMARY KEY,
    saga_id          uuid        NOT NULL,
    idempotency_key  text        NOT NULL UNIQUE,
    status           text        NOT NULL CHECK (status IN ('RESERVED', 'RELEASED')),
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    released_at      timestamptz,
    CONSTRAINT reservations_released_at CHECK ((status = 'RELEASED') = (released_at IS NOT NULL))
);

CREATE INDEX reservations_saga_id ON reservations (saga_id);

-- The quantities of a reservation, one row per distinct SKU (duplicates in a request are summed).
CREATE TABLE reservation_items (
    reservation_id  uuid    NOT NULL REFERENCES reservations (id),
    sku             text    NOT NULL REFERENCES stock (sku),
    quantity        integer NOT NULL CHECK (quantity >= 1),
    PRIMARY KEY (reservation_id, sku)
);

-- One row per action key ever compensated: the reservation it released, or NULL for a tombstone
-- (the compensation came first, and a later ReserveStock with that key is refused).
CREATE TABLE releases (
    action_idempotency_key  text        PRIMARY KEY,
    idempotency_key         text        NOT NULL UNIQUE,
    saga_id                 uuid        NOT NULL,
    reservation_id          uuid        UNIQUE REFERENCES reservations (id),
    reason                  text        NOT NULL DEFAULT '',
    created_at              timestamptz NOT NULL DEFAULT clock_timestamp()
);
