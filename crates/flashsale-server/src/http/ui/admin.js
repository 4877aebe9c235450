// The admin console: sign in with the admin token (kept in this tab's session storage, never in
// a URL), create sales, watch every sale's counts and audit, run a live sale (pause, resume,
// end, add or take off stock, change the admission rate, make presale codes, download the
// orders), look orders up by buyer or id and refund one, and purchases per second by outcome.
'use strict';

const tokenKey = 'flashsale.admin';
const notice = document.getElementById('notice');
const table = document.getElementById('sales');
const result = document.getElementById('create-result');
const form = document.getElementById('create');

function adminToken() { return sessionStorage.getItem(tokenKey); }

function showSignedIn() {
  const signedIn = Boolean(adminToken());
  document.getElementById('sign-in').hidden = signedIn;
  document.getElementById('signed-in').hidden = !signedIn;
}

document.getElementById('sign-in').addEventListener('submit', async (event) => {
  event.preventDefault();
  const token = document.getElementById('admin-token').value.trim();
  // Checked against an admin route before it is kept.
  const reply = await api('/api/v1/sales/-/audit', { token });
  if (reply.status === 401 || reply.status === 403) {
    notice.textContent = 'That admin token was not accepted.';
    return;
  }
  sessionStorage.setItem(tokenKey, token);
  document.getElementById('admin-token').value = '';
  notice.textContent = 'Signed in.';
  showSignedIn();
  refreshTable();
});

document.getElementById('sign-out').addEventListener('click', () => {
  sessionStorage.removeItem(tokenKey);
  showSignedIn();
  table.replaceChildren(row(['Sign in to see the sales.'], 8));
  knownSales = [];
  refreshChoices();
});

function toRfc3339(localValue) {
  if (!localValue) return null;
  const date = new Date(localValue); // datetime-local is in the admin's time zone
  return Number.isNaN(date.getTime()) ? localValue : date.toISOString();
}

function fieldInput(field) {
  return { name: 'f-name', description: 'f-description', stock: 'f-stock', per_user_limit: 'f-limit',
    price_cents: 'f-price', starts_at: 'f-starts', ends_at: 'f-ends', payment_window_secs: 'f-window',
    waiting_room: 'f-admit', 'waiting_room.admit_per_sec': 'f-admit', 'waiting_room.pass_ttl_secs': 'f-pass',
    'waiting_room.opens_before_secs': 'f-opens', access: 'f-access' }[field];
}

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  for (const input of form.querySelectorAll('[aria-invalid]')) input.removeAttribute('aria-invalid');
  const value = (id) => document.getElementById(id).value.trim();
  const number = (id) => (value(id) === '' ? undefined : Number(value(id)));
  const body = {
    name: value('f-name'),
    description: value('f-description'),
    stock: number('f-stock'),
    per_user_limit: number('f-limit'),
    price_cents: value('f-price') === '' ? undefined : Math.round(Number(value('f-price')) * 100),
    starts_at: toRfc3339(value('f-starts')),
    ends_at: toRfc3339(value('f-ends')),
    payment_window_secs: number('f-window'),
    access: value('f-access') || undefined,
  };
  if (value('f-admit') !== '' || value('f-pass') !== '' || value('f-opens') !== '') {
    body.waiting_room = { admit_per_sec: number('f-admit'), pass_ttl_secs: number('f-pass'), opens_before_secs: number('f-opens') };
    for (const key of Object.keys(body.waiting_room)) if (body.waiting_room[key] === undefined) delete body.waiting_room[key];
  }
  for (const key of Object.keys(body)) if (body[key] === undefined) delete body[key];
  if (!body.description) delete body.description;
  let reply;
  try {
    reply = await api('/api/v1/sales', { method: 'POST', token: adminToken(), body });
  } catch (_) {
    result.className = 'error';
    result.textContent = 'Could not reach the server. Please try again.';
    return;
  }
  if (reply.ok) {
    result.className = 'ok';
    result.textContent = 'Created "' + reply.body.name + '".';
    form.reset();
    refreshTable();
    return;
  }
  result.className = 'error';
  result.textContent = sentence(reply);
  const field = reply.body && reply.body.error && reply.body.error.field;
  const input = field && document.getElementById(fieldInput(field));
  if (input) { input.setAttribute('aria-invalid', 'true'); input.focus(); }
});

function row(cells, span) {
  const tr = element('tr');
  for (const cell of cells) tr.append(element('td', span ? { colspan: span } : {}, cell));
  return tr;
}

async function refreshTable() {
  const token = adminToken();
  if (!token) return true;
  const reply = await api('/api/v1/sales', { headers: { 'Cache-Control': 'no-cache' } });
  if (!reply.ok) return reply.retryAfter || false;
  const audits = await Promise.all(reply.body.sales.map((sale) =>
    api('/api/v1/sales/' + encodeURIComponent(sale.id) + '/audit', { token }).catch(() => null)));
  if (audits.some((audit) => audit && audit.status === 401)) {
    sessionStorage.removeItem(tokenKey);
    showSignedIn();
    notice.textContent = 'The admin token is no longer accepted. Please sign in again.';
    return true;
  }
  knownSales = reply.body.sales;
  refreshChoices();
  if (reply.body.sales.length === 0) {
    table.replaceChildren(row(['No sales yet.'], 8));
    return true;
  }
  table.replaceChildren(...reply.body.sales.map((sale, index) => {
    const audit = audits[index] && audits[index].ok ? audits[index].body : null;
    const consistent = audit ? (audit.consistent ? 'consistent' : 'INCONSISTENT') : '…';
    const tr = row([
      sale.name, sale.state.replace('_', ' '), String(sale.stock), String(sale.stock - sale.remaining),
      String(sale.remaining), audit ? String(audit.pending) : '…', audit ? String(audit.paid) : '…', consistent,
    ]);
    tr.lastChild.className = audit && !audit.consistent ? 'inconsistent' : 'consistent';
    return tr;
  }));
  return true;
}

// ---- orders: look them up by id or buyer; one order's payment, and its refund (after a
// confirmation) ----
const orderDetail = document.getElementById('found');
const ORDER_STATUS_TEXT = { pending_payment: 'waiting for payment', paid: 'paid', cancelled: 'cancelled', expired: 'expired', refunded: 'refunded' };

function paymentText(order) {
  const payment = order.payment;
  if (!payment) return 'no payment';
  const refund = payment.refund_id ? ', refund ' + payment.refund_id : '';
  return payment.provider + ' ' + payment.intent_id + ': ' + payment.status.replace('_', ' ') + refund;
}

function showOrder(order) {
  const status = element('span', { class: 'status' }, ORDER_STATUS_TEXT[order.status] || order.status);
  const item = element('article', { class: 'order', 'aria-label': 'Order ' + order.id },
    element('strong', {}, order.id), element('span', {}, 'buyer ' + order.user_id + ', ' + order.quantity + ' ×'),
    status, element('span', {}, paymentText(order)));
  const message = element('span', { class: 'message', role: 'status', 'aria-live': 'polite' });
  if (order.status === 'paid') {
    item.append(element('button', { type: 'button', onclick: () => refund(order, message) }, 'Refund'));
  }
  item.append(message);
  orderDetail.replaceChildren(item);
}

async function refund(order, message) {
  if (!window.confirm('Refund order ' + order.id + ' to ' + order.user_id + '? Its units go back on sale and the money goes back to the buyer.')) return;
  const reply = await api('/api/v1/orders/' + encodeURIComponent(order.id) + '/refund', { method: 'POST', token: adminToken() });
  if (!reply.ok) {
    message.className = 'message error';
    message.textContent = sentence(reply);
    return;
  }
  showOrder(reply.body);
  // The table above shows the same order: it says refunded too.
  for (const tr of document.getElementById('lookup-rows').rows) {
    if (tr.cells[0].textContent === order.id) tr.cells[4].textContent = ORDER_STATUS_TEXT[reply.body.status];
  }
  notice.textContent = 'Order ' + order.id + ' refunded; its units are back on sale.';
  refreshTable();
}

// ---- event sinks: delivery state, lag, dead letters ----
const sinksTable = document.getElementById('sinks');

async function refreshSinks() {
  const token = adminToken();
  if (!token) return true;
  const reply = await api('/api/v1/events/sinks', { token });
  if (!reply.ok) return reply.retryAfter || false;
  if (reply.body.sinks.length === 0) {
    sinksTable.replaceChildren(row(['No event sinks configured (the pull feed is GET /api/v1/events).'], 9));
    return true;
  }
  sinksTable.replaceChildren(...reply.body.sinks.map((sink) => row([
    sink.name, sink.kind, sink.held_here ? 'yes' : 'no (another node)', String(sink.delivered),
    String(sink.lag_events), sink.lag_seconds.toFixed(1), String(sink.retries),
    String(sink.dead_letters) + (sink.recent_dead_letters.length
      ? ' (latest: ' + sink.recent_dead_letters[0].sale_id + ' #' + sink.recent_dead_letters[0].sequence + ')' : ''),
    sink.last_error || '—',
  ])));
  return true;
}

// ---- running a live sale ----
const choice = document.getElementById('m-sale');
const summary = document.getElementById('m-summary');
const outcome = document.getElementById('m-result');
let knownSales = [];

function chosenSale() {
  return knownSales.find((sale) => sale.id === choice.value) || null;
}

// The sale list changes under the admin's hands: keep the choice, refresh the names.
function refreshChoices() {
  const chosen = choice.value;
  choice.replaceChildren(...knownSales.map((sale) => element('option', { value: sale.id }, sale.name)));
  if (knownSales.some((sale) => sale.id === chosen)) choice.value = chosen;
  describeChoice();
}

function describeChoice() {
  const sale = chosenSale();
  const controls = ['m-pause', 'm-resume', 'm-end', 'm-export'].map((id) => document.getElementById(id));
  if (!sale) {
    summary.textContent = 'No sale chosen.';
    for (const button of controls) button.disabled = true;
    return;
  }
  const room = sale.waiting_room ? ' · waiting room at ' + sale.waiting_room.admit_per_sec + '/s' : '';
  const access = sale.access === 'codes' ? ' · presale by access code' : '';
  summary.textContent = sale.state.replace('_', ' ') + ' · ' + sale.remaining + ' of ' + sale.stock + ' left'
    + room + access + ' · version ' + sale.version;
  document.getElementById('m-pause').disabled = sale.state === 'paused' || sale.state === 'ended';
  document.getElementById('m-resume').disabled = sale.state !== 'paused';
  document.getElementById('m-end').disabled = sale.state === 'ended';
  document.getElementById('m-export').disabled = false;
  document.getElementById('m-rate').querySelector('button').disabled = !sale.waiting_room;
}

choice.addEventListener('change', describeChoice);

function tell(text, ok) {
  outcome.className = ok ? 'ok' : 'error';
  outcome.textContent = text;
}

// One change of the chosen sale; says what happened as a sentence.
async function changeSale(path, init, done) {
  const sale = chosenSale();
  if (!sale) { tell('Choose a sale first.', false); return; }
  let reply;
  try {
    reply = await api('/api/v1/sales/' + encodeURIComponent(sale.id) + path, Object.assign({ token: adminToken() }, init));
  } catch (_) { tell('Could not reach the server. Please try again.', false); return; }
  if (reply.ok) {
    tell(done(reply.body), true);
    knownSales = knownSales.map((known) => (known.id === reply.body.id ? reply.body : known));
    describeChoice();
    refreshTable();
  } else if (reply.body && reply.body.error && reply.body.error.code === 'insufficient_stock') {
    tell('Only ' + reply.body.error.remaining + ' units are not held by an order: no more can come off sale.', false);
  } else {
    tell(sentence(reply), false);
  }
}

document.getElementById('m-pause').addEventListener('click', () =>
  changeSale('/pause', { method: 'POST' }, (sale) => 'Paused "' + sale.name + '": nothing sells until you resume it.'));
document.getElementById('m-resume').addEventListener('click', () =>
  changeSale('/resume', { method: 'POST' }, (sale) => 'Resumed "' + sale.name + '".'));
document.getElementById('m-end').addEventListener('click', () => {
  const sale = chosenSale();
  if (!sale || !window.confirm('End "' + sale.name + '" now? Nothing sells after this.')) return;
  changeSale('/end', { method: 'POST' }, (ended) => 'Ended "' + ended.name + '".');
});

function units(id) {
  const value = Number(document.getElementById(id).value);
  return Number.isInteger(value) && value > 0 ? value : null;
}

document.getElementById('m-add').addEventListener('submit', (event) => {
  event.preventDefault();
  const add = units('m-add-units');
  if (!add) { tell('Enter how many units to add.', false); return; }
  changeSale('', { method: 'PATCH', body: { add_stock: add } }, (sale) => {
    document.getElementById('m-add-units').value = '';
    return 'Added ' + add + ' units: ' + sale.stock + ' in all.';
  });
});

document.getElementById('m-remove').addEventListener('submit', (event) => {
  event.preventDefault();
  const remove = units('m-remove-units');
  const sale = chosenSale();
  if (!remove) { tell('Enter how many units to take off sale.', false); return; }
  if (!sale || !window.confirm('Take ' + remove + ' units of "' + sale.name + '" off sale?')) return;
  changeSale('', { method: 'PATCH', body: { remove_stock: remove } }, (changed) => {
    document.getElementById('m-remove-units').value = '';
    return 'Took ' + remove + ' units off sale: ' + changed.stock + ' in all.';
  });
});

document.getElementById('m-rate').addEventListener('submit', (event) => {
  event.preventDefault();
  const rate = units('m-rate-value');
  if (!rate) { tell('Enter the buyers to admit per second.', false); return; }
  changeSale('', { method: 'PATCH', body: { waiting_room: { admit_per_sec: rate } } },
    () => 'The line now admits ' + rate + ' buyers per second.');
});

// A download of what an authorized request answers (a link cannot carry the admin token).
async function download(path, init, filename) {
  const headers = Object.assign({ Authorization: 'Bearer ' + adminToken() }, init.headers || {});
  const response = await fetch(path, Object.assign({}, init, { headers }));
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    return { ok: false, status: response.status, body };
  }
  const blob = await response.blob();
  const link = element('a', { href: URL.createObjectURL(blob), download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  return { ok: true };
}

document.getElementById('m-codes').addEventListener('submit', async (event) => {
  event.preventDefault();
  const sale = chosenSale();
  const count = units('m-codes-count');
  if (!sale) { tell('Choose a sale first.', false); return; }
  if (!count) { tell('Enter how many codes to make.', false); return; }
  try {
    const reply = await download('/api/v1/sales/' + encodeURIComponent(sale.id) + '/codes?format=csv', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ count }),
    }, 'codes-' + sale.id + '.csv');
    if (reply.ok) tell('Made ' + count + ' codes for "' + sale.name + '" (downloaded as CSV).', true);
    else tell(sentence(reply), false);
  } catch (_) { tell('Could not reach the server. Please try again.', false); }
});

document.getElementById('m-export').addEventListener('click', async () => {
  const sale = chosenSale();
  if (!sale) { tell('Choose a sale first.', false); return; }
  try {
    const reply = await download('/api/v1/orders.csv?sale_id=' + encodeURIComponent(sale.id), {}, 'orders-' + sale.id + '.csv');
    if (reply.ok) tell('Downloaded the orders of "' + sale.name + '".', true);
    else tell(sentence(reply), false);
  } catch (_) { tell('Could not reach the server. Please try again.', false); }
});

document.getElementById('lookup').addEventListener('submit', async (event) => {
  event.preventDefault();
  const query = document.getElementById('lookup-query').value.trim();
  const result = document.getElementById('lookup-result');
  const rows = document.getElementById('lookup-rows');
  if (!query) return;
  result.className = '';
  let found = [];
  try {
    // An order id first; else the buyer's orders.
    const byId = /^[A-Za-z0-9_-]{1,64}$/.test(query)
      ? await api('/api/v1/orders/' + encodeURIComponent(query), { token: adminToken() })
      : null;
    if (byId && byId.ok) {
      found = [byId.body];
    } else {
      const byBuyer = await api('/api/v1/orders?limit=500&user_id=' + encodeURIComponent(query), { token: adminToken() });
      if (!byBuyer.ok) { result.className = 'error'; result.textContent = sentence(byBuyer); return; }
      found = byBuyer.body.orders;
    }
  } catch (_) {
    result.className = 'error';
    result.textContent = 'Could not reach the server. Please try again.';
    return;
  }
  const saleName = (id) => (knownSales.find((sale) => sale.id === id) || { name: id }).name;
  result.textContent = found.length === 0 ? 'No order by that id or buyer.'
    : found.length === 1 ? 'One order.' : found.length + ' orders.';
  rows.replaceChildren(...found.map((order) => row([order.id, saleName(order.sale_id), order.user_id,
    String(order.quantity), ORDER_STATUS_TEXT[order.status] || order.status, new Date(order.created_at).toLocaleString()])));
  document.getElementById('lookup-table').hidden = found.length === 0;
  if (found.length === 1) showOrder(found[0]);
  else orderDetail.replaceChildren();
});

// ---- purchases per second, from the server's counters ----
const OUTCOMES = ['created', 'sold_out', 'already_purchased', 'rate_limited', 'overloaded', 'other'];
// The chart's colours; the legend's are the same, in style.css (the page's policy allows no
// inline style).
const COLORS = { created: '#146c2e', sold_out: '#b3261e', already_purchased: '#7b1fa2', rate_limited: '#ef6c00', overloaded: '#455a64', other: '#9e9e9e' };
const history = [];
let last = null;

function parseCounters(text) {
  const counts = Object.fromEntries(OUTCOMES.map((outcome) => [outcome, 0]));
  for (const line of text.split('\n')) {
    const match = /^flashsale_purchases_total\{outcome="([a-z_]+)"\} (\d+)/.exec(line);
    if (!match) continue;
    const outcome = OUTCOMES.includes(match[1]) ? match[1] : 'other';
    counts[outcome] += Number(match[2]);
  }
  return counts;
}

async function sampleRates() {
  let text;
  try {
    const response = await fetch('/metrics', { cache: 'no-store' });
    if (!response.ok) return false;
    text = await response.text();
  } catch (_) { return false; }
  const now = Date.now();
  const counts = parseCounters(text);
  if (last) {
    const seconds = Math.max((now - last.at) / 1000, 0.001);
    const rates = {};
    for (const outcome of OUTCOMES) rates[outcome] = Math.max(0, (counts[outcome] - last.counts[outcome]) / seconds);
    history.push(rates);
    if (history.length > 120) history.shift();
    draw();
  }
  last = { at: now, counts };
  return true;
}

function draw() {
  const canvas = document.getElementById('chart');
  const context = canvas.getContext('2d');
  const { width, height } = canvas;
  context.clearRect(0, 0, width, height);
  const top = Math.max(1, ...history.flatMap((rates) => OUTCOMES.map((outcome) => rates[outcome])));
  context.fillStyle = '#555';
  context.font = '12px system-ui';
  context.fillText(Math.round(top) + '/s', 4, 12);
  for (const outcome of OUTCOMES) {
    context.strokeStyle = COLORS[outcome];
    context.lineWidth = 2;
    context.beginPath();
    history.forEach((rates, index) => {
      const x = (index / 119) * (width - 8) + 4;
      const y = height - 4 - (rates[outcome] / top) * (height - 20);
      if (index === 0) context.moveTo(x, y); else context.lineTo(x, y);
    });
    context.stroke();
  }
  const latest = history[history.length - 1] || {};
  document.getElementById('legend').replaceChildren(...OUTCOMES.map((outcome) =>
    element('span', { class: 'legend legend-' + outcome }, outcome.replace('_', ' ') + ': ' + Math.round(latest[outcome] || 0) + '/s')));
}

showSignedIn();
describeChoice();
poll(refreshTable, 1500, 10000);
poll(refreshSinks, 2000, 10000);
poll(sampleRates, 1000, 10000);
