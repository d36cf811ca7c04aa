"""PostgreSQL functions of the loyalty plugin (created by migration loyalty_0002, and with
the tables by ``create_all`` through the DDL event attached in ``models``).

``loyalty_debit`` is a single debit (every redemption) in one round trip: it claims the
idempotency key with the entry's INSERT, takes the account's lock with the conditional
``UPDATE ... SET balance = balance - x WHERE balance >= x`` (the customer's status checked
in the same statement), then spends lots in ``ledger.LOT_ORDER`` and records their uses.
The spending is a statement of its own inside the function: PL/pgSQL gives each statement
a fresh snapshot in READ COMMITTED, so it reads the lots as the transaction it waited for
left them. Lots past expiry at ``p_now`` are never spent; the function returns them (one
row each, every row carrying the entry id and the points spent; one row with NULL lot
columns when none is due) and Python writes them off as ``ledger.write_expiries`` does.
No row at all: the debit was refused (balance short, customer erased or without account).

SQLite keeps the same steps as separate statements (see ``ledger.debit``).
"""

from __future__ import annotations

FUNCTION_NAME = "loyalty_debit"

# No percent signs in here: DDL() and the driver's paramstyle would read them.
CREATE_DEBIT = """
CREATE OR REPLACE FUNCTION loyalty_debit(
    p_customer_id bigint, p_kind varchar, p_amount bigint, p_occurred_at timestamptz,
    p_now timestamptz, p_reason varchar, p_reward_id bigint, p_actor_id bigint,
    p_idempotency_key varchar, p_fingerprint varchar, p_details jsonb)
RETURNS TABLE (entry_id bigint, spent bigint, lot_id bigint, lot_remaining bigint,
               lot_expires_at timestamptz)
LANGUAGE plpgsql VOLATILE AS $body$
#variable_conflict use_column
DECLARE
    v_entry bigint;
BEGIN
    WITH entry AS (
        INSERT INTO loyalty_ledger (customer_id, kind, points, occurred_at, recorded_at,
            reason, reward_id, actor_id, idempotency_key, request_fingerprint, details)
        VALUES (p_customer_id, p_kind, -p_amount, p_occurred_at, p_now, p_reason,
            p_reward_id, p_actor_id, p_idempotency_key, p_fingerprint, p_details)
        RETURNING id)
    UPDATE loyalty_account SET balance = balance - p_amount, updated_at = p_now
    WHERE customer_id = p_customer_id AND balance >= p_amount
      AND EXISTS (SELECT 1 FROM customers WHERE id = p_customer_id AND status <> 'erased')
    RETURNING (SELECT id FROM entry) INTO v_entry;
    IF v_entry IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH due AS (
        SELECT l.id, l.remaining, l.expires_at FROM loyalty_ledger AS l
        WHERE l.customer_id = p_customer_id AND l.remaining > 0 AND l.expires_at <= p_now),
    ranked AS (
        SELECT l.id, l.remaining, sum(l.remaining) OVER (
            ORDER BY l.expires_at ASC NULLS LAST, l.occurred_at ASC, l.id ASC) AS running
        FROM loyalty_ledger AS l WHERE l.customer_id = p_customer_id AND l.remaining > 0
          AND (l.expires_at IS NULL OR l.expires_at > p_now)),
    take AS (
        SELECT r.id, CASE WHEN r.remaining < p_amount - (r.running - r.remaining)
                          THEN r.remaining ELSE p_amount - (r.running - r.remaining) END AS points
        FROM ranked AS r WHERE r.running - r.remaining < p_amount),
    spent AS (
        UPDATE loyalty_ledger AS lot SET remaining = lot.remaining - take.points FROM take
        WHERE lot.id = take.id RETURNING take.id, take.points),
    used AS (
        INSERT INTO loyalty_lot_use (entry_id, lot_id, points)
        SELECT v_entry, s.id, s.points FROM spent AS s RETURNING loyalty_lot_use.points)
    SELECT v_entry, (SELECT coalesce(sum(u.points), 0) FROM used AS u)::bigint,
           due.id::bigint, due.remaining::bigint, due.expires_at
    FROM (SELECT 1) AS one LEFT JOIN due ON true ORDER BY due.id;
END
$body$
"""

DROP_DEBIT = ("DROP FUNCTION IF EXISTS loyalty_debit(bigint, varchar, bigint, timestamptz, "
              "timestamptz, varchar, bigint, bigint, varchar, varchar, jsonb)")

#: How the plugin calls it (driver SQL, psycopg's named placeholders).
CALL_DEBIT = """SELECT entry_id, spent, lot_id, lot_remaining, lot_expires_at FROM loyalty_debit(
    %(customer_id)s, %(kind)s, %(amount)s, %(occurred_at)s, %(now)s, %(reason)s,
    %(reward_id)s, %(actor_id)s, %(idempotency_key)s, %(request_fingerprint)s,
    %(details)s::jsonb)"""
