// The storefront: sale cards with live counts and a countdown by the server's clock, buying with
// an idempotency key kept across retries, and the buyer's orders with pay and cancel.
'use strict';

const demo = document.body.dataset.demo === 'true';
const session = {
  get token() { return sessionStorage.getItem('flashsale.token'); },
  get user() { return sessionStorage.getItem('flashsale.user'); },
  set(token, user) { sessionStorage.setItem('flashsale.token', token); sessionStorage.setItem('flashsale.user', user); },
  clear() { sessionStorage.removeItem('flashsale.token'); sessionStorage.removeItem('flashsale.user'); },
};

const notice = document.getElementById('notice');
const salesBox = document.getElementById('sales');
const ordersBox = document.getElementById('orders');
const cards = new Map();     // sale id -> { sale, node, parts }
const attempts = new Map();  // sale id -> { key, running }: one key per purchase attempt
const lines = new Map();     // sale id -> { active }: this page is in the sale's waiting line
let orders = [];

function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }

// ---- signing in ----
function userFromToken(token) {
  try {
    const claims = JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
    return String(claims.sub || '');
  } catch (_) { return ''; }
}

function showAccount() {
  const signedIn = Boolean(session.token);
  document.getElementById('signed-in').hidden = !signedIn;
  document.getElementById('who').textContent = session.user || '';
  document.getElementById('demo-sign-in').hidden = signedIn || !demo;
  document.getElementById('token-sign-in').hidden = signedIn || demo;
  for (const card of cards.values()) updateCard(card);
  refreshOrders();
}

document.getElementById('demo-sign-in').addEventListener('submit', async (event) => {
  event.preventDefault();
  const name = document.getElementById('name').value.trim();
  if (!name) { notice.textContent = 'Please enter a name.'; return; }
  try {
    const reply = await api('/api/v1/demo/token', { method: 'POST', body: { user: name } });
    if (!reply.ok) { notice.textContent = sentence(reply); return; }
    session.set(reply.body.token, name);
    notice.textContent = 'Welcome, ' + name + '.';
    showAccount();
  } catch (_) { notice.textContent = 'Could not reach the shop. Please try again.'; }
});

document.getElementById('token-sign-in').addEventListener('submit', (event) => {
  event.preventDefault();
  const token = document.getElementById('token').value.trim();
  const user = userFromToken(token);
  if (!user) { notice.textContent = 'That does not look like a buyer token.'; return; }
  session.set(token, user);
  showAccount();
});

document.getElementById('sign-out').addEventListener('click', () => {
  session.clear();
  orders = [];
  notice.textContent = 'Signed out.';
  showAccount();
});

// ---- sale cards ----
function localState(sale) {
  const now = serverClock.now();
  if (sale.ends_at && now >= Date.parse(sale.ends_at)) return 'ended';
  if (sale.state === 'paused') return 'paused';
  if (now < Date.parse(sale.starts_at)) return 'scheduled';
  if (sale.state === 'scheduled') return sale.remaining > 0 ? 'live' : 'sold_out';
  return sale.state;
}

const STATE_TEXT = { scheduled: 'Starts soon', live: 'On sale now', sold_out: 'Sold out', paused: 'Paused', ended: 'Ended' };

function makeCard(sale) {
  const parts = {
    heading: element('h3', { id: 'sale-' + sale.id }),
    description: element('p'),
    price: element('p'),
    state: element('p', { class: 'state' }),
    remaining: element('p'),
    countdown: element('p', { class: 'countdown', role: 'timer', 'aria-live': 'off' }),
    room: element('p', { class: 'room' }),
    code: element('input', { id: 'code-' + sale.id, autocomplete: 'off', maxlength: '64' }),
    buy: element('button', { type: 'button' }, 'Buy'),
    message: element('p', { class: 'message', role: 'status', 'aria-live': 'polite' }),
  };
  parts.codeField = element('p', { class: 'code' }, element('label', { for: 'code-' + sale.id }, 'Access code '), parts.code);
  const node = element('article', { class: 'card', 'aria-labelledby': 'sale-' + sale.id },
    parts.heading, parts.description, parts.price, parts.state, parts.remaining, parts.countdown, parts.room,
    parts.codeField, parts.buy, parts.message);
  const card = { sale, node, parts };
  parts.buy.addEventListener('click', () => (card.sale.waiting_room ? joinLine(card) : buy(card)));
  return card;
}

function updateCard(card) {
  const { sale, parts } = card;
  const state = localState(sale);
  parts.heading.textContent = sale.name;
  parts.description.textContent = sale.description;
  parts.description.hidden = !sale.description;
  parts.price.textContent = money(sale.price_cents) + (sale.per_user_limit > 1 ? ' · up to ' + sale.per_user_limit + ' per buyer' : '');
  parts.state.textContent = STATE_TEXT[state] || state;
  parts.state.className = 'state ' + state;
  parts.remaining.textContent = sale.remaining + ' of ' + sale.stock + ' left';
  if (state === 'scheduled') {
    parts.countdown.hidden = false;
    parts.countdown.textContent = 'Starts in ' + countdownText(Date.parse(sale.starts_at) - serverClock.now());
  } else {
    parts.countdown.hidden = true;
  }
  const attempt = attempts.get(sale.id);
  const busy = Boolean(attempt && attempt.running);
  parts.codeField.hidden = sale.access !== 'codes';
  const room = sale.waiting_room;
  parts.room.hidden = !room;
  if (room) {
    const opensAt = lineOpensAt(sale);
    const open = serverClock.now() >= opensAt;
    parts.room.textContent = open
      ? 'Waiting room: press Buy to join the line; the order of early arrivals is drawn at the start.'
      : 'Waiting room: the line opens in ' + countdownText(opensAt - serverClock.now()) + '.';
    const line = lines.get(sale.id);
    parts.buy.disabled = state === 'ended' || state === 'paused' || !open || !session.token || busy || Boolean(line && line.active);
  } else {
    parts.buy.disabled = state !== 'live' || !session.token || busy;
  }
  parts.buy.title = !session.token ? 'Sign in to buy' : '';
}

function lineOpensAt(sale) {
  return Date.parse(sale.starts_at) - sale.waiting_room.opens_before_secs * 1000;
}

// ---- the waiting room ----
function lineText(status) {
  if (status.state === 'paused') return 'The sale is paused. You keep your place (' + status.position + '); the line goes on when it resumes.';
  if (status.state === 'sold_out') return 'Sold out for now. You keep your place (' + status.position + ') in case units come back.';
  if (status.position === null) return 'You are in line. Places are drawn when the sale starts, so arriving early gives no edge.';
  if (status.position <= 1) return 'You are next in line…';
  return 'In line: position ' + status.position + ', about ' + countdownText(status.eta_secs * 1000) + ' to go.';
}

// Seconds until the next look at the line: at the start for those waiting for the draw (spread
// over 5 s so a crowd does not ask at once), then half the estimated wait, between 1 and 30 s.
function nextLook(sale, status) {
  const seconds = status.position === null
    ? Math.max(1, (Date.parse(sale.starts_at) - serverClock.now()) / 1000) + Math.random() * 5
    : Math.min(Math.max((status.eta_secs || 1) / 2, 1), 30);
  return seconds * (0.75 + Math.random() * 0.5) * 1000;
}

// The access code a buyer typed into a presale's card, as the header that carries it.
function codeHeader(card) {
  const code = card.parts.code.value.trim();
  return card.sale.access === 'codes' && code ? { 'Access-Code': code } : {};
}

async function lineCall(card, method) {
  const { sale } = card;
  for (let failures = 0; ; failures += 1) {
    try {
      const reply = await api('/api/v1/sales/' + encodeURIComponent(sale.id) + '/queue', { method, token: session.token, headers: codeHeader(card) });
      if (reply.status !== 429 && reply.status !== 503) return reply;
      await sleep((reply.retryAfter || 1) * 1000 * (0.75 + Math.random() * 0.5));
    } catch (_) {
      if (failures >= 5) return null;
      await sleep(Math.min(2 ** failures, 8) * 1000);
    }
  }
}

// "Buy" on a sale with a waiting room: join the line, follow the place until the pass comes,
// then buy with it.
async function joinLine(card) {
  const { sale, parts } = card;
  if (lines.get(sale.id)?.active) return;
  const line = { active: true };
  lines.set(sale.id, line);
  updateCard(card);
  parts.message.className = 'message';
  parts.message.textContent = 'Joining the line…';
  let reply = await lineCall(card, 'POST');
  for (;;) {
    if (!reply) {
      parts.message.className = 'message error';
      parts.message.textContent = 'Could not reach the shop. Press Buy to try again (you keep your place).';
      break;
    }
    if (!reply.ok) {
      parts.message.className = 'message error';
      parts.message.textContent = sentence(reply);
      if (reply.status === 401) { session.clear(); showAccount(); }
      break;
    }
    const status = reply.body;
    if (status.state === 'admitted') {
      parts.message.className = 'message';
      parts.message.textContent = 'Your turn! Buying…';
      line.active = false;
      await buy(card, status.pass);
      break;
    }
    if (status.state === 'ended') {
      parts.message.className = 'message error';
      parts.message.textContent = SENTENCES.sale_ended;
      break;
    }
    parts.message.className = 'message';
    parts.message.textContent = lineText(status);
    await sleep(nextLook(sale, status));
    reply = await lineCall(card, 'GET');
  }
  line.active = false;
  updateCard(card);
}

// Only the sales a buyer can still act on or has just seen end (the server keeps every sale
// ever made), a page at a time: one request while there are fewer than a hundred.
async function currentSales() {
  const sales = [];
  let cursor = null;
  do {
    const reply = await api('/api/v1/sales?current=true&limit=100' + (cursor ? '&cursor=' + encodeURIComponent(cursor) : ''));
    if (!reply.ok) return reply;
    sales.push(...reply.body.sales);
    cursor = reply.body.next_cursor;
  } while (cursor);
  return { ok: true, sales };
}

async function refreshSales() {
  const reply = await currentSales();
  if (!reply.ok) return reply.retryAfter || false;
  const seen = new Set();
  const wasEmpty = cards.size === 0;
  for (const sale of reply.sales) {
    seen.add(sale.id);
    let card = cards.get(sale.id);
    if (!card) {
      card = makeCard(sale);
      cards.set(sale.id, card);
    }
    card.sale = sale;
    updateCard(card);
  }
  for (const [id, card] of cards) {
    if (!seen.has(id)) { card.node.remove(); cards.delete(id); }
  }
  if (wasEmpty || salesBox.children.length !== cards.size) {
    salesBox.replaceChildren(...[...cards.values()].map((card) => card.node));
    if (cards.size === 0) salesBox.replaceChildren(element('p', {}, 'No sales yet. Come back soon.'));
    renderOrders();
  }
  return true;
}

// ---- buying ----
async function buy(card, queuePass = null) {
  const { sale, parts } = card;
  let attempt = attempts.get(sale.id);
  if (attempt && attempt.running) return; // a second click while the first is on its way
  if (!attempt) { attempt = { key: newKey(), running: false }; attempts.set(sale.id, attempt); }
  attempt.running = true;
  updateCard(card);
  parts.message.className = 'message';
  parts.message.textContent = 'Buying…';
  let networkFailures = 0;
  for (;;) {
    let reply;
    try {
      reply = await api('/api/v1/sales/' + encodeURIComponent(sale.id) + '/purchase', {
        method: 'POST', token: session.token,
        headers: Object.assign({ 'Idempotency-Key': attempt.key }, queuePass ? { 'Queue-Pass': queuePass } : {}, codeHeader(card)),
      });
    } catch (_) {
      networkFailures += 1;
      if (networkFailures > 5) {
        parts.message.className = 'message error';
        parts.message.textContent = 'Could not reach the shop. Press Buy to try again (you cannot buy twice).';
        break; // the key is kept: the next press retries the same purchase
      }
      await waitShowing(parts.message, 'Network problem, retrying in ', Math.min(2 ** networkFailures, 8));
      continue;
    }
    if (reply.status === 429 || reply.status === 503) {
      await waitShowing(parts.message, 'The shop is busy, retrying in ', reply.retryAfter || 1);
      continue;
    }
    attempts.delete(sale.id);
    if (reply.ok) {
      parts.message.className = 'message';
      parts.message.textContent = 'Reserved! Pay below before the time runs out.';
      mergeOrder(reply.body);
    } else {
      parts.message.className = 'message error';
      parts.message.textContent = sentence(reply);
      if (reply.status === 401) { session.clear(); showAccount(); }
    }
    break;
  }
  attempt.running = false;
  updateCard(card);
  refreshSales();
}

async function waitShowing(node, text, seconds) {
  for (let left = Math.ceil(seconds); left > 0; left -= 1) {
    node.className = 'message';
    node.textContent = text + left + ' s…';
    await sleep(1000);
  }
}

// ---- orders ----
const ORDER_STATUS = { pending_payment: 'Waiting for payment', paid: 'Paid', cancelled: 'Cancelled', expired: 'Expired (not paid in time)', refunded: 'Refunded' };

// ---- payments: the provider the server pays through; with Stripe, a card form by Stripe.js ----
const payments = { provider: 'simulated', stripe: null, ready: null };
// Open card forms by order id, kept across re-renders of the list (the card field stays mounted).
const cardForms = new Map();

function paymentsReady() {
  if (!payments.ready) {
    payments.ready = (async () => {
      const reply = await api('/api/v1/payments/config');
      if (!reply.ok) throw new Error('payments config');
      if (reply.body.provider !== 'stripe') return;
      await new Promise((resolve, reject) => {
        const script = document.createElement('script');
        script.src = reply.body.stripe_js_url;
        script.onload = resolve;
        script.onerror = () => reject(new Error('Stripe.js did not load'));
        document.head.append(script);
      });
      payments.stripe = window.Stripe(reply.body.publishable_key);
      payments.provider = 'stripe';
    })();
    payments.ready.catch(() => { payments.ready = null; });
  }
  return payments.ready;
}

// Stripe.js makes a payment method from the card (or, with a stand-in whose only working call is
// createToken, such as localstripe's, a card id); the server confirms the order's intent with it.
async function paymentMethod(cardElement) {
  const stripe = payments.stripe;
  const made = typeof stripe.createPaymentMethod === 'function'
    ? await stripe.createPaymentMethod({ type: 'card', card: cardElement })
    : undefined;
  if (made && made.error) return { error: made.error };
  if (made && made.paymentMethod) return { id: made.paymentMethod.id };
  const token = await stripe.createToken(cardElement);
  if (!token || token.error) return { error: (token && token.error) || { message: 'no token' } };
  return { id: token.token.card.id };
}

function openCardForm(order) {
  if (cardForms.has(order.id)) return;
  const field = element('div', { class: 'card-field', role: 'group', 'aria-label': 'Card' });
  const message = element('span', { class: 'message', role: 'status', 'aria-live': 'polite' });
  const submit = element('button', { type: 'button' }, 'Pay with card');
  const form = element('div', { class: 'card-form' }, field, submit, message);
  const cardElement = payments.stripe.elements().create('card');
  cardElement.mount(field);
  submit.addEventListener('click', async () => {
    submit.disabled = true;
    message.className = 'message';
    message.textContent = 'Paying…';
    try {
      const method = await paymentMethod(cardElement);
      if (method.error) throw new Error(method.error.message || 'the card was not accepted');
      const reply = await api('/api/v1/orders/' + encodeURIComponent(order.id) + '/pay',
        { method: 'POST', token: session.token, body: { payment_method: method.id } });
      if (!reply.ok) {
        message.className = 'message error';
        message.textContent = sentence(reply);
        submit.disabled = false;
        return;
      }
      if (reply.body.status === 'paid') {
        paid(reply.body);
      } else {
        message.textContent = 'Confirming your payment…';
        waitUntilPaid(order.id);
      }
    } catch (error) {
      message.className = 'message error';
      message.textContent = 'The card could not be used: ' + error.message + '.';
      submit.disabled = false;
    }
  });
  cardForms.set(order.id, form);
}

function paid(order) {
  cardForms.delete(order.id);
  mergeOrder(order);
  notice.textContent = 'Paid. Thank you!';
}

// The provider tells the server (its webhook, or the server asking): the order is fetched until
// it says paid, for a minute at most.
async function waitUntilPaid(orderId) {
  for (let attempt = 0; attempt < 30; attempt += 1) {
    await sleep(2000);
    const reply = await api('/api/v1/orders/' + encodeURIComponent(orderId), { token: session.token }).catch(() => null);
    if (reply && reply.ok && reply.body.status !== 'pending_payment') {
      if (reply.body.status === 'paid') paid(reply.body); else { cardForms.delete(orderId); mergeOrder(reply.body); }
      return;
    }
  }
}

function mergeOrder(order) {
  orders = [order, ...orders.filter((known) => known.id !== order.id)];
  renderOrders();
}

async function refreshOrders() {
  if (!session.token) { ordersBox.replaceChildren(element('p', {}, 'Sign in to see your orders.')); return true; }
  const reply = await api('/api/v1/orders?limit=50', { token: session.token });
  if (!reply.ok) return reply.retryAfter || false;
  orders = reply.body.orders;
  renderOrders();
  return true;
}

// Names of the sales a buyer's orders belong to that are no longer listed (long ended): each
// read once.
const pastSaleNames = new Map();

function saleName(saleId) {
  const card = cards.get(saleId);
  if (card) return card.sale.name;
  if (pastSaleNames.has(saleId)) return pastSaleNames.get(saleId) || 'Sale ' + saleId;
  pastSaleNames.set(saleId, null);
  api('/api/v1/sales/' + encodeURIComponent(saleId)).then((reply) => {
    if (!reply.ok) return;
    pastSaleNames.set(saleId, reply.body.name);
    renderOrders();
  }).catch(() => pastSaleNames.delete(saleId));
  return 'Sale ' + saleId;
}

function renderOrders() {
  if (!session.token) return;
  if (orders.length === 0) { ordersBox.replaceChildren(element('p', {}, 'No orders yet.')); return; }
  ordersBox.replaceChildren(...orders.map((order) => {
    const name = saleName(order.sale_id);
    const status = element('span', { class: 'status' }, ORDER_STATUS[order.status] || order.status);
    const item = element('article', { class: 'order', 'aria-label': 'Order: ' + name },
      element('strong', {}, name), element('span', {}, order.quantity + ' ×'), status);
    if (order.status === 'pending_payment') {
      item.append(
        element('span', { class: 'countdown', 'data-deadline': order.expires_at, role: 'timer' }, ''),
        element('button', { type: 'button', onclick: () => act(order, 'pay') }, 'Pay'),
        element('button', { type: 'button', class: 'secondary', onclick: () => act(order, 'cancel') }, 'Cancel'));
      if (cardForms.has(order.id)) item.append(cardForms.get(order.id));
    } else {
      cardForms.delete(order.id);
    }
    if (order.refunded_at) {
      const state = order.payment && order.payment.status === 'refunded' ? 'refunded' : 'being refunded';
      item.append(element('span', { class: 'status' }, 'Payment ' + state));
    }
    const message = element('span', { class: 'message', role: 'status', 'aria-live': 'polite' });
    item.append(message);
    item.dataset.order = order.id;
    return item;
  }));
  tick();
}

async function act(order, action) {
  const item = ordersBox.querySelector('[data-order="' + order.id + '"]');
  for (const button of item ? item.querySelectorAll('button') : []) button.disabled = true;
  const message = item && item.querySelector('.message');
  try {
    if (action === 'pay') await paymentsReady();
    const reply = await api('/api/v1/orders/' + encodeURIComponent(order.id) + '/' + action, { method: 'POST', token: session.token });
    if (reply.ok && action === 'pay' && reply.body.status === 'pending_payment' && payments.stripe) {
      // The intent is made: the card goes to Stripe through Stripe.js.
      openCardForm(reply.body);
      mergeOrder(reply.body);
      notice.textContent = 'Enter your card to pay.';
    } else if (reply.ok) {
      mergeOrder(reply.body);
      notice.textContent = action === 'pay' ? 'Paid. Thank you!' : 'Order cancelled; the units are back on sale.';
    } else if (message) {
      message.className = 'message error';
      message.textContent = sentence(reply);
      for (const button of item.querySelectorAll('button')) button.disabled = false;
    }
  } catch (_) {
    if (message) { message.className = 'message error'; message.textContent = 'Could not reach the shop. Please try again.'; }
    for (const button of item ? item.querySelectorAll('button') : []) button.disabled = false;
  }
  refreshSales();
}

// ---- the clock ----
// Orders whose payment window closed and whose new status was fetched (or is being fetched).
const deadlinesFetched = new Set();

function tick() {
  for (const card of cards.values()) updateCard(card);
  for (const node of ordersBox.querySelectorAll('[data-deadline]')) {
    const left = Date.parse(node.dataset.deadline) - serverClock.now();
    node.textContent = left > 0 ? 'Pay within ' + countdownText(left) : 'Payment window closed';
    const id = node.closest('[data-order]').dataset.order;
    if (left <= 0 && !deadlinesFetched.has(id)) {
      // The order expires on the server now: fetch its new status once, 1 to 3 s later so
      // the expiry sweep has run and a crowd of pages with one deadline does not ask at once.
      deadlinesFetched.add(id);
      setTimeout(refreshOrders, 1000 + Math.random() * 2000);
    }
  }
}

(async function start() {
  await serverClock.sync();
  showAccount();
  setInterval(tick, 250);
  setInterval(() => serverClock.sync(), 60000 * (0.75 + Math.random() * 0.5));
  poll(refreshSales, 2000, 30000);
  // The buyer's own orders change through this page's answers (merged as they come) and at a
  // known deadline (see tick); a slow poll catches what another tab or device did.
  poll(() => (session.token ? refreshOrders() : true), 60000, 300000);
})();
