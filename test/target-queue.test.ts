// The gateway's own queue of requests waiting for a target's connections: at close, when the
// target goes away, when they give up, and while an upload streams to the target.
import { request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { stickyProxy } from '../lib/index.js'
import { buildGateway, startServer, waitFor } from './setup.js'

type Tap = Parameters<typeof startServer>[0]

interface Res { status: number, body: string, headers: IncomingMessage['headers'] }

function get (port: number, path: string, method = 'GET', body?: string | Buffer, headers: Record<string, string> = {}): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method, agent: false, headers }, (res) => {
      let data = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => { data += chunk })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: data, headers: res.headers }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}

async function listen (app: FastifyInstance): Promise<number> {
  await app.listen({ port: 0, host: '127.0.0.1' })
  return (app.server.address() as AddressInfo).port
}

function inFlight (app: FastifyInstance, group = 'g'): number[] {
  return app.targetGroups.get(group)!.describe().targets.map((target) => target.inFlight)
}

/** A target whose `/hold` requests wait until the test ends them, others answer at once. */
async function holdingTarget (t: Tap): Promise<{ url: string, held: ServerResponse[], hits: string[] }> {
  const held: ServerResponse[] = []
  const hits: string[] = []
  const { url } = await startServer(t, (req, res) => {
    hits.push(`${req.method ?? ''} ${req.url ?? ''}`)
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      if (req.url === '/hold') { held.push(res); return }
      res.setHeader('content-type', 'text/plain')
      res.end(`ok ${req.url ?? ''} ${Buffer.concat(chunks).toString()}`)
    })
  })
  return { url, held, hits }
}

test('app.close(): a request waiting in the gateway queue for a connection is still served, not failed with 502', async (t) => {
  const target = await holdingTarget(t)
  const app = await buildGateway(t, {
    idleTimeoutMs: 10_000,
    connectionsPerTarget: 1,
    targetGroups: [{ name: 'g', targets: [{ id: 'a', url: target.url }], stickiness: false }]
  })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const port = await listen(app)
  const first = get(port, '/hold')
  await waitFor(() => target.held.length === 1, 2000, 'first request held')
  const second = get(port, '/queued')
  await waitFor(() => inFlight(app)[0] === 2, 2000, 'second request queued in the gateway')
  const closing = app.close()
  // Let preClose run (it closes the pools) before the held request ends.
  await new Promise((resolve) => setImmediate(resolve))
  target.held[0].end('held')
  const [a, b] = await Promise.all([first, second])
  await closing
  t.equal(a.status, 200, 'the request in flight is answered')
  t.equal(b.status, 200, `the request that waited for the connection is served too during the close grace: got ${b.status} ${b.body}`)
})

test('redispatch: false, a request waiting for a connection of a target that goes away gets ALB’s plain 502, not a 503 “no routable target” while another target serves', async (t) => {
  const a = await holdingTarget(t)
  const b = await holdingTarget(t)
  const app = await buildGateway(t, {
    idleTimeoutMs: 10_000,
    connectionsPerTarget: 1,
    redispatch: false,
    targetGroups: [{ name: 'g', targets: [{ id: 'a', url: a.url }, { id: 'b', url: b.url }], stickiness: false, algorithm: 'round_robin', deregistrationDelayMs: 5000, drainingKeepsSessions: false }]
  })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const port = await listen(app)
  // Round robin: a, b, a — the third waits for a's only connection.
  const first = get(port, '/hold')
  await waitFor(() => a.held.length === 1, 2000, 'a holds the first')
  const second = await get(port, '/quick')
  t.equal(second.status, 200, 'b serves')
  const third = get(port, '/queued')
  await waitFor(() => inFlight(app)[0] === 2, 2000, 'the third waits in a’s queue')
  const draining = app.targetGroups.get('g')!.deregister('a')
  const res = await third
  t.equal(a.hits.length, 1, 'the queued request never reached a')
  const body = JSON.parse(res.body) as { code: string }
  t.not(body.code, 'FST_STICKY_TARGET_GROUP_UNAVAILABLE', `b is routable, the group is not unavailable: got ${res.status} ${res.body}`)
  t.equal(res.status, 502, 'redispatch: false gives ALB’s plain 502')
  a.held[0].end('held')
  t.equal((await first).status, 200)
  await draining
})

test('a streamed upload that keeps coming within clientBodyTimeoutMs is not a gateway failure of its target: no 504 mid-body, no ejection', async (t) => {
  const a = await holdingTarget(t)
  const b = await holdingTarget(t)
  const ejected: string[] = []
  const { onHealthChange } = await import('./setup.js')
  onHealthChange(t, 'g', (change) => { if (change.change === 'ejected') ejected.push(change.target.id) })
  const app = await buildGateway(t, {
    idleTimeoutMs: 800,
    requestBufferBytes: 1024,
    clientBodyTimeoutMs: 5000,
    targetGroups: [{ name: 'g', targets: [{ id: 'a', url: a.url }, { id: 'b', url: b.url }], stickiness: false, algorithm: 'round_robin', outlierDetection: { consecutiveGatewayErrors: 1, consecutiveErrors: 0 } }]
  })
  await app.register(stickyProxy, { prefix: '/p', targetGroup: 'g' })
  const port = await listen(app)
  // 30 KB in 1 KB chunks every 60 ms: about 1.8 s, never pausing longer than 60 ms.
  const result = await new Promise<Res | { error: string }>((resolve) => {
    const req = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: '/p/upload', agent: false, headers: { 'content-type': 'application/octet-stream', 'content-length': '30720' } }, (res) => {
      let data = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => { data += chunk })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: data, headers: res.headers }))
      res.on('error', (err) => resolve({ error: err.message }))
    })
    req.on('error', (err) => resolve({ error: err.message }))
    let sent = 0
    const tick = setInterval(() => {
      if (req.destroyed) { clearInterval(tick); return }
      req.write(Buffer.alloc(1024, 'u'))
      if (++sent === 30) { clearInterval(tick); req.end() }
    }, 60)
  })
  t.ok('status' in result && result.status === 200, `the upload is answered by its target: ${JSON.stringify(result).slice(0, 160)}`)
  t.same(ejected, [], 'the target that was reading the body is not ejected for the client’s pace')
})

test('requests that timed out or whose client left while waiting for a connection do not pile up in the target’s queue while its connections stay busy', async (t) => {
  // A target whose only connection carries an endless stream (server-sent events, a heartbeat every 50 ms).
  const streams: ServerResponse[] = []
  const { url } = await startServer(t, (req, res) => {
    if (req.url === '/events') {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      const beat = setInterval(() => res.write('data: beat\n\n'), 50)
      res.on('close', () => clearInterval(beat))
      streams.push(res)
      return
    }
    res.end('ok')
  })
  const app = await buildGateway(t, {
    idleTimeoutMs: 300,
    connectionsPerTarget: 1,
    targetGroups: [{ name: 'g', targets: [{ id: 'a', url }], stickiness: false }]
  })
  app.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const port = await listen(app)
  const events = httpRequest({ host: '127.0.0.1', port, path: '/events', agent: false })
  events.on('response', (res) => res.resume())
  events.on('error', () => {})
  events.end()
  t.teardown(() => events.destroy())
  await waitFor(() => streams.length === 1, 2000, 'the stream holds the only connection')
  const body = 'x'.repeat(10_000)
  for (let i = 0; i < 12; i++) {
    const res = await get(port, `/r${i}`, 'POST', body, { 'content-type': 'text/plain' })
    t.equal(res.status, 504, `request ${i} waited past its deadline: 504`)
  }
  const target = app.targetGroups.get('g')!.get('a')!
  t.equal(app.targetGroups.get('g')!.describe().targets[0].queued, 0, 'none of them waits any more')
  t.ok(target.queued <= 1, `the queue keeps no answered request (each holding its 10 KB body): ${target.queued} entries held`)
})

test('a request evicted from the queue of a target that goes away is answered in its own async context, not in the one of whoever took the target away', async (t) => {
  const { AsyncLocalStorage } = await import('node:async_hooks')
  const als = new AsyncLocalStorage<{ id: string }>()
  const a = await holdingTarget(t)
  const app = await buildGateway(t, {
    idleTimeoutMs: 10_000,
    connectionsPerTarget: 1,
    targetGroups: [{ name: 'g', targets: [{ id: 'a', url: a.url }], stickiness: false, deregistrationDelayMs: 0 }]
  })
  app.addHook('onRequest', (request, _reply, done) => als.run({ id: request.id }, done))
  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id)
    reply.header('x-context-id', als.getStore()?.id ?? 'none')
  })
  // An admin route of the gateway takes the target out.
  app.post('/admin/deregister', async () => {
    void app.targetGroups.get('g')!.deregister('a')
    return { ok: true }
  })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const port = await listen(app)
  const first = get(port, '/hold')
  await waitFor(() => a.held.length === 1, 2000, 'a holds the first')
  const queued = get(port, '/queued')
  await waitFor(() => inFlight(app)[0] === 2, 2000, 'the second waits in a’s queue')
  const admin = await get(port, '/admin/deregister', 'POST')
  t.equal(admin.status, 200)
  const res = await queued
  t.equal(res.status, 503, 'no target left: 503')
  t.equal(res.headers['x-context-id'], res.headers['x-request-id'], `onSend of the evicted request saw the store of request ${String(res.headers['x-context-id'])} (the admin request is ${String(admin.headers['x-request-id'])}), it serves request ${String(res.headers['x-request-id'])}`)
  await first.catch(() => {})
})
