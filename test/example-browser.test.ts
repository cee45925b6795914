import { test } from 'tap'
import { noChromium, openPage } from './browser.js'

// The example's page in a real browser (Debian's Chromium, headless): what a visitor clicks works,
// with no script error. The example imports `fastify-sticky` by name, i.e. dist/: `npm test` builds it first.
const START = new URL('../examples/shop/start.js', import.meta.url)
interface Shop { url: string, close (): Promise<void> }
const { startShop } = await import(START.href) as { startShop (options: { port: number, now?: () => number }): Promise<Shop> }

const TIMEOUT_MS = 10_000

test('the shop page in Chromium: the cart stays on one backend, and the cookie-less panel stays on one backend without any cookie', { skip: noChromium }, async (t) => {
  // The browser keeps cookies by the machine's real clock: the gateway writes their Expires by the
  // same one, whatever this process's calendar says (.ci/run moves it 400 days either way).
  const shop = await startShop({ port: 0, now: () => Math.round(performance.timeOrigin + performance.now()) })
  t.teardown(() => shop.close())
  const { page, errors } = await openPage(t)
  await page.goto(shop.url)

  // The cart: add a product, reload three times, one backend each time, `hit` after the first.
  await page.click('text=+ Coffee beans')
  await page.waitForFunction(() => document.getElementById('served-by')?.textContent !== '–', null, { timeout: TIMEOUT_MS })
  const cartBackend = await page.textContent('#served-by')
  t.match(cartBackend, /^cart-[abc]$/, 'the page shows which backend answered')
  for (let i = 0; i < 3; i++) {
    await page.click('#reload')
    await page.waitForFunction((count) => document.querySelectorAll('#log li:not(.empty)').length >= count, 2 + i, { timeout: TIMEOUT_MS })
    t.equal(await page.textContent('#served-by'), cartBackend, 'the cart stays on its backend')
    t.equal(await page.textContent('#affinity'), 'hit')
  }
  t.match(await page.textContent('#items'), /Coffee beans/, 'with its product')

  // The cookie-less panel: five requests with the page's x-session-id and no cookie.
  const cookiesBefore = (await page.context().cookies()).map((cookie) => `${cookie.name}=${cookie.value}`).sort()
  const session = await page.textContent('#api-session')
  t.match(session, /^x-session-id: [0-9a-f]{18}$/)
  await page.click('#api-send')
  await page.waitForFunction(() => document.querySelectorAll('#api-log li:not(.empty)').length === 5, null, { timeout: TIMEOUT_MS })
  const lines = await page.$$eval('#api-log li', (items) => items.map((item) => item.lastElementChild?.textContent ?? ''))
  t.equal(lines.length, 5)
  const backends = new Set(lines.map((line) => /served by (cart-[abc])/.exec(line)?.[1]))
  t.equal(backends.size, 1, `every request reached one backend: ${lines.join(' | ')}`)
  t.ok(lines.every((line) => line.startsWith('200 ') && line.endsWith('hit by header')), 'each a hit, decided by the header')
  t.same((await page.context().cookies()).map((cookie) => `${cookie.name}=${cookie.value}`).sort(), cookiesBefore, 'no cookie was sent or set by those requests')

  // Another session id: the panel starts over with it and still stays on one backend.
  await page.click('#api-new')
  t.not(await page.textContent('#api-session'), session, 'a new id')
  await page.click('#api-send')
  await page.waitForFunction(() => document.querySelectorAll('#api-log li:not(.empty)').length === 5, null, { timeout: TIMEOUT_MS })
  const again = await page.$$eval('#api-log li', (items) => items.map((item) => item.lastElementChild?.textContent ?? ''))
  t.equal(new Set(again.map((line) => /served by (cart-[abc])/.exec(line)?.[1])).size, 1, 'the new id stays on one backend too')
  t.same(errors, [], 'no script error on the page')
})

test('the live feed in Chromium: the WebSocket lands on the cart\'s backend, again after a reload, and moves with a new cookie when that backend stops', { skip: noChromium }, async (t) => {
  const shop = await startShop({ port: 0, now: () => Math.round(performance.timeOrigin + performance.now()), healthCheck: { intervalMs: 200, timeoutMs: 100, allowShortIntervals: true } } as never)
  t.teardown(() => shop.close())
  const { page, errors } = await openPage(t)
  await page.goto(shop.url)
  await page.click('text=+ Coffee beans')
  await page.waitForFunction(() => document.getElementById('live-count')?.textContent === '1 item', null, { timeout: TIMEOUT_MS })
  const cartBackend = await page.textContent('#served-by')
  t.equal(await page.textContent('#live-served-by'), cartBackend, 'the socket is on the cart\'s backend')
  t.equal(await page.textContent('#live-state'), 'open')
  t.equal(await page.textContent('#live-match'), 'the same backend as your cart')

  await page.reload()
  await page.waitForFunction(() => document.getElementById('live-count')?.textContent === '1 item', null, { timeout: TIMEOUT_MS })
  t.equal(await page.textContent('#live-served-by'), cartBackend, 'after a reload, the socket is back on that backend, with the cart')

  const stopped = await fetch(`${shop.url}demo/backends/${cartBackend}/stop`, { method: 'POST' })
  t.equal(stopped.status, 200)
  await page.waitForFunction(() => document.getElementById('live-close')?.textContent === '1001 Going Away', null, { timeout: TIMEOUT_MS })
  t.pass('the gateway closed the socket with 1001 when its backend went away')
  await page.waitForFunction((gone) => {
    const served = document.getElementById('live-served-by')?.textContent
    return document.getElementById('live-state')?.textContent === 'open' && served !== gone && served !== '–'
  }, cartBackend, { timeout: TIMEOUT_MS })
  const liveBackend = await page.textContent('#live-served-by')
  t.not(liveBackend, cartBackend, `the page reconnected, to ${liveBackend}`)
  await page.click('#reload')
  await page.waitForFunction((live) => document.getElementById('served-by')?.textContent === live, liveBackend, { timeout: TIMEOUT_MS })
  t.equal(await page.textContent('#affinity'), 'hit', 'the cart follows the socket\'s new cookie (a hit there, a new cart)')
  t.same(errors.filter((error) => !/WebSocket|ERR_CONNECTION_REFUSED|status of 50\d/.test(error)), [], 'no script error on the page')
})

test('the account panel in Chromium: a login binds AWSALBAPP-0 to its backend, "Who am I" stays there, logging out removes the binding', { skip: noChromium }, async (t) => {
  const shop = await startShop({ port: 0, now: () => Math.round(performance.timeOrigin + performance.now()) })
  t.teardown(() => shop.close())
  const { page, errors } = await openPage(t)
  await page.goto(shop.url)
  await page.fill('#user', 'Ada')
  await page.press('#user', 'Enter')
  await page.waitForFunction(() => /^as Ada, session on cart-[abc]/.test(document.getElementById('account-user')?.textContent ?? ''), null, { timeout: TIMEOUT_MS })
  const loginBackend = await page.textContent('#account-served-by')
  const shard = (await page.context().cookies()).find((cookie) => cookie.name === 'AWSALBAPP-0')
  t.ok(shard !== undefined && shard.value !== '_remove_', 'the login bound AWSALBAPP-0')
  for (let i = 0; i < 3; i++) {
    await page.click('#whoami')
    await page.waitForFunction((visits) => (document.getElementById('account-user')?.textContent ?? '').includes(`(${visits} visit`), i + 1, { timeout: TIMEOUT_MS })
    t.equal(await page.textContent('#account-served-by'), loginBackend, `"Who am I" ${i + 1} stays on the login's backend`)
    t.equal(await page.textContent('#account-affinity'), 'hit')
  }
  await page.click('#logout')
  await page.waitForFunction(() => document.getElementById('account-user')?.textContent === 'no', null, { timeout: TIMEOUT_MS })
  const after = (await page.context().cookies()).filter((cookie) => cookie.name.startsWith('AWSALBAPP-') && cookie.value !== '_remove_')
  t.same(after, [], 'after logging out no shard binds the browser')
  t.same(errors, [], 'no script error on the page')
})

test('the shop page on a phone 390 px wide: no sideways scrolling, every target group’s health, counts in words, and a stopped backend’s cart is not shown as still there', { skip: noChromium }, async (t) => {
  const shop = await startShop({ port: 0, now: () => Math.round(performance.timeOrigin + performance.now()) })
  t.teardown(() => shop.close())
  const { page, errors } = await openPage(t, { context: { viewport: { width: 390, height: 844 } } })
  await page.goto(shop.url)

  await page.click('text=+ Coffee beans')
  await page.waitForFunction(() => document.getElementById('served-by')?.textContent !== '–' && document.getElementById('items')?.textContent?.includes('Coffee beans'), null, { timeout: TIMEOUT_MS })
  const cartBackend = await page.textContent('#served-by') ?? ''
  await page.click('#api-send')
  await page.waitForFunction(() => document.querySelectorAll('#api-log li:not(.empty)').length === 5, null, { timeout: TIMEOUT_MS })
  // Three backends, each seen by the three groups (carts, accounts, api).
  await page.waitForFunction(() => document.querySelectorAll('#backends .health').length === 9, null, { timeout: TIMEOUT_MS })

  const width = await page.evaluate(() => document.documentElement.scrollWidth)
  t.ok(width <= 390, `the page fits 390 px, with every panel filled: scrollWidth ${width}`)

  const rows = await page.$$eval('#backends > li', (items) => items.map((item) => ({
    id: item.querySelector('.id')?.textContent,
    groups: [...item.querySelectorAll('.health .group')].map((group) => group.textContent)
  })))
  t.same(rows, ['cart-a', 'cart-b', 'cart-c'].map((id) => ({ id, groups: ['carts', 'accounts', 'api'] })), `every backend shows every group: ${JSON.stringify(rows)}`)
  // The carts group counts this browser's session on the backend that has its cart.
  await page.waitForFunction((id) => [...document.querySelectorAll('#backends > li')].some((item) => item.querySelector('.id')?.textContent === id && item.querySelector('.health')?.textContent?.includes('1 session')), cartBackend, { timeout: TIMEOUT_MS })
  const counts = await page.$$eval('#backends .health span', (spans) => spans.map((span) => span.textContent ?? '').filter((text) => text.includes('session')))
  t.ok(counts.includes('1 session'), `one session reads "1 session": ${counts.join(' | ')}`)
  t.ok(counts.every((text) => /^(1 session|(0|[2-9]|\d\d+) sessions)$/.test(text)), `every count in words, none like "~1 sessions": ${counts.join(' | ')}`)

  // Stop the cart's backend with its button: the cart panel no longer lists what was lost.
  await page.click(`#backends > li:has(.id:text-is("${cartBackend}")) button`)
  await page.waitForFunction(() => !(document.getElementById('items')?.textContent?.includes('Coffee beans') ?? true), null, { timeout: TIMEOUT_MS })
  t.match(await page.textContent('#items'), new RegExp(`${cartBackend}, which stopped`), 'the cart says where its items went')
  t.notMatch(await page.textContent('#items'), /Coffee beans/, 'and shows none of them')
  t.ok(await page.evaluate(() => document.documentElement.scrollWidth) <= 390, 'still no sideways scrolling')

  await page.click('#reload')
  await page.waitForFunction((id) => { const by = document.getElementById('served-by')?.textContent; return by !== id && by !== '–' }, cartBackend, { timeout: TIMEOUT_MS })
  t.match(await page.textContent('#items'), /The cart is empty/, `another backend answers, with an empty cart: ${await page.textContent('#served-by')}`)
  t.same(errors, [], 'no script error on the page')
})

test('the shop page in Chromium: Drain on the cart\'s backend moves the cart, items and all, to another backend', { skip: noChromium }, async (t) => {
  const shop = await startShop({ port: 0, now: () => Math.round(performance.timeOrigin + performance.now()) })
  t.teardown(() => shop.close())
  const { page, errors } = await openPage(t)
  await page.goto(shop.url)

  await page.click('text=+ Coffee beans')
  await page.waitForFunction(() => document.getElementById('items')?.textContent?.includes('Coffee beans'), null, { timeout: TIMEOUT_MS })
  const cartBackend = await page.textContent('#served-by') ?? ''
  await page.click(`#backends > li:has(.id:text-is("${cartBackend}")) button:text-is("Drain")`)
  await page.waitForFunction(() => !(document.getElementById('notice')?.hidden ?? true), null, { timeout: TIMEOUT_MS })
  t.match(await page.textContent('#notice'), /takes your cart over/, 'the page says what a drain does')

  await page.click('#reload')
  await page.waitForFunction((id) => { const by = document.getElementById('served-by')?.textContent; return by !== id && by !== '–' }, cartBackend, { timeout: TIMEOUT_MS })
  const second = await page.textContent('#served-by')
  t.match(await page.textContent('#items'), /Coffee beans/, `the cart came along to ${second}`)
  t.equal(await page.textContent('#session'), `taken over by ${second} from ${cartBackend}`)
  t.equal(await page.textContent('#affinity'), 'reassigned;target-deregistered')
  t.same(errors, [], 'no script error on the page')
})
