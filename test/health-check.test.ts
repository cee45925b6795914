import { test } from 'tap'
import type { FastifyInstance } from 'fastify'
import type { HealthCheckOptions } from '../lib/index.js'
import type { TargetGroup } from '../lib/target-group.js'
import { buildGateway, CookieJar, echoOf, exposeAffinity, onHealthChange, recordHealthChanges, startServer, startTargets, waitFor, type TestTarget } from './setup.js'

type Tap = Parameters<typeof startTargets>[0]

/** A gateway whose group checks every 100 ms (test-only intervals), with 90 ms to answer so a busy machine does not fail a healthy target: 2 in a row decide either way. */
async function gateway (t: Tap, targets: TestTarget[], healthCheck: HealthCheckOptions = {}): Promise<FastifyInstance> {
  const app = await buildGateway(t, {
    targetGroups: [{
      name: 'g',
      targets: targets.map(({ id, url }) => ({ id, url })),
      healthCheck: { path: '/health', intervalMs: 100, timeoutMs: 90, healthyThreshold: 2, unhealthyThreshold: 2, allowShortIntervals: true, ...healthCheck }
    }]
  })
  app.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  exposeAffinity(app)
  return app
}

function groupOf (app: FastifyInstance): TargetGroup {
  return app.targetGroups.get('g') as TargetGroup
}

function stateOf (app: FastifyInstance, id: string): string {
  const health = groupOf(app).get(id)?.health
  return health === undefined ? 'absent' : `${health.state}${health.reason === null ? '' : `:${health.reason}`}`
}

async function waitForState (app: FastifyInstance, id: string, state: string): Promise<void> {
  await waitFor(() => stateOf(app, id) === state, 5000, `${id} to be ${state} (is ${stateOf(app, id)})`)
}

test('a stopped target turns unhealthy, its sessions move with a new cookie, and it comes back when restarted', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await gateway(t, targets)
  await waitForState(app, 't0', 'healthy')
  await waitForState(app, 't1', 'healthy')

  const jar = new CookieJar()
  for (let i = 0; i < 4 && jar.cookies.get('AWSALB') === undefined; i++) {
    const res = await app.inject({ url: '/cart' })
    if (echoOf(res).target === 't0') jar.store(res.headers['set-cookie'])
  }
  t.ok(jar.cookies.has('AWSALB'), 'a client pinned to t0')

  await targets[0].stop()
  await waitForState(app, 't0', 'unhealthy:Target.FailedHealthChecks')
  const moved = await app.inject({ url: '/cart', headers: jar.headers() })
  t.equal(moved.statusCode, 200)
  t.equal(echoOf(moved).target, 't1', 'the pinned client is served by the healthy target')
  t.equal(moved.headers['x-affinity'], 'reassigned;target-unhealthy')
  jar.store(moved.headers['set-cookie'])
  const stays = await app.inject({ url: '/cart', headers: jar.headers() })
  t.equal(stays.headers['x-affinity'], 'hit', 'and stays on its new target')
  const fresh = await Promise.all([1, 2, 3, 4].map(async () => echoOf(await app.inject({ url: '/' })).target))
  t.same(fresh, ['t1', 't1', 't1', 't1'], 'new clients go to the healthy target only')

  await targets[0].start()
  await waitForState(app, 't0', 'healthy')
  const after = await Promise.all([1, 2, 3, 4].map(async () => echoOf(await app.inject({ url: '/' })).target))
  t.ok(after.includes('t0'), `new sessions reach the recovered target again: ${after.join(',')}`)
})

test('a slow answer fails as Target.Timeout, a wrong status as Target.ResponseCodeMismatch', async (t) => {
  const slow = await startTargets(t, 1, 'slow')
  const wrong = await startTargets(t, 1, 'wrong')
  const slowApp = await gateway(t, slow, { path: '/sleep/500' })
  const wrongApp = await gateway(t, wrong, { path: '/status/503', matcher: '200-299' })
  await waitForState(slowApp, 'slow0', 'unhealthy:Target.Timeout')
  await waitForState(wrongApp, 'wrong0', 'unhealthy:Target.ResponseCodeMismatch')
  t.pass('each failure kind has its reason')
})

test('a new target takes no sessions until a check passes; one that never passes becomes unhealthy', async (t) => {
  const targets = await startTargets(t, 2)
  await targets[1].stop()
  const app = await gateway(t, [targets[0]])
  await waitForState(app, 't0', 'healthy')
  groupOf(app).register({ id: 't1', url: targets[1].url })
  t.equal(stateOf(app, 't1'), 'initial:Elb.InitialHealthChecking', 'registered: initial')
  const served = await Promise.all([1, 2, 3, 4].map(async () => echoOf(await app.inject({ url: '/' })).target))
  t.same(served, ['t0', 't0', 't0', 't0'], 'no new session goes to an initial target')
  await waitForState(app, 't1', 'unhealthy:Target.FailedHealthChecks')
})

test('initialState healthy: a new target takes sessions at once, until its checks fail', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await gateway(t, targets, { initialState: 'healthy', intervalMs: 1000, timeoutMs: 500 })
  t.equal(stateOf(app, 't0'), 'healthy')
  t.equal(stateOf(app, 't1'), 'healthy')
  const served = await Promise.all([1, 2].map(async () => echoOf(await app.inject({ url: '/' })).target))
  t.same(served.sort(), ['t0', 't1'], 'both take sessions before any check')
})

test('every target unhealthy: the group fails open and keeps its sessions (ALB)', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await gateway(t, targets, { path: '/status/500' })
  await waitForState(app, 't0', 'unhealthy:Target.ResponseCodeMismatch')
  await waitForState(app, 't1', 'unhealthy:Target.ResponseCodeMismatch')
  const first = await app.inject({ url: '/cart' })
  t.equal(first.statusCode, 200, 'served, by an unhealthy target')
  const jar = new CookieJar()
  jar.store(first.headers['set-cookie'])
  const again = await app.inject({ url: '/cart', headers: jar.headers() })
  t.equal(again.headers['x-affinity'], 'hit', 'a pinned client stays while the whole group is unhealthy')
  t.equal(echoOf(again).target, echoOf(first).target)
})

test('checks never overlap, and nothing is left scheduled or running after app.close()', async (t) => {
  const targets = await startTargets(t, 1)
  const app = await gateway(t, targets, { path: '/sleep/25', intervalMs: 30, timeoutMs: 29 })
  await waitForState(app, 't0', 'healthy')
  const group = groupOf(app)
  t.ok(group.pendingTimers <= 1, `one check at a time per target: ${group.pendingTimers}`)
  await app.close()
  await waitFor(() => group.pendingTimers === 0, 1000, 'the running check to end')
  const hits = targets[0].hits
  await waitFor(() => group.pendingTimers === 0 && targets[0].hits === hits, 200, 'no further check')
  t.equal(group.pendingTimers, 0, 'no timer left')
})

test('port: checks go to that port of the target’s host, not to the traffic port', async (t) => {
  const targets = await startTargets(t, 1)
  // The traffic port answers /health with 200 (the test target's echo); the check port's server says 503, then 200.
  let checkPortHealthy = false
  let checks = 0
  const checkPort = await startServer(t, (req, res) => {
    if (req.url === '/health') checks++
    res.statusCode = checkPortHealthy ? 200 : 503
    res.end()
  })
  const port = Number(new URL(checkPort.url).port)
  const app = await gateway(t, targets, { port })
  await waitForState(app, 't0', 'unhealthy:Target.ResponseCodeMismatch')
  t.ok(checks >= 2, `the check port got the checks (${checks})`)
  const trafficChecks = targets[0].hits
  checkPortHealthy = true
  await waitForState(app, 't0', 'healthy')
  t.equal(targets[0].hits, trafficChecks, 'the traffic port got none')
  t.equal((await app.inject({ url: '/' })).statusCode, 200, 'traffic still goes to the traffic port')
})

test('thresholds counted exactly on a real target: 3 failures in a row take it out, 4 passes bring it back', async (t) => {
  let healthy = true
  let passes = 0
  let failures = 0
  const server = await startServer(t, (req, res) => {
    if (req.url === '/health') {
      if (healthy) passes++
      else failures++
      res.statusCode = healthy ? 200 : 503
    }
    res.end()
  })
  const seenAt: Record<string, number> = {}
  // Checks of one target never overlap: nothing more was answered when the change is published.
  onHealthChange(t, 'exact', ({ to }) => { seenAt[to] = to === 'unhealthy' ? failures : passes })
  const app = await buildGateway(t, {
    targetGroups: [{
      name: 'exact',
      targets: [{ id: 'x', url: server.url }],
      healthCheck: { path: '/health', intervalMs: 60, timeoutMs: 55, healthyThreshold: 4, unhealthyThreshold: 3, allowShortIntervals: true }
    }]
  })
  const group = app.targetGroups.get('exact') as TargetGroup
  const state = (): string | undefined => group.get('x')?.health.state
  await waitFor(() => state() === 'healthy', 2000, 'healthy')
  t.equal(seenAt.healthy, 1, 'one pass takes it out of initial')
  healthy = false
  await waitFor(() => state() === 'unhealthy', 2000, 'unhealthy')
  t.equal(seenAt.unhealthy, 3, 'unhealthy at the third failure in a row, not before or after')
  passes = 0
  healthy = true
  await waitFor(() => state() === 'healthy', 2000, 'healthy again')
  t.equal(seenAt.healthy, 4, 'healthy again at the fourth pass in a row')
})

test('a flapping target (pass, fail, pass, fail …) never reaches the unhealthy threshold', async (t) => {
  let checks = 0
  const server = await startServer(t, (req, res) => {
    if (req.url === '/health') res.statusCode = checks++ % 2 === 0 ? 200 : 503
    res.end()
  })
  const app = await buildGateway(t, {
    targetGroups: [{
      name: 'g',
      targets: [{ id: 'flap', url: server.url }],
      // A timeout long enough that a busy machine's event-loop lag is not a failed check.
      healthCheck: { path: '/health', intervalMs: 100, timeoutMs: 90, unhealthyThreshold: 2, allowShortIntervals: true }
    }]
  })
  const group = app.targetGroups.get('g') as TargetGroup
  const states = new Set<string>()
  await waitFor(() => { states.add(group.get('flap')?.health.state ?? 'absent'); return checks >= 12 }, 6000, '12 checks')
  t.same([...states].filter((state) => state !== 'initial'), ['healthy'], `healthy all along after its first pass: ${[...states].join(',')}`)
})

test('checks have a connection of their own: a target whose every connection is busy stays healthy', async (t) => {
  const targets = await startTargets(t, 1)
  const app = await buildGateway(t, {
    connectionsPerTarget: 4,
    targetGroups: [{
      name: 'g',
      targets: [{ id: 't0', url: targets[0].url }],
      healthCheck: { path: '/health', intervalMs: 40, timeoutMs: 30, healthyThreshold: 2, unhealthyThreshold: 2, allowShortIntervals: true }
    }]
  })
  app.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  await waitForState(app, 't0', 'healthy')
  const changes = recordHealthChanges(t, 'g')
  // Twice as many long requests as connections: four held at the target, four queued.
  const held = Array.from({ length: 8 }, async () => await app.inject({ url: '/hold' }))
  await waitFor(() => groupOf(app).get('t0')?.outstanding === 8, 3000, 'eight requests in flight')
  const before = targets[0].hits
  await waitFor(() => targets[0].hits >= before + 10, 3000, 'ten more checks')
  t.same(changes.map(({ from, to }) => `${from}>${to}`), [], 'no state change while every connection was busy')
  t.equal(stateOf(app, 't0'), 'healthy')
  // Released until answered: a request the gateway counts may not have reached the target yet.
  await waitFor(() => {
    targets[0].release()
    return (groupOf(app).get('t0')?.outstanding ?? 0) <= 4
  }, 3000, 'the first four answered')
  // The queued four reach the target as connections free up: release each as it arrives.
  let answered: Array<{ statusCode: number }> | null = null
  void Promise.all(held).then((responses) => { answered = responses })
  await waitFor(() => {
    targets[0].release()
    return answered !== null
  }, 3000, 'the queued four answered')
  for (const res of answered as unknown as Array<{ statusCode: number }>) t.equal(res.statusCode, 200)
})

test('a hung target whose connections are all taken by hung requests is unhealthy within unhealthyThreshold × interval + timeout', async (t) => {
  let hung = false
  const server = await startServer(t, (_req, res) => { if (!hung) res.end('ok') })
  const app = await buildGateway(t, {
    connectionsPerTarget: 2,
    idleTimeoutMs: 3000,
    targetGroups: [{
      name: 'g',
      targets: [{ id: 'h', url: server.url }],
      healthCheck: { path: '/health', intervalMs: 40, timeoutMs: 30, healthyThreshold: 2, unhealthyThreshold: 2, allowShortIntervals: true }
    }]
  })
  app.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  await waitForState(app, 'h', 'healthy')
  hung = true
  const hungAt = Date.now()
  const requests = Array.from({ length: 4 }, async () => await app.inject({ url: '/' }))
  await waitFor(() => stateOf(app, 'h') === 'unhealthy:Target.Timeout', 2000, `unhealthy (is ${stateOf(app, 'h')})`)
  const tookMs = Date.now() - hungAt
  // 2 × 40 + 30 = 110 ms, plus the interval's jitter and a busy machine; the idle timeout is 3 s.
  t.ok(tookMs < 1000, `unhealthy after ${tookMs} ms, not after the traffic's idle timeout`)
  for (const res of await Promise.all(requests)) t.equal(res.statusCode, 504, 'the hung requests end at their own deadline')
})

test('a group’s first checks spread over its whole interval, so targets and gateways do not probe in step', async (t) => {
  const firstCheckAt = new Map<string, number>()
  const servers = await Promise.all(Array.from({ length: 10 }, async (_, i) => await startServer(t, (req, res) => {
    if (req.url === '/health' && !firstCheckAt.has(`s${i}`)) firstCheckAt.set(`s${i}`, Date.now())
    res.end()
  })))
  const app = await buildGateway(t, {
    targetGroups: [{
      name: 'g',
      targets: servers.map((server, i) => ({ id: `s${i}`, url: server.url })),
      healthCheck: { path: '/health', intervalMs: 1000, timeoutMs: 500, allowShortIntervals: true }
    }]
  })
  await waitFor(() => firstCheckAt.size === 10, 3000, 'every target checked once')
  const times = [...firstCheckAt.values()]
  const spreadMs = Math.max(...times) - Math.min(...times)
  // Ten uniform points in one second span less than 300 ms with a probability of about 1.4e-4.
  t.ok(spreadMs > 300, `the first checks spread over ${spreadMs} ms of the 1000 ms interval`)
  t.ok(app.targetGroups.get('g') !== undefined)
})
