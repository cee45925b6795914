import { test } from 'tap'
import { buildGateway, rawServer, waitFor } from './setup.js'

type Tap = Parameters<typeof buildGateway>[0]

/** A target that accepts connections and reads requests but never answers; counts the requests it got. */
async function silentTarget (t: Tap): Promise<{ url: string, requests: () => number }> {
  let requests = 0
  const url = await rawServer(t, (socket) => {
    requests++
    socket.on('data', () => { requests++ })
  })
  return { url, requests: () => requests }
}

test('a single request to a target that never answers gets its 504 within 20 % of the idle timeout', async (t) => {
  const silent = await silentTarget(t)
  const app = await buildGateway(t, { idleTimeoutMs: 2000, targetGroups: [{ name: 'g', targets: [{ id: 's', url: silent.url }] }] })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const started = Date.now()
  const res = await app.inject({ url: '/' })
  const tookMs = Date.now() - started
  t.equal(res.statusCode, 504)
  t.equal(res.json().code, 'FST_STICKY_TARGET_TIMEOUT')
  // 20 %, as below: a CI machine running other suites delays the event loop (2271 ms was seen at a load average of 13).
  t.ok(tookMs >= 1990 && tookMs <= 2400, `504 after ${tookMs} ms of 2000`)
})

test('every deadline counts from the request’s arrival: 50 requests on 16 connections all get their 504 at the idle timeout, and those that waited never reach the target', async (t) => {
  const silent = await silentTarget(t)
  const app = await buildGateway(t, { idleTimeoutMs: 1500, connectionsPerTarget: 16, targetGroups: [{ name: 'g', targets: [{ id: 's', url: silent.url }] }] })
  // When each request arrived, by its index: its deadline counts from there.
  const arrivals = new Map<string, number>()
  app.addHook('onRequest', async (request) => { arrivals.set(String(request.headers['x-i']), Date.now()) })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const took: number[] = []
  const pending = Promise.all(Array.from({ length: 50 }, async (_, i) => {
    const res = await app.inject({ url: '/', headers: { 'x-i': String(i) } })
    took.push(Date.now() - (arrivals.get(String(i)) ?? NaN))
    return res
  }))
  const group = app.targetGroups.get('g')!
  await waitFor(() => group.describe().targets[0].queued === 34, 1000, `34 waiting for a connection (${group.describe().targets[0].queued})`)
  t.equal(group.describe().targets[0].inFlight, 50, 'describe(): all 50 in flight, 34 of them queued')
  const responses = await pending
  t.same([...new Set(responses.map((res) => res.statusCode))], [504], 'every one a 504')
  const slowest = Math.max(...took)
  // Batches of 16 would give 3000 ms; 20 % leaves room for a busy machine's event loop.
  t.ok(slowest <= 1800, `the slowest 504 came ${slowest} ms after its request arrived, within 20 % of 1500 ms (not in batches of 16)`)
  // A queued request is sent when a connection frees with more than 50 ms of its deadline left:
  // one that arrived over 50 ms after the first may rightly go (a busy machine spreads arrivals).
  const times = [...arrivals.values()].sort((a, b) => a - b)
  const late = times.filter((at) => at - times[0] > 50).length
  t.ok(silent.requests() >= 16 && silent.requests() <= 16 + late, `only the 16 that got a connection reached the target (and of the rest, at most the ${late} that arrived over 50 ms after the first): ${silent.requests()}`)
})

test('a request still waiting for a connection when its target goes away goes to another target', async (t) => {
  const silent = await silentTarget(t)
  const answering = await rawServer(t, (socket) => {
    const reply = (): void => { socket.write('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok') }
    reply()
    socket.on('data', reply)
  })
  const app = await buildGateway(t, {
    idleTimeoutMs: 5000,
    connectionsPerTarget: 1,
    targetGroups: [{ name: 'g', targets: [{ id: 'silent', url: silent.url }, { id: 'ok', url: answering }], deregistrationDelayMs: 0, stickiness: false, algorithm: 'round_robin' }]
  })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const group = app.targetGroups.get('g')!
  // Round robin: requests 0, 2, 4 go to the silent target, which takes one and queues two.
  const responses = Array.from({ length: 6 }, async () => await app.inject({ url: '/' }))
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.equal(silent.requests(), 1, 'the silent target holds one request, two wait for its only connection')
  await group.deregister('silent')
  const statuses = (await Promise.all(responses)).map((res) => res.statusCode).sort()
  t.same(statuses, [200, 200, 200, 200, 200, 502], `the one that reached it gets 502 at the deadline of a 0 ms delay; the two waiting go to the other target: ${statuses.join(',')}`)
})
