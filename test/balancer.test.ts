import { request as httpRequest } from 'node:http'
import { test } from 'tap'
import type { AddressInfo } from 'node:net'
import type { Algorithm } from '../lib/types.js'
import { buildGateway, echoOf, startTargets, waitFor, type TestTarget } from './setup.js'

async function countNewClients (t: Parameters<typeof startTargets>[0], targets: TestTarget[], algorithm: Algorithm, weights: number[], clients: number): Promise<Record<string, number>> {
  const app = await buildGateway(t, {
    targetGroups: [{
      name: 'g',
      algorithm,
      stickiness: algorithm === 'weighted_random' ? false : undefined,
      targets: targets.map(({ id, url }, i) => ({ id, url, weight: weights[i] }))
    }]
  })
  app.get('/', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const counts: Record<string, number> = {}
  for (let i = 0; i < clients; i++) {
    const target = echoOf(await app.inject({ url: '/' })).target
    counts[target] = (counts[target] ?? 0) + 1
  }
  return counts
}

test('round_robin spreads new clients evenly, and by weight', async (t) => {
  const targets = await startTargets(t, 3)
  t.same(await countNewClients(t, targets, 'round_robin', [1, 1, 1], 300), { t0: 100, t1: 100, t2: 100 }, 'equal weights: exactly even')
  t.same(await countNewClients(t, targets, 'round_robin', [1, 2, 3], 600), { t0: 100, t1: 200, t2: 300 }, 'weights 1:2:3: exactly 1:2:3')
})

test('round_robin interleaves weighted targets instead of sending bursts', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: 'a', url: targets[0].url, weight: 3 }, { id: 'b', url: targets[1].url, weight: 1 }] }] })
  app.get('/', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const order: string[] = []
  for (let i = 0; i < 8; i++) order.push(echoOf(await app.inject({ url: '/' })).target)
  t.same(order.filter((id) => id === 't1').length, 2, `b gets 2 of 8: ${order.join(',')}`)
  t.notMatch(order.join(','), /t1,t1/, `b is never picked twice in a row: ${order.join(',')}`)
})

test('weighted_random follows the weights within a few percent', async (t) => {
  const targets = await startTargets(t, 3)
  const counts = await countNewClients(t, targets, 'weighted_random', [1, 1, 2], 2000)
  const share = (id: string) => (counts[id] ?? 0) / 2000
  t.ok(Math.abs(share('t0') - 0.25) < 0.05, `t0 near 25 %: ${JSON.stringify(counts)}`)
  t.ok(Math.abs(share('t1') - 0.25) < 0.05, `t1 near 25 %: ${JSON.stringify(counts)}`)
  t.ok(Math.abs(share('t2') - 0.5) < 0.05, `t2 near 50 %: ${JSON.stringify(counts)}`)
})

test('least_outstanding_requests sends new clients away from a busy target, and shares idle ones', async (t) => {
  const targets = await startTargets(t, 3)
  t.same(await countNewClients(t, targets, 'least_outstanding_requests', [1, 1, 1], 90), { t0: 30, t1: 30, t2: 30 }, 'idle targets share new clients evenly')
  t.same(await countNewClients(t, targets, 'least_outstanding_requests', [1, 2, 3], 600), { t0: 100, t1: 200, t2: 300 }, 'and by weight')

  const app = await buildGateway(t, {
    targetGroups: [{ name: 'g', algorithm: 'least_outstanding_requests', targets: targets.map(({ id, url }) => ({ id, url })) }]
  })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as AddressInfo).port
  // Three slow requests, one per target, and then more on whichever targets they landed on.
  const slow = Array.from({ length: 3 }, () => {
    const req = httpRequest({ host: '127.0.0.1', port, path: '/hang' })
    req.on('error', () => {})
    req.end()
    return req
  })
  t.teardown(() => slow.forEach((req) => req.destroy()))
  const group = app.targetGroups.get('g')!
  const deadline = Date.now() + 5000
  while (group.routable.reduce((sum, target) => sum + target.outstanding, 0) < 3 && Date.now() < deadline) {
    await new Promise((resolve) => setImmediate(resolve))
  }
  t.same(group.routable.map((target) => target.outstanding), [1, 1, 1], 'one outstanding request on each target')
  const busy = httpRequest({ host: '127.0.0.1', port, path: '/hang' })
  busy.on('error', () => {})
  busy.end()
  t.teardown(() => busy.destroy())
  while (group.routable.reduce((sum, target) => sum + target.outstanding, 0) < 4 && Date.now() < deadline) {
    await new Promise((resolve) => setImmediate(resolve))
  }
  const loads = group.routable.map((target) => target.outstanding)
  const busiest = loads.indexOf(2)
  t.not(busiest, -1, `one target now has two outstanding: ${loads.join(',')}`)
  const picks = new Set<string>()
  for (let i = 0; i < 20; i++) {
    const res = await app.inject({ url: '/fast' })
    picks.add(echoOf(res).target)
  }
  t.notOk(picks.has(`t${busiest}`), `new clients avoid the busiest target t${busiest}: got ${[...picks].join(',')}`)
})

test('least_outstanding_requests weighs requests in flight: a weight-3 target carries three for one', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await buildGateway(t, {
    targetGroups: [{ name: 'g', algorithm: 'least_outstanding_requests', targets: [{ id: 'light', url: targets[0].url, weight: 1 }, { id: 'heavy', url: targets[1].url, weight: 3 }] }]
  })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const held = Array.from({ length: 8 }, () => app.inject({ url: '/hold' }))
  await waitFor(() => targets[0].hits + targets[1].hits === 8, 3000, 'eight requests to be held')
  t.same([targets[0].hits, targets[1].hits], [2, 6], `in flight: light 2, heavy 6 (1:3), got ${targets[0].hits}:${targets[1].hits}`)
  targets.forEach((target) => target.release())
  await Promise.all(held)
})
