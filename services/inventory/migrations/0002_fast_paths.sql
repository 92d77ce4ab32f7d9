-- ReserveStock's common case in one round trip: a key with no reservation and no release, every SKU
-- stocked with enough units. It takes the same advisory lock as every transaction about the key
-- (_LOCK_ACTION_KEY) and then the stock rows in SKU order (_LOCK_STOCK), so it serializes with
-- duplicates, releases and other reservations exactly as the general path does. Each statement of a
-- PL/pgSQL function reads a fresh snapshot, so the checks after a lock see what its previous holder
-- committed. It reserves and answers true; in every other case it changes nothing and answers false,
-- and the caller decides through the general path (replay, tombstone, unknown SKU, short stock).
CREATE FUNCTION inventory_reserve_if_new(
    p_key text,
    p_id uuid,
    p_saga_id uuid,
    p_skus text [],
    p_quantities integer []
) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_short integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_key, 0));
    IF EXISTS (SELECT 1 FROM reservations WHERE idempotency_key = p_key)
        OR EXISTS (SELECT 1 FROM releases WHERE action_idempotency_key = p_key) THEN
        RETURN false;
    END IF;
    PERFORM 1 FROM stock WHERE sku = ANY(p_skus) ORDER BY sku FOR UPDATE;
    SELECT count(*) INTO v_short
    FROM unnest(p_skus, p_quantities) AS item (sku, quantity)
    LEFT JOIN stock ON stock.sku = item.sku
    WHERE stock.sku IS NULL OR stock.available < item.quantity;
    IF v_short > 0 THEN
        RETURN false;
    END IF;
    UPDATE stock
    SET available = stock.available - item.quantity, reserved = stock.reserved + item.quantity
    FROM unnest(p_skus, p_quantities) AS item (sku, quantity)
    WHERE stock.sku = item.sku;
    INSERT INTO reservations (id, saga_id, idempotency_key, status) VALUES (p_id, p_saga_id, p_key, 'RESERVED');
    INSERT INTO reservation_items (reservation_id, sku, quantity)
    SELECT p_id, item.sku, item.quantity FROM unnest(p_skus, p_quantities) AS item (sku, quantity);
    RETURN true;
END
$$;
