-- The common case of CreateOrder, ConfirmOrder and CancelOrder in one round trip each. Each takes the same
-- advisory locks as every transaction about its keys (LOCK_KEY: 'order:' || operation || ':' || key), so
-- they serialize with duplicates and with each other exactly as the general path does; each statement of a
-- PL/pgSQL function reads a fresh snapshot, so the checks after the lock see what its previous holder
-- committed. Outside the common case they change nothing and answer false (no row), and the caller
-- decides through the general path (replay, tombstone, reused key, unknown or final order).

-- One order with its lines in request order, as parallel arrays: the shape the service reads orders in
-- (_ORDER_WITH_LINES), answered by the functions below.
CREATE FUNCTION order_with_lines(p_order_id uuid)
RETURNS TABLE (
    id uuid, saga_id uuid, idempotency_key text, customer_id uuid, status text, total_amount numeric,
    currency text, skus text [], quantities integer [], prices numeric []
)
LANGUAGE sql STABLE AS $$
    SELECT o.id, o.saga_id, o.idempotency_key, o.customer_id, o.status, o.total_amount, o.currency,
           ARRAY(SELECT i.sku FROM order_items AS i WHERE i.order_id = o.id ORDER BY i.line_no),
           ARRAY(SELECT i.quantity FROM order_items AS i WHERE i.order_id = o.id ORDER BY i.line_no),
           ARRAY(SELECT i.unit_price FROM order_items AS i WHERE i.order_id = o.id ORDER BY i.line_no)
    FROM orders AS o WHERE o.id = p_order_id
$$;

-- A CreateOrder key with no order and no tombstone: the order and its lines, as the caller built them.
CREATE FUNCTION order_create_if_new(
    p_key text,
    p_id uuid,
    p_saga_id uuid,
    p_customer_id uuid,
    p_total numeric,
    p_currency text,
    p_skus text [],
    p_quantities integer [],
    p_prices numeric []
) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('order:CREATE:' || p_key, 0));
    IF EXISTS (SELECT 1 FROM orders WHERE idempotency_key = p_key)
        OR EXISTS (SELECT 1 FROM order_tombstones WHERE action_idempotency_key = p_key) THEN
        RETURN false;
    END IF;
    INSERT INTO orders (id, saga_id, idempotency_key, customer_id, status, total_amount, currency)
    VALUES (p_id, p_saga_id, p_key, p_customer_id, 'CREATED', p_total, p_currency);
    INSERT INTO order_items (order_id, line_no, sku, quantity, unit_price)
    SELECT p_id, line.line_no, line.sku, line.quantity, line.unit_price
    FROM unnest(p_skus, p_quantities, p_prices) WITH ORDINALITY AS line (sku, quantity, unit_price, line_no);
    RETURN true;
END
$$;

-- A ConfirmOrder key with no receipt on a CREATED order: CONFIRMED, the receipt, and the order as it is now
-- (the same columns as the service's order reads); no row otherwise.
CREATE FUNCTION order_confirm_if_new(p_key text, p_saga_id uuid, p_order_id uuid)
RETURNS TABLE (
    id uuid, saga_id uuid, idempotency_key text, customer_id uuid, status text, total_amount numeric,
    currency text, skus text [], quantities integer [], prices numeric []
)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('order:CONFIRM:' || p_key, 0));
    IF EXISTS (SELECT 1 FROM order_receipts AS r WHERE r.operation = 'CONFIRM' AND r.idempotency_key = p_key) THEN
        RETURN;
    END IF;
    UPDATE orders AS o SET status = 'CONFIRMED', updated_at = clock_timestamp()
    WHERE o.id = p_order_id AND o.status = 'CREATED';
    IF NOT FOUND THEN
        RETURN;
    END IF;
    INSERT INTO order_receipts (operation, idempotency_key, saga_id, target, order_id)
    VALUES ('CONFIRM', p_key, p_saga_id, p_order_id::text, p_order_id);
    RETURN QUERY
    SELECT * FROM order_with_lines(p_order_id);
END
$$;

-- A CancelOrder key with no receipt: a CREATED order CANCELLED, or, if the CreateOrder key made no order,
-- a tombstone (the first for the key wins, as in the general path); the receipt either way, and the answer
-- (`cancelled` with the order, or `tombstoned`). Both locks in the general path's order (own key, then the
-- action's). No row otherwise: a repeated key, an order already cancelled or confirmed.
CREATE FUNCTION order_cancel_if_new(p_key text, p_saga_id uuid, p_action_key text)
RETURNS TABLE (
    outcome text, id uuid, saga_id uuid, idempotency_key text, customer_id uuid, status text,
    total_amount numeric, currency text, skus text [], quantities integer [], prices numeric []
)
LANGUAGE plpgsql AS $$
DECLARE
    v_id uuid;
    v_status text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('order:CANCEL:' || p_key, 0));
    PERFORM pg_advisory_xact_lock(hashtextextended('order:CREATE:' || p_action_key, 0));
    IF EXISTS (SELECT 1 FROM order_receipts AS r WHERE r.operation = 'CANCEL' AND r.idempotency_key = p_key) THEN
        RETURN;
    END IF;
    SELECT o.id, o.status INTO v_id, v_status FROM orders AS o WHERE o.idempotency_key = p_action_key FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO order_tombstones (action_idempotency_key, saga_id, cancel_idempotency_key)
        VALUES (p_action_key, p_saga_id, p_key)
        ON CONFLICT (action_idempotency_key) DO NOTHING;
        INSERT INTO order_receipts (operation, idempotency_key, saga_id, target, order_id)
        VALUES ('CANCEL', p_key, p_saga_id, p_action_key, NULL);
        RETURN QUERY SELECT 'tombstoned', NULL::uuid, NULL::uuid, NULL, NULL::uuid, NULL, NULL::numeric, NULL,
                            NULL::text [], NULL::integer [], NULL::numeric [];
        RETURN;
    END IF;
    IF v_status <> 'CREATED' THEN
        RETURN;
    END IF;
    UPDATE orders AS o SET status = 'CANCELLED', updated_at = clock_timestamp() WHERE o.id = v_id;
    INSERT INTO order_receipts (operation, idempotency_key, saga_id, target, order_id)
    VALUES ('CANCEL', p_key, p_saga_id, p_action_key, v_id);
    RETURN QUERY
    SELECT 'cancelled', o.* FROM order_with_lines(v_id) AS o;
END
$$;
