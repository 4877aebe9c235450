// The storefront and the admin console in Chromium, as a person uses them: found by labels, roles
// and visible text. Run by scripts/browser-test, which starts the server in demo mode.
'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { chromium } = require('playwright-core');

const base = process.env.FLASHSALE_URL;
// The server that pays through Stripe's API (a localstripe, whose Stripe.js stand-in takes the card).
const stripeBase = process.env.FLASHSALE_STRIPE_URL;
const localstripe = process.env.FLASHSALE_LOCALSTRIPE_URL;
const adminToken = process.env.FLASHSALE_ADMIN_TOKEN;
const failures = process.env.FLASHSALE_FAILURES;
const screenshots = process.env.FLASHSALE_SCREENSHOTS;

async function api(pathname, { method = 'GET', token, body, at = base } = {}) {
  const headers = {};
  if (token) headers.Authorization = 'Bearer ' + token;
  if (body) headers['Content-Type'] = 'application/json';
  const response = await fetch(at + pathname, { method, headers, body: body && JSON.stringify(body) });
  return { status: response.status, body: await response.json().catch(() => null) };
}

async function demoToken(user) {
  const reply = await api('/api/v1/demo/token', { method: 'POST', body: { user } });
  assert.equal(reply.status, 200);
  return reply.body.token;
}

async function signIn(page, name, at = base) {
  await page.goto(at + '/');
  await page.getByLabel('Name').fill(name);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('Signed in as ' + name).waitFor();
}

function card(page, saleName) {
  return page.getByRole('article', { name: saleName });
}

function order(page, saleName) {
  return page.getByRole('article', { name: 'Order: ' + saleName });
}

// The browser's local time `seconds` from now, as a datetime-local input takes it.
async function localInputTime(page, seconds) {
  return page.evaluate((s) => {
    const d = new Date(Date.now() + s * 1000);
    const two = (n) => String(n).padStart(2, '0');
    return d.getFullYear() + '-' + two(d.getMonth() + 1) + '-' + two(d.getDate()) + 'T' +
      two(d.getHours()) + ':' + two(d.getMinutes()) + ':' + two(d.getSeconds());
  }, seconds);
}

const tests = [];
// A test runs with the pages' content security policy watched: any violation it reports fails
// the test (a feature the policy breaks), unless the test expects violations (`cspExpected`).
function test(name, body, { cspExpected = false } = {}) { tests.push({ name, body, cspExpected }); }

const saleName = 'Browser concert ' + Date.now();

test('the admin signs in, creates a sale and sees it in the table', async ({ page }) => {
  await page.goto(base + '/admin');
  await page.getByLabel('Admin token').fill(adminToken);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('button', { name: 'Sign out' }).waitFor();
  // A refusal names the field, as a sentence.
  await page.getByLabel('Name').fill(saleName);
  await page.getByLabel('Stock').fill('0');
  await page.getByLabel('Starts at').fill(await localInputTime(page, 6));
  await page.getByRole('button', { name: 'Create sale' }).click();
  await page.getByText('Please check "stock"').waitFor();
  await page.getByLabel('Stock').fill('2');
  await page.getByRole('button', { name: 'Create sale' }).click();
  await page.getByText('Created "' + saleName + '".').waitFor();
  const row = page.getByRole('row').filter({ hasText: saleName });
  await row.waitFor();
  assert.match(await row.innerText(), /scheduled/);
  if (screenshots) await page.screenshot({ path: path.join(screenshots, 'admin.png'), fullPage: true });
});

test('a buyer watches the countdown, buys once with a double click, and pays', async ({ page }) => {
  await signIn(page, 'ann');
  const sale = card(page, saleName);
  await sale.waitFor();
  await sale.getByText(/Starts in \d\d:\d\d/).waitFor();
  const buy = sale.getByRole('button', { name: 'Buy' });
  assert.equal(await buy.isDisabled(), true, 'Buy is disabled before the start');
  if (screenshots) await page.screenshot({ path: path.join(screenshots, 'storefront.png'), fullPage: true });
  await sale.getByText('On sale now').waitFor({ timeout: 15000 });
  await buy.dblclick();
  const mine = order(page, saleName);
  await mine.getByText('Waiting for payment').waitFor();
  await mine.getByText(/Pay within \d\d:\d\d/).waitFor();
  const orders = await api('/api/v1/orders', { token: await demoToken('ann') });
  assert.equal(orders.body.orders.filter((o) => o.status === 'pending_payment').length, 1, 'a double click makes one order');
  await mine.getByRole('button', { name: 'Pay' }).click();
  await mine.getByText('Paid', { exact: true }).waitFor();
});

test('a buyer cancels and buys again', async ({ page }) => {
  await signIn(page, 'bob');
  const sale = card(page, saleName);
  await sale.getByRole('button', { name: 'Buy' }).click();
  const mine = order(page, saleName).filter({ hasText: 'Waiting for payment' });
  await mine.getByRole('button', { name: 'Cancel' }).click();
  await order(page, saleName).getByText('Cancelled').waitFor();
  await sale.getByRole('button', { name: 'Buy' }).click();
  await order(page, saleName).getByText('Waiting for payment').waitFor();
});

test('a late buyer reads that the sale is sold out', async ({ page }) => {
  await signIn(page, 'cy');
  const sale = card(page, saleName);
  await sale.getByText('0 of 2 left').waitFor();
  await sale.getByText('Sold out', { exact: true }).waitFor();
  // The card's button is disabled once sold out; a purchase sent anyway (a page that had not
  // refreshed yet) reads as a sentence.
  await sale.evaluate((node) => { const buy = node.querySelector('button'); buy.disabled = false; buy.click(); });
  await sale.getByText('Sorry, this sale is sold out.').waitFor();
});

test('the admin table shows the sales as they sell', async ({ page }) => {
  await page.goto(base + '/admin');
  await page.getByLabel('Admin token').fill(adminToken);
  await page.getByRole('button', { name: 'Sign in' }).click();
  const row = page.getByRole('row').filter({ hasText: saleName });
  await row.waitFor();
  const cells = await row.getByRole('cell').allInnerTexts();
  // Sale, state, stock, sold, remaining, pending, paid, audit.
  assert.deepEqual(cells.slice(2), ['2', '2', '0', '1', '1', 'consistent']);
  // The chart's legend, coloured by the style sheet (the policy allows no inline style).
  await page.locator('#legend').getByText(/created: \d+\/s/).waitFor();
});

test('a buyer joins the waiting room, waits for the turn and buys with the pass', async ({ page }) => {
  const name = 'Room sale ' + Date.now();
  const created = await api('/api/v1/sales', {
    method: 'POST', token: adminToken,
    body: { name, stock: 5, starts_at: new Date(Date.now() + 4000).toISOString(), waiting_room: { admit_per_sec: 1 } },
  });
  assert.equal(created.status, 201);
  await signIn(page, 'gus');
  const sale = card(page, name);
  await sale.getByText(/Waiting room: press Buy/).waitFor();
  await sale.getByRole('button', { name: 'Buy' }).click();
  await sale.getByText(/You are in line/).waitFor();
  await order(page, name).getByText('Waiting for payment').waitFor({ timeout: 25000 });
  const orders = await api('/api/v1/orders', { token: await demoToken('gus') });
  assert.equal(orders.body.orders.filter((o) => o.sale_id === created.body.id).length, 1);
});

// A page of another origin (the same host, another port) that tries to frame the console, as a
// clickjacking page would: the console must not load inside it.
test('a foreign page cannot frame the admin console', async ({ page }) => {
  const http = require('node:http');
  const foreign = http.createServer((request, response) => {
    response.writeHead(200, { 'Content-Type': 'text/html' });
    response.end('<!doctype html><title>foreign</title><iframe title="framed" src="' + base + '/admin" width="800" height="600"></iframe>');
  });
  await new Promise((resolve) => foreign.listen(0, '127.0.0.1', resolve));
  try {
    await page.goto('http://127.0.0.1:' + foreign.address().port + '/');
    const framed = page.frames().find((frame) => frame !== page.mainFrame());
    assert.ok(framed, 'the foreign page has its frame');
    // Give the frame time to load (or to be refused), then look inside it.
    await page.waitForTimeout(1500);
    const labels = await framed.getByLabel('Admin token').count().catch(() => 0);
    assert.equal(labels, 0, 'the admin console loaded inside a foreign page (' + framed.url() + ')');
  } finally {
    foreign.close();
  }
}, { cspExpected: true });
async function adminSignIn(page) {
  await page.goto(base + '/admin');
  await page.getByLabel('Admin token').fill(adminToken);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('button', { name: 'Sign out' }).waitFor();
}

async function chooseSale(admin, name) {
  const choice = admin.getByLabel('Sale', { exact: true });
  await choice.locator('option', { hasText: name }).waitFor({ state: 'attached' });
  await choice.selectOption({ label: name });
}

test('the admin pauses a sale: the storefront shows it paused with Buy disabled, then resumed', async ({ page }) => {
  const name = 'Paused sale ' + Date.now();
  const created = await api('/api/v1/sales', {
    method: 'POST', token: adminToken,
    body: { name, stock: 3, starts_at: new Date(Date.now() - 1000).toISOString() },
  });
  assert.equal(created.status, 201);
  await signIn(page, 'hal');
  const sale = card(page, name);
  await sale.getByText('On sale now').waitFor();
  const buy = sale.getByRole('button', { name: 'Buy' });
  assert.equal(await buy.isDisabled(), false);
  const admin = await page.context().newPage();
  await adminSignIn(admin);
  await chooseSale(admin, name);
  await admin.getByRole('button', { name: 'Pause' }).click();
  await admin.getByText('Paused "' + name + '"').waitFor();
  await sale.getByText('Paused', { exact: true }).waitFor({ timeout: 15000 });
  assert.equal(await buy.isDisabled(), true, 'Buy is disabled while paused');
  await admin.getByRole('button', { name: 'Resume' }).click();
  await admin.getByText('Resumed "' + name + '".').waitFor();
  await sale.getByText('On sale now').waitFor({ timeout: 15000 });
  assert.equal(await buy.isDisabled(), false, 'Buy is enabled again');
  await buy.click();
  await order(page, name).getByText('Waiting for payment').waitFor();
});

test('the admin adds stock and the card counts it; removing and ending ask first', async ({ page }) => {
  const name = 'Topped-up sale ' + Date.now();
  const created = await api('/api/v1/sales', {
    method: 'POST', token: adminToken,
    body: { name, stock: 3, starts_at: new Date(Date.now() - 1000).toISOString() },
  });
  assert.equal(created.status, 201);
  await signIn(page, 'ida');
  const sale = card(page, name);
  await sale.getByText('3 of 3 left').waitFor();
  const admin = await page.context().newPage();
  await adminSignIn(admin);
  await chooseSale(admin, name);
  await admin.getByLabel('Units to add').fill('5');
  await admin.getByRole('button', { name: 'Add stock' }).click();
  await admin.getByText('Added 5 units: 8 in all.').waitFor();
  await sale.getByText('8 of 8 left').waitFor({ timeout: 15000 });
  // Taking units off sale asks first; declining changes nothing.
  admin.once('dialog', (dialog) => dialog.dismiss());
  await admin.getByLabel('Units to remove').fill('2');
  await admin.getByRole('button', { name: 'Remove stock' }).click();
  assert.equal((await api('/api/v1/sales/' + created.body.id)).body.stock, 8, 'a declined removal changes nothing');
  admin.once('dialog', (dialog) => dialog.accept());
  await admin.getByRole('button', { name: 'Remove stock' }).click();
  await admin.getByText('Took 2 units off sale: 6 in all.').waitFor();
  await sale.getByText('6 of 6 left').waitFor({ timeout: 15000 });
  admin.once('dialog', (dialog) => dialog.accept());
  await admin.getByRole('button', { name: 'End sale' }).click();
  await admin.getByText('Ended "' + name + '".').waitFor();
  await sale.getByText('Ended', { exact: true }).waitFor({ timeout: 15000 });
});

test('the admin looks orders up by buyer and by order id', async ({ page }) => {
  const name = 'Looked-up sale ' + Date.now();
  const created = await api('/api/v1/sales', {
    method: 'POST', token: adminToken,
    body: { name, stock: 5, starts_at: new Date(Date.now() - 1000).toISOString() },
  });
  const token = await demoToken('jo');
  const bought = await api('/api/v1/sales/' + created.body.id + '/purchase', { method: 'POST', token });
  assert.equal(bought.status, 201);
  await adminSignIn(page);
  await page.getByRole('row').filter({ hasText: name }).waitFor();
  await page.getByLabel('Order id or buyer').fill('jo');
  await page.getByRole('button', { name: 'Look up' }).click();
  const found = page.locator('#lookup-rows').getByRole('row').filter({ hasText: bought.body.id });
  await found.waitFor();
  assert.match(await found.innerText(), new RegExp(name));
  await page.getByLabel('Order id or buyer').fill(bought.body.id);
  await page.getByRole('button', { name: 'Look up' }).click();
  await page.getByText('One order.').waitFor();
});

// What a careful reviewer checks by hand: text contrast (WCAG AA: 4.5:1, 3:1 for large text),
// a label on every field, a name on every button, and no sideways scrolling.
function accessibilityProblems() {
  const parse = (color) => {
    const match = color.match(/rgba?\(([^)]+)\)/);
    if (!match) return null;
    const parts = match[1].split(/[\s,/]+/).filter(Boolean).map(Number);
    return { r: parts[0], g: parts[1], b: parts[2], a: parts.length > 3 ? parts[3] : 1 };
  };
  const luminance = ({ r, g, b }) => {
    const linear = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
  };
  const backgroundOf = (node) => {
    for (let at = node; at; at = at.parentElement) {
      const color = parse(getComputedStyle(at).backgroundColor);
      if (color && color.a > 0) return color;
    }
    return { r: 255, g: 255, b: 255, a: 1 };
  };
  const problems = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let text = walker.nextNode(); text; text = walker.nextNode()) {
    const node = text.parentElement;
    if (!text.textContent.trim() || !node || !node.checkVisibility() || node.closest(':disabled')) continue;
    const style = getComputedStyle(node);
    const [fg, bg] = [luminance(parse(style.color)), luminance(backgroundOf(node))];
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (Number(style.fontWeight) >= 700 && size >= 18.66);
    if (ratio < (large ? 3 : 4.5)) problems.push('contrast ' + ratio.toFixed(2) + ': "' + text.textContent.trim().slice(0, 40) + '"');
  }
  for (const field of document.querySelectorAll('input, textarea, select')) {
    if (field.checkVisibility() && !(field.labels && field.labels.length) && !field.getAttribute('aria-label')) problems.push('no label: #' + field.id);
  }
  for (const button of document.querySelectorAll('button')) {
    if (button.checkVisibility() && !button.textContent.trim() && !button.getAttribute('aria-label')) problems.push('a button without a name');
  }
  // Two elements with one id: the page's scripts and labels find only the first.
  const ids = [...document.querySelectorAll('[id]')].map((node) => node.id);
  for (const id of new Set(ids.filter((id, at) => ids.indexOf(id) !== at))) problems.push('id used twice: #' + id);
  if (document.documentElement.scrollWidth > window.innerWidth + 1) {
    problems.push('scrolls sideways: ' + document.documentElement.scrollWidth + ' > ' + window.innerWidth);
  }
  return problems;
}

test('a buyer pays with the test card through Stripe.js, and the admin refunds it', async ({ page }) => {
  const name = 'Card concert ' + Date.now();
  const created = await api('/api/v1/sales', {
    method: 'POST', token: adminToken, at: stripeBase,
    body: { name, stock: 2, per_user_limit: 1, price_cents: 2500, starts_at: new Date(Date.now() - 1000).toISOString() },
  });
  assert.equal(created.status, 201);
  await signIn(page, 'cardholder', stripeBase);
  await card(page, name).getByRole('button', { name: 'Buy' }).click();
  const mine = order(page, name);
  await mine.getByText('Waiting for payment').waitFor();
  await mine.getByRole('button', { name: 'Pay' }).click();
  const cardField = mine.getByRole('group', { name: 'Card' });
  await cardField.waitFor();
  // Stripe's test card, typed into Stripe.js's card field (localstripe's stand-in of it).
  await cardField.getByPlaceholder('number').fill('4242424242424242');
  await cardField.getByPlaceholder('exp_month').fill('12');
  await cardField.getByPlaceholder('exp_year').fill('34');
  await cardField.getByPlaceholder('cvc').fill('123');
  await cardField.getByPlaceholder('postal_code').fill('75001');
  await mine.getByRole('button', { name: 'Pay with card' }).click();
  await mine.getByText('Paid', { exact: true }).waitFor({ timeout: 20000 });
  const orders = await api('/api/v1/orders?limit=5', { token: adminToken, at: stripeBase });
  const paid = orders.body.orders.find((o) => o.user_id === 'cardholder');
  assert.equal(paid.status, 'paid');
  assert.equal(paid.payment.provider, 'stripe');
  // The money is at Stripe: the intent succeeded there.
  const intent = await fetch(localstripe + '/v1/payment_intents/' + paid.payment.intent_id,
    { headers: { Authorization: 'Bearer sk_test_browser' } }).then((r) => r.json());
  assert.equal(intent.status, 'succeeded');
  assert.equal(intent.amount, 2500);

  // The admin looks the order up and refunds it, after a confirmation.
  await page.goto(stripeBase + '/admin');
  await page.getByLabel('Admin token').fill(adminToken);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByLabel('Order id').fill(paid.id);
  await page.getByRole('button', { name: 'Look up' }).click();
  const found = page.getByRole('article', { name: 'Order ' + paid.id });
  await found.getByText('paid', { exact: true }).waitFor();
  page.once('dialog', (dialog) => dialog.accept());
  await found.getByRole('button', { name: 'Refund' }).click();
  await page.getByRole('article', { name: 'Order ' + paid.id }).getByText('refunded', { exact: true }).waitFor();
  await page.locator('#lookup-rows').getByRole('row').filter({ hasText: paid.id })
    .getByText('refunded', { exact: true }).waitFor();
  const refunds = await fetch(localstripe + '/v1/refunds?payment_intent=' + paid.payment.intent_id,
    { headers: { Authorization: 'Bearer sk_test_browser' } }).then((r) => r.json());
  assert.equal(refunds.data.length, 1, 'one refund at Stripe');
  const audit = await api('/api/v1/sales/' + created.body.id + '/audit', { token: adminToken, at: stripeBase });
  assert.equal(audit.body.remaining, 2, 'the unit is back on sale');
  assert.equal(audit.body.consistent, true);
});

test('both pages pass the contrast, label and phone-width checks', async ({ page }) => {
  await page.setViewportSize({ width: 375, height: 740 });
  await signIn(page, 'dee');
  await card(page, saleName).waitFor();
  assert.deepEqual(await page.evaluate(accessibilityProblems), [], 'storefront');
  if (screenshots) await page.screenshot({ path: path.join(screenshots, 'storefront-phone.png'), fullPage: true });
  await page.goto(base + '/admin');
  assert.deepEqual(await page.evaluate(accessibilityProblems), [], 'admin, signed out');
  await page.getByLabel('Admin token').fill(adminToken);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('row').filter({ hasText: saleName }).waitFor();
  assert.deepEqual(await page.evaluate(accessibilityProblems), [], 'admin, signed in');
});

// Presses Tab until `locator` has the focus (at most `presses` times).
async function tabTo(page, locator, presses = 60) {
  for (let i = 0; i < presses; i += 1) {
    if (await locator.evaluate((node) => node === document.activeElement)) return;
    await page.keyboard.press('Tab');
  }
  throw new Error('Tab never reached ' + locator);
}

test('a buyer signs in, buys and pays with the keyboard alone', async ({ page }) => {
  const name = 'Keyboard sale ' + Date.now();
  const created = await api('/api/v1/sales', {
    method: 'POST', token: adminToken,
    body: { name, stock: 3, per_user_limit: 1, starts_at: new Date(Date.now() - 1000).toISOString(), payment_window_secs: 900 },
  });
  assert.equal(created.status, 201);
  await page.goto(base + '/');
  await tabTo(page, page.getByLabel('Name'));
  await page.keyboard.type('eve');
  await page.keyboard.press('Enter');
  await page.getByText('Signed in as eve').waitFor();
  const buy = card(page, name).getByRole('button', { name: 'Buy' });
  await buy.waitFor();
  await tabTo(page, buy);
  await page.keyboard.press('Enter');
  const mine = order(page, name);
  await mine.getByText('Waiting for payment').waitFor();
  await tabTo(page, mine.getByRole('button', { name: 'Pay' }));
  await page.keyboard.press('Space');
  await mine.getByText('Paid', { exact: true }).waitFor();
});

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.FLASHSALE_CHROMIUM,
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
  if (screenshots) fs.mkdirSync(screenshots, { recursive: true });
  let failed = 0;
  for (const { name, body, cspExpected } of tests) {
    const context = await browser.newContext({ viewport: { width: 1000, height: 800 } });
    // Every document reports its policy's violations on the console, which outlives navigations.
    await context.addInitScript(() => {
      document.addEventListener('securitypolicyviolation', (event) => {
        console.error('CSP violation: ' + event.violatedDirective + ' blocked ' + event.blockedURI);
      });
    });
    const page = await context.newPage();
    const violations = [];
    page.on('console', (message) => {
      const text = message.text();
      if (/CSP violation|Content Security Policy/.test(text)) violations.push(text);
    });
    page.setDefaultTimeout(10000);
    try {
      await body({ page });
      if (!cspExpected) assert.deepEqual(violations, [], 'the content security policy held');
      console.log('PASS ' + name);
    } catch (error) {
      failed += 1;
      console.log('FAIL ' + name + '\n' + (error && error.stack || error));
      fs.mkdirSync(failures, { recursive: true });
      await page.screenshot({ path: path.join(failures, name.replace(/[^a-z0-9]+/gi, '-') + '.png'), fullPage: true }).catch(() => {});
    }
    await context.close();
  }
  await browser.close();
  console.log(tests.length - failed + ' of ' + tests.length + ' browser tests passed');
  process.exit(failed ? 1 : 0);
})();
