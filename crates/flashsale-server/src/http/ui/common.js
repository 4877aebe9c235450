// Shared by the storefront and the admin console: API calls, the server's clock, sentences for
// error codes, and polling that spreads and backs off so a crowd of open pages is not a stampede.
'use strict';

const SENTENCES = {
  sold_out: 'Sorry, this sale is sold out.',
  already_purchased: 'You already have an order in this sale (one per buyer).',
  not_started: 'This sale has not started yet.',
  sale_ended: 'This sale has ended.',
  sale_paused: 'This sale is paused for a moment. Please try again soon.',
  access_code_required: 'This sale is a presale: enter your access code (each code is for one buyer).',
  insufficient_stock: 'Fewer units remain than that.',
  invalid_quantity: 'That quantity is not allowed in this sale.',
  sale_not_found: 'This sale no longer exists.',
  order_not_found: 'That order was not found.',
  order_not_payable: 'This order can no longer be paid: its payment window has closed or it was cancelled.',
  order_not_cancellable: 'This order can no longer be cancelled (it is paid, refunded or expired).',
  order_not_refundable: 'Only a paid order can be refunded.',
  payment_declined: 'Your card was declined. Please try another card.',
  rate_limited: 'You are sending requests too fast.',
  overloaded: 'The shop is very busy right now.',
  unavailable: 'The shop is briefly unavailable.',
  unauthenticated: 'Please sign in again.',
  forbidden: 'You are not allowed to do that.',
  queue_pass_required: 'You need your turn in the waiting room to buy.',
  no_waiting_room: 'This sale has no waiting room.',
  queue_not_open: 'The waiting room is not open yet.',
  not_in_queue: 'Your turn passed before you bought. Press Buy to join the line again.',
  payload_too_large: 'That request is too large.',
  internal: 'Something went wrong on our side. Please try again.',
};

function sentence(reply) {
  const error = reply && reply.body && reply.body.error;
  if (!error) return 'Something went wrong (HTTP ' + (reply ? reply.status : '?') + ').';
  if (error.code === 'invalid_request') {
    return error.field ? 'Please check "' + error.field + '": ' + error.message + '.' : 'The request was not valid: ' + error.message + '.';
  }
  return SENTENCES[error.code] || error.message || error.code;
}

// One API call; never throws for HTTP errors (the reply says), throws only when the network fails.
async function api(path, { method = 'GET', token = null, body = undefined, headers = {} } = {}) {
  const init = { method, headers: Object.assign({}, headers) };
  if (token) init.headers.Authorization = 'Bearer ' + token;
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let parsed = null;
  const text = await response.text();
  if (text) {
    try { parsed = JSON.parse(text); } catch (_) { parsed = null; }
  }
  const retryAfter = Number(response.headers.get('Retry-After')) || 0;
  return { status: response.status, ok: response.ok, body: parsed, retryAfter };
}

// The server's clock: what the buyer's clock says plus the offset measured against /api/v1/time.
const serverClock = {
  offset: 0,
  now() { return Date.now() + this.offset; },
  async sync() {
    try {
      const sent = Date.now();
      const reply = await api('/api/v1/time');
      const received = Date.now();
      if (reply.ok && reply.body) {
        this.offset = Date.parse(reply.body.now) - (sent + received) / 2;
      }
    } catch (_) { /* keep the last offset */ }
  },
};

function countdownText(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const days = Math.floor(total / 86400);
  const h = Math.floor((total % 86400) / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const two = (n) => String(n).padStart(2, '0');
  return (days ? days + ' d ' : '') + (days || h ? two(h) + ':' : '') + two(m) + ':' + two(s);
}

function money(cents) {
  return cents === 0 ? 'Free' : (cents / 100).toLocaleString(undefined, { style: 'currency', currency: 'EUR' });
}

// Calls `task` again and again: every `everyMs` (±25% jitter, so pages opened together drift
// apart), doubling up to `maxMs` while it fails or the server asks to wait; `task` returns
// false on failure, or a number of seconds the server asked to wait.
function poll(task, everyMs, maxMs) {
  let delay = everyMs;
  let stopped = false;
  async function round() {
    if (stopped) return;
    let outcome;
    try { outcome = await task(); } catch (_) { outcome = false; }
    if (outcome === false) delay = Math.min(delay * 2, maxMs);
    else if (typeof outcome === 'number' && outcome > 0) delay = Math.min(Math.max(outcome * 1000, everyMs), maxMs);
    else delay = everyMs;
    const jitter = delay * (0.75 + Math.random() * 0.5);
    setTimeout(round, document.hidden ? Math.max(jitter, maxMs) : jitter);
  }
  round();
  return { stop() { stopped = true; } };
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === 'class') node.className = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}
