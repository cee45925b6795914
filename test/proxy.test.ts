import { createHash, randomBytes } from 'node:crypto'
import diagnosticsChannel from 'node:diagnostics_channel'
import { once } from 'node:events'
import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http'
import { connect, type AddressInfo } from 'node:net'
import { test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { stickyProxy, type FastifyStickyOptions } from '../lib/index.js'
import { buildGateway, echoOf, parseWireResponse, startServer, startTargets, valuesOf, waitFor, type Echo, type WireResponse } from './setup.js'

interface Tap {
  teardown (fn: () => unknown): void
}

/** Longest wait for the gateway's answer; every answer expected here comes in milliseconds. */
const RESPONSE_DEADLINE_MS = 3000

/** All values of one header of a raw response. */
function headerValues (res: WireResponse, name: string): string[] {
  return valuesOf(res.headers, name)
}

/**
 * A raw TCP client of the gateway: writes bytes exactly as given and reads responses one by
 * one, so nothing between the test and the gateway rewrites a header or the request line.
 */
async function rawClient (t: Tap, port: number) {
  const socket = connect(port, '127.0.0.1')
  t.teardown(() => socket.destroy())
  await once(socket, 'connect')
  let data: Buffer = Buffer.alloc(0)
  let closed = false
  let wake: (() => void) | null = null
  socket.on('data', (chunk: Buffer) => {
    data = Buffer.concat([data, chunk])
    wake?.()
  })
  socket.on('close', () => {
    closed = true
    wake?.()
  })
  socket.on('error', () => {})
  return {
    write (text: string | Buffer) {
      socket.write(text)
    },
    /** The next complete response; rejects when the socket closes first or after RESPONSE_DEADLINE_MS. */
    async read (): Promise<WireResponse> {
      const deadline = Date.now() + RESPONSE_DEADLINE_MS
      for (;;) {
        const parsed = parseWireResponse(data, closed)
        if (parsed !== null) {
          data = parsed.rest
          return parsed.response
        }
        if (closed) throw new Error(`socket closed before a complete response; got ${JSON.stringify(data.toString('latin1'))}`)
        const left = deadline - Date.now()
        if (left <= 0) {
          // Destroyed here, so the gateway's close in teardown does not wait for this request.
          socket.destroy()
          throw new Error(`the gateway sent no complete response within ${RESPONSE_DEADLINE_MS} ms; got ${JSON.stringify(data.toString('latin1'))}`)
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, left)
          wake = () => {
            clearTimeout(timer)
            wake = null
            resolve()
          }
        })
      }
    },
    get closed () { return closed }
  }
}

/** Sends one request with node:http and collects the whole response. */
async function send (port: number, options: { method?: string, path: string, headers?: Record<string, string | number>, body?: Buffer | Buffer[] }) {
  const req = httpRequest({ host: '127.0.0.1', port, method: options.method ?? 'GET', path: options.path, headers: options.headers, agent: false })
  // Destroyed at the deadline, so the gateway's close in teardown does not wait for this request.
  const timer = setTimeout(() => req.destroy(new Error(`the gateway sent no complete response to ${options.method ?? 'GET'} ${options.path} within ${RESPONSE_DEADLINE_MS} ms`)), RESPONSE_DEADLINE_MS)
  const responded = once(req, 'response') as Promise<[IncomingMessage]>
  const body = options.body
  if (Array.isArray(body)) {
    // Chunk by chunk, each written after the previous one is flushed.
    for (const chunk of body) {
      if (!req.write(chunk)) await once(req, 'drain')
      await new Promise((resolve) => setImmediate(resolve))
    }
    req.end()
  } else {
    req.end(body)
  }
  const [res] = await responded
  const chunks: Buffer[] = []
  try {
    for await (const chunk of res) chunks.push(chunk as Buffer)
  } finally {
    clearTimeout(timer)
  }
  return { statusCode: res.statusCode ?? 0, headers: res.headers as IncomingHttpHeaders, body: Buffer.concat(chunks) }
}

function listeningPort (app: FastifyInstance): number {
  return (app.server.address() as AddressInfo).port
}

/** A gateway over `count` echo targets in group `g`, with `/x` (a user route) and `/p` (stickyProxy) bound to it. */
async function echoGateway (t: Tap, options: Partial<FastifyStickyOptions> = {}, count = 1) {
  const targets = await startTargets(t, count)
  const app = await buildGateway(t, {
    targetGroups: [{ name: 'g', targets: targets.map((target) => ({ id: target.id, url: target.url })) }],
    ...options
  })
  app.all('/x', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  await app.register(stickyProxy, { prefix: '/p', targetGroup: 'g' })
  return { app, targets }
}

test('X-Forwarded-For from a trusted proxy: the client address is appended, or becomes the header when none came', async (t) => {
  const { app } = await echoGateway(t, { trustedProxies: '127.0.0.1' })
  const appended = await app.inject({ url: '/x', headers: { 'x-forwarded-for': 'a, b' } })
  t.equal(appended.statusCode, 200, appended.body)
  t.equal(echoOf(appended).headers['x-forwarded-for'], 'a, b, 127.0.0.1', `target saw ${JSON.stringify(echoOf(appended).headers)}`)

  const created = await app.inject({ url: '/x' })
  t.equal(created.statusCode, 200, created.body)
  t.equal(echoOf(created).headers['x-forwarded-for'], '127.0.0.1', `target saw ${JSON.stringify(echoOf(created).headers)}`)
})

test("xForwardedFor from a trusted proxy: 'preserve' passes the header as it came, 'remove' drops it", async (t) => {
  const preserve = await echoGateway(t, { xForwardedFor: 'preserve', trustedProxies: '127.0.0.1' })
  const kept = await preserve.app.inject({ url: '/x', headers: { 'x-forwarded-for': 'a, b' } })
  t.equal(kept.statusCode, 200, kept.body)
  t.equal(echoOf(kept).headers['x-forwarded-for'], 'a, b', `preserve: target saw ${JSON.stringify(echoOf(kept).headers)}`)
  const none = await preserve.app.inject({ url: '/x' })
  t.equal(none.statusCode, 200, none.body)
  t.notOk('x-forwarded-for' in echoOf(none).headers, `preserve adds none when none came: ${JSON.stringify(echoOf(none).headers)}`)

  const remove = await echoGateway(t, { xForwardedFor: 'remove', trustedProxies: '127.0.0.1' })
  const dropped = await remove.app.inject({ url: '/x', headers: { 'x-forwarded-for': 'a, b' } })
  t.equal(dropped.statusCode, 200, dropped.body)
  t.notOk('x-forwarded-for' in echoOf(dropped).headers, `remove: target saw ${JSON.stringify(echoOf(dropped).headers)}`)
})

test('X-Forwarded-Proto is http and X-Forwarded-Port the listening port, whatever the client claimed', async (t) => {
  const { app } = await echoGateway(t)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = listeningPort(app)
  const res = await send(port, { path: '/x', headers: { 'x-forwarded-proto': 'https', 'x-forwarded-port': '1' } })
  t.equal(res.statusCode, 200, res.body.toString())
  const echo = JSON.parse(res.body.toString()) as Echo
  t.equal(echo.headers['x-forwarded-proto'], 'http', `target saw ${JSON.stringify(echo.headers)}`)
  t.equal(echo.headers['x-forwarded-port'], String(port), `target saw ${JSON.stringify(echo.headers)}, gateway listens on ${port}`)
  t.equal(echo.headers['x-forwarded-for'], '127.0.0.1', `target saw ${JSON.stringify(echo.headers)}`)
})

const HOP_BY_HOP_REQUEST_HEADERS = [
  'Connection: keep-alive, X-Secret',
  'Keep-Alive: timeout=5, max=99',
  'Proxy-Connection: keep-alive',
  'TE: trailers, deflate',
  'Trailer: X-Checksum',
  'Upgrade: websocket',
  'Proxy-Authorization: Basic dXNlcjpwYXNz',
  'X-Secret: 1'
]
const HOP_BY_HOP_NAMES = ['keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'proxy-authorization', 'expect', 'x-secret']

/** undici writes its own `connection: keep-alive`; the client's Connection value must not be the one that arrives. */
function assertNoHopByHop (t: Tap & { notOk (value: unknown, message: string): void }, what: string, seen: Echo['headers']): void {
  const dump = JSON.stringify(seen)
  for (const name of HOP_BY_HOP_NAMES) t.notOk(name in seen, `${what}: ${name} must not reach the target, it saw ${dump}`)
  t.notOk(/x-secret/i.test(String(seen.connection ?? '')), `${what}: the client's Connection value must not reach the target, it saw ${dump}`)
}

test('hop-by-hop request headers, sent over a raw socket, never reach the target, and the pool stays usable', async (t) => {
  const { app, targets } = await echoGateway(t)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const client = await rawClient(t, listeningPort(app))

  // Every hop-by-hop header on a GET, to a user route and under stickyProxy, on one connection.
  for (const path of ['/x', '/p/y']) {
    client.write([`GET ${path} HTTP/1.1`, 'Host: gw.example', ...HOP_BY_HOP_REQUEST_HEADERS, 'X-Kept: yes', '', ''].join('\r\n'))
    const res = await client.read()
    t.equal(res.status, 200, `GET ${path}: ${res.body.toString()}`)
    const seen = (JSON.parse(res.body.toString()) as Echo).headers
    assertNoHopByHop(t, `GET ${path}`, seen)
    t.equal(seen['x-kept'], 'yes', `GET ${path}: an end-to-end header passes: ${JSON.stringify(seen)}`)
  }

  // The same client connection and a fresh request both still get through: nothing is wedged.
  client.write('GET /x HTTP/1.1\r\nHost: gw.example\r\n\r\n')
  const plain = await client.read()
  t.equal(plain.status, 200, `plain GET on the same connection: ${plain.body.toString()}`)
  const fresh = await app.inject({ url: '/p/after' })
  t.equal(fresh.statusCode, 200, `plain GET afterwards: ${fresh.body}`)
  t.equal(echoOf(fresh).url, '/after')
  t.equal(targets[0].hits, 4, `every request reached the target once, hits ${targets[0].hits}`)

  // A streamed POST under stickyProxy with Expect: 100-continue as well.
  const poster = await rawClient(t, listeningPort(app))
  poster.write(['POST /p/upload HTTP/1.1', 'Host: gw.example', ...HOP_BY_HOP_REQUEST_HEADERS, 'Expect: 100-continue',
    'Content-Type: text/plain', 'Content-Length: 5', '', 'hello'].join('\r\n'))
  const posted = await poster.read()
  t.equal(posted.status, 200, `POST /p/upload: ${posted.body.toString()}`)
  const echo = JSON.parse(posted.body.toString()) as Echo
  assertNoHopByHop(t, 'POST /p/upload', echo.headers)
  t.equal(echo.body, 'hello', 'the body arrives')
  t.equal(echo.url, '/upload', 'the path is mapped')
})

test('hop-by-hop response headers are not copied to the client', async (t) => {
  const origin = await startServer(t, (_req, res) => {
    res.setHeader('Connection', 'keep-alive, X-Hop')
    res.setHeader('X-Hop', 'secret')
    res.setHeader('Keep-Alive', 'timeout=9, max=77')
    res.setHeader('X-End-To-End', 'kept')
    res.setHeader('Content-Type', 'text/plain')
    // No content-length: the target answers with Transfer-Encoding: chunked.
    res.write('part1-')
    setImmediate(() => res.end('part2'))
  })
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: 'h0', url: origin.url }] }] })
  app.get('/x', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  await app.listen({ port: 0, host: '127.0.0.1' })

  // An HTTP/1.0 client: the gateway cannot chunk, so a copied Transfer-Encoding would show.
  for (const version of ['1.0', '1.1']) {
    const client = await rawClient(t, listeningPort(app))
    client.write(`GET /x HTTP/${version}\r\nHost: gw.example\r\n\r\n`)
    const res = await client.read()
    const dump = JSON.stringify(res.headers)
    const label = `HTTP/${version}`
    t.equal(res.status, 200, `${label}: ${res.body.toString()}`)
    t.equal(res.body.toString(), 'part1-part2', `${label}: the body arrives whole`)
    if (version === '1.0') t.same(headerValues(res, 'transfer-encoding'), [], `${label}: no Transfer-Encoding to a 1.0 client: ${dump}`)
    else t.ok(headerValues(res, 'transfer-encoding').length <= 1, `${label}: at most one Transfer-Encoding line: ${dump}`)
    t.same(headerValues(res, 'x-hop'), [], `${label}: a Connection-listed header is dropped: ${dump}`)
    t.notOk(headerValues(res, 'keep-alive').some((value) => value.includes('max=77')), `${label}: the target's Keep-Alive is dropped: ${dump}`)
    t.notOk(headerValues(res, 'connection').some((value) => /x-hop/i.test(value)), `${label}: the target's Connection is dropped: ${dump}`)
    t.same(headerValues(res, 'x-end-to-end'), ['kept'], `${label}: end-to-end headers pass: ${dump}`)
  }
})

test("the target's Set-Cookie lines arrive together with the gateway's AWSALB and AWSALBCORS", async (t) => {
  const { app } = await echoGateway(t, { corsCookies: 'always' })
  for (const url of ['/p/set-cookie', '/x']) {
    const res = await app.inject({ url })
    const lines = res.headers['set-cookie']
    const all = Array.isArray(lines) ? lines : lines === undefined ? [] : [lines]
    t.equal(res.statusCode, 200, `${url}: ${res.body}`)
    t.equal(all.filter((line) => line.startsWith('AWSALB=')).length, 1, `${url}: one AWSALB line in ${JSON.stringify(all)}`)
    t.equal(all.filter((line) => line.startsWith('AWSALBCORS=')).length, 1, `${url}: one AWSALBCORS line in ${JSON.stringify(all)}`)
    if (url === '/p/set-cookie') {
      t.ok(all.includes('app=1; Path=/'), `${url}: the target's app cookie in ${JSON.stringify(all)}`)
      t.ok(all.includes('other=2; Path=/'), `${url}: the target's other cookie in ${JSON.stringify(all)}`)
      t.equal(all.length, 4, `${url}: exactly the four lines, got ${JSON.stringify(all)}`)
    } else {
      t.equal(all.length, 2, `${url}: only the gateway's lines when the target sets none, got ${JSON.stringify(all)}`)
    }
  }
})

test("the target sees the client's Host header", async (t) => {
  const { app } = await echoGateway(t)
  for (const url of ['/x', '/p/y']) {
    const res = await app.inject({ url, headers: { host: 'shop.example:8443' } })
    t.equal(res.statusCode, 200, res.body)
    t.equal(echoOf(res).headers.host, 'shop.example:8443', `${url}: target saw ${JSON.stringify(echoOf(res).headers)}`)
  }
  await app.listen({ port: 0, host: '127.0.0.1' })
  const res = await send(listeningPort(app), { path: '/p/z', headers: { host: 'shop.example' } })
  const echo = JSON.parse(res.body.toString()) as Echo
  t.equal(echo.headers.host, 'shop.example', `over a socket: target saw ${JSON.stringify(echo.headers)}`)
})

test('an absolute-form request line or a //host path never picks the origin', async (t) => {
  // Every connection the gateway's undici pools open is announced on this channel, before connecting.
  const attempts: string[] = []
  const onConnect = (message: unknown) => {
    const { hostname, port } = (message as { connectParams: { hostname: string, port: string | number } }).connectParams
    attempts.push(`${hostname}:${port}`)
  }
  diagnosticsChannel.subscribe('undici:client:beforeConnect', onConnect)
  t.teardown(() => diagnosticsChannel.unsubscribe('undici:client:beforeConnect', onConnect))
  const { app, targets } = await echoGateway(t)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = listeningPort(app)
  const targetAddress = new URL(targets[0].url).host
  const cases: Array<{ line: string, path: string | null }> = [
    { line: 'GET http://evil.example/x HTTP/1.1', path: '/x' },
    { line: 'GET http://evil.example/p/a?q=1 HTTP/1.1', path: '/a?q=1' },
    { line: 'GET http://evil.example HTTP/1.1', path: null },
    { line: 'GET //evil.example/x HTTP/1.1', path: null },
    // Under a stickyProxy prefix, as under @fastify/http-proxy's: a path that reads as another origin is refused.
    { line: 'GET /p//evil.example/x HTTP/1.1', path: null },
    { line: 'GET /p/http://evil.example/x HTTP/1.1', path: '/http://evil.example/x' }
  ]
  for (const { line, path } of cases) {
    const client = await rawClient(t, port)
    const hitsBefore = targets[0].hits
    client.write(`${line}\r\nHost: 127.0.0.1:${port}\r\n\r\n`)
    const res = await client.read()
    const body = res.body.toString()
    const servedBy = headerValues(res, 'x-served-by')
    if (path === null) {
      // Fastify answers itself, or it went to our target; never a 502/504 from trying elsewhere.
      t.ok(res.status === 200 ? servedBy[0] === 't0' : res.status >= 400 && res.status < 500, `${line}: ${res.status} ${JSON.stringify(res.headers)} ${body}`)
      if (res.status === 200) t.match((JSON.parse(body) as Echo).url, /^\//, `${line}: target saw ${body}`)
      else t.equal(targets[0].hits, hitsBefore, `${line}: a 4xx from Fastify, the target saw nothing`)
    } else {
      t.equal(res.status, 200, `${line}: ${body}`)
      t.same(servedBy, ['t0'], `${line}: answered by our target: ${JSON.stringify(res.headers)}`)
      const echo = JSON.parse(body) as Echo
      t.equal(echo.url, path, `${line}: target saw ${echo.url}`)
      t.match(echo.url, /^\//, `${line}: the path starts with /`)
      t.equal(echo.headers.host, `127.0.0.1:${port}`, `${line}: the Host header is the client's, not the absolute URL's`)
      t.equal(targets[0].hits, hitsBefore + 1, `${line}: the target saw the request once`)
    }
  }
  t.ok(attempts.length > 0, `the gateway's connections were observed: ${JSON.stringify(attempts)}`)
  t.same(attempts.filter((address) => address !== targetAddress), [], `no connection attempt to anything but ${targetAddress}: ${JSON.stringify(attempts)}`)
})

test('a JSON body parsed by a user route is re-serialised with a matching content-length', async (t) => {
  const { app } = await echoGateway(t)
  app.post('/json', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const sent = '{ "name": "café crème",\n  "items": [1, 2, 3], "nested": { "ok": true } }'
  const res = await app.inject({ method: 'POST', url: '/json', headers: { 'content-type': 'application/json; charset=utf-8' }, payload: sent })
  t.equal(res.statusCode, 200, res.body)
  const echo = echoOf(res)
  t.equal(echo.method, 'POST')
  t.same(JSON.parse(echo.body), JSON.parse(sent), `the target got the same value: ${echo.body}`)
  t.equal(echo.headers['content-length'], String(Buffer.byteLength(echo.body)), `content-length ${echo.headers['content-length']} matches the ${Buffer.byteLength(echo.body)} bytes that came`)
  t.equal(echo.headers['content-type'], 'application/json; charset=utf-8', 'content-type passes')
  t.notOk('transfer-encoding' in echo.headers, `not chunked: ${JSON.stringify(echo.headers)}`)
})

test('a 1 MB binary body of an unknown type streams through stickyProxy byte-exact', async (t) => {
  const origin = await startServer(t, (req, res) => {
    const hash = createHash('sha256')
    let length = 0
    req.on('data', (chunk: Buffer) => {
      hash.update(chunk)
      length += chunk.length
    })
    req.on('end', () => {
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ url: req.url, length, sha256: hash.digest('hex'), headers: req.headers }))
    })
  })
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: 'b0', url: origin.url }] }] })
  await app.register(stickyProxy, { prefix: '/p', targetGroup: 'g' })
  await app.listen({ port: 0, host: '127.0.0.1' })

  const body = randomBytes(1024 * 1024)
  const res = await send(listeningPort(app), {
    method: 'PUT',
    path: '/p/blob',
    headers: { 'content-type': 'application/x-unknown-binary', 'content-length': body.length },
    body
  })
  t.equal(res.statusCode, 200, res.body.toString())
  const seen = JSON.parse(res.body.toString()) as { url: string, length: number, sha256: string, headers: IncomingHttpHeaders }
  t.equal(seen.url, '/blob')
  t.equal(seen.length, body.length, `the target got ${seen.length} of ${body.length} bytes`)
  t.equal(seen.sha256, createHash('sha256').update(body).digest('hex'), 'byte-exact')
  t.equal(seen.headers['content-type'], 'application/x-unknown-binary', 'content-type passes untouched')
  t.equal(seen.headers['content-length'], String(body.length), `content-length passes: ${JSON.stringify(seen.headers)}`)
})

test('a chunked request body (no content-length) through stickyProxy arrives intact', async (t) => {
  const { app } = await echoGateway(t)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const chunks = ['first chunk;', 'second chunk;', 'x'.repeat(70_000), ';last'].map((text) => Buffer.from(text))
  const res = await send(listeningPort(app), {
    method: 'POST',
    path: '/p/chunked',
    headers: { 'content-type': 'text/plain', 'transfer-encoding': 'chunked' },
    body: chunks
  })
  t.equal(res.statusCode, 200, res.body.toString().slice(0, 300))
  const echo = JSON.parse(res.body.toString()) as Echo
  t.equal(echo.url, '/chunked')
  t.equal(echo.body.length, Buffer.concat(chunks).length, `length ${echo.body.length}`)
  t.ok(echo.body === Buffer.concat(chunks).toString(), 'the body arrives intact')
  const length = echo.headers['content-length']
  t.ok(length === undefined ? echo.headers['transfer-encoding'] === 'chunked' : length === String(Buffer.concat(chunks).length),
    `framed as chunked or with the right content-length: ${JSON.stringify(echo.headers)}`)
})

test('stickyProxy maps the prefix: removed by default, replaced by rewritePrefix', async (t) => {
  const targets = await startTargets(t, 1)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: targets[0].id, url: targets[0].url }] }] })
  await app.register(stickyProxy, { prefix: '/p', targetGroup: 'g' })
  await app.register(stickyProxy, { prefix: '/r', targetGroup: 'g', rewritePrefix: '/api' })
  const cases: Array<[string, string]> = [
    ['/p', '/'],
    ['/p/', '/'],
    ['/p/a/b?q=1', '/a/b?q=1'],
    ['/p?q=1', '/?q=1'],
    ['/r', '/api'],
    ['/r/', '/api/'],
    ['/r/a/b?q=1', '/api/a/b?q=1'],
    ['/r?q=1', '/api?q=1']
  ]
  for (const [url, expected] of cases) {
    const res = await app.inject({ url })
    t.equal(res.statusCode, 200, `${url}: ${res.body}`)
    t.equal(echoOf(res).url, expected, `${url} → target saw ${echoOf(res).url}, expected ${expected}`)
  }
  const other = await app.inject({ url: '/pa' })
  t.equal(other.statusCode, 404, `/pa is not under /p: ${other.statusCode} ${other.body}`)
  t.equal(targets[0].hits, cases.length, `only the prefixed requests reached the target, hits ${targets[0].hits}`)
})

test('response bodies arrive byte-exact and with their own headers, collected or streamed', async (t) => {
  const bodies: Record<string, { type?: string, body: Buffer, chunked?: boolean }> = {
    '/small': { type: 'application/json', body: Buffer.from('{"ok":true}') },
    '/edge': { type: 'application/octet-stream', body: randomBytes(65_536) },
    '/large': { type: 'application/octet-stream', body: randomBytes(300_000) },
    '/untyped': { body: randomBytes(1000) },
    '/chunked': { type: 'text/plain', body: Buffer.from('a'.repeat(5000)), chunked: true },
    '/empty': { type: 'text/plain', body: Buffer.alloc(0) }
  }
  const origin = await startServer(t, (req, res) => {
    const spec = bodies[req.url ?? '']
    if (spec.type !== undefined) res.setHeader('content-type', spec.type)
    res.setHeader('x-kind', req.url ?? '')
    if (spec.chunked === true) {
      res.write(spec.body.subarray(0, 100))
      res.end(spec.body.subarray(100))
    } else {
      res.setHeader('content-length', spec.body.length)
      res.end(spec.body)
    }
  })
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: 'b0', url: origin.url }] }] })
  await app.register(stickyProxy, { prefix: '/p', targetGroup: 'g' })
  await app.listen({ port: 0, host: '127.0.0.1' })
  for (const [path, spec] of Object.entries(bodies)) {
    const res = await send(listeningPort(app), { path: `/p${path}` })
    t.equal(res.statusCode, 200, path)
    t.ok(res.body.equals(spec.body), `${path}: ${res.body.length} bytes, byte-exact`)
    t.equal(res.headers['content-type'], spec.type, `${path}: content-type as the target sent it (none added)`)
    t.equal(res.headers['x-kind'], path, `${path}: the target's own headers`)
    if (spec.chunked === true) t.equal(res.headers['transfer-encoding'], 'chunked', `${path}: still chunked`)
    else t.equal(res.headers['content-length'], String(spec.body.length), `${path}: content-length`)
  }
})

test('a HEAD response keeps the content-length the target gave it, without a body', async (t) => {
  const origin = await startServer(t, (_req, res) => {
    res.setHeader('content-type', 'text/plain')
    res.setHeader('content-length', 1234)
    res.end()
  })
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: 'b0', url: origin.url }] }] })
  await app.register(stickyProxy, { prefix: '/p', targetGroup: 'g' })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const res = await send(listeningPort(app), { method: 'HEAD', path: '/p/x' })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['content-length'], '1234')
  t.equal(res.body.length, 0)
})

test('a client that leaves in the middle of a streamed response ends the target’s request too', async (t) => {
  let closed = false
  const origin = await startServer(t, (_req, res) => {
    res.setHeader('content-type', 'text/event-stream')
    res.write('data: first\n\n')
    res.on('close', () => { closed = !res.writableFinished })
  })
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: 'b0', url: origin.url }] }] })
  await app.register(stickyProxy, { prefix: '/p', targetGroup: 'g' })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const req = httpRequest({ host: '127.0.0.1', port: listeningPort(app), path: '/p/events', agent: false })
  req.on('error', () => {})
  req.end()
  const [res] = await once(req, 'response') as [IncomingMessage]
  const [chunk] = await once(res, 'data') as [Buffer]
  t.equal(chunk.toString(), 'data: first\n\n', 'the stream’s first event arrived')
  req.destroy()
  await waitFor(() => closed, 2000, 'the target’s response to be closed')
  t.ok(closed, 'the target saw its request closed before it finished')
})
