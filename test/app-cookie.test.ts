import { test } from 'tap'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { COOKIE_PURPOSE_APP, CookieCodec, type FastifyStickyOptions, type TargetGroupOptions } from '../lib/index.js'
import { decodeBindings, encodeBindings } from '../lib/stickiness/app-bindings.js'
import { readAppShards } from '../lib/stickiness/app-cookie.js'
import { buildGateway, CookieJar, echoOf, exposeAffinity, startTargets, TEST_KEY, type TestTarget } from './setup.js'

type Tap = Parameters<typeof buildGateway>[0]

const codec = new CookieCodec([Buffer.from(TEST_KEY, 'hex')])
const CHROME_120 = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36'
const CHROME_79 = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/79.0.3945.130 Safari/537.36'

function shopGroup (targets: TestTarget[], stickiness: Partial<{ durationSeconds: number, bindToCookieValue: boolean }> = {}, name = 'shop'): TargetGroupOptions {
  return { name, targets: targets.map(({ id, url }) => ({ id, url })), stickiness: { type: 'app_cookie', cookieName: 'sid', ...stickiness } }
}

/** A gateway whose every path goes to the app-sticky group `shop`. */
async function gateway (t: Tap, options: FastifyStickyOptions): Promise<FastifyInstance> {
  const app = await buildGateway(t, options)
  exposeAffinity(app)
  app.all('/*', { config: { targetGroup: 'shop' } }, (_request, reply) => reply.forward())
  return app
}

/** One browser request: the jar's cookies go out, the response's come back into it. */
async function send (app: FastifyInstance, jar: CookieJar, url: string, headers: Record<string, string> = {}): Promise<LightMyRequestResponse> {
  const res = await app.inject({ url, headers: { ...jar.headers(), ...headers } })
  jar.store(res.headers['set-cookie'])
  return res
}

function setCookies (res: LightMyRequestResponse): string[] {
  const lines = res.headers['set-cookie']
  return lines === undefined ? [] : Array.isArray(lines) ? lines : [lines]
}

function appLines (res: LightMyRequestResponse, prefix = 'AWSALBAPP-'): string[] {
  return setCookies(res).filter((line) => line.startsWith(prefix))
}

/** The bindings a jar's shards carry: group → target. */
function bindingsOf (jar: CookieJar, prefix = 'AWSALBAPP-'): Record<string, string> | string {
  const header = jar.headers().cookie
  const value = readAppShards(header, prefix)
  if (value === null || value === 'invalid') return String(value)
  const bindings = codec.openWith(COOKIE_PURPOSE_APP, value, 20_000, decodeBindings)
  if (bindings === null) return 'undecodable'
  return Object.fromEntries(bindings.map((binding) => [binding.group, binding.targetId]))
}

test('a target setting the app cookie gets AWSALBAPP-0..3 issued in ALB’s format, and the client stays', async (t) => {
  const targets = await startTargets(t, 3)
  const app = await gateway(t, { targetGroups: [shopGroup(targets)] })
  const jar = new CookieJar()
  const before = Date.now()
  const login = await send(app, jar, '/login')
  const target = echoOf(login).target
  t.equal(login.headers['x-affinity'], 'new')
  const lines = setCookies(login)
  t.match(lines[0], new RegExp(`^sid=${target}\\.1; Path=/; HttpOnly$`), `the app cookie passes through as the target set it: ${lines[0]}`)
  const shards = appLines(login)
  t.same(shards.map((line) => line.split('=')[0]), ['AWSALBAPP-0', 'AWSALBAPP-1', 'AWSALBAPP-2', 'AWSALBAPP-3'], 'all four names, in order')
  t.match(shards[0], /^AWSALBAPP-0=[A-Za-z0-9_-]{40,}; Expires=[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT; Path=\/$/, `the value shard: ${shards[0]}`)
  t.same(shards.slice(1).map((line) => line.split(';')[0]), ['AWSALBAPP-1=_remove_', 'AWSALBAPP-2=_remove_', 'AWSALBAPP-3=_remove_'], 'unused shards say _remove_')
  const expires = Date.parse(/Expires=([^;]+)/.exec(shards[0])![1])
  t.ok(expires >= Math.floor(before / 1000) * 1000 + 7 * 86_400_000 && expires <= Date.now() + 7 * 86_400_000, `Expires is now + 7 days: ${new Date(expires).toISOString()}`)
  t.notMatch(shards.join('\n'), /127\.0\.0\.1|shop/, 'nothing readable in the cookies')
  t.same(bindingsOf(jar), { shop: target }, 'the sealed value binds group shop to the target that set the cookie')

  for (let i = 0; i < 6; i++) {
    const res = await send(app, jar, '/cart')
    t.equal(echoOf(res).target, target, `request ${i + 1} stays on ${target}`)
    t.equal(res.headers['x-affinity'], 'hit')
    t.match(echoOf(res).headers.cookie, new RegExp(`(^|; )sid=${target}\\.1(;|$)`), 'the app cookie reaches the target untouched')
    t.equal(appLines(res).length, 4, 'fresh shards on every response (the window slides)')
  }
})

test('with app stickiness on and nothing stuck, every response carries four _remove_ (ALB) and requests spread', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await gateway(t, { targetGroups: [shopGroup(targets)] })
  const seen = new Set<string>()
  for (let i = 0; i < 4; i++) {
    const res = await app.inject({ url: '/browse', headers: { 'user-agent': 'curl/8.5.0' } })
    seen.add(echoOf(res).target)
    t.same(appLines(res).map((line) => line.replace(/Expires=[^;]+/, 'Expires=E')), [0, 1, 2, 3].map((i) => `AWSALBAPP-${i}=_remove_; Expires=E; Path=/`), 'four _remove_, no SameSite for curl')
    t.equal(res.headers['x-affinity'], 'new')
  }
  t.equal(seen.size, 2, `no app cookie, no stickiness: round robin over both targets, saw ${[...seen].join(',')}`)
})

test('a request with only one of the two cookies is not sticky', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await gateway(t, { targetGroups: [shopGroup(targets)] })
  const jar = new CookieJar()
  const first = echoOf(await send(app, jar, '/login')).target

  const onlyApp = new CookieJar()
  onlyApp.cookies.set('sid', jar.cookies.get('sid')!)
  const targetsSeen = new Set<string>()
  for (let i = 0; i < 4; i++) {
    const res = await app.inject({ url: '/cart', headers: onlyApp.headers() })
    t.equal(res.headers['x-affinity'], 'new', 'app cookie without shards: the algorithm chooses')
    targetsSeen.add(echoOf(res).target)
  }
  t.equal(targetsSeen.size, 2, `app cookie alone does not pin: saw ${[...targetsSeen].join(',')}`)

  const onlyShards = new CookieJar()
  for (const [name, value] of jar.cookies) if (name.startsWith('AWSALBAPP-')) onlyShards.cookies.set(name, value)
  const res = await send(app, onlyShards, '/cart')
  t.equal(res.headers['x-affinity'], 'reassigned;app-cookie-withheld', 'shards without the app cookie (a cross-site request): no app stickiness for it')
  t.same(appLines(res), [], 'and the shards are left as they are')
  t.ok(first === 't0' || first === 't1')
})

test('a request with the shards but not the app cookie (withheld across sites) leaves the binding alone, whatever its response sets', async (t) => {
  const targets = await startTargets(t, 3)
  const app = await buildGateway(t, { targetGroups: [shopGroup(targets), shopGroup(targets, {}, 'other')] })
  exposeAffinity(app)
  app.all('/other/*', { config: { targetGroup: 'other' } }, (_request, reply) => reply.forward())
  app.all('/*', { config: { targetGroup: 'shop' } }, (_request, reply) => reply.forward())
  const jar = new CookieJar()
  const target = echoOf(await send(app, jar, '/login')).target
  const bound = bindingsOf(jar)
  t.same(bound, { shop: target }, `logged in on ${target}`)
  // What a cross-site fetch with credentials brings: the SameSite=None shards, not the Lax app cookie.
  const crossSite = (): Record<string, string> => {
    const pairs = [...jar.cookies].filter(([name]) => name.startsWith('AWSALBAPP-'))
    return { cookie: pairs.map(([name, value]) => `${name}=${value}`).join('; ') }
  }
  const seen = new Set<string>()
  for (const url of ['/cart', '/cart', '/cart', '/login', '/status/503', '/status/500']) {
    const res = await app.inject({ url, headers: crossSite() })
    seen.add(echoOf(res).target)
    t.equal(res.headers['x-affinity'], 'reassigned;app-cookie-withheld', `${url}: ${String(res.headers['x-affinity'])}`)
    // An app that starts a session for every request without one (/login here): the browser refuses its
    // Lax cookie from a cross-site response but would keep new shards, bound to a session it never holds.
    t.same(appLines(res), [], `${url}: no AWSALBAPP line, not even _remove_: ${JSON.stringify(appLines(res))}`)
  }
  t.ok(seen.size > 1, `the withheld requests are placed by the algorithm: ${[...seen].join(',')}`)
  const back = await send(app, jar, '/cart')
  t.equal(back.headers['x-affinity'], 'hit', 'the next first-party request, with both cookies, is a hit')
  t.equal(echoOf(back).target, target, `on ${target}, where the session lives`)

  // A group the shards hold no binding of: nothing of it is withheld, the shards are rewritten as ever, the shop binding in them.
  const other = new CookieJar()
  other.store(crossSite().cookie.split('; '))
  const res = await send(app, other, '/other/x')
  t.equal(res.headers['x-affinity'], 'new', 'no binding of group other: a new client of it')
  t.equal(appLines(res).length, 4, 'four lines')
  t.same(bindingsOf(other), { shop: target }, 'still carrying the shop binding')
})

test('shards without the app cookie are cleared only by the app’s logout, and invalid shards as ever', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await gateway(t, { targetGroups: [shopGroup(targets)] })
  const jar = new CookieJar()
  await send(app, jar, '/login')
  const shards = [...jar.cookies].filter(([name]) => name.startsWith('AWSALBAPP-')).map(([name, value]) => `${name}=${value}`).join('; ')
  const logout = await app.inject({ url: '/logout', headers: { cookie: shards } })
  t.equal(logout.headers['x-affinity'], 'reassigned;app-cookie-withheld')
  t.same(appLines(logout).map((line) => line.replace(/^(AWSALBAPP-\d=[^;]*).*Expires=([^;]+).*$/, '$1 $2')),
    [0, 1, 2, 3].map((i) => `AWSALBAPP-${i}=_remove_ Thu, 01 Jan 1970 00:00:00 GMT`), 'the app deleted its cookie: the shards go too')
  const value = jar.cookies.get('AWSALBAPP-0')!
  const flipped = value.slice(0, 20) + (value[20] === 'A' ? 'B' : 'A') + value.slice(21)
  const invalid = await app.inject({ url: '/cart', headers: { cookie: `AWSALBAPP-0=${flipped}` } })
  t.equal(invalid.headers['x-affinity'], 'reassigned;undecodable')
  t.same(appLines(invalid).map((line) => line.split(';')[0]), [0, 1, 2, 3].map((i) => `AWSALBAPP-${i}=_remove_`), 'shards that do not open are replaced by four _remove_')
})

test('tampered, missing, reordered or mixed shards are reassigned, never an error', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await gateway(t, { targetGroups: [shopGroup(targets)] })
  const a = new CookieJar()
  await send(app, a, '/login')
  const b = new CookieJar()
  await send(app, b, '/login')
  const value = a.cookies.get('AWSALBAPP-0')!
  const flipped = value.slice(0, 20) + (value[20] === 'A' ? 'B' : 'A') + value.slice(21)
  const cases: Array<[string, string]> = [
    ['a flipped character', `sid=x; AWSALBAPP-0=${flipped}; AWSALBAPP-1=_remove_`],
    ['truncated', `sid=x; AWSALBAPP-0=${value.slice(0, -4)}`],
    ['the first shard missing, the second present', `sid=x; AWSALBAPP-1=${value}`],
    ['split over two shards in the wrong order', `sid=x; AWSALBAPP-0=${value.slice(40)}; AWSALBAPP-1=${value.slice(0, 40)}`],
    ['mixed: two clients’ halves', `sid=x; AWSALBAPP-0=${value.slice(0, 40)}; AWSALBAPP-1=${b.cookies.get('AWSALBAPP-0')!.slice(40)}`],
    ['not base64url', 'sid=x; AWSALBAPP-0=%%%%; AWSALBAPP-1=_remove_'],
    ['a shard over 4 KB', `sid=x; AWSALBAPP-0=${'A'.repeat(5000)}`],
    ['an lb cookie in place of the shards', 'sid=x; AWSALBAPP-0=' + codec.seal(1, { group: 'shop', targetId: 't0', stickyUntilSeconds: 2e9, issuedAtSeconds: 1.7e9 })],
    ['a valid set, then the same name with another client’s value', `sid=x; AWSALBAPP-0=${value}; AWSALBAPP-0=${b.cookies.get('AWSALBAPP-0')!}`],
    ['a valid set, then the same name with a value that does not open', `sid=x; AWSALBAPP-0=${value}; AWSALBAPP-0=${flipped}`]
  ]
  for (const [what, cookie] of cases) {
    const res = await app.inject({ url: '/cart', headers: { cookie } })
    t.equal(res.statusCode, 200, `${what}: answered`)
    t.equal(res.headers['x-affinity'], 'reassigned;undecodable', `${what}: reassigned`)
    t.match(appLines(res)[0], /^AWSALBAPP-0=[A-Za-z0-9_-]{40,};/, `${what}: the request's app cookie is bound anew`)
  }
})

test('the app’s logout (Max-Age=0 or a past Expires) deletes the AWSALBAPP cookies too', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await gateway(t, { targetGroups: [shopGroup(targets)] })
  for (const logout of ['/logout', '/logout-expires']) {
    const jar = new CookieJar()
    const target = echoOf(await send(app, jar, '/login')).target
    t.equal(echoOf(await send(app, jar, '/cart')).target, target)
    const res = await send(app, jar, logout)
    t.equal(echoOf(res).target, target, `${logout} reaches the session's target`)
    t.same(appLines(res).map((line) => line.replace(/^(AWSALBAPP-\d=[^;]*).*Expires=([^;]+).*$/, '$1 $2')),
      [0, 1, 2, 3].map((i) => `AWSALBAPP-${i}=_remove_ Thu, 01 Jan 1970 00:00:00 GMT`), `${logout}: the shards expire at once`)
    t.same([...jar.cookies.keys()], [], `${logout}: the browser keeps neither cookie`)
    const next = await send(app, jar, '/cart')
    t.equal(next.headers['x-affinity'], 'new', `${logout}: the next request is a new client`)
  }
})

test('after a failover the session stays on the new target, even when the old one is back', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await gateway(t, { targetGroups: [shopGroup(targets)] })
  const jar = new CookieJar()
  const first = echoOf(await send(app, jar, '/login')).target
  const old = targets.find((target) => target.id === first)!
  await old.stop()
  const moved = await send(app, jar, '/cart')
  const second = echoOf(moved).target
  t.not(second, first, 'the refused request went to the other target')
  t.equal(moved.headers['x-affinity'], 'reassigned;target-unreachable')
  t.same(bindingsOf(jar), { shop: second }, 'and the binding now names it, though that target did not set the app cookie')
  await old.start()
  for (let i = 0; i < 4; i++) {
    const res = await send(app, jar, '/cart')
    t.equal(echoOf(res).target, second, `request ${i + 1} after the old target returned: still on ${second}`)
    t.equal(res.headers['x-affinity'], 'hit')
  }
})

test('SameSite=None; Secure only for Chromium 80 and later, over HTTPS', async (t) => {
  const targets = await startTargets(t, 1)
  // Behind a TLS-terminating proxy: X-Forwarded-Proto says https.
  const app = await buildGateway(t, { targetGroups: [shopGroup(targets)] }, { trustProxy: '127.0.0.1' })
  exposeAffinity(app)
  app.all('/*', { config: { targetGroup: 'shop' } }, (_request, reply) => reply.forward())
  const https = { 'x-forwarded-proto': 'https' }
  const chrome = appLines(await app.inject({ url: '/login', headers: { ...https, 'user-agent': CHROME_120 } }))
  t.ok(chrome.every((line) => line.endsWith('; Path=/; SameSite=None; Secure')), `Chrome 120 over HTTPS: ${chrome[0]}`)
  for (const ua of [CHROME_79, 'Mozilla/5.0 (Macintosh) Gecko/20100101 Firefox/130.0', undefined]) {
    const lines = appLines(await app.inject({ url: '/login', headers: ua === undefined ? https : { ...https, 'user-agent': ua } }))
    t.ok(lines.every((line) => line.endsWith('; Path=/')), `${ua ?? 'no user agent'}: no SameSite: ${lines[0]}`)
  }
  // Chromium drops Secure cookies sent over plain HTTP (but to localhost): they would never come back.
  const plain = appLines(await app.inject({ url: '/login', headers: { 'user-agent': CHROME_120 } }))
  t.ok(plain.every((line) => line.endsWith('; Path=/')), `Chrome 120 over plain HTTP: no Secure: ${plain[0]}`)
})

test('the window: sliding on every request, and an idle client past it is reassigned', async (t) => {
  const targets = await startTargets(t, 2)
  let now = Date.UTC(2026, 10, 21, 12)
  const app = await gateway(t, { targetGroups: [shopGroup(targets, { durationSeconds: 60 })], now: () => now })
  const jar = new CookieJar(() => now)
  const target = echoOf(await send(app, jar, '/login')).target
  for (let i = 0; i < 3; i++) {
    now += 50_000
    const res = await send(app, jar, '/cart')
    t.equal(res.headers['x-affinity'], 'hit', `${(i + 1) * 50} s after login, 50 s after the last request: still inside the 60 s window`)
    t.equal(echoOf(res).target, target)
  }
  now += 61_000
  const res = await send(app, jar, '/cart')
  t.equal(res.headers['x-affinity'], 'reassigned;expired', '61 s idle: past the window')

  // Shards sealed by a clock an hour ahead (or forged by someone who holds a key): not honoured.
  const sid = jar.cookies.get('sid')!
  const ahead = codec.sealBytes(COOKIE_PURPOSE_APP, encodeBindings([{ group: 'shop', targetId: target, issuedAtSeconds: Math.floor(now / 1000) + 3600, valueHash: null }]))
  const future = await app.inject({ url: '/cart', headers: { cookie: `sid=${sid}; AWSALBAPP-0=${ahead}` } })
  t.equal(future.headers['x-affinity'], 'reassigned;issued-in-future', 'a binding issued an hour ahead of the clock')
  const near = codec.sealBytes(COOKIE_PURPOSE_APP, encodeBindings([{ group: 'shop', targetId: target, issuedAtSeconds: Math.floor(now / 1000) + 5, valueHash: null }]))
  const skewed = await app.inject({ url: '/cart', headers: { cookie: `sid=${sid}; AWSALBAPP-0=${near}` } })
  t.equal(skewed.headers['x-affinity'], 'hit', 'issued 5 s ahead: inside the default allowance')
})

test('bindToCookieValue: AWSALBAPP copied to another session does not steer it; without it ALB checks the name only', async (t) => {
  const targets = await startTargets(t, 2)
  for (const bind of [true, false]) {
    const app = await gateway(t, { targetGroups: [shopGroup(targets, { bindToCookieValue: bind })] })
    const victim = new CookieJar()
    const pinned = echoOf(await send(app, victim, '/login')).target
    t.equal((await send(app, victim, '/cart')).headers['x-affinity'], 'hit', `bind ${bind}: the owner is held`)
    const copier = new CookieJar()
    copier.cookies.set('sid', 'someone-else')
    for (const [name, value] of victim.cookies) if (name.startsWith('AWSALBAPP-')) copier.cookies.set(name, value)
    const res = await send(app, copier, '/cart')
    if (bind) {
      t.equal(res.headers['x-affinity'], 'reassigned;app-cookie-mismatch', 'another value with the copied shards: reassigned')
    } else {
      t.equal(res.headers['x-affinity'], 'hit', 'ALB’s behaviour: the copied shards steer')
      t.equal(echoOf(res).target, pinned)
    }
  }
})

test('one sealed value carries the bindings of every app-sticky group the client uses', async (t) => {
  const targets = await startTargets(t, 4)
  const app = await buildGateway(t, {
    targetGroups: [shopGroup(targets.slice(0, 2)), shopGroup(targets.slice(2), {}, 'account')]
  })
  exposeAffinity(app)
  app.all('/shop/*', { config: { targetGroup: 'shop' } }, (_request, reply) => reply.forward())
  app.all('/account/*', { config: { targetGroup: 'account' } }, (_request, reply) => reply.forward())
  const jar = new CookieJar()
  const shop = echoOf(await send(app, jar, '/shop/login')).target
  const account = echoOf(await send(app, jar, '/account/x')).target
  t.same(bindingsOf(jar), { account, shop }, 'both groups in one value (the account group bound the app cookie the request brought)')
  for (let i = 0; i < 3; i++) {
    t.equal(echoOf(await send(app, jar, '/shop/cart')).target, shop, 'shop holds')
    t.equal(echoOf(await send(app, jar, '/account/me')).target, account, 'account holds')
  }
})

test('shards grow from one to four as bindings accumulate, every one round-trips, and ALB’s 16 KB is never passed', async (t) => {
  const [target] = await startTargets(t, 1)
  const long = (i: number): string => `g${String(i).padStart(2, '0')}-${'x'.repeat(60)}`
  const count = 100
  const app = await buildGateway(t, {
    targetGroups: Array.from({ length: count }, (_, i): TargetGroupOptions => ({
      name: long(i),
      targets: [{ id: `${long(i)}-target`.slice(0, 64), url: target.url }],
      stickiness: { type: 'app_cookie', cookieName: 'sid', bindToCookieValue: true }
    }))
  })
  exposeAffinity(app)
  for (let i = 0; i < count; i++) app.get(`/g${i}/*`, { config: { targetGroup: long(i) } }, (_request, reply) => reply.forward())
  const jar = new CookieJar()
  await send(app, jar, '/g0/login')
  const seenShards = new Set<number>()
  for (let i = 1; i < count; i++) {
    const res = await send(app, jar, `/g${i}/page`)
    t.equal(res.statusCode, 200, `group ${i}: ${res.body.slice(0, 100)}`)
    const used = appLines(res).filter((line) => !line.includes('=_remove_;')).length
    seenShards.add(used)
    t.ok(appLines(res).every((line) => Buffer.byteLength(line.split(';')[0]) <= 4096), `after ${i + 1} groups: every shard within 4096 bytes`)
  }
  t.same([...seenShards].sort(), [1, 2, 3, 4], `the value used 1, 2, 3 and 4 shards on the way: ${[...seenShards].join(',')}`)
  const bindings = bindingsOf(jar) as Record<string, string>
  const kept = Object.keys(bindings).map((name) => Number(name.slice(1, 3))).sort((a, b) => a - b)
  t.ok(kept.length >= 80 && kept.length < count, `as many bindings as fit in 16 KB are kept: ${kept.length}`)
  t.same(kept, Array.from({ length: kept.length }, (_, i) => count - kept.length + i), 'the least recently used went first')
  // Every kept binding is honoured: the round trip through four shards loses nothing.
  for (const i of [kept[0], kept[40], count - 1]) {
    const res = await send(app, jar, `/g${i}/again`)
    t.equal(res.headers['x-affinity'], 'hit', `group ${i} still holds its client`)
  }
})
