//! What every stock gate must do.

use std::sync::Arc;

use flashsale_server::domain::{Order, Sale};
use flashsale_server::domain::{SaleChange, SaleRevision, SaleUpdate};
use flashsale_server::gate::{
    ChangeStep, CodeBinding, GateDecision, GateError, GateRecords, Holding, OrderKey, Reservation,
    StockGate,
};

use super::{at, order, sale, user, T0};

fn reservation(order: &flashsale_server::domain::Order, per_user_limit: u32) -> Reservation {
    Reservation {
        order: order.clone(),
        per_user_limit,
        payment_window_secs: 60,
    }
}

fn is_reserved(decision: &GateDecision) -> bool {
    matches!(decision, GateDecision::Reserved { .. })
}

/// `order` placed at another time (the reservation's time is the node's "now").
fn at_time(mut order: Order, when: &str) -> Order {
    order.created_at = at(when);
    order.expires_at = order.created_at + jiff::SignedDuration::from_secs(60);
    order
}

/// Instantiates every gate case for one implementation; `$make` is an async expression giving
/// a fresh `Option<Arc<dyn StockGate>>` (`None`: the backend is not available here, skipped).
#[macro_export]
macro_rules! gate_suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use $crate::conformance::gate as cases;
            $crate::gate_suite!(@cases $make;
                sells_exactly_the_stock, takes_all_or_nothing, enforces_the_per_user_limit,
                recognizes_an_idempotency_key, releases_each_order_once,
                a_release_lets_the_buyer_buy_again, restores_from_holdings,
                concurrent_buyers_never_oversell, concurrent_clicks_keep_the_limit_and_the_key,
                knows_only_opened_sales,
                a_key_names_its_order_for_good, an_abandoned_order_forgets_its_key,
                decides_the_window_by_its_time, a_winning_key_is_answered_outside_the_window,
                a_pause_refuses_every_purchase_until_resumed, stock_comes_off_at_once_and_on_when_finished,
                a_change_is_made_from_its_base_version_only, a_pending_change_is_kept_until_finished,
                an_earlier_end_closes_the_window, a_code_is_bound_to_the_first_buyer_who_takes_stock,
                two_buyers_racing_with_one_code_one_wins, a_restored_gate_keeps_codes_version_and_pause,
                the_sales_revision_moves_when_announced);
        }
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let Some(gate) = $make.await {
                    cases::$case(gate).await;
                }
            }
        )*
    };
}

pub async fn sells_exactly_the_stock(gate: Arc<dyn StockGate>) {
    let sale = sale(3, 1);
    gate.open_sale(&sale).await.unwrap();
    let mut reserved = 0;
    for buyer in 0..5 {
        let order = order(&sale, &format!("b{buyer}"), 1, None);
        match gate.reserve(&reservation(&order, 1)).await.unwrap() {
            GateDecision::Reserved { .. } => reserved += 1,
            GateDecision::SoldOut { remaining } => assert_eq!(remaining, 0),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(reserved, 3);
    assert_eq!(gate.remaining(&sale.id).await.unwrap(), Some(0));
}

pub async fn takes_all_or_nothing(gate: Arc<dyn StockGate>) {
    let sale = sale(5, 3);
    gate.open_sale(&sale).await.unwrap();
    let first = order(&sale, "a", 3, None);
    assert!(is_reserved(
        &gate.reserve(&reservation(&first, 3)).await.unwrap()
    ));
    let second = order(&sale, "b", 3, None);
    assert_eq!(
        gate.reserve(&reservation(&second, 3)).await.unwrap(),
        GateDecision::SoldOut { remaining: 2 }
    );
    assert_eq!(
        gate.remaining(&sale.id).await.unwrap(),
        Some(2),
        "nothing partial taken"
    );
}

pub async fn enforces_the_per_user_limit(gate: Arc<dyn StockGate>) {
    let sale = sale(10, 2);
    gate.open_sale(&sale).await.unwrap();
    let first = order(&sale, "a", 1, None);
    assert!(is_reserved(
        &gate.reserve(&reservation(&first, 2)).await.unwrap()
    ));
    let second = order(&sale, "a", 1, None);
    assert!(is_reserved(
        &gate.reserve(&reservation(&second, 2)).await.unwrap()
    ));
    let third = order(&sale, "a", 1, None);
    match gate.reserve(&reservation(&third, 2)).await.unwrap() {
        GateDecision::AlreadyPurchased { order_id } => {
            assert!(
                order_id == first.id || order_id == second.id,
                "names an active order"
            )
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(gate.remaining(&sale.id).await.unwrap(), Some(8));
}

pub async fn recognizes_an_idempotency_key(gate: Arc<dyn StockGate>) {
    let sale = sale(10, 5);
    gate.open_sale(&sale).await.unwrap();
    let first = order(&sale, "a", 1, Some("key-1"));
    assert!(is_reserved(
        &gate.reserve(&reservation(&first, 5)).await.unwrap()
    ));
    let repeat = order(&sale, "a", 1, Some("key-1"));
    assert_eq!(
        gate.reserve(&reservation(&repeat, 5)).await.unwrap(),
        GateDecision::SameKey {
            order_id: first.id.clone()
        }
    );
    let other_buyer = order(&sale, "b", 1, Some("key-1"));
    assert!(
        is_reserved(&gate.reserve(&reservation(&other_buyer, 5)).await.unwrap()),
        "a key is scoped to its buyer"
    );
    assert_eq!(gate.remaining(&sale.id).await.unwrap(), Some(8));
}

pub async fn releases_each_order_once(gate: Arc<dyn StockGate>) {
    let sale = sale(4, 2);
    gate.open_sale(&sale).await.unwrap();
    let held = order(&sale, "a", 2, None);
    gate.reserve(&reservation(&held, 2)).await.unwrap();
    assert_eq!(gate.remaining(&sale.id).await.unwrap(), Some(2));
    assert_eq!(gate.held(&sale.id).await.unwrap(), Some(2));
    let holding = Holding::from(&held);
    assert!(gate.release(&holding, at(T0)).await.unwrap());
    assert_eq!(gate.held(&sale.id).await.unwrap(), Some(0));
    assert!(
        !gate.release(&holding, at(T0)).await.unwrap(),
        "a second release is a no-op"
    );
    assert_eq!(gate.remaining(&sale.id).await.unwrap(), Some(4));
    let stranger = Holding::from(&order(&sale, "z", 1, None));
    assert!(
        !gate.release(&stranger, at(T0)).await.unwrap(),
        "an unknown order releases nothing"
    );
    assert_eq!(gate.remaining(&sale.id).await.unwrap(), Some(4));
}

pub async fn a_release_lets_the_buyer_buy_again(gate: Arc<dyn StockGate>) {
    let sale = sale(1, 1);
    gate.open_sale(&sale).await.unwrap();
    let first = order(&sale, "a", 1, None);
    gate.reserve(&reservation(&first, 1)).await.unwrap();
    assert!(gate.release(&Holding::from(&first), at(T0)).await.unwrap());
    let again = order(&sale, "a", 1, None);
    assert!(is_reserved(
        &gate.reserve(&reservation(&again, 1)).await.unwrap()
    ));
}

pub async fn restores_from_holdings(gate: Arc<dyn StockGate>) {
    let sale = sale(10, 2);
    gate.open_sale(&sale).await.unwrap();
    let stale = order(&sale, "gone", 1, None);
    gate.reserve(&reservation(&stale, 2)).await.unwrap();
    let kept = order(&sale, "a", 2, Some("k"));
    let other = order(&sale, "b", 1, None);
    let cancelled = order(&sale, "c", 1, Some("kc"));
    gate.restore_sale(
        &sale,
        GateRecords {
            holdings: vec![Holding::from(&kept), Holding::from(&other)],
            keys: vec![OrderKey::of(&cancelled).unwrap()],
            codes: Vec::new(),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        gate.key_owner(&sale.id, &user("c"), "kc").await.unwrap(),
        Some(cancelled.id.clone()),
        "the keys of inactive orders are restored too"
    );
    assert_eq!(
        gate.remaining(&sale.id).await.unwrap(),
        Some(7),
        "10 - 2 - 1"
    );
    assert_eq!(
        gate.held(&sale.id).await.unwrap(),
        Some(3),
        "only what was restored"
    );
    let over = order(&sale, "a", 1, None);
    assert_eq!(
        gate.reserve(&reservation(&over, 2)).await.unwrap(),
        GateDecision::AlreadyPurchased {
            order_id: kept.id.clone()
        }
    );
    let repeat = order(&sale, "a", 1, Some("k"));
    assert_eq!(
        gate.reserve(&reservation(&repeat, 2)).await.unwrap(),
        GateDecision::SameKey {
            order_id: kept.id.clone()
        }
    );
    let fresh = order(&sale, "gone", 2, None);
    assert!(
        is_reserved(&gate.reserve(&reservation(&fresh, 2)).await.unwrap()),
        "holdings not restored are forgotten"
    );
    let _ = user("a");
}

pub async fn concurrent_buyers_never_oversell(gate: Arc<dyn StockGate>) {
    let sale = sale(100, 1);
    gate.open_sale(&sale).await.unwrap();
    let mut tasks = Vec::new();
    for buyer in 0..1000 {
        let gate = Arc::clone(&gate);
        let order = order(&sale, &format!("crowd-{buyer}"), 1, None);
        tasks.push(tokio::spawn(async move {
            gate.reserve(&reservation(&order, 1)).await.unwrap()
        }));
    }
    let mut reserved = 0;
    for task in tasks {
        if is_reserved(&task.await.unwrap()) {
            reserved += 1;
        }
    }
    assert_eq!(reserved, 100);
    assert_eq!(gate.remaining(&sale.id).await.unwrap(), Some(0));
    assert_eq!(gate.held(&sale.id).await.unwrap(), Some(100));
}

/// One buyer clicking five times at once (limit 2), another retrying one key five times at once,
/// among a crowd: decided together (the cluster's gate puts concurrent purchases of a sale in one
/// script call), each purchase still sees the ones before it. The stock is exactly what may win
/// (the crowd's 200, the clicker's 2, the key's 1), so the order the purchases run in decides
/// nothing: a third unit to the clicker or a second to the key would leave a buyer of the crowd
/// sold out.
pub async fn concurrent_clicks_keep_the_limit_and_the_key(gate: Arc<dyn StockGate>) {
    let sale = sale(203, 2);
    gate.open_sale(&sale).await.unwrap();
    let mut tasks = Vec::new();
    for attempt in 0..5 {
        let clicker = order(&sale, "clicker", 1, None);
        let retrier = order(&sale, "retrier", 1, Some("one-key"));
        for (who, order) in [("clicker", clicker), ("retrier", retrier)] {
            let gate = Arc::clone(&gate);
            tasks.push(tokio::spawn(async move {
                let decision = gate.reserve(&reservation(&order, 2)).await.unwrap();
                (who, order.id, decision)
            }));
        }
        for buyer in 0..40 {
            let gate = Arc::clone(&gate);
            let order = order(&sale, &format!("crowd-{attempt}-{buyer}"), 1, None);
            tasks.push(tokio::spawn(async move {
                let decision = gate.reserve(&reservation(&order, 2)).await.unwrap();
                ("crowd", order.id, decision)
            }));
        }
    }
    let mut reserved = std::collections::HashMap::<&str, Vec<_>>::new();
    let mut refusals = Vec::new();
    for task in tasks {
        let (who, order_id, decision) = task.await.unwrap();
        match decision {
            GateDecision::Reserved { .. } => reserved.entry(who).or_default().push(order_id),
            GateDecision::SoldOut { .. } => panic!("{who} met sold out: a unit went too far"),
            other => refusals.push((who, other)),
        }
    }
    let clicker = reserved.get("clicker").cloned().unwrap_or_default();
    let retrier = reserved.get("retrier").cloned().unwrap_or_default();
    assert_eq!(clicker.len(), 2, "the clicker gets exactly the limit");
    assert_eq!(retrier.len(), 1, "one key buys once");
    assert_eq!(refusals.len(), 3 + 4, "{refusals:?}");
    for (who, refusal) in &refusals {
        match (who, refusal) {
            (&"clicker", GateDecision::AlreadyPurchased { order_id }) => {
                assert!(
                    clicker.contains(order_id),
                    "names one of the clicker's orders"
                )
            }
            (&"retrier", GateDecision::SameKey { order_id }) => {
                assert_eq!(order_id, &retrier[0], "names the key's order")
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let crowd = reserved.get("crowd").map_or(0, Vec::len) as u64;
    assert_eq!(crowd + 3, 203, "the crowd takes the rest, no more");
    assert_eq!(gate.remaining(&sale.id).await.unwrap(), Some(0));
    assert_eq!(gate.held(&sale.id).await.unwrap(), Some(203));
}

pub async fn knows_only_opened_sales(gate: Arc<dyn StockGate>) {
    let sale = sale(1, 1);
    assert_eq!(gate.remaining(&sale.id).await.unwrap(), None);
    assert_eq!(gate.held(&sale.id).await.unwrap(), None);
    let order = order(&sale, "a", 1, None);
    assert!(matches!(
        gate.reserve(&reservation(&order, 1)).await,
        Err(GateError::UnknownSale(_))
    ));
    gate.ping().await.unwrap();
}

/// Regression (#8 bug 2): a key names its order also after the order gave its stock back, so a
/// retry never buys a second time.
pub async fn a_key_names_its_order_for_good(gate: Arc<dyn StockGate>) {
    let sale = sale(5, 1);
    gate.open_sale(&sale).await.unwrap();
    let first = order(&sale, "a", 1, Some("k"));
    assert!(is_reserved(
        &gate.reserve(&reservation(&first, 1)).await.unwrap()
    ));
    assert!(gate.release(&Holding::from(&first), at(T0)).await.unwrap());
    let retry = order(&sale, "a", 1, Some("k"));
    assert_eq!(
        gate.reserve(&reservation(&retry, 1)).await.unwrap(),
        GateDecision::SameKey {
            order_id: first.id.clone()
        },
        "a cancelled order's key still names it"
    );
    assert_eq!(
        gate.key_owner(&sale.id, &user("a"), "k").await.unwrap(),
        Some(first.id.clone())
    );
    assert_eq!(
        gate.key_owner(&sale.id, &user("b"), "k").await.unwrap(),
        None
    );
    assert_eq!(gate.remaining(&sale.id).await.unwrap(), Some(5));
}

/// An order the store never recorded is abandoned: its stock and its key are both forgotten,
/// so the buyer's retry is decided afresh.
pub async fn an_abandoned_order_forgets_its_key(gate: Arc<dyn StockGate>) {
    let sale = sale(5, 1);
    gate.open_sale(&sale).await.unwrap();
    let first = order(&sale, "a", 1, Some("k"));
    assert!(is_reserved(
        &gate.reserve(&reservation(&first, 1)).await.unwrap()
    ));
    assert!(gate.abandon(&Holding::from(&first), at(T0)).await.unwrap());
    assert_eq!(
        gate.key_owner(&sale.id, &user("a"), "k").await.unwrap(),
        None
    );
    let retry = order(&sale, "a", 1, Some("k"));
    assert!(is_reserved(
        &gate.reserve(&reservation(&retry, 1)).await.unwrap()
    ));
    assert_eq!(gate.remaining(&sale.id).await.unwrap(), Some(4));
}

fn windowed_sale(starts_at: &str, ends_at: &str) -> Sale {
    Sale {
        starts_at: at(starts_at),
        ends_at: Some(at(ends_at)),
        ..sale(5, 1)
    }
}

/// The gate keeps the window and decides it with its own time (here the reservation's, as a
/// manual clock gives it; in production Redis uses its own clock).
pub async fn decides_the_window_by_its_time(gate: Arc<dyn StockGate>) {
    let sale = windowed_sale("2026-12-01T12:00:00Z", "2026-12-01T13:00:00Z");
    gate.open_sale(&sale).await.unwrap();
    let early = at_time(order(&sale, "a", 1, None), "2026-12-01T11:59:59.999Z");
    assert_eq!(
        gate.reserve(&reservation(&early, 1)).await.unwrap(),
        GateDecision::NotStarted
    );
    let late = at_time(order(&sale, "b", 1, None), "2026-12-01T13:00:00Z");
    assert_eq!(
        gate.reserve(&reservation(&late, 1)).await.unwrap(),
        GateDecision::Ended
    );
    let on_time = at_time(order(&sale, "c", 1, None), T0);
    match gate.reserve(&reservation(&on_time, 1)).await.unwrap() {
        GateDecision::Reserved { created_at } => assert_eq!(created_at, at(T0)),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(gate.remaining(&sale.id).await.unwrap(), Some(4));
}

/// Regression (#8 bug 2): a retry of a winning key after the end, or after the sale sold out,
/// gets its order, not `sale_ended` / `sold_out`.
pub async fn a_winning_key_is_answered_outside_the_window(gate: Arc<dyn StockGate>) {
    let sale = Sale {
        stock: 1,
        ..windowed_sale("2026-12-01T11:00:00Z", "2026-12-01T13:00:00Z")
    };
    gate.open_sale(&sale).await.unwrap();
    let won = at_time(order(&sale, "a", 1, Some("k")), T0);
    assert!(is_reserved(
        &gate.reserve(&reservation(&won, 1)).await.unwrap()
    ));
    let sold_out = at_time(order(&sale, "b", 1, None), T0);
    assert_eq!(
        gate.reserve(&reservation(&sold_out, 1)).await.unwrap(),
        GateDecision::SoldOut { remaining: 0 }
    );
    for when in [T0, "2026-12-01T14:00:00Z"] {
        let retry = at_time(order(&sale, "a", 1, Some("k")), when);
        assert_eq!(
            gate.reserve(&reservation(&retry, 1)).await.unwrap(),
            GateDecision::SameKey {
                order_id: won.id.clone()
            },
            "retry at {when}"
        );
    }
}

/// `base` changed by `change` at T0: the revision a service would make.
fn revised(base: &Sale, change: SaleChange) -> SaleRevision {
    change
        .apply(base, at(T0))
        .expect("a valid change")
        .expect("a change that changes something")
}

fn update(update: SaleUpdate) -> SaleChange {
    SaleChange::Update(update)
}

/// Both steps of a change, as the service runs them (the store's step between them is not the
/// gate's).
async fn change(gate: &dyn StockGate, base: &Sale, revision: &SaleRevision) -> ChangeStep {
    let step = gate
        .begin_change(base.version, revision, at(T0))
        .await
        .unwrap();
    if step == ChangeStep::Applied {
        gate.finish_change(&revision.sale, at(T0)).await.unwrap();
    }
    step
}

fn with_code(mut order: Order, code: &str) -> Order {
    order.access_code = Some(code.to_owned());
    order
}

pub async fn a_pause_refuses_every_purchase_until_resumed(gate: Arc<dyn StockGate>) {
    let sale = sale(5, 1);
    gate.open_sale(&sale).await.unwrap();
    let won = order(&sale, "a", 1, Some("k"));
    assert!(is_reserved(
        &gate.reserve(&reservation(&won, 1)).await.unwrap()
    ));
    let paused = revised(&sale, SaleChange::Pause);
    assert_eq!(
        change(gate.as_ref(), &sale, &paused).await,
        ChangeStep::Applied
    );
    for buyer in ["b", "c"] {
        let refused = order(&sale, buyer, 1, None);
        assert_eq!(
            gate.reserve(&reservation(&refused, 1)).await.unwrap(),
            GateDecision::Paused
        );
    }
    let retry = order(&sale, "a", 1, Some("k"));
    assert_eq!(
        gate.reserve(&reservation(&retry, 1)).await.unwrap(),
        GateDecision::SameKey {
            order_id: won.id.clone()
        },
        "a winning key is still answered with its order"
    );
    assert_eq!(
        gate.remaining(&sale.id).await.unwrap(),
        Some(4),
        "the count ignores the pause"
    );
    // Stock comes back while paused; the pause holds.
    assert!(gate.release(&Holding::from(&won), at(T0)).await.unwrap());
    let still = order(&sale, "d", 1, None);
    assert_eq!(
        gate.reserve(&reservation(&still, 1)).await.unwrap(),
        GateDecision::Paused
    );
    let resumed = revised(&paused.sale, SaleChange::Resume);
    assert_eq!(
        change(gate.as_ref(), &paused.sale, &resumed).await,
        ChangeStep::Applied
    );
    let after = order(&sale, "d", 1, None);
    assert!(is_reserved(
        &gate.reserve(&reservation(&after, 1)).await.unwrap()
    ));
    assert_eq!(gate.remaining(&sale.id).await.unwrap(), Some(4));
}

pub async fn stock_comes_off_at_once_and_on_when_finished(gate: Arc<dyn StockGate>) {
    let sale = sale(5, 3);
    gate.open_sale(&sale).await.unwrap();
    let held = order(&sale, "a", 3, None);
    assert!(is_reserved(
        &gate.reserve(&reservation(&held, 3)).await.unwrap()
    ));
    let too_much = revised(
        &sale,
        update(SaleUpdate {
            remove_stock: Some(3),
            ..SaleUpdate::default()
        }),
    );
    assert_eq!(
        gate.begin_change(sale.version, &too_much, at(T0))
            .await
            .unwrap(),
        ChangeStep::InsufficientStock { remaining: 2 },
        "held units are never taken off sale"
    );
    assert_eq!(gate.remaining(&sale.id).await.unwrap(), Some(2));
    assert!(
        gate.pending_changes().await.unwrap().is_empty(),
        "a refused change leaves nothing pending"
    );
    let removed = revised(
        &sale,
        update(SaleUpdate {
            remove_stock: Some(2),
            ..SaleUpdate::default()
        }),
    );
    assert_eq!(
        gate.begin_change(sale.version, &removed, at(T0))
            .await
            .unwrap(),
        ChangeStep::Applied
    );
    assert_eq!(
        gate.remaining(&sale.id).await.unwrap(),
        Some(0),
        "taken off at the first step"
    );
    gate.finish_change(&removed.sale, at(T0)).await.unwrap();
    let refused = order(&sale, "b", 1, None);
    assert_eq!(
        gate.reserve(&reservation(&refused, 3)).await.unwrap(),
        GateDecision::SoldOut { remaining: 0 }
    );
    let added = revised(
        &removed.sale,
        update(SaleUpdate {
            add_stock: Some(10),
            ..SaleUpdate::default()
        }),
    );
    assert_eq!(
        gate.begin_change(removed.sale.version, &added, at(T0))
            .await
            .unwrap(),
        ChangeStep::Applied
    );
    assert_eq!(
        gate.remaining(&sale.id).await.unwrap(),
        Some(0),
        "added units wait for the store"
    );
    gate.finish_change(&added.sale, at(T0)).await.unwrap();
    gate.finish_change(&added.sale, at(T0)).await.unwrap();
    assert_eq!(
        gate.remaining(&sale.id).await.unwrap(),
        Some(10),
        "added once, however often the step repeats"
    );
    let mut sold = 0;
    for buyer in 0..12 {
        let order = order(&sale, &format!("n{buyer}"), 1, None);
        if is_reserved(&gate.reserve(&reservation(&order, 3)).await.unwrap()) {
            sold += 1;
        }
    }
    assert_eq!(sold, 10);
    assert_eq!(gate.held(&sale.id).await.unwrap(), Some(13));
}

pub async fn a_change_is_made_from_its_base_version_only(gate: Arc<dyn StockGate>) {
    let sale = sale(5, 1);
    gate.open_sale(&sale).await.unwrap();
    let first = revised(&sale, SaleChange::Pause);
    let rival = revised(
        &sale,
        update(SaleUpdate {
            remove_stock: Some(1),
            ..SaleUpdate::default()
        }),
    );
    assert_eq!(
        gate.begin_change(sale.version, &first, at(T0))
            .await
            .unwrap(),
        ChangeStep::Applied
    );
    assert_eq!(
        gate.begin_change(sale.version, &first, at(T0))
            .await
            .unwrap(),
        ChangeStep::Applied,
        "a repeated step"
    );
    assert_eq!(
        gate.begin_change(sale.version, &rival, at(T0))
            .await
            .unwrap(),
        ChangeStep::Conflict {
            pending: Some(Box::new(first.clone()))
        },
        "the rival learns which change came first"
    );
    assert_eq!(gate.remaining(&sale.id).await.unwrap(), Some(5));
    gate.finish_change(&first.sale, at(T0)).await.unwrap();
    assert_eq!(
        gate.begin_change(sale.version, &rival, at(T0))
            .await
            .unwrap(),
        ChangeStep::Conflict { pending: None }
    );
    let rebased = revised(
        &first.sale,
        update(SaleUpdate {
            remove_stock: Some(1),
            ..SaleUpdate::default()
        }),
    );
    assert_eq!(
        change(gate.as_ref(), &first.sale, &rebased).await,
        ChangeStep::Applied
    );
    assert_eq!(gate.remaining(&sale.id).await.unwrap(), Some(4));
    // A finish of a change another one overtook changes nothing.
    gate.finish_change(&first.sale, at(T0)).await.unwrap();
    assert_eq!(gate.remaining(&sale.id).await.unwrap(), Some(4));
}

pub async fn a_pending_change_is_kept_until_finished(gate: Arc<dyn StockGate>) {
    let (one, two) = (sale(5, 1), sale(5, 1));
    gate.open_sale(&one).await.unwrap();
    gate.open_sale(&two).await.unwrap();
    let paused = revised(&one, SaleChange::Pause);
    gate.begin_change(one.version, &paused, at(T0))
        .await
        .unwrap();
    assert_eq!(gate.pending_changes().await.unwrap(), vec![paused.clone()]);
    gate.finish_change(&paused.sale, at(T0)).await.unwrap();
    assert!(gate.pending_changes().await.unwrap().is_empty());
}

pub async fn an_earlier_end_closes_the_window(gate: Arc<dyn StockGate>) {
    let sale = windowed_sale("2026-12-01T11:00:00Z", "2026-12-01T14:00:00Z");
    gate.open_sale(&sale).await.unwrap();
    let ended = revised(&sale, SaleChange::End);
    assert_eq!(ended.sale.ends_at, Some(at(T0)));
    assert_eq!(
        change(gate.as_ref(), &sale, &ended).await,
        ChangeStep::Applied
    );
    let late = at_time(order(&sale, "a", 1, None), T0);
    assert_eq!(
        gate.reserve(&reservation(&late, 1)).await.unwrap(),
        GateDecision::Ended
    );
    let reopened = revised(
        &ended.sale,
        update(SaleUpdate {
            ends_at: Some(None),
            ..SaleUpdate::default()
        }),
    );
    assert_eq!(
        change(gate.as_ref(), &ended.sale, &reopened).await,
        ChangeStep::Applied
    );
    assert!(is_reserved(
        &gate.reserve(&reservation(&late, 1)).await.unwrap()
    ));
}

pub async fn a_code_is_bound_to_the_first_buyer_who_takes_stock(gate: Arc<dyn StockGate>) {
    let sale = sale(1, 2);
    gate.open_sale(&sale).await.unwrap();
    assert_eq!(gate.code_owner(&sale.id, "code-1").await.unwrap(), None);
    let first = with_code(order(&sale, "a", 1, None), "code-1");
    assert!(is_reserved(
        &gate.reserve(&reservation(&first, 2)).await.unwrap()
    ));
    assert_eq!(
        gate.code_owner(&sale.id, "code-1").await.unwrap(),
        Some(user("a"))
    );
    let other = with_code(order(&sale, "b", 1, None), "code-1");
    assert_eq!(
        gate.reserve(&reservation(&other, 2)).await.unwrap(),
        GateDecision::CodeTaken
    );
    // Sold out: a refused purchase binds nothing.
    let unlucky = with_code(order(&sale, "c", 1, None), "code-2");
    assert_eq!(
        gate.reserve(&reservation(&unlucky, 2)).await.unwrap(),
        GateDecision::SoldOut { remaining: 0 }
    );
    assert_eq!(gate.code_owner(&sale.id, "code-2").await.unwrap(), None);
    // The code stays its buyer's after the order is cancelled; an abandoned order's is forgotten.
    assert!(gate.release(&Holding::from(&first), at(T0)).await.unwrap());
    assert_eq!(
        gate.code_owner(&sale.id, "code-1").await.unwrap(),
        Some(user("a"))
    );
    let again = with_code(order(&sale, "a", 1, None), "code-1");
    assert!(is_reserved(
        &gate.reserve(&reservation(&again, 2)).await.unwrap()
    ));
    let abandoned = with_code(order(&sale, "d", 1, None), "code-3");
    gate.release(&Holding::from(&again), at(T0)).await.unwrap();
    assert!(is_reserved(
        &gate.reserve(&reservation(&abandoned, 2)).await.unwrap()
    ));
    assert!(gate
        .abandon(&Holding::from(&abandoned), at(T0))
        .await
        .unwrap());
    assert_eq!(gate.code_owner(&sale.id, "code-3").await.unwrap(), None);
}

pub async fn two_buyers_racing_with_one_code_one_wins(gate: Arc<dyn StockGate>) {
    let sale = sale(100, 1);
    gate.open_sale(&sale).await.unwrap();
    for round in 0..20 {
        let code = format!("race-{round}");
        let (first, second) = (
            with_code(order(&sale, &format!("x{round}"), 1, None), &code),
            with_code(order(&sale, &format!("y{round}"), 1, None), &code),
        );
        let (a, b) = tokio::join!(
            gate.reserve(&reservation(&first, 1)),
            gate.reserve(&reservation(&second, 1))
        );
        let decisions = [a.unwrap(), b.unwrap()];
        assert_eq!(
            decisions.iter().filter(|d| is_reserved(d)).count(),
            1,
            "{decisions:?}"
        );
        assert!(
            decisions.contains(&GateDecision::CodeTaken),
            "{decisions:?}"
        );
    }
    assert_eq!(gate.remaining(&sale.id).await.unwrap(), Some(80));
}

pub async fn a_restored_gate_keeps_codes_version_and_pause(gate: Arc<dyn StockGate>) {
    let base = sale(5, 1);
    let paused = revised(&base, SaleChange::Pause).sale;
    let bound = with_code(order(&paused, "a", 1, None), "kept");
    gate.restore_sale(
        &paused,
        GateRecords {
            holdings: vec![Holding::from(&bound)],
            keys: Vec::new(),
            codes: vec![CodeBinding::of(&bound).unwrap()],
        },
    )
    .await
    .unwrap();
    assert_eq!(
        gate.code_owner(&paused.id, "kept").await.unwrap(),
        Some(user("a"))
    );
    let refused = order(&paused, "b", 1, None);
    assert_eq!(
        gate.reserve(&reservation(&refused, 1)).await.unwrap(),
        GateDecision::Paused
    );
    let stale = revised(
        &base,
        update(SaleUpdate {
            name: Some("Renamed".into()),
            ..SaleUpdate::default()
        }),
    );
    assert!(
        matches!(
            gate.begin_change(base.version, &stale, at(T0))
                .await
                .unwrap(),
            ChangeStep::Conflict { .. }
        ),
        "the restored version is the store's"
    );
    let resumed = revised(&paused, SaleChange::Resume);
    assert_eq!(
        change(gate.as_ref(), &paused, &resumed).await,
        ChangeStep::Applied
    );
    assert!(is_reserved(
        &gate.reserve(&reservation(&refused, 1)).await.unwrap()
    ));
}

pub async fn the_sales_revision_moves_when_announced(gate: Arc<dyn StockGate>) {
    let before = gate.sales_revision().await.unwrap();
    gate.announce_sales_change().await.unwrap();
    gate.announce_sales_change().await.unwrap();
    assert_eq!(gate.sales_revision().await.unwrap(), before + 2);
}
