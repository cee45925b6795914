import { test } from 'tap'
import { TARGET_HEALTH_CHANNEL } from '../lib/index.js'
import type { TargetGroup } from '../lib/target-group.js'
import { buildGateway, recordHealthChanges, startTargets, waitFor } from './setup.js'

test('describe(): every target with state, reason, routable and requests in flight; the group degraded or not', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await buildGateway(t, {
    targetGroups: [{
      name: 'shop',
      targets: targets.map(({ id, url }) => ({ id, url })),
      healthCheck: { path: '/health', intervalMs: 100, timeoutMs: 90, healthyThreshold: 2, unhealthyThreshold: 2, allowShortIntervals: true }
    }]
  })
  app.get('/*', { config: { targetGroup: 'shop' } }, (_request, reply) => reply.forward())
  const group = app.targetGroups.get('shop') as TargetGroup
  await waitFor(() => group.describe().targets.every((target) => target.state === 'healthy'), 5000, 'both healthy')
  const described = group.describe()
  t.same({ ...described, targets: described.targets.map(({ sinceMs, ...rest }) => rest) }, {
    name: 'shop',
    algorithm: 'round_robin',
    degraded: false,
    failOpen: true,
    targets: [
      { id: 't0', origin: targets[0].url, weight: 1, state: 'healthy', reason: null, routable: true, inService: true, inFlight: 0, queued: 0, webSockets: 0, boundSessions: 0, keepsSessions: true, ejectedUntilMs: null, slowStartEndsMs: null, drainDeadlineMs: null },
      { id: 't1', origin: targets[1].url, weight: 1, state: 'healthy', reason: null, routable: true, inService: true, inFlight: 0, queued: 0, webSockets: 0, boundSessions: 0, keepsSessions: true, ejectedUntilMs: null, slowStartEndsMs: null, drainDeadlineMs: null }
    ]
  })
  t.equal(JSON.stringify(described).includes('pool'), false, 'nothing of the pools shows')

  let answered = false
  const held = app.inject({ url: '/hold' }).finally(() => { answered = true })
  await waitFor(() => group.describe().targets.some((target) => target.inFlight === 1), 2000, 'a held request in flight')
  // Released once the target holds it (it may still be on its way there).
  await waitFor(() => { for (const target of targets) target.release(); return answered }, 2000, 'the held request to be answered')
  t.equal((await held).statusCode, 200)
  await waitFor(() => group.describe().targets.every((target) => target.inFlight === 0), 2000, 'nothing in flight')

  await targets[0].stop()
  await waitFor(() => group.describe().targets[0].state === 'unhealthy', 5000, 't0 unhealthy')
  const [t0, t1] = group.describe().targets
  t.equal(t0.reason, 'Target.FailedHealthChecks')
  t.equal(t0.routable, false)
  t.equal(t0.keepsSessions, false, 'its clients move')
  t.equal(t1.routable, true)
  t.equal(t0.boundSessions + t1.boundSessions, 1, 'the held request pinned one client')
})

test(`every state change is published on the diagnostics channel ${TARGET_HEALTH_CHANNEL}`, async (t) => {
  const changes = recordHealthChanges(t, 'events')
  const targets = await startTargets(t, 1)
  const app = await buildGateway(t, {
    targetGroups: [{
      name: 'events',
      targets: [{ id: 'e0', url: targets[0].url }],
      healthCheck: { path: '/health', intervalMs: 100, timeoutMs: 90, healthyThreshold: 2, unhealthyThreshold: 2, allowShortIntervals: true }
    }]
  })
  const group = app.targetGroups.get('events') as TargetGroup
  await waitFor(() => changes.length === 2, 5000, 'registered, then healthy')
  await targets[0].stop()
  await waitFor(() => changes.length === 3, 2000, 'unhealthy')
  await targets[0].start()
  await waitFor(() => changes.length === 4, 2000, 'healthy again')
  t.equal(await group.deregister('e0'), true)
  await waitFor(() => changes.length === 6, 2000, 'draining, then unused')
  t.ok(changes.every((change) => change.change === 'state'), 'all of them state changes')
  t.same(changes.map(({ from, to, reason }) => `${from ?? '-'}>${to}${reason === null ? '' : `:${reason}`}`), [
    '->initial:Elb.InitialHealthChecking',
    'initial>healthy',
    'healthy>unhealthy:Target.FailedHealthChecks',
    'unhealthy>healthy',
    'healthy>draining:Target.DeregistrationInProgress',
    'draining>unused:Target.NotRegistered'
  ])
  t.same(changes[0].target, { id: 'e0', origin: targets[0].url }, 'the target by id and origin')
  t.ok(changes.every((change, i) => i === 0 || change.atMs >= changes[i - 1].atMs), 'in order, with times')
})
