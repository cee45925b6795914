import { test } from 'tap'
import type { TargetGroup } from '../lib/target-group.js'
import { buildGateway, CookieJar, echoOf, exposeAffinity, startTargets, waitFor } from './setup.js'

type Tap = Parameters<typeof buildGateway>[0]

async function gateway (t: Tap, count: number, group: Record<string, unknown> = {}, plugin: Record<string, unknown> = {}) {
  const targets = await startTargets(t, count)
  const app = await buildGateway(t, { ...plugin, targetGroups: [{ name: 'g', targets: targets.map(({ id, url }) => ({ id, url })), ...group }] })
  app.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  exposeAffinity(app)
  return { targets, app, group: app.targetGroups.get('g') as TargetGroup }
}

function describeTarget (group: TargetGroup, id: string) {
  return group.describe().targets.find((target) => target.id === id)
}

function boundSessions (group: TargetGroup): Record<string, number> {
  return Object.fromEntries(group.describe().targets.map((target) => [target.id, target.boundSessions]))
}

/** Resolves true once `promise` settled, false when it has not within `timeoutMs` (polling, no fixed sleep). */
async function settlesWithin (promise: Promise<unknown>, timeoutMs: number): Promise<boolean> {
  let settled = false
  promise.then(() => { settled = true }, () => { settled = true })
  return waitFor(() => settled, timeoutMs).then(() => true, () => false)
}

test('a client redispatched away from a refusing target is not counted as bound to it, so its draining can end at once', async (t) => {
  const { targets, app, group } = await gateway(t, 2)
  await targets[0].stop()
  const res = await app.inject({ url: '/' })
  t.equal(echoOf(res).target, 't1', 'round robin picked t0, which refused: redispatched to t1')
  t.equal(res.headers['x-affinity'], 'reassigned;target-unreachable', 'and pinned to t1')
  t.same(boundSessions(group), { t0: 0, t1: 1 }, `the one client is bound to t1 only, got ${JSON.stringify(boundSessions(group))}`)

  await targets[0].start()
  // Nothing in flight on t0 and no client pinned to it: draining should end now, not after 300 s.
  const ended = await settlesWithin(group.deregister('t0'), 2500)
  t.ok(ended, `deregister('t0') resolved within 2.5 s (t0 still ${describeTarget(group, 't0')?.state ?? 'gone'}, boundSessions ${describeTarget(group, 't0')?.boundSessions ?? '-'})`)
})

test('parallel requests carrying the same stale cookie do not unbind other clients pinned to the target: they keep it while it drains', async (t) => {
  const { app, group } = await gateway(t, 2, { outlierDetection: { consecutiveErrors: 1, baseEjectionMs: 200, maxEjectionMs: 200 } })
  const first = new CookieJar()
  const second = new CookieJar()
  const a = await app.inject({ url: '/' })
  first.store(a.headers['set-cookie'])
  await app.inject({ url: '/' }) // a client of t1
  const b = await app.inject({ url: '/' })
  second.store(b.headers['set-cookie'])
  t.same([echoOf(a).target, echoOf(b).target], ['t0', 't0'], 'round robin: both clients pinned to t0')
  t.equal(describeTarget(group, 't0')?.boundSessions, 2, 'two sessions bound to t0')

  // The first client's request fails with a 500: t0 is ejected (re-pinning its clients).
  t.equal((await app.inject({ url: '/status/500', headers: first.headers() })).statusCode, 500, 'the target answered 500')
  t.not(describeTarget(group, 't0')?.ejectedUntilMs, null, 't0 ejected')
  // Its browser sends two requests at once, both with the cookie it had.
  const parallel = await Promise.all([app.inject({ url: '/', headers: first.headers() }), app.inject({ url: '/', headers: first.headers() })])
  t.same(parallel.map((res) => res.headers['x-affinity']), ['reassigned;target-ejected', 'reassigned;target-ejected'], 'both re-pinned away from t0')
  // Clients that moved away still count until their window ends: the estimate errs on the safe side.
  t.ok((describeTarget(group, 't0')?.boundSessions ?? 0) >= 1, `the second client still counts on t0, got boundSessions ${describeTarget(group, 't0')?.boundSessions}`)

  await waitFor(() => describeTarget(group, 't0')?.ejectedUntilMs === null, 3000, 't0 to return from its ejection')
  const deregistering = group.deregister('t0')
  t.equal(describeTarget(group, 't0')?.state, 'draining', 'draining: the second client is still bound to it')
  const res = await app.inject({ url: '/', headers: second.headers() })
  t.equal(res.headers['x-affinity'], 'hit', `the second client stays on draining t0, got ${String(res.headers['x-affinity'])} on ${echoOf(res).target}`)
  await app.close()
  await deregistering
})

test('a session pinned by another gateway instance counts as bound from its first request here, and keeps its target while it drains', async (t) => {
  const targets = await startTargets(t, 2)
  const options = { targetGroups: [{ name: 'g', targets: targets.map(({ id, url }) => ({ id, url })) }] }
  const one = await buildGateway(t, options)
  one.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const other = await buildGateway(t, options)
  other.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  exposeAffinity(other)
  const group = other.targetGroups.get('g') as TargetGroup

  const jar = new CookieJar()
  const pinned = await one.inject({ url: '/' })
  jar.store(pinned.headers['set-cookie'])
  t.equal(echoOf(pinned).target, 't0', 'pinned to t0 by the first instance')
  const here = await other.inject({ url: '/', headers: jar.headers() })
  jar.store(here.headers['set-cookie'])
  t.equal(here.headers['x-affinity'], 'hit', 'the other instance honours the cookie')
  t.equal(describeTarget(group, 't0')?.boundSessions, 1, `the other instance counts the session, got ${describeTarget(group, 't0')?.boundSessions}`)

  const deregistering = group.deregister('t0')
  const next = await other.inject({ url: '/', headers: jar.headers() })
  t.equal(next.headers['x-affinity'], 'hit', `the client stays on draining t0, got ${String(next.headers['x-affinity'])} on ${echoOf(next).target}`)
  await other.close()
  await deregistering
})

test('targets registered together at start-up do not slow-start when their first health checks pass one after the other', async (t) => {
  const { app, group } = await gateway(t, 2, {
    stickiness: false,
    slowStartMs: 30_000,
    healthCheck: { path: '/health', intervalMs: 40, timeoutMs: 20, allowShortIntervals: true }
  })
  await waitFor(() => group.describe().targets.every(({ state }) => state === 'healthy'), 3000, 'both targets healthy')
  const slow = group.describe().targets.map(({ id, slowStartEndsMs }) => `${id}:${slowStartEndsMs === null ? 'no' : 'slow'}`)
  t.same(slow, ['t0:no', 't1:no'], `no target of the initial registration in slow start, got ${slow.join(',')}`)
  const served: Record<string, number> = { t0: 0, t1: 0 }
  for (let i = 0; i < 20; i++) served[echoOf(await app.inject({ url: '/' })).target]++
  t.ok(served.t0 >= 5 && served.t1 >= 5, `round robin shares 20 new clients, got ${JSON.stringify(served)}`)
})

test('a slow-starting target’s weight grows from 0, whatever its own weight', async (t) => {
  const start = 1_800_000_000_000
  const targets = await startTargets(t, 2)
  const app = await buildGateway(t, { now: () => start, targetGroups: [{ name: 'g', targets: [{ id: 't0', url: targets[0].url }], stickiness: false, slowStartMs: 30_000 }] })
  const group = app.targetGroups.get('g') as TargetGroup
  group.register({ id: 't1', url: targets[1].url, weight: 50 })
  t.not(describeTarget(group, 't1')?.slowStartEndsMs, null, 't1 registered next to a healthy t0: in slow start')
  const shareAt = (elapsedMs: number): number => {
    let count = 0
    for (let i = 0; i < 4000; i++) if (group.pick(start + elapsedMs)?.id === 't1') count++
    return count / 4000
  }
  // Weight 50 × elapsed / 30 s next to t0's 1: 0.5 after 300 ms (a third of new clients), 5 after 3 s (5/6).
  const early = shareAt(300)
  const later = shareAt(3000)
  t.ok(early > 0.28 && early < 0.39, `300 ms in: about a third, got ${early}`)
  t.ok(later > 0.79 && later < 0.88, `3 s in: about 5/6, got ${later}`)
  t.equal(shareAt(0), 0, 'at the very start: none')
})

test('app.close() while a target drains does not let its in-flight request outlive the drain deadline', async (t) => {
  const { targets, app, group } = await gateway(t, 2, { deregistrationDelayMs: 300, drainingKeepsSessions: false }, { idleTimeoutMs: 4000 })
  const running = app.inject({ url: '/hang' })
  await waitFor(() => targets[0].hits === 1, 2000, 'the request to reach t0')
  const started = Date.now()
  const deregistering = group.deregister('t0')
  const closing = app.close()
  const res = await running
  const elapsed = Date.now() - started
  t.equal(res.statusCode, 502, `answered 502 FST_STICKY_TARGET_DEREGISTERED at the deadline, got ${res.statusCode} ${res.json().code as string} after ${elapsed} ms`)
  t.ok(elapsed < 2000, `within the 300 ms delay and some slack, took ${elapsed} ms`)
  await closing
  await deregistering
})
