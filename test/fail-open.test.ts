import { once } from 'node:events'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { test } from 'tap'
import type { FastifyInstance } from 'fastify'
import type { TargetGroup } from '../lib/target-group.js'
import { buildGateway, CookieJar, exposeAffinity, waitFor } from './setup.js'

type Tap = Parameters<typeof buildGateway>[0]

interface SwitchTarget { id: string, url: string, healthy: boolean }

/** Targets whose `/health` answers 200 or 503 as the test sets `healthy`; every other path answers their id. */
async function switchTargets (t: Tap, count: number): Promise<SwitchTarget[]> {
  const targets: SwitchTarget[] = []
  for (let i = 0; i < count; i++) {
    const target: SwitchTarget = { id: `s${i}`, url: '', healthy: true }
    const server = createServer((req, res) => {
      if (req.url === '/health') res.statusCode = target.healthy ? 200 : 503
      res.end(target.id)
    })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    t.teardown(() => new Promise((resolve) => { server.close(resolve); server.closeAllConnections() }))
    target.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    targets.push(target)
  }
  return targets
}

// Checks every 100 ms with 90 ms to answer: short enough for quick tests, long enough that a
// healthy target (in this process, behind a busy event loop) never misses one.
async function gateway (t: Tap, targets: SwitchTarget[], group: Record<string, unknown> = {}, intervalMs = 100): Promise<{ app: FastifyInstance, group: TargetGroup }> {
  const app = await buildGateway(t, {
    targetGroups: [{
      name: 'g',
      targets: targets.map(({ id, url }) => ({ id, url })),
      healthCheck: { path: '/health', intervalMs, timeoutMs: Math.floor(intervalMs * 0.9), healthyThreshold: 2, unhealthyThreshold: 2, allowShortIntervals: true },
      ...group
    }]
  })
  app.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  exposeAffinity(app)
  return { app, group: app.targetGroups.get('g') as TargetGroup }
}

function states (group: TargetGroup): string {
  return group.targets.map(({ id }) => group.get(id)?.health.state).join(',')
}

async function servedBy (app: FastifyInstance, count: number): Promise<string[]> {
  const seen: string[] = []
  for (let i = 0; i < count; i++) seen.push((await app.inject({ url: '/' })).body)
  return seen
}

test('minimumHealthyTargets as a count: below it, every registered target takes new sessions', async (t) => {
  const targets = await switchTargets(t, 3)
  const { app, group } = await gateway(t, targets, { minimumHealthyTargets: 2 })
  await waitFor(() => states(group) === 'healthy,healthy,healthy', 5000, `all healthy (${states(group)})`)
  targets[0].healthy = false
  await waitFor(() => states(group) === 'unhealthy,healthy,healthy', 5000, `s0 unhealthy (${states(group)})`)
  t.notOk(group.degraded, 'two healthy of a minimum of two: not degraded')
  t.notOk((await servedBy(app, 6)).includes('s0'), 'the unhealthy target gets no new session')
  targets[1].healthy = false
  await waitFor(() => states(group) === 'unhealthy,unhealthy,healthy', 5000, `s1 unhealthy (${states(group)})`)
  t.ok(group.degraded, 'one healthy of a minimum of two: failing open')
  t.same(new Set(await servedBy(app, 6)), new Set(['s0', 's1', 's2']), 'every registered target takes new sessions')
})

test('minimumHealthyTargets as a percentage of the registered targets', async (t) => {
  const targets = await switchTargets(t, 4)
  const { group } = await gateway(t, targets, { minimumHealthyTargets: '50%' })
  await waitFor(() => states(group) === 'healthy,healthy,healthy,healthy', 5000, `all healthy (${states(group)})`)
  targets[0].healthy = false
  targets[1].healthy = false
  await waitFor(() => states(group) === 'unhealthy,unhealthy,healthy,healthy', 5000, `two unhealthy (${states(group)})`)
  t.notOk(group.degraded, '2 of 4 healthy meets 50 %')
  targets[2].healthy = false
  await waitFor(() => group.degraded, 5000, `1 of 4 is below 50 % (${states(group)})`)
  t.ok(group.degraded)
})

test('failOpen false: below the minimum the group answers 503 instead', async (t) => {
  const targets = await switchTargets(t, 2)
  const { app, group } = await gateway(t, targets, { failOpen: false })
  await waitFor(() => states(group) === 'healthy,healthy', 5000, `all healthy (${states(group)})`)
  const jar = new CookieJar()
  jar.store((await app.inject({ url: '/' })).headers['set-cookie'])
  targets[0].healthy = false
  targets[1].healthy = false
  await waitFor(() => group.degraded, 5000, `degraded (${states(group)})`)
  const res = await app.inject({ url: '/', headers: jar.headers() })
  t.equal(res.statusCode, 503, res.body)
  t.equal(res.json().code, 'FST_STICKY_TARGET_GROUP_UNAVAILABLE')
  t.equal(res.json().message, "Target group 'g' has no routable target")
  t.equal(res.headers['x-affinity'], 'unavailable')
})

test('hysteresis: after a relapse the group leaves fail-open only once the minimum held for a check interval', async (t) => {
  const targets = await switchTargets(t, 2)
  const { group } = await gateway(t, targets, {}, 200)
  await waitFor(() => states(group) === 'healthy,healthy', 3000, `all healthy (${states(group)})`)
  t.notOk(group.degraded, 'start-up: no hold once the first checks pass')
  targets[0].healthy = false
  targets[1].healthy = false
  await waitFor(() => group.degraded, 3000, `degraded (${states(group)})`)
  targets[1].healthy = true
  await waitFor(() => group.get('s1')?.health.state === 'healthy', 3000, `s1 back (${states(group)})`)
  const backAt = Date.now()
  t.ok(group.degraded, 'one healthy again, but still failing open')
  await waitFor(() => !group.degraded, 3000, 'the hold to end')
  t.ok(Date.now() - backAt >= 150, `held for about an interval (${Date.now() - backAt} ms of 200)`)
})
