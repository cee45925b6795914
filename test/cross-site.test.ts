import { createServer } from 'node:https'
import { test } from 'tap'
import { noChromium, openProfilePage } from './browser.js'
import { realNow, SHOP_HOST, startAccountBackends, startClientGateway } from './client-gateway.js'
import { listenOnLoopback } from './setup.js'
import { localhostCert } from './tls.js'

// Cross-site requests in a real browser (Debian's Chromium, headless, driven by playwright-core):
// a page of another site fetches the gateway with its credentials. Chromium then sends the
// gateway's SameSite=None cookies but withholds the app's session cookie, which has no SameSite
// and so counts as Lax. Both sites are on loopback under names that are not local, over HTTPS.

const OTHER_HOST = 'news.other.test'
const TIMEOUT_MS = 10_000

interface Tap { teardown (fn: () => unknown): void }

/** The other site: an HTTPS server whose every page is an empty document, for a script to fetch from. */
async function otherSite (t: Tap): Promise<string> {
  const server = createServer(localhostCert, (_req, res) => {
    res.setHeader('content-type', 'text/html; charset=utf-8')
    res.end('<!doctype html><title>news</title><p>Another site.</p>')
  })
  return `https://${OTHER_HOST}:${await listenOnLoopback(t, server)}`
}

/**
 * Chromium resolving both names to 127.0.0.1 and taking the test certificate (the other site's
 * name is not in it), in a profile that allows third-party cookies (a fresh one blocks them:
 * then no cross-site request carries any cookie of the gateway).
 */
async function browser (t: Tap) {
  return await openProfilePage(t, { profile: { cookie_controls_mode: 0 } }, {
    args: [`--host-resolver-rules=MAP ${SHOP_HOST} 127.0.0.1, MAP ${OTHER_HOST} 127.0.0.1`],
    context: { ignoreHTTPSErrors: true }
  })
}

/** The page's errors but the failed loads of a page's resources (Chromium asks each origin for /favicon.ico, which the gateway does not route). */
function scriptErrors (errors: readonly string[]): string[] {
  return errors.filter((error) => !error.startsWith('Failed to load resource'))
}

interface Fetched { status: number, affinity: string | null, backend: string, user: string | null }

test('Chromium: a cross-site fetch with credentials does not end an app-cookie login', { skip: noChromium }, async (t) => {
  const backends = await startAccountBackends(t, 3)
  // Chromium keeps cookies by the machine's real clock.
  const { origin } = await startClientGateway(t, backends, { https: true, now: realNow })
  const other = await otherSite(t)
  const { page, errors } = await browser(t)

  const login = await page.goto(`${origin}/app/login?user=ann`, { timeout: TIMEOUT_MS })
  const backend = (JSON.parse(await login?.text() ?? '{}') as { backend: string }).backend
  t.match(backend, /^b[0-2]$/, `logged in on ${backend}`)
  const me = await page.goto(`${origin}/app/me`, { timeout: TIMEOUT_MS })
  t.same({ affinity: me?.headers()['x-affinity'], body: JSON.parse(await me?.text() ?? '{}') }, { affinity: 'hit', body: { backend, user: 'ann' } }, 'a first-party request: a hit, logged in')
  const cookies = await page.context().cookies(origin)
  // Chromium lists cookies in no promised order: by name.
  const shards = cookies.filter((cookie) => cookie.name.startsWith('AWSALBAPP-')).sort((a, b) => a.name.localeCompare(b.name))
  t.same(shards.map((cookie) => [cookie.name, cookie.sameSite, cookie.secure]), [0, 1, 2, 3].map((i) => [`AWSALBAPP-${i}`, 'None', true]), 'the shards: SameSite=None; Secure for Chromium over HTTPS')
  t.same(cookies.filter((cookie) => cookie.name === 'sid').map((cookie) => cookie.sameSite), ['Lax'], 'the app cookie has no SameSite: Chromium takes it as Lax')

  await page.goto(`${other}/`, { timeout: TIMEOUT_MS })
  const crossSite = await page.evaluate(async (url): Promise<Fetched> => {
    const res = await fetch(url, { credentials: 'include' })
    const body = await res.json() as { backend: string, user: string | null }
    return { status: res.status, affinity: res.headers.get('x-affinity'), backend: body.backend, user: body.user }
  }, `${origin}/app/me`)
  t.same({ status: crossSite.status, affinity: crossSite.affinity, user: crossSite.user }, { status: 200, affinity: 'reassigned;app-cookie-withheld', user: null },
    `the other site's fetch brought the shards but not the Lax sid: no app stickiness for it (served by ${crossSite.backend})`)
  const after = (await page.context().cookies(origin)).filter((cookie) => cookie.name.startsWith('AWSALBAPP-')).sort((a, b) => a.name.localeCompare(b.name))
  t.same(after.map((cookie) => `${cookie.name}=${cookie.value}`), shards.map((cookie) => `${cookie.name}=${cookie.value}`), 'the browser still holds the shards it had')

  const back = await page.goto(`${origin}/app/me`, { timeout: TIMEOUT_MS })
  t.same({ affinity: back?.headers()['x-affinity'], body: JSON.parse(await back?.text() ?? '{}') }, { affinity: 'hit', body: { backend, user: 'ann' } }, 'the next first-party request is still logged in, on its backend')
  t.same(scriptErrors(errors), [], 'no script error')
})

test('Chromium: over HTTPS the CORS twin keeps a cross-site fetch on the client’s target', { skip: noChromium }, async (t) => {
  const backends = await startAccountBackends(t, 3)
  const { origin } = await startClientGateway(t, backends, { https: true, now: realNow })
  const other = await otherSite(t)
  const { page, errors } = await browser(t)

  const first = await page.goto(`${origin}/lb/cart`, { timeout: TIMEOUT_MS })
  const backend = (JSON.parse(await first?.text() ?? '{}') as { backend: string }).backend
  const cookies = await page.context().cookies(origin)
  t.same(cookies.filter((cookie) => cookie.name.startsWith('AWSALB')).map((cookie) => [cookie.name, cookie.sameSite]).sort(), [['AWSALB', 'Lax'], ['AWSALBCORS', 'None']],
    'AWSALB without SameSite (Lax for Chromium), and its twin for cross-site requests')

  await page.goto(`${other}/`, { timeout: TIMEOUT_MS })
  for (let i = 0; i < 3; i++) {
    const crossSite = await page.evaluate(async (url): Promise<Fetched> => {
      const res = await fetch(url, { credentials: 'include' })
      const body = await res.json() as { backend: string, user: string | null }
      return { status: res.status, affinity: res.headers.get('x-affinity'), backend: body.backend, user: body.user }
    }, `${origin}/lb/cart`)
    t.same({ status: crossSite.status, affinity: crossSite.affinity, backend: crossSite.backend }, { status: 200, affinity: 'hit', backend }, `cross-site fetch ${i + 1}: AWSALBCORS alone keeps it on ${backend}`)
  }
  t.same(scriptErrors(errors), [], 'no script error')
})
