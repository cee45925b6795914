import type { IncomingMessage } from 'node:http'
import { connect as connectHttp2 } from 'node:http2'
import type { AddressInfo, Socket } from 'node:net'
import { test } from 'tap'
import fastifySticky from '../lib/index.js'
import Fastify from 'fastify'
import { buildGateway, rawRequest, startTargets, TEST_KEY, waitFor } from './setup.js'

// Node's HTTP server destroys the connection of a CONNECT request when nobody listens for
// 'connect': the client got no answer at all. The gateway opens no tunnels, and says so.

const CONNECT = (authority: string): string => `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`

test('CONNECT is answered 405 with Allow and the JSON error body, and the connection is closed', async (t) => {
  const [target] = await startTargets(t, 1)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: target.id, url: target.url }] }] })
  app.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as AddressInfo).port
  let connections = 0
  target.server.on('connection', () => connections++)
  // No Connection: close: the gateway closes the connection itself, or rawRequest's deadline would.
  for (const authority of [new URL(target.url).host, 'elsewhere.example:443']) {
    const started = Date.now()
    const res = await rawRequest(port, CONNECT(authority))
    t.equal(res.status, 405, `CONNECT ${authority}: 405, got ${res.status} ${JSON.stringify(res.headers)} ${res.body}`)
    t.same(JSON.parse(res.body || '{}'), { statusCode: 405, code: 'FST_STICKY_METHOD_NOT_ALLOWED', error: 'Method Not Allowed', message: 'The gateway does not serve CONNECT requests' }, `CONNECT ${authority}: our body`)
    const allow = String(res.headers.allow ?? '').split(/,\s*/)
    t.ok(allow.includes('GET') && allow.includes('POST') && !allow.includes('CONNECT'), `CONNECT ${authority}: Allow lists the methods served, not CONNECT: ${String(res.headers.allow)}`)
    t.equal(res.headers.connection, 'close', `CONNECT ${authority}: Connection: close`)
    t.equal(res.headers['content-length'], String(Buffer.byteLength(res.body)), `CONNECT ${authority}: the body is exactly Content-Length`)
    t.ok(Date.now() - started < 4000, `CONNECT ${authority}: the gateway closed the connection (${Date.now() - started} ms)`)
  }
  t.equal(connections, 0, 'no connection was opened to the target')
  t.equal(target.hits, 0, 'and the target saw no request')
  const after = await rawRequest(port, 'GET /x HTTP/1.1\r\nHost: gw.example\r\nConnection: close\r\n\r\n')
  t.equal(after.status, 200, `the gateway serves other requests as ever: ${after.status}`)
})

test("an app's own 'connect' listener takes CONNECT, whether added before or after the plugin; the plugin's leaves with the app", async (t) => {
  const tunnel = (_request: IncomingMessage, socket: Socket): void => {
    socket.end('HTTP/1.1 200 Connection Established\r\n\r\n')
  }
  for (const order of ['before', 'after'] as const) {
    const app = Fastify()
    t.teardown(() => app.close())
    if (order === 'before') app.server.on('connect', tunnel)
    await app.register(fastifySticky, { keys: [TEST_KEY], targetGroups: [{ name: 'g', targets: [] }] })
    if (order === 'after') app.server.on('connect', tunnel)
    await app.listen({ port: 0, host: '127.0.0.1' })
    const res = await rawRequest((app.server.address() as AddressInfo).port, CONNECT('elsewhere.example:443'))
    t.equal(res.status, 200, `listener added ${order} the plugin: the app's answer, got ${res.status} ${res.body}`)
    app.server.off('connect', tunnel)
    await app.close()
    t.equal(app.server.listenerCount('connect'), 0, `listener added ${order} the plugin: no 'connect' listener is left once the app closed`)
  }
})

test('CONNECT over HTTP/2 gets the same 405 with Allow and the JSON body, on its stream', async (t) => {
  const app = Fastify({ http2: true })
  t.teardown(() => app.close())
  await app.register(fastifySticky, { keys: [TEST_KEY], targetGroups: [{ name: 'g', targets: [] }] })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const client = connectHttp2(`http://127.0.0.1:${(app.server.address() as AddressInfo).port}`)
  // A CONNECT stream may stay open for a tunnel that never comes: the session is ended, not awaited.
  t.teardown(() => client.destroy())
  const stream = client.request({ ':method': 'CONNECT', ':authority': 'elsewhere.example:443' })
  let headers: Record<string, string | number> = {}
  let body = ''
  stream.on('response', (received: Record<string, string | number>) => { headers = received })
  stream.on('data', (chunk: Buffer) => { body += chunk.toString() })
  stream.on('error', () => {})
  await waitFor(() => stream.readableEnded || body.endsWith('}'), 5000, 'the whole response')
  t.equal(headers[':status'], 405, `405, got ${String(headers[':status'])}`)
  t.match(String(headers.allow), /GET/, `with Allow: ${String(headers.allow)}`)
  t.equal((JSON.parse(body || '{}') as { code?: string }).code, 'FST_STICKY_METHOD_NOT_ALLOWED', `our body: ${body}`)
  client.destroy()
})
