import { test } from 'tap'
import type { TargetGroup } from '../lib/target-group.js'
import { buildGateway, echoOf, recordHealthChanges, startTargets, waitFor } from './setup.js'

test('setInService(id, false) takes no new client, keeps pinned ones (drainingKeepsSessions), and is published; true puts it back', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await buildGateway(t, { targetGroups: [{ name: 'web', targets: targets.map(({ id, url }) => ({ id, url })), stickiness: { type: 'lb_cookie' } }] })
  app.get('/*', { config: { targetGroup: 'web' } }, (_request, reply) => reply.forward())
  const changes = recordHealthChanges(t, 'web', ['out-of-service', 'in-service'])
  const group = app.targetGroups.get('web') as TargetGroup
  // A client pinned to t0 before it goes out of service.
  let pinned = await app.inject({ url: '/a' })
  for (let i = 0; i < 4 && echoOf(pinned).target !== 't0'; i++) pinned = await app.inject({ url: '/a' })
  t.equal(echoOf(pinned).target, 't0')
  const cookie = String(pinned.headers['set-cookie']).split(';')[0]

  t.equal(group.setInService('t0', false), true)
  t.match(group.describe().targets[0], { id: 't0', state: 'healthy', inService: false, routable: false, keepsSessions: true })
  for (let i = 0; i < 4; i++) t.equal(echoOf(await app.inject({ url: '/new' })).target, 't1', 'a new client goes to t1')
  const again = await app.inject({ url: '/b', headers: { cookie } })
  t.match({ target: echoOf(again).target }, { target: 't0' }, 'the pinned client stays on t0')
  t.equal(group.setInService('t0', true), true)
  t.equal(group.describe().targets[0].routable, true)
  t.same(changes.map((change) => `${change.change} ${change.target.id} ${change.from}->${change.to}`), ['out-of-service t0 healthy->healthy', 'in-service t0 healthy->healthy'])
  t.equal(group.setInService('nope', false), false, 'an unknown id: false')
})

test('setWeight changes the weight of new sessions; out of range throws, an unknown id is false', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await buildGateway(t, { targetGroups: [{ name: 'web', targets: targets.map(({ id, url }) => ({ id, url })) }] })
  app.get('/*', { config: { targetGroup: 'web' } }, (_request, reply) => reply.forward())
  const group = app.targetGroups.get('web') as TargetGroup
  t.equal(group.setWeight('t0', 3), true)
  t.equal(group.describe().targets[0].weight, 3)
  const seen: string[] = []
  for (let i = 0; i < 8; i++) seen.push(echoOf(await app.inject({ url: `/${i}` })).target)
  t.equal(seen.filter((id) => id === 't0').length, 6, `t0 takes three of four: ${seen.join(',')}`)
  t.throws(() => group.setWeight('t0', 0), { code: 'FST_STICKY_OPTION_INVALID', message: /setWeight\(id, weight\)\.weight must be an integer from 1 to 1000, received 0/ })
  t.equal(group.setWeight('nope', 2), false)
})

test('a group failing open never sends to a target out of service', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await buildGateway(t, {
    targetGroups: [{
      name: 'web',
      targets: targets.map(({ id, url }) => ({ id, url })),
      healthCheck: { path: '/health', intervalMs: 40, timeoutMs: 30, healthyThreshold: 2, unhealthyThreshold: 2, allowShortIntervals: true }
    }]
  })
  app.get('/*', { config: { targetGroup: 'web' } }, (_request, reply) => reply.forward())
  const group = app.targetGroups.get('web') as TargetGroup
  await waitFor(() => group.describe().targets.every((target) => target.state === 'healthy'), 5000, 'both healthy')
  group.setInService('t0', false)
  await targets[1].stop()
  await waitFor(() => group.describe().targets[1].state === 'unhealthy', 5000, 't1 unhealthy')
  t.equal(group.degraded, true, 'no in-service target is healthy: degraded')
  // t0 would answer 200 (its health checks keep coming); t1 refuses: the gateway's 502.
  for (let i = 0; i < 4; i++) {
    const res = await app.inject({ url: `/${i}` })
    t.same([res.statusCode, res.headers['x-served-by']], [502, undefined], `failing open over t1 only: ${res.statusCode} ${res.body}`)
  }
  t.same(group.describe().targets.map((target) => target.routable), [false, true], 'only t1 routable')
})
