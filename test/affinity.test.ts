import { test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { COOKIE_PURPOSE_LB, COOKIE_PURPOSE_LB_SET, CookieCodec } from '../lib/cookie-codec.js'
import { decodeBindings } from '../lib/stickiness/app-bindings.js'
import { decideAffinity } from '../lib/stickiness/lb-cookie.js'
import { TargetGroup } from '../lib/target-group.js'
import { buildGateway, CookieJar, echoOf, exposeAffinity, OTHER_KEY, startTargets, TEST_KEY, type TestTarget } from './setup.js'

const codec = new CookieCodec([Buffer.from(TEST_KEY, 'hex')])
const NOW = Date.parse('2026-11-21T12:00:00Z')

/** A cookie as a response at `issuedAtSeconds` would have sealed it, for a one-day window. */
function seal (group: string, targetId: string, issuedAtSeconds = NOW / 1000, sealer = codec): string {
  return sealer.seal(COOKIE_PURPOSE_LB, { group, targetId, stickyUntilSeconds: issuedAtSeconds + 86400, issuedAtSeconds })
}

/** The bindings of an `AWSALB` value, of one group or several. */
function bindingsOf (value: string): Array<{ group: string, targetId: string }> {
  const single = codec.open(COOKIE_PURPOSE_LB, value)
  if (single !== null) return [{ group: single.payload.group, targetId: single.payload.targetId }]
  return [...(codec.openWith(COOKIE_PURPOSE_LB_SET, value, 4096, decodeBindings) ?? [])]
}

/** A gateway with groups `carts` (the test targets) and `other`, a clock at NOW, and the decision in `x-affinity`. */
async function gateway (t: Parameters<typeof startTargets>[0], targets: TestTarget[]): Promise<FastifyInstance> {
  const app = await buildGateway(t, {
    now: () => NOW,
    targetGroups: [
      { name: 'carts', targets: targets.map(({ id, url }) => ({ id, url })) },
      { name: 'other', targets: targets.map(({ id, url }) => ({ id, url })) }
    ]
  })
  app.get('/cart', { config: { targetGroup: 'carts' } }, (_request, reply) => reply.forward())
  exposeAffinity(app)
  return app
}

test('a bad cookie is reassigned with its reason and a fresh cookie, never an error', async (t) => {
  const targets = await startTargets(t, 3)
  const app = await gateway(t, targets)
  const good = seal('carts', 't1')
  const tampered = good.slice(0, 20) + (good[20] === 'A' ? 'B' : 'A') + good.slice(21)
  const other = seal('other', 't1')
  const cases: Array<[string, string, string]> = [
    ['valid', `AWSALB=${good}`, 'hit'],
    ['tampered', `AWSALB=${tampered}`, 'reassigned;undecodable'],
    ['truncated', `AWSALB=${good.slice(0, 40)}`, 'reassigned;undecodable'],
    ['sealed with a foreign key', `AWSALB=${seal('carts', 't1', undefined, new CookieCodec([Buffer.from(OTHER_KEY, 'hex')]))}`, 'reassigned;undecodable'],
    ['of another target group', `AWSALB=${other}`, 'reassigned;group-mismatch'],
    ['expired (idle 1 s past the one-day window)', `AWSALB=${seal('carts', 't1', NOW / 1000 - 86401)}`, 'reassigned;expired'],
    ['issued an hour ahead of the clock', `AWSALB=${seal('carts', 't1', NOW / 1000 + 3600)}`, 'reassigned;issued-in-future'],
    ['issued 6 s ahead: past the 5 s allowance', `AWSALB=${seal('carts', 't1', NOW / 1000 + 6)}`, 'reassigned;issued-in-future'],
    ['issued 5 s ahead: inside the allowance (another gateway’s clock)', `AWSALB=${seal('carts', 't1', NOW / 1000 + 5)}`, 'hit'],
    ['naming a target the group never had', `AWSALB=${seal('carts', 'zz')}`, 'reassigned;target-unknown'],
    ['oversized (8 KB)', `AWSALB=${'A'.repeat(8192)}`, 'reassigned;undecodable'],
    ['garbage with odd bytes', 'AWSALB=%00%ff"<script>', 'reassigned;undecodable'],
    ['duplicated, both expired', `AWSALB=${seal('carts', 't1', NOW / 1000 - 90000)}; AWSALB=${seal('carts', 't2', NOW / 1000 - 90000)}`, 'reassigned;expired'],
    ['duplicated, a forged one first', `AWSALB=${tampered}; AWSALB=${good}`, 'hit'],
    ['two bad ones: the reason of the first, forged', `AWSALB=${tampered}; AWSALB=${other}`, 'reassigned;undecodable'],
    ['two bad ones: the reason of the first, another group’s', `AWSALB=${other}; AWSALB=${tampered}`, 'reassigned;group-mismatch'],
    ['AWSALB forged, AWSALBCORS valid', `AWSALB=${tampered}; AWSALBCORS=${good}`, 'hit'],
    ['empty', 'AWSALB=', 'new']
  ]
  for (const [what, cookie, expected] of cases) {
    const res = await app.inject({ url: '/cart', headers: { cookie } })
    t.equal(res.statusCode, 200, `${what}: 200`)
    t.equal(res.headers['x-affinity'], expected, `${what}: ${expected}`)
    const jar = new CookieJar(() => NOW)
    jar.store(res.headers['set-cookie'])
    const fresh = bindingsOf(jar.cookies.get('AWSALB') ?? '')
    t.equal(fresh[0]?.targetId, echoOf(res).target, `${what}: a fresh cookie names the target that answered`)
    t.equal(fresh[0]?.group, 'carts', `${what}: bound to the route's group, first`)
    // Another group's binding the client brought rides along (see lb-cookie.test.ts); nothing else does.
    t.same(fresh.slice(1).map((binding) => binding.group), cookie.includes(other) ? ['other'] : [], `${what}: only bindings the client brought ride along`)
    if (expected === 'hit') t.equal(echoOf(res).target, 't1', `${what}: the valid cookie's target answered`)
  }
})

test('duplicated valid cookies: the first in header order wins, every time', async (t) => {
  const targets = await startTargets(t, 3)
  const app = await gateway(t, targets)
  const cookie = `AWSALB=${seal('carts', 't2')}; AWSALB=${seal('carts', 't0')}`
  for (let i = 0; i < 5; i++) {
    const res = await app.inject({ url: '/cart', headers: { cookie } })
    t.equal(echoOf(res).target, 't2', `request ${i}: the first cookie's target`)
  }
})

test('decideAffinity depends on its inputs alone: the same inputs give the same decision', async (t) => {
  const group = new TargetGroup({
    name: 'carts',
    algorithm: 'round_robin',
    stickiness: { type: 'lb_cookie', durationSeconds: 60, chain: [{ type: 'lb_cookie' }] },
    targets: [{ id: 'a', origin: 'http://127.0.0.1:1', weight: 1 }, { id: 'b', origin: 'http://127.0.0.1:2', weight: 1 }],
    healthCheck: null,
    minimumHealthyTargets: { count: 1 },
    failOpen: true,
    deregistrationDelayMs: 0,
    drainingKeepsSessions: true,
    slowStartMs: 0,
    outlierDetection: null,
    boundedLoadFactor: 0,
    websocket: { maxConnectionsPerTarget: Infinity, handshakeTimeoutMs: 10_000, idleTimeoutMs: 0, closeOnUnhealthy: false },
    tls: null
  }, { connections: 1, connectTimeoutMs: 1000, idleTimeoutMs: 1000, now: () => NOW })
  t.teardown(() => group.close())
  const input = { group, stickiness: group.stickiness, codec, nowSeconds: NOW / 1000, skewSeconds: 5 }
  const cookie = seal('carts', 'b', NOW / 1000 - 50) // the group's window is 60 s: it ends at NOW + 10 s
  t.match(decideAffinity({ ...input, cookies: [cookie] }), { outcome: 'hit', targetGroup: 'carts', target: { id: 'b' }, stickiness: 'lb_cookie', decidedBy: 'lb_cookie' })
  t.match(decideAffinity({ ...input, cookies: [cookie], nowSeconds: NOW / 1000 + 10 }), { outcome: 'hit' }, 'the last second of the window is inside it')
  t.match(decideAffinity({ ...input, cookies: [cookie], nowSeconds: NOW / 1000 + 11 }), { outcome: 'reassigned', reason: 'expired', decidedBy: 'round_robin' })
  t.match(decideAffinity({ ...input, cookies: [cookie], nowSeconds: NOW / 1000 - 55 }), { outcome: 'hit' }, 'issued 5 s ahead of this clock: inside the allowance')
  t.match(decideAffinity({ ...input, cookies: [cookie], nowSeconds: NOW / 1000 - 56 }), { outcome: 'reassigned', reason: 'issued-in-future' }, 'issued 6 s ahead: not honoured')
  t.match(decideAffinity({ ...input, cookies: [cookie], nowSeconds: NOW / 1000 - 50, skewSeconds: 0 }), { outcome: 'hit' }, 'issued this second, no allowance')
  t.match(decideAffinity({ ...input, cookies: [cookie], nowSeconds: NOW / 1000 - 51, skewSeconds: 0 }), { outcome: 'reassigned', reason: 'issued-in-future' }, 'one second ahead, no allowance')
  t.match(decideAffinity({ ...input, cookies: [] }), { outcome: 'new', target: { id: /^[ab]$/ } })
  t.match(decideAffinity({ ...input, stickiness: null, cookies: [cookie] }), { outcome: 'new', stickiness: 'none' }, 'not sticky: cookies are not read')
  await group.deregister('b')
  t.match(decideAffinity({ ...input, cookies: [cookie] }), { outcome: 'reassigned', reason: 'target-deregistered', target: { id: 'a' } })
  await group.deregister('a')
  t.match(decideAffinity({ ...input, cookies: [cookie] }), { outcome: 'unavailable', target: null })
})
