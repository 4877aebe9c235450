-- The cluster's system of record. Applied at every start under an advisory lock (nodes may start
-- together); every statement is idempotent. The constraints repeat the gate's rules so that no
-- bug above this layer can oversell, and terminal statuses are final.

CREATE TABLE IF NOT EXISTS sales (
    id                  text PRIMARY KEY,
    name                text NOT NULL,
    description         text NOT NULL,
    stock               bigint NOT NULL CHECK (stock >= 1),
    -- Stock not held by a pending or paid order, kept by the store's own statements.
    remaining           bigint NOT NULL,
    per_user_limit      integer NOT NULL CHECK (per_user_limit BETWEEN 1 AND 100),
    price_cents         bigint NOT NULL CHECK (price_cents >= 0),
    starts_at           timestamptz NOT NULL,
    ends_at             timestamptz,
    payment_window_secs integer NOT NULL CHECK (payment_window_secs >= 1),
    created_at          timestamptz NOT NULL,
    CONSTRAINT stock_left CHECK (remaining >= 0),
    CONSTRAINT stock_whole CHECK (remaining <= stock)
);

CREATE TABLE IF NOT EXISTS orders (
    id              text PRIMARY KEY,
    sale_id         text NOT NULL REFERENCES sales (id),
    user_id         text NOT NULL,
    quantity        integer NOT NULL CHECK (quantity >= 1),
    status          text NOT NULL
                    CHECK (status IN ('pending_payment', 'paid', 'cancelled', 'expired')),
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    paid_at         timestamptz,
    idempotency_key text,
    -- False from the moment an order leaves an active status until the stock gate confirmed it
    -- has the stock back: the outbox that makes a release survive a node dying in between.
    stock_returned  boolean NOT NULL DEFAULT true
);

CREATE UNIQUE INDEX IF NOT EXISTS orders_idempotency
    ON orders (sale_id, user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS orders_by_buyer ON orders (user_id, sale_id, id);
CREATE INDEX IF NOT EXISTS orders_by_sale ON orders (sale_id, id);
CREATE INDEX IF NOT EXISTS orders_due ON orders (expires_at) WHERE status = 'pending_payment';
CREATE INDEX IF NOT EXISTS orders_returning ON orders (id) WHERE NOT stock_returned;

-- Orders the gate acknowledged but the store's constraints refused. Never expected; kept (not
-- dropped) so an operator sees every acknowledged order, and reported by `flashsale reconcile`.
CREATE TABLE IF NOT EXISTS refused_orders (
    id          text PRIMARY KEY,
    sale_id     text NOT NULL,
    user_id     text NOT NULL,
    quantity    integer NOT NULL,
    reason      text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- When the sale's Redis keys were deleted, the sale having ended and settled (no pending order,
-- every return confirmed, nothing queued): from then on PostgreSQL alone answers for it.
ALTER TABLE sales ADD COLUMN IF NOT EXISTS archived_at timestamptz;
CREATE INDEX IF NOT EXISTS sales_to_archive ON sales (ends_at) WHERE archived_at IS NULL;

CREATE OR REPLACE FUNCTION orders_final_statuses() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status IN ('cancelled', 'expired', 'refunded') AND NEW.status <> OLD.status THEN
        RAISE EXCEPTION 'order_final';
    END IF;
    RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS orders_final_statuses ON orders;
CREATE TRIGGER orders_final_statuses BEFORE UPDATE OF status ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_final_statuses();

-- 'admit_per_sec/pass_ttl_secs/opens_before_secs', or NULL: no waiting room.
ALTER TABLE sales ADD COLUMN IF NOT EXISTS waiting_room text;
-- The room's 32-byte draw seed (its SHA-256 is published, the seed from `starts_at` on); NULL
-- without a room, or for a sale made before seeds (which keeps the keyed draw).
ALTER TABLE sales ADD COLUMN IF NOT EXISTS draw_seed bytea
    CHECK (draw_seed IS NULL OR length(draw_seed) = 32);

-- Sales an operator changes while they run: a version per change, the operator's pause, and
-- who may buy ('codes': only holders of an access code, stored with the order that used one).
ALTER TABLE sales ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 1;
ALTER TABLE sales ADD COLUMN IF NOT EXISTS paused boolean NOT NULL DEFAULT false;
ALTER TABLE sales ADD COLUMN IF NOT EXISTS access text NOT NULL DEFAULT 'public'
    CHECK (access IN ('public', 'codes'));
ALTER TABLE orders ADD COLUMN IF NOT EXISTS access_code text;
-- Every unit may be taken off sale (`remove_stock`): the stock may reach 0.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint
               WHERE conrelid = 'sales'::regclass AND conname = 'sales_stock_check'
                 AND pg_get_constraintdef(oid) LIKE '%>= 1%') THEN
        ALTER TABLE sales DROP CONSTRAINT sales_stock_check;
        ALTER TABLE sales ADD CONSTRAINT sales_stock_check CHECK (stock >= 0);
    END IF;
END
$$;

-- The outbox: every change's events, written in the change's own transaction; their sequence is
-- taken from the sale's counter under the sale's row lock. `data` is the API's JSON of the order
-- or sale right after the change.
ALTER TABLE sales ADD COLUMN IF NOT EXISTS last_event_sequence bigint NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS events (
    sale_id  text NOT NULL,
    sequence bigint NOT NULL,
    type     text NOT NULL,
    subject  text NOT NULL,
    time     timestamptz NOT NULL,
    data     text NOT NULL,
    PRIMARY KEY (sale_id, sequence)
);
CREATE INDEX IF NOT EXISTS events_by_time ON events (time);

-- The installation's id, the `source` of its events: made once, the same for every node.
CREATE TABLE IF NOT EXISTS installation (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    id        text NOT NULL
);
INSERT INTO installation (id) VALUES (substr(md5(random()::text || clock_timestamp()::text), 1, 16))
    ON CONFLICT DO NOTHING;

-- Delivery: one node at a time delivers a sink (its lease), a cursor per sink and sale, and the
-- events set aside after their retries ran out.
CREATE TABLE IF NOT EXISTS event_sink_leases (
    sink       text PRIMARY KEY,
    holder     text NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS event_cursors (
    sink      text NOT NULL,
    sale_id   text NOT NULL,
    delivered bigint NOT NULL,
    PRIMARY KEY (sink, sale_id)
);
CREATE TABLE IF NOT EXISTS event_dead_letters (
    sink        text NOT NULL,
    sale_id     text NOT NULL,
    sequence    bigint NOT NULL,
    event       text NOT NULL,
    reason      text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sink, sale_id, sequence)
);

-- Payments: the provider's intent once `pay` made one (all NULL before), where its money stands
-- (domain/payment.rs), and when the money was decided to go back. A paid order may become
-- `refunded`: the status CHECK made before refunds is replaced once (checked, not rewritten
-- at every start).
ALTER TABLE orders ADD COLUMN IF NOT EXISTS refunded_at timestamptz;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS payment_provider text;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS payment_intent_id text;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS payment_client_secret text;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS payment_state text;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS payment_refund_id text;
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conrelid = 'orders'::regclass AND conname = 'orders_status_with_refunds'
    ) THEN
        ALTER TABLE orders DROP CONSTRAINT IF EXISTS orders_status_check;
        ALTER TABLE orders ADD CONSTRAINT orders_status_with_refunds CHECK
            (status IN ('pending_payment', 'paid', 'cancelled', 'expired', 'refunded'));
        ALTER TABLE orders ADD CONSTRAINT orders_payment_state CHECK
            (payment_state IN ('open', 'succeeded', 'canceled', 'refund_pending', 'refunded'));
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS orders_payments_unsettled ON orders (expires_at)
    WHERE payment_state IN ('open', 'refund_pending');
