import { test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { COOKIE_PURPOSE_LB, COOKIE_PURPOSE_LB_SET, CookieCodec } from '../lib/cookie-codec.js'
import { MAX_LB_BINDINGS } from '../lib/stickiness/lb-cookie.js'
import { decodeBindings, encodeBindings, type AppBinding } from '../lib/stickiness/app-bindings.js'
import { buildGateway, CookieJar, echoOf, exposeAffinity, startTargets, TEST_KEY, type TestTarget } from './setup.js'

type Tap = Parameters<typeof startTargets>[0]

const codec = new CookieCodec([Buffer.from(TEST_KEY, 'hex')])
const NOW = Date.UTC(2026, 10, 21, 12)

/** The bindings of an `AWSALB` value, of one group or several, in the order the value holds them. */
function bindingsOf (value: string | undefined): Array<{ group: string, targetId: string, issuedAtSeconds: number }> {
  if (value === undefined) return []
  const single = codec.open(COOKIE_PURPOSE_LB, value)
  if (single !== null) return [{ group: single.payload.group, targetId: single.payload.targetId, issuedAtSeconds: single.payload.issuedAtSeconds }]
  return (codec.openWith(COOKIE_PURPOSE_LB_SET, value, 4096, decodeBindings) ?? []).map(({ group, targetId, issuedAtSeconds }) => ({ group, targetId, issuedAtSeconds }))
}

/** Groups g0 … g(n-1), each over all targets and lb_cookie sticky, each bound to `/g<i>/*`. */
async function gateway (t: Tap, targets: TestTarget[], count: number, now: () => number, names = (i: number) => `g${i}`): Promise<FastifyInstance> {
  const app = await buildGateway(t, {
    now,
    // The CORS twin on every response, as over HTTPS: the value must fit in its longer name too.
    corsCookies: 'always',
    targetGroups: Array.from({ length: count }, (_, i) => ({ name: names(i), targets: targets.map(({ id, url }) => ({ id, url })) }))
  })
  exposeAffinity(app)
  for (let i = 0; i < count; i++) app.all(`/${names(i)}/*`, { config: { targetGroup: names(i) } }, (_request, reply) => reply.forward())
  return app
}

test('one client alternating between two lb-cookie groups keeps both targets, every time', async (t) => {
  const targets = await startTargets(t, 4)
  let now = NOW
  const app = await gateway(t, targets, 2, () => now)
  const jar = new CookieJar(() => now)
  const first: Record<string, string> = {}
  const outcomes: string[] = []
  for (let i = 0; i < 40; i++) {
    const group = `g${i % 2}`
    const res = await app.inject({ url: `/${group}/item?i=${i}`, headers: jar.headers() })
    jar.store(res.headers['set-cookie'])
    const target = echoOf(res).target
    first[group] ??= target
    t.equal(target, first[group], `request ${i} to ${group}: its first target ${first[group]}`)
    if (i >= 2) outcomes.push(String(res.headers['x-affinity']))
    now += 1000
  }
  t.same([...new Set(outcomes)], ['hit'], 'every request after each group’s first is a hit: 100 % sticky in both')
  const value = jar.cookies.get('AWSALB')
  t.same(bindingsOf(value).map((binding) => binding.group), ['g1', 'g0'], 'one value carries both groups, the last used first')
  t.equal(jar.cookies.get('AWSALBCORS'), value, 'the CORS twin carries the same value')
  t.ok(value !== undefined && value.length < 200, `two groups with short names cost a short value: ${value?.length} characters`)
})

test('a client of one group gets the shared value of its target and second; other groups’ bindings keep their own window', async (t) => {
  const targets = await startTargets(t, 2)
  let now = NOW
  const app = await gateway(t, targets, 2, () => now)
  const solo = new CookieJar(() => now)
  const other = new CookieJar(() => now)
  const a = await app.inject({ url: '/g0/x' })
  solo.store(a.headers['set-cookie'])
  t.ok(codec.open(COOKIE_PURPOSE_LB, solo.cookies.get('AWSALB') ?? '') !== null, 'a client of one group carries the one-group value (as before)')
  // Another client on the same target in the same second gets the very same value.
  let same = false
  for (let i = 0; i < 4 && !same; i++) {
    const res = await app.inject({ url: '/g0/x' })
    const jar = new CookieJar(() => now)
    jar.store(res.headers['set-cookie'])
    same = echoOf(res).target === echoOf(a).target && jar.cookies.get('AWSALB') === solo.cookies.get('AWSALB')
  }
  t.ok(same, 'clients of one group on one target share the value of that second')

  // g1 first, then g0 60 s later: g1's binding rides along with its own issue time.
  other.store((await app.inject({ url: '/g1/x' })).headers['set-cookie'])
  const g1At = Math.floor(now / 1000)
  now += 60_000
  other.store((await app.inject({ url: '/g0/x', headers: other.headers() })).headers['set-cookie'])
  t.same(bindingsOf(other.cookies.get('AWSALB')).map(({ group, issuedAtSeconds }) => [group, issuedAtSeconds]),
    [['g0', Math.floor(now / 1000)], ['g1', g1At]], 'g0 refreshed now; g1 kept as g1’s route last issued it')
  now += 86_400_000 - 60_000 + 1000
  const back = await app.inject({ url: '/g1/x', headers: other.headers() })
  t.equal(back.headers['x-affinity'], 'reassigned;expired', 'g1’s one-day window counted from g1’s own last response, not g0’s')
})

test('bindings are bounded: the least recently used group goes, and the cookie stays within 4096 bytes', async (t) => {
  const targets = await startTargets(t, 2)
  let now = NOW
  const count = MAX_LB_BINDINGS + 8
  // Names of the longest kind, so the size bound is the one that bites.
  const name = (i: number) => `group-${String(i).padStart(2, '0')}-${'x'.repeat(54)}`
  const app = await gateway(t, targets, count, () => now, name)
  const jar = new CookieJar(() => now)
  for (let i = 0; i < count; i++) {
    const res = await app.inject({ url: `/${name(i)}/x`, headers: jar.headers() })
    t.equal(res.statusCode, 200, `group ${i}: answered`)
    jar.store(res.headers['set-cookie'])
    now += 1000
  }
  const lines = [jar.cookies.get('AWSALB') ?? '', jar.cookies.get('AWSALBCORS') ?? '']
  t.ok(`AWSALBCORS=${lines[1]}`.length <= 4096, `the longer cookie is ${`AWSALBCORS=${lines[1]}`.length} bytes, within a browser's 4096`)
  const groups = bindingsOf(lines[0]).map((binding) => binding.group)
  t.ok(groups.length >= 2 && groups.length <= MAX_LB_BINDINGS, `${groups.length} bindings kept`)
  t.same(groups, Array.from({ length: groups.length }, (_, i) => name(count - 1 - i)), 'the most recently used, newest first: the oldest were dropped')
  const newest = await app.inject({ url: `/${name(count - 1)}/x`, headers: jar.headers() })
  t.equal(newest.headers['x-affinity'], 'hit', 'the newest group still sticks')
  const oldest = await app.inject({ url: `/${name(0)}/x`, headers: jar.headers() })
  t.equal(oldest.headers['x-affinity'], 'reassigned;group-mismatch', 'the oldest group was dropped: the value no longer holds it')
})

test('carried bindings that no window can hold any more, or dated ahead of the clock, are dropped', async (t) => {
  const targets = await startTargets(t, 2)
  const now = NOW
  const app = await gateway(t, targets, 1, () => now)
  const nowSeconds = Math.floor(now / 1000)
  const binding = (group: string, issuedAtSeconds: number): AppBinding => ({ group, targetId: 't0', issuedAtSeconds, valueHash: null })
  const value = codec.sealBytes(COOKIE_PURPOSE_LB_SET, encodeBindings([
    binding('fresh', nowSeconds - 60),
    binding('old', nowSeconds - 7 * 86_400 - 1),
    binding('ahead', nowSeconds + 3600)
  ]))
  const res = await app.inject({ url: '/g0/x', headers: { cookie: `AWSALB=${value}` } })
  t.equal(res.headers['x-affinity'], 'reassigned;group-mismatch', 'a value without a binding of this group')
  const jar = new CookieJar(() => now)
  jar.store(res.headers['set-cookie'])
  t.same(bindingsOf(jar.cookies.get('AWSALB')).map(({ group }) => group), ['g0', 'fresh'], 'only the binding a route could still honour rides along')
})

test('a forged, tampered or foreign value of several groups is reassigned, never an error', async (t) => {
  const targets = await startTargets(t, 2)
  const now = NOW
  const app = await gateway(t, targets, 2, () => now)
  const nowSeconds = Math.floor(now / 1000)
  const good = codec.sealBytes(COOKIE_PURPOSE_LB_SET, encodeBindings([{ group: 'g0', targetId: 't1', issuedAtSeconds: nowSeconds, valueHash: null }, { group: 'g1', targetId: 't0', issuedAtSeconds: nowSeconds, valueHash: null }]))
  const flipped = good.slice(0, 30) + (good[30] === 'A' ? 'B' : 'A') + good.slice(31)
  const cases: Array<[string, string, string]> = [
    ['valid', good, 'hit'],
    ['a flipped character', flipped, 'reassigned;undecodable'],
    ['sealed as app-cookie bindings', codec.sealBytes(3, encodeBindings([{ group: 'g0', targetId: 't1', issuedAtSeconds: nowSeconds, valueHash: null }])), 'reassigned;undecodable'],
    ['a set sealed around garbage', codec.sealBytes(COOKIE_PURPOSE_LB_SET, Buffer.from('not bindings')), 'reassigned;undecodable'],
    ['a set whose value hash runs past its end', codec.sealBytes(COOKIE_PURPOSE_LB_SET, Buffer.from([1, 2, 0, 0, 0, 0, 8])), 'reassigned;undecodable'],
    ['4 KB of characters', 'A'.repeat(4096), 'reassigned;undecodable']
  ]
  for (const [what, value, expected] of cases) {
    const res = await app.inject({ url: '/g0/x', headers: { cookie: `AWSALB=${value}` } })
    t.equal(res.statusCode, 200, `${what}: answered`)
    t.equal(res.headers['x-affinity'], expected, `${what}: ${expected}`)
    if (expected === 'hit') t.equal(echoOf(res).target, 't1', `${what}: g0’s binding decided`)
  }
})
