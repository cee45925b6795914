import { test, type Test } from 'tap'
import { buildGateway, echoOf, startTargets } from './setup.js'
import type { AffinityDecision, StickinessOptions } from '../lib/types.js'

/** A gateway over `count` targets whose group hashes by `stickiness`; `GET /*` forwards and reports the decision in `x-decision`. */
async function keyGateway (t: Test, count: number, stickiness: StickinessOptions, extra: Record<string, unknown> = {}) {
  const targets = await startTargets(t, count)
  const app = await buildGateway(t, {
    targetGroups: [{ name: 'g', targets: targets.map((target) => ({ id: target.id, url: target.url })), stickiness, ...extra }]
  })
  app.addHook('onSend', async (request, reply) => {
    if (request.affinity !== null) reply.header('x-decision', JSON.stringify(request.affinity))
  })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  return { app, targets }
}

function decisionOf (res: { headers: Record<string, unknown> }): AffinityDecision {
  return JSON.parse(String(res.headers['x-decision'])) as AffinityDecision
}

test('header stickiness: the same header value reaches the same target every time, without cookies', async (t) => {
  const { app } = await keyGateway(t, 4, { type: 'header', name: 'X-Session-Id' })
  const seen = new Map<string, Set<string>>()
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 40; i++) {
      const res = await app.inject({ url: '/cart', headers: { 'x-session-id': `session-${i}` } })
      t.equal(res.statusCode, 200)
      t.notOk(res.headers['set-cookie'], 'key stickiness writes no cookie')
      const decision = decisionOf(res)
      t.match(decision, { outcome: 'hit', stickiness: 'header', decidedBy: 'header' })
      const targets = seen.get(`session-${i}`) ?? new Set()
      targets.add(echoOf(res).target)
      seen.set(`session-${i}`, targets)
    }
  }
  t.ok([...seen.values()].every((targets) => targets.size === 1), 'each key stayed on one target')
  const used = new Set([...seen.values()].map((targets) => [...targets][0]))
  t.ok(used.size >= 3, `40 keys spread over the targets (${used.size} of 4 used)`)
  const missing = await app.inject({ url: '/cart' })
  t.match(decisionOf(missing), { outcome: 'new', decidedBy: 'round_robin' }, 'no header: the algorithm decides')
})

test('query and path stickiness read the key as sent: a parameter, the servlet ;jsessionid= form, or a pattern', async (t) => {
  const query = await keyGateway(t, 3, { type: 'query', name: 'sid' })
  const a = echoOf(await query.app.inject({ url: '/x?sid=abc&z=1' })).target
  for (const url of ['/y?z=2&sid=abc', '/x?sid=abc#frag', '/?sid=abc']) {
    t.equal(echoOf(await query.app.inject({ url })).target, a, `${url} has the key abc`)
  }
  t.match(decisionOf(await query.app.inject({ url: '/x?xsid=abc' })), { outcome: 'new' }, 'xsid is another parameter')
  t.match(decisionOf(await query.app.inject({ url: '/x?sid=' })), { outcome: 'new' }, 'an empty value is no key')

  const path = await keyGateway(t, 3, { type: 'path' })
  const b = echoOf(await path.app.inject({ url: '/cart;jsessionid=ABC123' })).target
  for (const url of ['/other;JSESSIONID=ABC123?x=1', '/a/b;jsessionid=ABC123/c', '/z;v=1;jsessionid=ABC123']) {
    const res = await path.app.inject({ url })
    t.equal(echoOf(res).target, b, `${url} has the key ABC123`)
    t.match(decisionOf(res), { outcome: 'hit', decidedBy: 'path' })
  }
  t.match(decisionOf(await path.app.inject({ url: '/cart?jsessionid=ABC123' })), { outcome: 'new' }, 'a query parameter is not the path parameter')

  const pattern = await keyGateway(t, 3, { type: 'path', pattern: /^\/s\/([^/]+)\// })
  const c = echoOf(await pattern.app.inject({ url: '/s/user-7/cart' })).target
  t.equal(echoOf(await pattern.app.inject({ url: '/s/user-7/orders?x=1' })).target, c)
  t.match(decisionOf(await pattern.app.inject({ url: '/s/user-7' })), { outcome: 'new' }, 'the pattern does not match: no key')
})

test('an oversized key is no key: the request falls through the chain to the algorithm, never a 500', async (t) => {
  const { app } = await keyGateway(t, 2, { type: 'header', name: 'x-session-id' })
  const res = await app.inject({ url: '/', headers: { 'x-session-id': 'k'.repeat(5000) } })
  t.equal(res.statusCode, 200)
  t.match(decisionOf(res), { outcome: 'new', decidedBy: 'round_robin' })
  const odd = await app.inject({ url: '/', headers: { 'x-session-id': 'caf\u00e9 \u00ff' } })
  t.equal(odd.statusCode, 200, 'bytes that are not UTF-8 text are hashed as they came')
  t.match(decisionOf(odd), { outcome: 'hit', decidedBy: 'header' })
})

test('source_ip stickiness hashes the client address after trustedProxies, cut to its prefix', async (t) => {
  const targets = await startTargets(t, 5)
  const app = await buildGateway(t, {
    trustedProxies: '10.0.0.1',
    targetGroups: [
      { name: 'full', targets: targets.map((target) => ({ id: target.id, url: target.url })), stickiness: { type: 'source_ip' } },
      { name: 'nets', targets: targets.map((target) => ({ id: target.id, url: target.url })), stickiness: { type: 'source_ip', ipv4PrefixLength: 24, ipv6PrefixLength: 64 } }
    ]
  })
  app.addHook('onSend', async (request, reply) => {
    if (request.affinity !== null) reply.header('x-decision', JSON.stringify(request.affinity))
  })
  app.get('/full', { config: { targetGroup: 'full' } }, (_request, reply) => reply.forward())
  app.get('/nets', { config: { targetGroup: 'nets' } }, (_request, reply) => reply.forward())
  const served = async (url: string, remoteAddress: string, xff?: string) => {
    const res = await app.inject({ url, remoteAddress, headers: xff === undefined ? {} : { 'x-forwarded-for': xff } })
    t.equal(res.statusCode, 200)
    t.match(decisionOf(res), { decidedBy: 'source_ip' })
    return echoOf(res).target
  }
  // An untrusted peer's X-Forwarded-For is never the key: forging it changes nothing.
  const own = await served('/full', '192.0.2.7')
  const forged = new Set<string>()
  for (let i = 0; i < 20; i++) forged.add(await served('/full', '192.0.2.7', `198.51.100.${i}`))
  t.same([...forged], [own], 'an untrusted peer keeps its own target whatever X-Forwarded-For it sends')
  // A trusted proxy's X-Forwarded-For names the client.
  const clients = new Set<string>()
  for (let i = 0; i < 20; i++) clients.add(await served('/full', '10.0.0.1', `198.51.100.${i}`))
  t.ok(clients.size > 1, 'behind a trusted proxy, clients are told apart by X-Forwarded-For')
  t.equal(await served('/full', '10.0.0.1', '192.0.2.7'), own, 'the client behind the proxy has the key it has when direct')
  t.equal(await served('/full', '::ffff:192.0.2.7'), own, 'an IPv4-mapped IPv6 address is the IPv4 address')
  // A /24 and a /64: every address inside keeps one target.
  const net4 = new Set<string>()
  for (let i = 1; i < 30; i++) net4.add(await served('/nets', `203.0.113.${i * 8}`))
  t.equal(net4.size, 1, 'every address of 203.0.113.0/24 reaches one target')
  const net6 = new Set<string>()
  for (let i = 1; i < 30; i++) net6.add(await served('/nets', `2001:db8:1:2:${i.toString(16)}::${i}`))
  t.equal(net6.size, 1, 'every address of 2001:db8:1:2::/64 reaches one target')
  const nets = new Set<string>()
  for (let i = 0; i < 30; i++) nets.add(await served('/nets', `198.51.${i}.1`))
  t.ok(nets.size > 1, 'other /24 networks spread')
})

test('a fallback chain: the first source that yields a key decides, and request.affinity says which', async (t) => {
  const { app } = await keyGateway(t, 4, [{ type: 'lb_cookie' }, { type: 'header', name: 'x-session-id' }, { type: 'source_ip' }])
  // No cookie, a header: the header's hash places the client, and AWSALB pins it there.
  const first = await app.inject({ url: '/', headers: { 'x-session-id': 'alice' } })
  t.match(decisionOf(first), { outcome: 'hit', stickiness: 'lb_cookie', decidedBy: 'header' })
  const target = echoOf(first).target
  const cookie = String((first.headers['set-cookie'] as string[])[0]).split(';')[0]
  t.match(cookie, /^AWSALB=/)
  // The cookie decides from then on, whatever the header says.
  const again = await app.inject({ url: '/', headers: { cookie, 'x-session-id': 'bob' } })
  t.match(decisionOf(again), { outcome: 'hit', decidedBy: 'lb_cookie' })
  t.equal(echoOf(again).target, target)
  // No cookie, no header: the client address decides, the same each time.
  const byIp = await app.inject({ url: '/', remoteAddress: '192.0.2.9' })
  t.match(decisionOf(byIp), { outcome: 'hit', decidedBy: 'source_ip' })
  t.equal(echoOf(await app.inject({ url: '/', remoteAddress: '192.0.2.9' })).target, echoOf(byIp).target)
  // A cookie that does not open falls through too: to the header.
  const forged = await app.inject({ url: '/', headers: { cookie: 'AWSALB=forged', 'x-session-id': 'alice' } })
  t.match(decisionOf(forged), { outcome: 'hit', decidedBy: 'header' })
  t.equal(echoOf(forged).target, target, 'the header keeps a client whose cookie broke on its target')
})
