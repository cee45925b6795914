import { test } from 'tap'
import { COOKIE_PURPOSE_LB, CookieCodec } from '../lib/cookie-codec.js'
import type { TargetGroup } from '../lib/target-group.js'
import { buildGateway, CookieJar, echoOf, exposeAffinity, recordHealthChanges, startTargets, TEST_KEY, waitFor } from './setup.js'

type Tap = Parameters<typeof buildGateway>[0]

const codec = new CookieCodec([Buffer.from(TEST_KEY, 'hex')])

async function gateway (t: Tap, count: number, group: Record<string, unknown> = {}) {
  const targets = await startTargets(t, count)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: targets.map(({ id, url }) => ({ id, url })), ...group }] })
  app.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  exposeAffinity(app)
  return { targets, app, group: app.targetGroups.get('g') as TargetGroup }
}

function describeTarget (group: TargetGroup, id: string) {
  return group.describe().targets.find((target) => target.id === id)
}

test('draining keeps its bound sessions until the delay ends and sends new ones elsewhere; then the clients move', async (t) => {
  const { app, group } = await gateway(t, 2, { deregistrationDelayMs: 400 })
  const jar = new CookieJar()
  const first = await app.inject({ url: '/' })
  jar.store(first.headers['set-cookie'])
  t.equal(echoOf(first).target, 't0', 'round robin: the first client on t0')
  t.equal(describeTarget(group, 't0')?.boundSessions, 1, 'one session bound to t0')

  const started = Date.now()
  let drained = false
  const deregistering = group.deregister('t0').then((result) => { drained = true; return result })
  const draining = describeTarget(group, 't0')
  t.match(draining, { state: 'draining', reason: 'Target.DeregistrationInProgress', routable: false, keepsSessions: true, boundSessions: 1 })
  t.ok(draining?.drainDeadlineMs !== null && draining!.drainDeadlineMs >= started + 400 - 50, 'its deadline is the delay from now')
  t.same(group.targets.map(({ id }) => id), ['t1'], 'targets lists the registered ones only')

  for (let i = 0; i < 3; i++) {
    const res = await app.inject({ url: '/', headers: jar.headers() })
    jar.store(res.headers['set-cookie'])
    t.equal(echoOf(res).target, 't0', `pinned request ${i} still served by the draining target`)
    t.equal(res.headers['x-affinity'], 'hit')
  }
  for (let i = 0; i < 4; i++) {
    t.equal(echoOf(await app.inject({ url: '/' })).target, 't1', `new client ${i} goes to t1`)
  }
  t.notOk(drained, 'still draining while a session is bound')

  t.equal(await deregistering, true, 'deregister resolves true at the deadline')
  t.ok(Date.now() - started >= 390, `not before the delay (${Date.now() - started} ms)`)
  t.equal(describeTarget(group, 't0'), undefined, 'unused: gone from describe()')
  const moved = await app.inject({ url: '/', headers: jar.headers() })
  t.equal(echoOf(moved).target, 't1', 'after the deadline the client moves')
  t.equal(moved.headers['x-affinity'], 'reassigned;target-deregistered')
  jar.store(moved.headers['set-cookie'])
  t.equal(codec.open(COOKIE_PURPOSE_LB, jar.cookies.get('AWSALB') ?? '')?.payload.targetId, 't1', 'with a new cookie')
})

test('draining ends early when nothing is in flight and no session is bound', async (t) => {
  const changes = recordHealthChanges(t, 'g')
  const { app, group } = await gateway(t, 2, { stickiness: false })
  for (let i = 0; i < 4; i++) t.equal((await app.inject({ url: '/' })).statusCode, 200)
  const started = Date.now()
  t.equal(await group.deregister('t0'), true)
  t.ok(Date.now() - started < 5000, 'long before the default delay of 300 s')
  t.same(changes.slice(-2).map(({ from, to }) => `${from}>${to}`), ['healthy>draining', 'draining>unused'])
  t.equal(await group.deregister('t0'), false, 'no such target any more')
})

test('a bound session ends draining early once its window has passed', async (t) => {
  let now = 1_800_000_000_000
  const targets = await startTargets(t, 2)
  const app = await buildGateway(t, {
    now: () => now,
    targetGroups: [{ name: 'g', targets: targets.map(({ id, url }) => ({ id, url })), stickiness: { durationSeconds: 60 } }]
  })
  app.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const group = app.targetGroups.get('g') as TargetGroup
  await app.inject({ url: '/' })
  let drained = false
  const deregistering = group.deregister('t0').then(() => { drained = true })
  t.equal(describeTarget(group, 't0')?.boundSessions, 1)
  now += 30_000
  t.equal(describeTarget(group, 't0')?.boundSessions, 1, 'inside its 60 s window: still bound')
  t.notOk(drained)
  now += 32_000
  t.equal(describeTarget(group, 't0')?.boundSessions, 0, 'past the window: nothing bound')
  await waitFor(() => drained, 3000, 'draining to end at the next look (once a second)')
  await deregistering
})

test('an in-flight request finishes during the delay; one that outlives it gets 502', async (t) => {
  const { targets, app, group } = await gateway(t, 2, { deregistrationDelayMs: 300, drainingKeepsSessions: false })
  const finishing = app.inject({ url: '/hold' })
  const outliving = app.inject({ url: '/hang' })
  await waitFor(() => targets[0].hits === 1 && targets[1].hits === 1, 2000, 'both requests to reach their targets')
  const t0deregistered = group.deregister('t0')
  const t1deregistered = group.deregister('t1')
  targets[0].release()
  const finished = await finishing
  t.equal(finished.statusCode, 200, 'the held request finished during the delay')
  t.equal(echoOf(finished).target, 't0')
  t.equal(await t0deregistered, true, 't0 drained once its request was done')
  t.equal(describeTarget(group, 't1')?.state, 'draining', 't1 still draining with a request in flight')

  const cut = await outliving
  t.equal(cut.statusCode, 502, 'the request still running at the deadline')
  t.same(cut.json(), { statusCode: 502, code: 'FST_STICKY_TARGET_DEREGISTERED', error: 'Bad Gateway', message: 'The target was deregistered and its deregistration delay ended before the response did' })
  t.notMatch(cut.body, /127\.0\.0\.1/, 'no address in the body')
  t.equal(await t1deregistered, true)
  t.equal(group.describe().targets.length, 0, 'both unused')
  t.equal((await app.inject({ url: '/' })).statusCode, 503, 'nothing left to serve')
})

test('deregistrationDelayMs 0: unused at once, a request in flight gets 502', async (t) => {
  const { targets, app, group } = await gateway(t, 1, { deregistrationDelayMs: 0 })
  const running = app.inject({ url: '/hang' })
  await waitFor(() => targets[0].hits === 1, 2000, 'the request to reach the target')
  t.equal(await group.deregister('t0'), true)
  t.equal((await running).statusCode, 502)
  t.equal(describeTarget(group, 't0'), undefined)
})

test('a draining id cannot be registered again until its draining ended', async (t) => {
  const { targets, app, group } = await gateway(t, 2, { deregistrationDelayMs: 200 })
  await app.inject({ url: '/' })
  const deregistering = group.deregister('t0')
  t.equal(group.deregister('t0'), deregistering, 'deregistering again gives the same promise')
  t.throws(() => group.register({ id: 't0', url: targets[0].url }), {
    code: 'FST_STICKY_TARGET_DRAINING',
    message: "Target group 'g' is still draining target 't0': register it again once its deregister() has resolved"
  })
  await deregistering
  t.same(group.register({ id: 't0', url: targets[0].url }), { id: 't0', origin: targets[0].url }, 'registered again once drained')
  t.equal(describeTarget(group, 't0')?.state, 'healthy')
})

test('an unhealthy target does not keep its sessions while it drains', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await buildGateway(t, {
    targetGroups: [{
      name: 'g',
      targets: targets.map(({ id, url }) => ({ id, url })),
      healthCheck: { path: '/health', intervalMs: 60, timeoutMs: 55, healthyThreshold: 2, unhealthyThreshold: 2, allowShortIntervals: true }
    }]
  })
  app.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const group = app.targetGroups.get('g') as TargetGroup
  await waitFor(() => group.describe().targets.every(({ state }) => state === 'healthy'), 2000, 'both healthy')
  t.equal(echoOf(await app.inject({ url: '/' })).target, 't0', 'a client pinned to t0')
  await targets[0].stop()
  await waitFor(() => describeTarget(group, 't0')?.state === 'unhealthy', 2000, 't0 unhealthy')
  t.equal(describeTarget(group, 't0')?.boundSessions, 1, 'its session still counts')
  const deregistering = group.deregister('t0')
  t.equal(describeTarget(group, 't0'), undefined, 'nothing to keep: unused at once')
  t.equal(await deregistering, true)
})

test('app.close() while a target drains ends the draining and leaves no timer', async (t) => {
  const { app, group } = await gateway(t, 2)
  await app.inject({ url: '/' })
  const deregistering = group.deregister('t0')
  t.equal(group.pendingTimers, 1, 'the draining target’s timers')
  await app.close()
  t.equal(await deregistering, true, 'deregister resolves')
  t.equal(group.pendingTimers, 0, 'no timer left')
})
