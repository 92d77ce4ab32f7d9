-- ProcessPayment's common case in one round trip: a key with no history, an account in the payment's
-- currency that has the funds. It takes the same advisory lock as every transaction about the key (the
-- lock space and hash of the service's _LOCK_ACTION), so it serializes with duplicates and refunds
-- exactly as the general path does. Each statement of a PL/pgSQL function reads a fresh snapshot, so the
-- history checks after the lock see whatever the previous holder committed. It debits and records the
-- capture and answers true; in every other case it changes nothing and answers false, and the caller
-- decides through the general path (replay, tombstone, unknown account, decline).
CREATE FUNCTION payment_capture_if_new(
    p_lock_space integer,
    p_key text,
    p_id uuid,
    p_saga_id uuid,
    p_customer_id uuid,
    p_amount numeric,
    p_currency text
) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_balance numeric;
    v_currency text;
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_space, hashtext(p_key));
    IF EXISTS (SELECT 1 FROM payments WHERE idempotency_key = p_key)
        OR EXISTS (SELECT 1 FROM payment_tombstones WHERE action_idempotency_key = p_key) THEN
        RETURN false;
    END IF;
    SELECT balance, currency INTO v_balance, v_currency
    FROM accounts WHERE customer_id = p_customer_id FOR UPDATE;
    IF NOT FOUND OR v_currency <> p_currency OR v_balance < p_amount THEN
        RETURN false;
    END IF;
    UPDATE accounts SET balance = balance - p_amount WHERE customer_id = p_customer_id;
    INSERT INTO payments (id, saga_id, idempotency_key, customer_id, amount, currency, status)
    VALUES (p_id, p_saga_id, p_key, p_customer_id, p_amount, p_currency, 'CAPTURED');
    RETURN true;
END
$$;

-- RefundPayment's common case in one round trip: a refund key not answered yet, for an action that
-- captured nothing (tombstone it, answer no payment and 0.00) or whose payment is still CAPTURED (refund
-- and credit it, answer the payment and its amount). Under the action key's advisory lock, like the
-- general path; the answer is stored under the refund key in the same transaction. No row means the
-- general path decides (a repeated refund key, a payment already refunded under another key). A refund
-- key already used for another action makes the insert fail and the whole call change nothing: the
-- general path then refuses the reused key.
CREATE FUNCTION payment_refund_if_new(
    p_lock_space integer,
    p_key text,
    p_saga_id uuid,
    p_action_key text,
    p_reason text
) RETURNS TABLE (refunded_payment uuid, refunded numeric)
LANGUAGE plpgsql AS $$
DECLARE
    v_payment payments%ROWTYPE;
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_space, hashtext(p_action_key));
    IF EXISTS (SELECT 1 FROM refunds AS r WHERE r.idempotency_key = p_key) THEN
        RETURN;
    END IF;
    SELECT * INTO v_payment FROM payments AS p WHERE p.idempotency_key = p_action_key;
    IF NOT FOUND THEN
        INSERT INTO payment_tombstones (action_idempotency_key, saga_id) VALUES (p_action_key, p_saga_id)
        ON CONFLICT (action_idempotency_key) DO NOTHING;
    ELSIF v_payment.status = 'CAPTURED' THEN
        UPDATE payments AS p SET status = 'REFUNDED', refunded_at = clock_timestamp() WHERE p.id = v_payment.id;
        UPDATE accounts AS a SET balance = a.balance + v_payment.amount WHERE a.customer_id = v_payment.customer_id;
    ELSE
        RETURN;
    END IF;
    INSERT INTO refunds (idempotency_key, saga_id, action_idempotency_key, payment_id, refunded_amount, reason)
    VALUES (p_key, p_saga_id, p_action_key, v_payment.id, coalesce(v_payment.amount, 0), p_reason);
    RETURN QUERY SELECT r.payment_id, r.refunded_amount FROM refunds AS r WHERE r.idempotency_key = p_key;
END
$$;
