import { once } from 'node:events'
import { connect, createServer as createNetServer, type AddressInfo } from 'node:net'
import { test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import fastifySticky, { stickyProxy } from '../lib/index.js'
import { buildGateway, CookieJar, echoOf, startTargets, TEST_KEY, waitFor } from './setup.js'

interface Tap { teardown (fn: () => unknown): void }

/** A raw TCP target that answers every request with `response` (then closes, when asked). */
async function rawTarget (t: Tap, response: string, close = false): Promise<string> {
  const server = createNetServer((socket) => {
    socket.on('error', () => {})
    socket.once('data', () => {
      socket.write(response)
      if (close) socket.destroy()
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => new Promise((resolve) => server.close(resolve)))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

/** A gateway that keeps every log line, to check none shows an address or a cookie. */
async function loggedGateway (t: Tap, urls: string[], options: { redispatch?: boolean } = {}): Promise<{ app: FastifyInstance, logs: string[] }> {
  const logs: string[] = []
  const app = Fastify({ logger: { level: 'info', stream: { write: (line: string) => { logs.push(line) } } } })
  t.teardown(() => app.close())
  await app.register(fastifySticky, { keys: [TEST_KEY], ...options, targetGroups: [{ name: 'g', targets: urls.map((url, i) => ({ id: `r${i}`, url })) }] })
  app.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  return { app, logs }
}

test('a status code Fastify cannot send (600) is a 502, and the gateway lives on', async (t) => {
  const url = await rawTarget(t, 'HTTP/1.1 600 Weird\r\ncontent-length: 2\r\n\r\nok')
  const { app } = await loggedGateway(t, [url])
  const res = await app.inject({ url: '/' })
  t.equal(res.statusCode, 502)
  t.equal(res.json().code, 'FST_STICKY_TARGET_RESPONSE_INVALID')
  const again = await app.inject({ url: '/' })
  t.equal(again.statusCode, 502, 'and again: nothing crashed')
})

test('a target that closes after its headers, before any body byte: 502 with a clean JSON body', async (t) => {
  const url = await rawTarget(t, 'HTTP/1.1 200 OK\r\ncontent-length: 1000\r\ncontent-encoding: gzip\r\nx-internal: secret\r\nset-cookie: app=1\r\n\r\n', true)
  const { app, logs } = await loggedGateway(t, [url], { redispatch: false })
  const res = await app.inject({ url: '/' })
  t.equal(res.statusCode, 502, `status ${res.statusCode}: ${res.body}`)
  t.equal(res.json().code, 'FST_STICKY_TARGET_CONNECTION_FAILED')
  t.notOk(res.headers['content-encoding'] ?? res.headers['x-internal'], `no target header left: ${JSON.stringify(res.headers)}`)
  const cookies = ([] as string[]).concat(res.headers['set-cookie'] ?? [])
  t.same(cookies.map((line) => line.split('=')[0]), ['AWSALB', 'AWSALBCORS'], `only the gateway’s own cookies: ${JSON.stringify(cookies)}`)
  const port = new URL(url).port
  t.notOk(logs.some((line) => line.includes(`:${port}`) || line.includes('127.0.0.1:')), `no log line shows the target's address: ${logs.filter((line) => line.includes(port)).join('\n')}`)
})

test('a target that closes in the middle of its body: the client’s connection is closed too', async (t) => {
  const url = await rawTarget(t, 'HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\npartial', true)
  const { app, logs } = await loggedGateway(t, [url], { redispatch: false })
  await t.rejects(app.inject({ url: '/' }), /destroyed/, 'no complete response: the client sees the connection end')
  await waitFor(() => logs.some((line) => line.includes('fastify-sticky: target request failed')), 2000, 'the failure to be logged')
  t.notOk(logs.some((line) => line.includes('127.0.0.1:')), 'no log line shows the target’s address')
})

test('no log line or error body shows a target address or a cookie value, whatever fails', async (t) => {
  const targets = await startTargets(t, 1)
  const refused = await rawTarget(t, '')
  const refusedPort = new URL(refused).port
  const garbage = await rawTarget(t, 'garbage\r\n\r\n')
  const closing = await rawTarget(t, 'HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n', true)
  const { app, logs } = await loggedGateway(t, [targets[0].url, garbage, closing], { redispatch: false })
  const jar = new CookieJar()
  const bodies: string[] = []
  for (let i = 0; i < 6; i++) {
    const res = await app.inject({ url: i % 2 === 0 ? '/hang-not' : '/', headers: { cookie: 'AWSALB=forged-value-123' } })
    jar.store(res.headers['set-cookie'])
    bodies.push(res.body)
  }
  const group = app.targetGroups.get('g')!
  await group.deregister('r0')
  group.register({ id: 'gone', url: refused })
  for (let i = 0; i < 3; i++) bodies.push((await app.inject({ url: '/', headers: jar.headers() })).body)
  const secrets = [targets[0].url, garbage, closing, refused, '127.0.0.1:', `:${refusedPort}`, 'forged-value-123', jar.cookies.get('AWSALB') ?? 'none']
  for (const secret of secrets) {
    t.notOk(logs.some((line) => line.includes(secret)), `no log line contains ${secret}`)
    t.notOk(bodies.slice(1).some((body) => body.startsWith('{"statusCode"') && body.includes(secret)), `no error body contains ${secret}`)
  }
  t.ok(logs.some((line) => line.includes('fastify-sticky: target request failed')), 'failures are logged')
})

test('the outstanding count returns to 0 when an onSend hook replaces the target’s body', async (t) => {
  const targets = await startTargets(t, 1)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', algorithm: 'least_outstanding_requests', targets: [{ id: 'a', url: targets[0].url }] }] })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  app.addHook('onSend', async () => 'replaced')
  for (let i = 0; i < 10; i++) t.equal((await app.inject({ url: '/' })).body, 'replaced')
  const target = app.targetGroups.get('g')!.get('a')!
  await waitFor(() => target.outstanding === 0, 2000, `outstanding to drop to 0 (it is ${target.outstanding})`)
  t.equal(target.outstanding, 0)
})

test('a target deregistered between the decision and forward(): the request goes elsewhere, re-pinned', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: targets.map(({ id, url }) => ({ id, url })) }] })
  app.get('/*', { config: { targetGroup: 'g' } }, async (request, reply) => {
    if (request.affinity?.target !== null && request.affinity?.target.id === 't0') await app.targetGroups.get('g')!.deregister('t0')
    return reply.forward()
  })
  app.addHook('onSend', async (request, reply) => {
    const affinity = request.affinity
    if (affinity?.outcome === 'reassigned') reply.header('x-reason', affinity.reason)
  })
  const res = await app.inject({ url: '/' })
  t.equal(res.statusCode, 200, res.body)
  t.equal(echoOf(res).target, 't1', 'answered by the remaining target')
  t.equal(res.headers['x-reason'], 'target-deregistered')
  const jar = new CookieJar()
  jar.store(res.headers['set-cookie'])
  t.equal(Array.isArray(res.headers['set-cookie']) ? res.headers['set-cookie'].length : 0, 2, 'one pair of cookies, for the new target')
  const next = await app.inject({ url: '/', headers: jar.headers() })
  t.equal(echoOf(next).target, 't1', 'and the client stays there')
})

/** Sends one request with `path` exactly as written (inject would resolve dot segments first). */
async function rawStatus (port: number, path: string): Promise<number> {
  const socket = connect(port, '127.0.0.1')
  socket.write(`GET ${path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n`)
  const chunks: Buffer[] = []
  socket.on('data', (chunk: Buffer) => chunks.push(chunk))
  await once(socket, 'close')
  return Number(/^HTTP\/1\.1 (\d{3})/.exec(Buffer.concat(chunks).toString())?.[1] ?? 0)
}

test('stickyProxy keeps dot segments from escaping rewritePrefix', async (t) => {
  const targets = await startTargets(t, 1)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: 'a', url: targets[0].url }] }] })
  await app.register(stickyProxy, { prefix: '/api', targetGroup: 'g', rewritePrefix: '/public' })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as AddressInfo).port
  for (const path of ['/api/../admin', '/api/%2e%2e/admin', '/api/%2E%2E/admin', '/api/..%5cadmin', '/api/..%2fadmin', '/api/a/../../admin', '/api/..\\admin']) {
    t.equal(await rawStatus(port, path), 400, `${path}: 400`)
  }
  t.equal(targets[0].hits, 0, 'none of them reached the target')
  const inside = await app.inject({ url: '/api/b?x=..' })
  t.equal(inside.statusCode, 200, 'a query with dots is fine')
  t.equal(await rawStatus(port, '/api/a/../b'), 200, 'dot segments that stay inside are forwarded')
  t.equal(targets[0].hits, 2, 'those reached the target')
})

test('pick(except) never returns the failed target and keeps the rotation', async (t) => {
  const targets = await startTargets(t, 3)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: targets.map(({ id, url }, i) => ({ id, url, weight: i + 1 })) }] })
  const group = app.targetGroups.get('g')!
  const except = group.get('t2')!
  const picks = Array.from({ length: 60 }, () => group.pick(except)?.id)
  t.notOk(picks.includes('t2'), 'never the excluded target')
  t.same(new Set(picks), new Set(['t0', 't1']), `both others are picked: ${picks.join(',')}`)
})
