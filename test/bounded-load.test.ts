import { test } from 'tap'
import { buildGateway, echoOf, startTargets, waitFor } from './setup.js'
import type { AffinityDecision } from '../lib/types.js'

test('bounded load: a hot key\'s first choice at its capacity sends the key\'s next requests to their next choice', async (t) => {
  const targets = await startTargets(t, 3)
  const app = await buildGateway(t, {
    targetGroups: [{ name: 'g', targets: targets.map((target) => ({ id: target.id, url: target.url })), stickiness: { type: 'header', name: 'x-key' }, boundedLoadFactor: 1.25 }]
  })
  const decisions: AffinityDecision[] = []
  app.addHook('preHandler', async (request) => { if (request.affinity !== null) decisions.push(request.affinity) })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const group = app.targetGroups.get('g')!
  const inFlight = () => group.describe().targets.reduce((sum, target) => sum + target.inFlight, 0)
  const held: Array<Promise<{ body: string }>> = []
  for (let i = 0; i < 6; i++) {
    held.push(app.inject({ url: '/hold', headers: { 'x-key': 'hot' } }))
    await waitFor(() => inFlight() === i + 1, 5000, `${i + 1} requests in flight`)
  }
  const first = decisions[0]
  t.match(first, { outcome: 'hit', decidedBy: 'header' })
  const firstTarget = first.target?.id
  // With m in flight, a target of 3 equal ones holds ⌈1.25·(m+1)/3⌉: 1 while m < 2, 2 while m < 5.
  t.match(decisions[1], { outcome: 'reassigned', reason: 'target-overloaded', decidedBy: 'header' })
  t.not(decisions[1].target?.id, firstTarget, 'the second request went to the key\'s next choice')
  const perTarget = group.describe().targets.map((target) => target.inFlight)
  t.ok(Math.max(...perTarget) <= 3, `no target holds more than its capacity (${perTarget.join(', ')})`)
  // In flight at the gateway is not yet at the target: release until every held request is answered.
  let answered = 0
  for (const request of held) void request.then(() => { answered++ })
  await waitFor(() => {
    for (const target of targets) target.release()
    return answered === held.length
  }, 5000, 'every held request answered')
  const bodies = await Promise.all(held)
  t.equal(bodies.length, 6, 'every held request was answered')
  const calm = await app.inject({ url: '/', headers: { 'x-key': 'hot' } })
  t.equal(echoOf(calm).target, firstTarget, 'once the load is gone the key is back on its first choice')
})

test('bounded load with cookies: pinned clients stay on a hot target, new clients go elsewhere', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await buildGateway(t, {
    targetGroups: [{ name: 'g', targets: targets.map((target) => ({ id: target.id, url: target.url })), boundedLoadFactor: 1.25 }]
  })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const group = app.targetGroups.get('g')!
  const first = await app.inject({ url: '/' })
  const pinned = echoOf(first).target
  const cookie = String((first.headers['set-cookie'] as string[])[0]).split(';')[0]
  const held: Array<Promise<unknown>> = []
  for (let i = 0; i < 4; i++) {
    held.push(app.inject({ url: '/hold', headers: { cookie } }))
    await waitFor(() => group.describe().targets.find((target) => target.id === pinned)!.inFlight === i + 1, 5000, 'held on the pinned target')
  }
  t.pass('a pinned client\'s requests all reached its target though it is over its share')
  const others = new Set<string>()
  for (let i = 0; i < 6; i++) others.add(echoOf(await app.inject({ url: '/' })).target)
  t.same([...others], [pinned === 't0' ? 't1' : 't0'], 'every new client went to the other target')
  let answered = 0
  for (const request of held) void request.then(() => { answered++ })
  await waitFor(() => {
    for (const target of targets) target.release()
    return answered === held.length
  }, 5000, 'every held request answered')
})

test('least_sessions: new sessions go where the fewest are bound, so a target added by scale-out fills first', async (t) => {
  const targets = await startTargets(t, 4)
  const app = await buildGateway(t, {
    targetGroups: [{ name: 'g', algorithm: 'least_sessions', targets: targets.slice(0, 3).map((target) => ({ id: target.id, url: target.url })) }]
  })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const group = app.targetGroups.get('g')!
  const count = (placed: string[]) => placed.reduce<Record<string, number>>((counts, id) => ({ ...counts, [id]: (counts[id] ?? 0) + 1 }), {})
  const start: string[] = []
  for (let i = 0; i < 30; i++) start.push(echoOf(await app.inject({ url: '/' })).target)
  t.same(count(start), { t0: 10, t1: 10, t2: 10 }, 'even while the targets are even')
  group.register({ id: targets[3].id, url: targets[3].url })
  const next: string[] = []
  for (let i = 0; i < 10; i++) next.push(echoOf(await app.inject({ url: '/' })).target)
  t.same(count(next), { t3: 10 }, 'the new target takes every new session until it holds as many')
  t.equal(group.describe().targets.find((target) => target.id === 't3')!.boundSessions, 10)
})
