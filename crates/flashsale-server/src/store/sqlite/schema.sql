-- The embedded system of record. Applied at every start; every statement is idempotent.
-- Times are Unix milliseconds (UTC). Constraints and triggers repeat the gate's rules so that no
-- bug above this layer can oversell or exceed a buyer's limit.

CREATE TABLE IF NOT EXISTS sales (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    description         TEXT NOT NULL,
    -- 0 once every unit was taken off sale (`remove_stock`). Stores made before sales could
    -- change had `stock >= 1`: `open_writer` rebuilds their table.
    stock               INTEGER NOT NULL CHECK (stock >= 0),
    -- Kept by the triggers below: stock not held by a pending or paid order.
    remaining           INTEGER NOT NULL,
    per_user_limit      INTEGER NOT NULL CHECK (per_user_limit BETWEEN 1 AND 100),
    price_cents         INTEGER NOT NULL CHECK (price_cents >= 0),
    starts_at_ms        INTEGER NOT NULL,
    ends_at_ms          INTEGER,
    payment_window_secs INTEGER NOT NULL CHECK (payment_window_secs >= 1),
    created_at_ms       INTEGER NOT NULL,
    -- 'admit_per_sec/pass_ttl_secs/opens_before_secs', or NULL: no waiting room.
    waiting_room        TEXT,
    -- 1 when created, one more with each change (added to older stores by `open_writer`).
    version             INTEGER NOT NULL DEFAULT 1,
    paused              INTEGER NOT NULL DEFAULT 0,
    access              TEXT NOT NULL DEFAULT 'public' CHECK (access IN ('public', 'codes')),
    -- The waiting room's 32-byte draw seed; NULL without a room, or for a sale made before seeds
    -- (added to older stores by `open_writer`).
    draw_seed           BLOB CHECK (draw_seed IS NULL OR length(draw_seed) = 32),
    CONSTRAINT stock_left CHECK (remaining >= 0),
    CONSTRAINT stock_whole CHECK (remaining <= stock)
) STRICT;

-- The orders table is in `orders.sql` (the move to the refunded status rebuilds it from there).

CREATE UNIQUE INDEX IF NOT EXISTS orders_idempotency
    ON orders (sale_id, user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- One index keyed by buyer serves both the buyer's listing and the per-user limit. Buyers arrive
-- in random order, so each index keyed by buyer costs a random page write per order in every
-- commit: keep to one.
CREATE INDEX IF NOT EXISTS orders_by_buyer ON orders (user_id, sale_id, id);
DROP INDEX IF EXISTS orders_active_by_buyer;
DROP INDEX IF EXISTS orders_by_user;
CREATE INDEX IF NOT EXISTS orders_due
    ON orders (expires_at_ms) WHERE status = 'pending_payment';
CREATE INDEX IF NOT EXISTS orders_by_sale ON orders (sale_id, id);

CREATE TRIGGER IF NOT EXISTS orders_per_user_limit
BEFORE INSERT ON orders WHEN NEW.status IN ('pending_payment', 'paid')
BEGIN
    SELECT RAISE(ABORT, 'per_user_limit')
    WHERE NEW.quantity + (
        SELECT COALESCE(SUM(quantity), 0) FROM orders
        WHERE user_id = NEW.user_id AND sale_id = NEW.sale_id
          AND status IN ('pending_payment', 'paid')
    ) > (SELECT per_user_limit FROM sales WHERE id = NEW.sale_id);
END;

CREATE TRIGGER IF NOT EXISTS orders_take_stock
AFTER INSERT ON orders WHEN NEW.status IN ('pending_payment', 'paid')
BEGIN
    UPDATE sales SET remaining = remaining - NEW.quantity WHERE id = NEW.sale_id;
END;

CREATE TRIGGER IF NOT EXISTS orders_return_stock
AFTER UPDATE OF status ON orders
WHEN OLD.status IN ('pending_payment', 'paid') AND NEW.status IN ('cancelled', 'expired', 'refunded')
BEGIN
    UPDATE sales SET remaining = remaining + NEW.quantity WHERE id = NEW.sale_id;
END;

-- Terminal statuses are final: an order's stock can come back only once.
CREATE TRIGGER IF NOT EXISTS orders_final_statuses
BEFORE UPDATE OF status ON orders
WHEN OLD.status IN ('cancelled', 'expired', 'refunded') AND NEW.status <> OLD.status
BEGIN
    SELECT RAISE(ABORT, 'order_final');
END;

-- The outbox: every change's events, written in the change's own transaction, numbered per sale
-- from `sales.last_event_sequence` (added to older stores by `open_writer`). `data` is the API's
-- JSON of the order or sale right after the change.
CREATE TABLE IF NOT EXISTS events (
    sale_id  TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    type     TEXT NOT NULL,
    subject  TEXT NOT NULL,
    at_ms    INTEGER NOT NULL,
    data     TEXT NOT NULL,
    PRIMARY KEY (sale_id, sequence)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_by_time ON events (at_ms);
