import { mkdir } from 'node:fs/promises'
import { test } from 'tap'
import { stickyAdmin } from '../lib/index.js'
import { noChromium, openPage } from './browser.js'
import { buildGateway, startTargets } from './setup.js'

// The admin dashboard in a real browser (Debian's Chromium, headless), at a phone's width.
const TOKEN = 'dashboard-token-0123456789'
const TIMEOUT_MS = 10_000

test('the dashboard in Chromium: groups and targets live; Drain takes a target out of service and the page shows it; Undrain and weight', { skip: noChromium }, async (t) => {
  const targets = await startTargets(t, 3)
  const lines: string[] = []
  const app = await buildGateway(t, {
    targetGroups: [
      { name: 'shop', targets: targets.slice(0, 2).map(({ id, url }) => ({ id, url })) },
      { name: 'api', targets: targets.slice(2).map(({ id, url }) => ({ id, url })) }
    ],
    metrics: true
  }, { logger: { level: 'info', stream: { write: (line: string) => { lines.push(line) } } } })
  app.get('/*', { config: { targetGroup: 'shop' } }, (_request, reply) => reply.forward())
  await app.register(stickyAdmin, { prefix: '/admin', token: TOKEN })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  const base = `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`

  const { page, errors } = await openPage(t, { context: { viewport: { width: 390, height: 844 } } })
  await page.goto(`${base}/admin/#token=${TOKEN}`)
  await page.waitForFunction(() => document.querySelectorAll('article.target').length === 3, null, { timeout: TIMEOUT_MS })
  t.equal(new URL(page.url()).hash, '', 'the token leaves the address bar')
  t.same(await page.$$eval('section.group', (sections) => sections.map((section) => (section as HTMLElement).dataset.group)), ['shop', 'api'], 'one section a group')
  t.same(await page.$$eval('section[data-group="shop"] article.target', (cards) => cards.map((card) => (card as HTMLElement).dataset.target)), ['t0', 't1'])
  t.equal(await page.textContent('article[data-target="t0"] .state'), 'healthy')
  t.equal(await page.textContent('article[data-target="t0"] dd.service'), 'in service')
  for (const field of ['reason', 'since', 'inFlight', 'sessions', 'rps', 'errors', 'weight']) {
    t.ok(await page.isVisible(`article[data-target="t0"] dd.${field}`), `the card shows ${field}`)
  }
  t.equal(await page.evaluate(() => document.documentElement.scrollWidth), 390, 'nothing wider than the phone')

  // Traffic shows as requests per second on the live page.
  for (let i = 0; i < 10; i++) await fetch(`${base}/r${i}`)
  await page.waitForFunction(() => /^[1-9][\d.]*\/s$/.test(document.querySelector('article[data-target="t0"] dd.rps')?.textContent ?? ''), null, { timeout: TIMEOUT_MS })

  // Drain: out of service, live (the next snapshot), and the app routes no new request there.
  await page.click('article[data-target="t0"] button.toggle')
  await page.waitForFunction(() => document.querySelector('article[data-target="t0"] dd.service')?.textContent === 'out of service', null, { timeout: TIMEOUT_MS })
  t.equal(await page.textContent('article[data-target="t0"] button.toggle'), 'Undrain')
  t.equal(app.targetGroups.get('shop')?.describe().targets[0].inService, false, 'the gateway took t0 out of service')
  await mkdir(new URL('../tmp/', import.meta.url), { recursive: true })
  const screenshot = await page.screenshot({ path: new URL('../tmp/admin-dashboard.png', import.meta.url).pathname, fullPage: true })
  t.ok(screenshot.length > 1000, `a screenshot written (${screenshot.length} bytes)`)
  const text = await page.textContent('body') ?? ''
  for (const expected of ['shop', 'api', 't0', 't1', 't2', 'out of service', 'Undrain', 'healthy']) t.ok(text.includes(expected), `the page shows ${expected}`)

  // Weight, then Undrain.
  await page.fill('article[data-target="t1"] input.weight-input', '5')
  await page.click('article[data-target="t1"] button.set-weight')
  await page.waitForFunction(() => document.querySelector('article[data-target="t1"] dd.weight')?.textContent === '5', null, { timeout: TIMEOUT_MS })
  await page.click('article[data-target="t0"] button.toggle')
  await page.waitForFunction(() => document.querySelector('article[data-target="t0"] dd.service')?.textContent === 'in service', null, { timeout: TIMEOUT_MS })

  // A refused change shows its code.
  await page.fill('article[data-target="t1"] input.weight-input', '0')
  await page.click('article[data-target="t1"] button.set-weight')
  t.equal(await page.textContent('#error'), 'A weight is an integer from 1 to 1000')

  t.same(errors, [], 'no script error on the page')
  const log = lines.join('')
  t.notOk(log.includes(TOKEN), 'the token is in no log line')
  t.match(log, /admin: target taken out of service/)
})

test('the dashboard in Chromium without its token asks for it; a wrong one is refused', { skip: noChromium }, async (t) => {
  const targets = await startTargets(t, 1)
  const app = await buildGateway(t, { targetGroups: [{ name: 'shop', targets: targets.map(({ id, url }) => ({ id, url })) }] })
  await app.register(stickyAdmin, { prefix: '/admin', token: TOKEN })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  const base = `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`
  const { page } = await openPage(t)
  await page.goto(`${base}/admin`)
  await page.waitForSelector('#login', { state: 'visible', timeout: TIMEOUT_MS })
  t.equal(await page.$$eval('article.target', (cards) => cards.length), 0, 'no data without the token')
  await page.fill('#token-input', 'wrong-token-0123456789')
  await page.click('#login button')
  await page.waitForFunction(() => document.getElementById('error')?.textContent === 'The token was refused', null, { timeout: TIMEOUT_MS })
  await page.fill('#token-input', TOKEN)
  await page.click('#login button')
  await page.waitForFunction(() => document.querySelectorAll('article.target').length === 1, null, { timeout: TIMEOUT_MS })
  t.pass('the right token opens the page (served at the prefix without a trailing slash too)')
})
