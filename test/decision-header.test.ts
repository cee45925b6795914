import type { AddressInfo } from 'node:net'
import { test } from 'tap'
import { stickyProxy, type FastifyStickyOptions, type TargetGroupOptions } from '../lib/index.js'
import { buildGateway, CookieJar, echoOf, refusedUrl, startServer, startTargets } from './setup.js'
import { openWs, startWsTargets } from './websocket.js'

type Tap = Parameters<typeof buildGateway>[0]

/** A gateway with one group `g` of `targets` (lb_cookie unless `group` says otherwise) on `/*`. */
async function gateway (t: Tap, targets: ReadonlyArray<{ id: string, url: string }>, options: Partial<FastifyStickyOptions> = {}, group: Partial<TargetGroupOptions> = {}) {
  const app = await buildGateway(t, {
    targetGroups: [{ name: 'g', targets: targets.map(({ id, url }) => ({ id, url })), stickiness: { type: 'lb_cookie' }, ...group }],
    ...options
  })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  return app
}

test('off by default: no decision header', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await gateway(t, targets)
  const res = await app.inject({ url: '/' })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['x-sticky-decision'], undefined, `no header: ${JSON.stringify(res.headers)}`)
  const off = await gateway(t, targets, { exposeDecision: false })
  t.equal((await off.inject({ url: '/' })).headers['x-sticky-decision'], undefined, 'nor with false')
})

test('exposeDecision: true says new, hit and reassigned with what decided and the target id', async (t) => {
  const targets = await startTargets(t, 3)
  const app = await gateway(t, targets, { exposeDecision: true }, { drainingKeepsSessions: false })
  const jar = new CookieJar()
  const first = await app.inject({ url: '/' })
  jar.store(first.headers['set-cookie'])
  const pinned = echoOf(first).target
  t.equal(first.headers['x-sticky-decision'], `new;round_robin;${pinned}`, 'a first request is new, by the algorithm')
  const again = await app.inject({ url: '/', headers: jar.headers() })
  t.equal(again.headers['x-sticky-decision'], `hit;lb_cookie;${pinned}`, 'the cookie keeps it: a hit by lb_cookie')

  await app.targetGroups.get('g')!.deregister(pinned)
  const moved = await app.inject({ url: '/', headers: jar.headers() })
  const to = echoOf(moved).target
  t.not(to, pinned)
  t.equal(moved.headers['x-sticky-decision'], `reassigned;target-deregistered;${to}`, 'a re-pin names the reason and the new target')
  t.notMatch(String(moved.headers['x-sticky-decision']), /127\.0\.0\.1/, 'never an address')
})

test('a string names the header (lower-cased); key stickiness says which key decided', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await gateway(t, targets, { exposeDecision: 'X-Debug-Route' }, { stickiness: { type: 'header', name: 'x-session' } })
  const res = await app.inject({ url: '/', headers: { 'x-session': 'abc' } })
  t.equal(res.headers['x-debug-route'], `hit;header;${echoOf(res).target}`)
  t.equal(res.headers['x-sticky-decision'], undefined, 'only the name given')
})

test('a target cannot set the decision header: the gateway\'s own is the one the client gets', async (t) => {
  const { url } = await startServer(t, (_req, res) => {
    res.setHeader('x-sticky-decision', 'hit;forged;elsewhere')
    res.end('ok')
  })
  const app = await gateway(t, [{ id: 'a', url }], { exposeDecision: true })
  const res = await app.inject({ url: '/' })
  t.equal(res.headers['x-sticky-decision'], 'new;round_robin;a', `one header, the gateway's: ${JSON.stringify(res.headers['x-sticky-decision'])}`)
  const targetOff = await gateway(t, [{ id: 'a', url }])
  t.equal((await targetOff.inject({ url: '/' })).headers['x-sticky-decision'], 'hit;forged;elsewhere', 'when off, the name is the app\'s own and passes')
})

test('the gateway\'s own 502, 503 and 504 carry it', async (t) => {
  const refused = await refusedUrl()
  const bad = await gateway(t, [{ id: 'gone', url: refused }], { exposeDecision: true, redispatch: false })
  const res502 = await bad.inject({ url: '/' })
  t.equal(res502.statusCode, 502)
  t.equal(res502.headers['x-sticky-decision'], 'new;round_robin;gone', '502: the target that failed')

  const empty = await gateway(t, [], { exposeDecision: true })
  const res503 = await empty.inject({ url: '/' })
  t.equal(res503.statusCode, 503)
  t.equal(res503.headers['x-sticky-decision'], 'unavailable;;', '503: no target')

  const targets = await startTargets(t, 1)
  const slow = await gateway(t, targets, { exposeDecision: true, idleTimeoutMs: 100 })
  const res504 = await slow.inject({ url: '/hang' })
  t.equal(res504.statusCode, 504)
  t.equal(res504.headers['x-sticky-decision'], 'new;round_robin;t0', '504: the target that did not answer')
})

test('a redispatch after a refused connection says so, with the target that answered', async (t) => {
  const targets = await startTargets(t, 1)
  const refused = await refusedUrl()
  const app = await gateway(t, [{ id: 'gone', url: refused }, ...targets], { exposeDecision: true }, { algorithm: 'round_robin' })
  const decisions = new Set<string>()
  for (let i = 0; i < 4; i++) {
    const res = await app.inject({ url: '/' })
    t.equal(res.statusCode, 200)
    decisions.add(String(res.headers['x-sticky-decision']))
  }
  t.ok(decisions.has('reassigned;target-unreachable;t0'), `a request first sent to the refusing target: ${[...decisions].join(' | ')}`)
  t.notOk([...decisions].some((value) => value.endsWith(';gone')), 'no response names the target that refused')
})

test('a WebSocket 101 carries it', async (t) => {
  const targets = await startWsTargets(t, 2)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: targets.map(({ id, url }) => ({ id, url })) }], exposeDecision: true })
  await app.register(stickyProxy, { prefix: '/p', targetGroup: 'g' })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as AddressInfo).port
  const client = await openWs(t, `ws://127.0.0.1:${port}/p/chat`)
  const served = await client.ask('who')
  t.equal(client.headers['x-sticky-decision'], `new;round_robin;${served}`, `the 101's headers: ${JSON.stringify(client.headers)}`)
})
