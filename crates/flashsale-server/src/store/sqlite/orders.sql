-- The orders table (see schema.sql). Applied before schema.sql at every start, and used to
-- rebuild the table of a store made before the refunded status (its CHECK cannot be altered).

CREATE TABLE IF NOT EXISTS orders (
    id              TEXT PRIMARY KEY,
    sale_id         TEXT NOT NULL REFERENCES sales (id),
    user_id         TEXT NOT NULL,
    quantity        INTEGER NOT NULL CHECK (quantity >= 1),
    status          TEXT NOT NULL
                    CHECK (status IN ('pending_payment', 'paid', 'cancelled', 'expired', 'refunded')),
    created_at_ms   INTEGER NOT NULL,
    expires_at_ms   INTEGER NOT NULL,
    paid_at_ms      INTEGER,
    idempotency_key TEXT,
    -- 0 from the moment an order leaves an active status until the stock gate confirmed it has
    -- the stock back: the record that lets any sweep finish a return a crash interrupted.
    -- (Added to older stores by `open_writer`; its index is made there too.)
    stock_returned  INTEGER NOT NULL DEFAULT 1,
    -- The presale code the purchase used (added to older stores by `open_writer`).
    access_code     TEXT,
    -- When its money was decided to go back (a refund, or late money of a closed order).
    refunded_at_ms        INTEGER,
    -- The provider's intent, once `pay` made one (all NULL before): see domain/payment.rs.
    payment_provider      TEXT,
    payment_intent_id     TEXT,
    payment_client_secret TEXT,
    payment_state         TEXT
        CHECK (payment_state IN ('open', 'succeeded', 'canceled', 'refund_pending', 'refunded')),
    payment_refund_id     TEXT
) STRICT;
