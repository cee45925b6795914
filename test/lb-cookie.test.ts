import { test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { COOKIE_PURPOSE_LB, CookieCodec } from '../lib/cookie-codec.js'
import { readLbCookies } from '../lib/stickiness/lb-cookie.js'
import { buildGateway, CookieJar, echoOf, exposeAffinity, startTargets, TEST_KEY, type TestTarget } from './setup.js'

const codec = new CookieCodec([Buffer.from(TEST_KEY, 'hex')])

/** Requests that say they came over HTTPS, through a TLS-terminating proxy the gateway trusts (see `gateway`). */
const HTTPS = { 'x-forwarded-proto': 'https' }

/** A gateway whose every path goes to the lb-cookie group `carts`; it trusts 127.0.0.1's X-Forwarded-Proto (`HTTPS`). */
async function gateway (t: Parameters<typeof startTargets>[0], targets: TestTarget[], extra: { now?: () => number, durationSeconds?: number } = {}): Promise<FastifyInstance> {
  const app = await buildGateway(t, {
    now: extra.now,
    targetGroups: [{
      name: 'carts',
      targets: targets.map(({ id, url }) => ({ id, url })),
      stickiness: { type: 'lb_cookie', durationSeconds: extra.durationSeconds ?? 86400 }
    }]
  }, { trustProxy: '127.0.0.1' })
  app.all('/*', { config: { targetGroup: 'carts' } }, (_request, reply) => reply.forward())
  exposeAffinity(app)
  return app
}

test('a client with a cookie jar stays on one target over 100 requests', async (t) => {
  const targets = await startTargets(t, 3)
  const app = await gateway(t, targets)
  const jar = new CookieJar()
  const seen: string[] = []
  const outcomes = new Set<string>()
  for (let i = 0; i < 100; i++) {
    const res = await app.inject({ url: `/cart?i=${i}`, headers: jar.headers() })
    jar.store(res.headers['set-cookie'])
    seen.push(echoOf(res).target)
    if (i > 0) outcomes.add(String(res.headers['x-affinity']))
  }
  t.equal(new Set(seen).size, 1, `one target answered all 100, got ${[...new Set(seen)].join(',')}`)
  t.same([...outcomes], ['hit'], 'every request after the first is a hit')
  const served = targets.map((target) => target.hits)
  t.same(served.filter((hits) => hits > 0), [100], `the other targets got nothing: ${served.join(',')}`)
})

test('cookies follow ALB’s wire format over HTTPS: Expires now + 7 days, Path=/, the CORS twin, one value', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await gateway(t, targets)
  const res = await app.inject({ url: '/', headers: HTTPS })
  const lines = res.headers['set-cookie'] as string[]
  t.equal(lines.length, 2, `two Set-Cookie lines: ${JSON.stringify(lines)}`)
  const lb = /^AWSALB=([A-Za-z0-9_-]+); Expires=([^;]+); Path=\/$/.exec(lines[0])
  const cors = /^AWSALBCORS=([A-Za-z0-9_-]+); Expires=([^;]+); Path=\/; SameSite=None; Secure$/.exec(lines[1])
  t.ok(lb, `AWSALB line in ALB's format: ${lines[0]}`)
  t.ok(cors, `AWSALBCORS line in ALB's format: ${lines[1]}`)
  if (lb === null || cors === null) return
  t.equal(lb[1], cors[1], 'the same value in both')
  t.equal(lb[2], cors[2], 'the same Expires in both')
  const expires = new Date(lb[2])
  t.equal(expires.toUTCString(), lb[2], 'Expires is written as Date#toUTCString()')
  const drift = Math.abs(expires.getTime() - (Date.now() + 7 * 86400_000))
  t.ok(drift <= 2000, `Expires within 2 s of now + 7 days, off by ${drift} ms`)
  for (const line of lines) t.notMatch(line, /Domain|Max-Age|HttpOnly|%/i, `no Domain, Max-Age, HttpOnly or URL-encoding: ${line}`)
  const opened = codec.open(COOKIE_PURPOSE_LB, lb[1])
  t.equal(opened?.payload.group, 'carts', 'bound to its target group')
  // Over plain HTTP no client keeps a Secure cookie (got fails the request on one): AWSALB alone.
  const plain = await app.inject({ url: '/' })
  t.same((plain.headers['set-cookie'] as string[]).map((line) => line.split('=')[0]), ['AWSALB'], `over HTTP: ${JSON.stringify(plain.headers['set-cookie'])}`)
  t.equal(opened?.payload.targetId, echoOf(res).target, 'names the target that answered, by id')
  t.notMatch(Buffer.from(lb[1], 'base64url').toString('latin1'), /127\.0\.0\.1|carts/, 'no address or group name in clear')
})

test('every response re-seals: the stickiness window slides, and is enforced inside the value', async (t) => {
  const targets = await startTargets(t, 3)
  let now = Date.parse('2026-11-21T12:00:00Z')
  const app = await gateway(t, targets, { now: () => now, durationSeconds: 60 })
  const jar = new CookieJar(() => now)
  const first = await app.inject({ url: '/' })
  jar.store(first.headers['set-cookie'])
  const pinned = echoOf(first).target
  const values = new Set([jar.cookies.get('AWSALB')])
  for (const step of [50, 50, 50]) {
    now += step * 1000
    const res = await app.inject({ url: '/', headers: jar.headers() })
    jar.store(res.headers['set-cookie'])
    values.add(jar.cookies.get('AWSALB'))
    t.equal(res.headers['x-affinity'], 'hit', `still a hit ${step} s after the last request (150 s after the first)`)
    t.equal(echoOf(res).target, pinned, 'on the same target')
  }
  t.equal(values.size, 4, 'a new value on every response')
  now += 62_000
  const stale = await app.inject({ url: '/', headers: jar.headers() })
  t.equal(stale.headers['x-affinity'], 'reassigned;expired', 'idle longer than the 60 s window: expired, though the browser still sends the cookie')
  t.equal(stale.statusCode, 200)
  jar.store(stale.headers['set-cookie'])
  const fresh = codec.open(COOKIE_PURPOSE_LB, jar.cookies.get('AWSALB') ?? '')
  t.equal(fresh?.payload.stickyUntilSeconds, Math.floor(now / 1000) + 60, 'the new cookie carries a window from now')
})

test('one value per target and second: sealed once, shared by the clients of that second, new the next', async (t) => {
  const targets = await startTargets(t, 2)
  let now = Date.parse('2026-11-21T12:00:00.100Z')
  const app = await gateway(t, targets, { now: () => now })
  const valueOf = (res: { headers: Record<string, unknown> }): string => {
    const jar = new CookieJar(() => now)
    jar.store(res.headers['set-cookie'] as string[])
    return jar.cookies.get('AWSALB') ?? ''
  }
  const byTarget = new Map<string, Set<string>>()
  for (let i = 0; i < 6; i++) {
    now += 100
    const res = await app.inject({ url: '/' })
    const target = echoOf(res).target
    if (!byTarget.has(target)) byTarget.set(target, new Set())
    byTarget.get(target)?.add(valueOf(res))
  }
  t.equal(byTarget.size, 2, 'both targets took new clients')
  for (const [target, values] of byTarget) t.equal(values.size, 1, `the clients pinned to ${target} within one second share one value`)
  const [a, b] = [...byTarget.values()].map((values) => [...values][0])
  t.not(a, b, 'each target has its own value')
  t.equal(codec.open(COOKIE_PURPOSE_LB, a)?.payload.issuedAtSeconds, Math.floor(Date.parse('2026-11-21T12:00:00Z') / 1000))

  now += 1000
  const next = await app.inject({ url: '/' })
  const value = valueOf(next)
  t.notOk(a === value || b === value, 'the next second seals a new value')
  t.equal(codec.open(COOKIE_PURPOSE_LB, value)?.payload.issuedAtSeconds, Math.floor(now / 1000), 'whose window starts then')
})

test("a target's own Set-Cookie lines stay on its response: the shared lines are never appended to", async (t) => {
  const targets = await startTargets(t, 1)
  const now = Date.parse('2026-11-21T12:00:00Z')
  const app = await gateway(t, targets, { now: () => now })
  for (const headers of [HTTPS, {}]) {
    const ours = headers === HTTPS ? ['AWSALB', 'AWSALBCORS'] : ['AWSALB']
    const withApp = await app.inject({ url: '/set-cookie', headers })
    t.same((withApp.headers['set-cookie'] as string[]).map((line) => line.split('=')[0]), [...ours, 'app', 'other'])
    const plain = await app.inject({ url: '/', headers })
    t.same((plain.headers['set-cookie'] as string[]).map((line) => line.split('=')[0]), ours, 'the next response in the same second has ours only')
  }
})

test('AWSALBCORS alone (a cross-site request over HTTPS) keeps the client on its target', async (t) => {
  const targets = await startTargets(t, 3)
  const app = await gateway(t, targets)
  const first = await app.inject({ url: '/', headers: HTTPS })
  const jar = new CookieJar()
  jar.store(first.headers['set-cookie'])
  const res = await app.inject({ url: '/', headers: { ...HTTPS, cookie: `AWSALBCORS=${jar.cookies.get('AWSALBCORS')}` } })
  t.equal(res.headers['x-affinity'], 'hit')
  t.equal(echoOf(res).target, echoOf(first).target)
})

test('readLbCookies reads AWSALB values first, then AWSALBCORS, in header order, without repeats', async (t) => {
  t.same(readLbCookies(undefined), [])
  t.same(readLbCookies('a=1; b=2'), [])
  t.same(readLbCookies('AWSALBCORS=c; x=AWSALB=no; AWSALB=a; AWSALBAPP-0=app; AWSALB=b; AWSALB=a'), ['a', 'b', 'c'])
  t.same(readLbCookies('AWSALB=v; AWSALBCORS=v'), ['v'], 'the usual pair opens once')
  t.same(readLbCookies('AWSALB="q"'), ['q'], 'RFC 6265 quoted value')
  t.same(readLbCookies('AWSALB=; AWSALB'), [], 'empty or valueless names are no cookie')
  t.same(readLbCookies('myAWSALB=x;AWSALB=y'), ['y'], 'only whole names count')
  t.equal(readLbCookies(Array.from({ length: 50 }, (_, i) => `AWSALB=v${i}`).join('; ')).length, 4, 'at most 4 candidates are tried')
  t.same(readLbCookies('AWSALBCORS=c1; AWSALBCORS=c2; AWSALBCORS=c3; AWSALBCORS=c4; AWSALB=a'), ['a', 'c1', 'c2', 'c3'], 'AWSALBCORS values listed first do not push AWSALB out')
})

test('a name inside another cookie\'s value is not a cookie', async (t) => {
  t.same(readLbCookies('note=a AWSALB=forged; theme=dark'), [], 'after a blank inside a value')
  t.same(readLbCookies('note=a;  AWSALB=v'), ['v'], 'after ; and blanks')
})
