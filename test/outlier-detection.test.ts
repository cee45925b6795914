import { test } from 'tap'
import type { TargetHealthChange } from '../lib/index.js'
import type { TargetGroup } from '../lib/target-group.js'
import { buildGateway, CookieJar, echoOf, exposeAffinity, rawTarget, recordHealthChanges, refusedUrl, startServer, startTargets, waitFor } from './setup.js'

type Tap = Parameters<typeof buildGateway>[0]

async function gateway (t: Tap, targets: Array<{ id: string, url: string }>, group: Record<string, unknown>) {
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: targets.map(({ id, url }) => ({ id, url })), ...group }] })
  app.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  exposeAffinity(app)
  return { app, group: app.targetGroups.get('g') as TargetGroup }
}

function ejected (group: TargetGroup): string[] {
  return group.describe().targets.filter((target) => target.ejectedUntilMs !== null).map(({ id }) => id)
}

function recordChanges (t: Tap): TargetHealthChange[] {
  return recordHealthChanges(t, 'g', ['ejected', 'returned'])
}

test('consecutive 5xx eject a target after exactly consecutiveErrors; its clients move, new ones avoid it, and it returns by itself', async (t) => {
  const changes = recordChanges(t)
  const targets = await startTargets(t, 3)
  const { app, group } = await gateway(t, targets, { outlierDetection: { consecutiveErrors: 3, baseEjectionMs: 300, maxEjectedPercent: 50 } })
  const jar = new CookieJar()
  for (let i = 1; i <= 2; i++) {
    const res = await app.inject({ url: '/status/500', headers: jar.headers() })
    jar.store(res.headers['set-cookie'])
    t.equal(res.statusCode, 500, 'the target’s own 500 passes through')
    t.equal(echoOf(res).target, 't0')
    t.same(ejected(group), [], `${i} error(s): not ejected`)
  }
  const third = await app.inject({ url: '/status/500', headers: jar.headers() })
  t.equal(echoOf(third).target, 't0')
  t.same(ejected(group), ['t0'], 'the third in a row ejects t0')
  t.match(group.describe().targets[0], { state: 'healthy', routable: false, keepsSessions: false })
  t.match(changes, [{ change: 'ejected', target: { id: 't0' }, from: 'healthy', to: 'healthy' }])

  const moved = await app.inject({ url: '/', headers: jar.headers() })
  jar.store(moved.headers['set-cookie'])
  t.equal(moved.headers['x-affinity'], 'reassigned;target-ejected', 'the pinned client is re-pinned')
  t.not(echoOf(moved).target, 't0')
  for (let i = 0; i < 6; i++) t.not(echoOf(await app.inject({ url: '/' })).target, 't0', `new client ${i} avoids t0`)

  await waitFor(() => changes.length === 2, 3000, 't0 to return')
  t.match(changes[1], { change: 'returned', target: { id: 't0' }, to: 'healthy' })
  t.ok(changes[1].atMs - changes[0].atMs >= 290, `back after the base ejection time (${changes[1].atMs - changes[0].atMs} ms)`)
  t.same(ejected(group), [])
  const seen = new Set<string>()
  for (let i = 0; i < 6; i++) seen.add(echoOf(await app.inject({ url: '/' })).target)
  t.ok(seen.has('t0'), 'new clients reach t0 again')
})

test('a success clears the count: errors must come in a row', async (t) => {
  const targets = await startTargets(t, 2)
  const { app, group } = await gateway(t, targets, { outlierDetection: { consecutiveErrors: 3, baseEjectionMs: 1000, maxEjectedPercent: 50 } })
  const jar = new CookieJar()
  for (const path of ['/status/500', '/status/502', '/status/404', '/status/503', '/status/500']) {
    const res = await app.inject({ url: path, headers: jar.headers() })
    jar.store(res.headers['set-cookie'])
    t.equal(echoOf(res).target, 't0')
  }
  t.same(ejected(group), [], 'a 404 is no error: never three in a row')
  await app.inject({ url: '/status/504', headers: jar.headers() })
  t.same(ejected(group), ['t0'], 'the third in a row after it ejects')
})

test('refused connections count against the target: once ejected, requests stop trying it', async (t) => {
  const targets = await startTargets(t, 2)
  const dead = { id: 'dead', url: await refusedUrl() }
  const { app, group } = await gateway(t, [dead, ...targets], { stickiness: false, outlierDetection: { consecutiveErrors: 2, baseEjectionMs: 60_000, maxEjectedPercent: 50 } })
  const affinities: string[] = []
  for (let i = 0; i < 9; i++) {
    const res = await app.inject({ url: '/' })
    t.equal(res.statusCode, 200, `request ${i} answered (redispatched when it picked the dead one)`)
    affinities.push(String(res.headers['x-affinity']))
  }
  t.same(ejected(group), ['dead'])
  t.equal(affinities.filter((affinity) => affinity === 'reassigned;target-unreachable').length, 2, 'only two requests ever tried it')
})

test('a response cut off after its headers counts as an error, though its status was 200', async (t) => {
  const [healthy] = await startTargets(t, 1, 'ok')
  const cut = await rawTarget(t, 'HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 10\r\n\r\nab', true)
  const { app, group } = await gateway(t, [{ id: 'cut', url: cut }, healthy], { outlierDetection: { consecutiveErrors: 2, baseEjectionMs: 60_000, maxEjectedPercent: 50 } })
  const jar = new CookieJar()
  const first = await app.inject({ url: '/' })
  jar.store(first.headers['set-cookie'])
  t.equal(first.statusCode, 502, 'a clean 502 for the cut-off body')
  t.same(ejected(group), [], 'one error: not ejected')
  t.equal((await app.inject({ url: '/', headers: jar.headers() })).statusCode, 502)
  t.same(ejected(group), ['cut'], 'two in a row: ejected')
})

test('never more than maxEjectedPercent of the group is ejected (at least one of two or more)', async (t) => {
  const targets = await startTargets(t, 3)
  const { app, group } = await gateway(t, targets, { stickiness: false, outlierDetection: { consecutiveErrors: 2, baseEjectionMs: 60_000 } })
  for (let i = 0; i < 30; i++) t.equal((await app.inject({ url: '/status/500' })).statusCode, 500)
  t.equal(ejected(group).length, 1, `10 % of 3 targets: one ejected (${ejected(group).join(',')})`)
  t.equal(group.degraded, false)
})

test('each ejection in a row lasts one base time longer, up to maxEjectionMs', async (t) => {
  const changes = recordChanges(t)
  const [healthy] = await startTargets(t, 1, 'ok')
  // t0 answers 500 to everything: it fails as soon as it is back.
  const failing = await startServer(t, (_req, res) => { res.statusCode = 500; res.end() })
  const { app, group } = await gateway(t, [{ id: 't0', url: failing.url }, healthy], { stickiness: false, outlierDetection: { consecutiveErrors: 1, baseEjectionMs: 100, maxEjectionMs: 200, maxEjectedPercent: 50 } })
  const lengths: number[] = []
  for (let round = 0; round < 3; round++) {
    await waitFor(async () => { await app.inject({ url: '/' }); return ejected(group).includes('t0') }, 3000, `ejection ${round + 1}`)
    const until = group.describe().targets[0].ejectedUntilMs as number
    lengths.push(until - changes[changes.length - 1].atMs)
    await waitFor(() => ejected(group).length === 0, 3000, `return ${round + 1}`)
  }
  t.same(lengths, [100, 200, 200], 'base, twice the base, then capped')
})

test('keepSessions: clients pinned to an ejected target stay on it (and see its errors)', async (t) => {
  const targets = await startTargets(t, 2)
  const { app, group } = await gateway(t, targets, { outlierDetection: { consecutiveErrors: 2, baseEjectionMs: 60_000, maxEjectedPercent: 50, keepSessions: true } })
  const jar = new CookieJar()
  for (let i = 0; i < 2; i++) jar.store((await app.inject({ url: '/status/500', headers: jar.headers() })).headers['set-cookie'])
  t.same(ejected(group), ['t0'])
  t.match(group.describe().targets[0], { routable: false, keepsSessions: true })
  const again = await app.inject({ url: '/status/500', headers: jar.headers() })
  t.equal(again.headers['x-affinity'], 'hit', 'the pinned client stays')
  t.equal(echoOf(again).target, 't0')
  t.equal(echoOf(await app.inject({ url: '/' })).target, 't1', 'a new client goes elsewhere')
})

test('a group with one target never ejects it under the default share', async (t) => {
  const targets = await startTargets(t, 1)
  const { app, group } = await gateway(t, targets, { outlierDetection: { consecutiveErrors: 1 } })
  for (let i = 0; i < 3; i++) await app.inject({ url: '/status/503' })
  t.same(ejected(group), [])
  t.equal((await app.inject({ url: '/' })).statusCode, 200)
})

test('app.close() leaves no ejection timer running', async (t) => {
  const targets = await startTargets(t, 2)
  const { app, group } = await gateway(t, targets, { outlierDetection: { consecutiveErrors: 1, baseEjectionMs: 60_000, maxEjectedPercent: 50 } })
  await app.inject({ url: '/status/500' })
  t.same(ejected(group), ['t0'])
  t.equal(group.pendingTimers, 1)
  await app.close()
  t.equal(group.pendingTimers, 0)
})

test('by default, five gateway failures in a row eject a target; the target’s own 5xx never do', async (t) => {
  const targets = await startTargets(t, 2)
  const dead = await refusedUrl()
  const { app, group } = await gateway(t, [{ id: 'dead', url: dead }, ...targets], {})
  const changes = recordChanges(t)
  for (let i = 0; i < 30; i++) {
    const res = await app.inject({ url: '/status/500' })
    t.equal(res.statusCode, 500, `request ${i}: the live targets’ own 500, the refusals redispatched`)
  }
  t.same(ejected(group), ['dead'], 'the refusing target is ejected; the ones answering 500 are not')
  t.equal(changes.filter(({ change }) => change === 'ejected').length, 1, 'once')
  const since = targets[0].hits + targets[1].hits
  for (let i = 0; i < 6; i++) await app.inject({ url: '/' })
  t.equal(targets[0].hits + targets[1].hits - since, 6, 'new requests go only to the live targets, none is redispatched any more')
})

test('outlierDetection: false leaves a refusing target in, redispatching from it every time', async (t) => {
  const targets = await startTargets(t, 1)
  const { app, group } = await gateway(t, [{ id: 'dead', url: await refusedUrl() }, ...targets], { outlierDetection: false })
  for (let i = 0; i < 12; i++) t.equal((await app.inject({ url: '/' })).statusCode, 200)
  t.same(ejected(group), [])
})

test('timeouts of requests that first waited for a connection behind a burst do not eject a busy target, and its clients stay', async (t) => {
  const server = await startServer(t, (_req, res) => { setTimeout(() => res.end('ok'), 300) })
  const targets = await startTargets(t, 1)
  const app = await buildGateway(t, {
    idleTimeoutMs: 500,
    connectionsPerTarget: 6,
    targetGroups: [{ name: 'g', targets: [{ id: 'busy', url: server.url }, { id: 'other', url: targets[0].url }] }]
  })
  app.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  exposeAffinity(app)
  const group = app.targetGroups.get('g') as TargetGroup
  const first = await app.inject({ url: '/' })
  t.equal(first.statusCode, 200)
  const jar = new CookieJar()
  jar.store(first.headers['set-cookie'])
  t.equal(first.body, 'ok', 'the client is pinned to the busy target')
  // Six answered at 300 ms; six more get a connection then and time out at 500 ms (waited, then
  // sent); the last six time out waiting. Six timeouts in a row would eject it if they counted.
  const burst = await Promise.all(Array.from({ length: 18 }, async () => await app.inject({ url: '/', headers: jar.headers() })))
  const statuses = burst.map((res) => res.statusCode)
  t.ok(statuses.includes(504), `some waited past their deadline: ${statuses.join(',')}`)
  t.ok(statuses.includes(200), 'the target answered those it had in time')
  t.same(ejected(group), [], 'the busy target is not ejected: it answered everything it got within 300 ms')
  const after = await app.inject({ url: '/', headers: jar.headers() })
  t.equal(after.headers['x-affinity'], 'hit', 'and its client stays on it')
})
