import { test } from 'tap'
import { openPage } from './browser.js'

// The example's page in a real browser (Debian's Chromium, headless): what a visitor clicks works,
// with no script error. The example imports `fastify-sticky` by name, i.e. dist/: `npm test` builds it first.
const START = new URL('../examples/shop/start.js', import.meta.url)
interface Shop { url: string, close (): Promise<void> }
const { startShop } = await import(START.href) as { startShop (options: { port: number, now?: () => number }): Promise<Shop> }

const TIMEOUT_MS = 10_000

test('the shop page in Chromium: the cart stays on one backend, and the cookie-less panel stays on one backend without any cookie', async (t) => {
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
