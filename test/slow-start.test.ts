import { createServer } from 'node:http'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { test } from 'tap'
import type { TargetGroup } from '../lib/target-group.js'
import { buildGateway, echoOf, startTargets, waitFor } from './setup.js'

const START = 1_800_000_000_000
const WINDOW = 100_000

/** Share of `picks` new sessions that `id` gets at the clock's time. */
function shareOf (group: TargetGroup, id: string, nowMs: number, picks = 3000): number {
  let count = 0
  for (let i = 0; i < picks; i++) if (group.pick(nowMs)?.id === id) count++
  return count / picks
}

test('a target registered at run time slow-starts: its share of new sessions grows linearly over the window', async (t) => {
  let now = START
  const targets = await startTargets(t, 3)
  const app = await buildGateway(t, {
    now: () => now,
    targetGroups: [{ name: 'g', targets: targets.slice(0, 2).map(({ id, url }) => ({ id, url })), slowStartMs: WINDOW, stickiness: false }]
  })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const group = app.targetGroups.get('g') as TargetGroup
  t.ok(group.describe().targets.every((target) => target.slowStartEndsMs === null), 'targets registered together at start do not slow-start')

  group.register({ id: 't2', url: targets[2].url })
  t.equal(group.describe().targets[2].slowStartEndsMs, START + WINDOW, 'the new target slow-starts for the window')
  // As if its weight grew linearly from 0 to 1 next to two targets of weight 1: share w / (2 + w).
  const shares = [0.1, 0.5, 0.9].map((elapsed) => shareOf(group, 't2', START + elapsed * WINDOW))
  t.ok(shares[0] < 0.1, `10 % into the window: ${shares[0].toFixed(3)} (about 0.05)`)
  t.ok(shares[1] > 0.12 && shares[1] < 0.28, `half-way: ${shares[1].toFixed(3)} (about 0.20)`)
  t.ok(shares[2] > 0.24 && shares[2] < 0.4, `90 %: ${shares[2].toFixed(3)} (about 0.31)`)
  t.ok(shares[0] < shares[1] && shares[1] < shares[2], 'growing')

  now = START + WINDOW / 2
  const served = new Map<string, number>()
  for (let i = 0; i < 60; i++) {
    const target = echoOf(await app.inject({ url: '/' })).target
    served.set(target, (served.get(target) ?? 0) + 1)
  }
  t.ok((served.get('t2') ?? 0) > 0 && (served.get('t2') ?? 0) < 25, `proxied requests half-way: t2 served ${served.get('t2') ?? 0} of 60`)

  now = START + WINDOW
  group.pick(now)
  t.equal(shareOf(group, 't2', now, 3000), 1 / 3, 'after the window: its full share, in round-robin order again')
  t.equal(group.describe().targets[2].slowStartEndsMs, null, 'slow start over')
})

test('no slow start without another healthy target that is not slow-starting, and none when it is off', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await buildGateway(t, {
    targetGroups: [
      { name: 'empty', targets: [], slowStartMs: WINDOW },
      { name: 'off', targets: [{ id: 't0', url: targets[0].url }] }
    ]
  })
  const empty = app.targetGroups.get('empty') as TargetGroup
  empty.register({ id: 't0', url: targets[0].url })
  t.equal(empty.describe().targets[0].slowStartEndsMs, null, 'the first target of an empty group takes its full share at once')
  empty.register({ id: 't1', url: targets[1].url })
  t.not(empty.describe().targets[1].slowStartEndsMs, null, 'the second one slow-starts')
  const off = app.targetGroups.get('off') as TargetGroup
  off.register({ id: 't1', url: targets[1].url })
  t.equal(off.describe().targets[1].slowStartEndsMs, null, 'slowStartMs 0: off')
})

test('slow start ends when the target turns unhealthy or is deregistered, and starts again when it turns healthy', async (t) => {
  let now = START
  const healthy = new Map([['s0', true], ['s1', true]])
  const urls: string[] = []
  for (const id of healthy.keys()) {
    const server = createServer((req, res) => {
      res.statusCode = req.url === '/health' && healthy.get(id) !== true ? 503 : 200
      res.end(id)
    })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    t.teardown(() => new Promise((resolve) => { server.close(resolve); server.closeAllConnections() }))
    urls.push(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)
  }
  const app = await buildGateway(t, {
    now: () => now,
    targetGroups: [{
      name: 'g',
      targets: [{ id: 's0', url: urls[0] }, { id: 's1', url: urls[1] }],
      slowStartMs: WINDOW,
      deregistrationDelayMs: 0,
      healthCheck: { path: '/health', intervalMs: 60, timeoutMs: 55, healthyThreshold: 2, unhealthyThreshold: 2, allowShortIntervals: true }
    }]
  })
  const group = app.targetGroups.get('g') as TargetGroup
  const s1 = (): { state: string, slowStartEndsMs: number | null } | undefined => group.describe().targets.find((target) => target.id === 's1')
  await waitFor(() => group.describe().targets.every((target) => target.state === 'healthy'), 2000, 'both healthy')
  t.ok(group.describe().targets.every((target) => target.slowStartEndsMs === null), 'the group’s first targets do not slow-start, whichever passes its first check first')

  now += WINDOW
  t.equal(s1()?.slowStartEndsMs, null, 'no slow start once the window is over')
  healthy.set('s1', false)
  await waitFor(() => s1()?.state === 'unhealthy', 2000, 's1 unhealthy')
  healthy.set('s1', true)
  await waitFor(() => s1()?.state === 'healthy', 2000, 's1 healthy again')
  t.equal(s1()?.slowStartEndsMs, now + WINDOW, 'healthy again: a new slow start')
  healthy.set('s1', false)
  await waitFor(() => s1()?.state === 'unhealthy', 2000, 's1 unhealthy again')
  t.equal(s1()?.slowStartEndsMs, null, 'unhealthy ends it')
  healthy.set('s1', true)
  await waitFor(() => s1()?.slowStartEndsMs !== null, 2000, 's1 slow-starting again')
  await group.deregister('s1')
  t.equal(group.get('s1'), undefined, 'deregistered')
  t.equal(group.pick(now)?.id, 's0', 'and it takes no new session')
})
