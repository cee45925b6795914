import { once } from 'node:events'
import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http'
import { connect, type AddressInfo, type Socket } from 'node:net'
import { test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import fastifySticky, { stickyProxy } from '../lib/index.js'
import { rawServer, rawTarget, refusedUrl, startServer, TEST_KEY, waitFor } from './setup.js'

// The life of one forwarded request at every phase: client leaving, target failing, onSend hooks
// replacing or delaying the body, async context, and the outstanding count settled once.

interface Tap { teardown (fn: () => unknown): void }

async function gateway (t: Tap, urls: string[], options: Record<string, unknown> = {}, logs?: string[]): Promise<FastifyInstance> {
  const app = Fastify(logs === undefined ? {} : { logger: { level: 'info', stream: { write: (line: string) => { logs.push(line) } } } })
  t.teardown(() => app.close())
  const { algorithm, stickiness, ...rest } = options as { algorithm?: any, stickiness?: any }
  await app.register(fastifySticky, { keys: [TEST_KEY], ...rest, targetGroups: [{ name: 'g', algorithm, stickiness, targets: urls.map((url, i) => ({ id: `r${i}`, url })) }] })
  app.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  return app
}

function outstanding (app: FastifyInstance, id = 'r0'): number {
  return (app.targetGroups.get('g') as any).get(id).outstanding
}

async function listen (app: FastifyInstance): Promise<number> {
  await app.listen({ port: 0, host: '127.0.0.1' })
  return (app.server.address() as AddressInfo).port
}

async function get (port: number, path: string, method = 'GET', deadline = 3000) {
  const req = httpRequest({ host: '127.0.0.1', port, method, path, agent: false })
  const timer = setTimeout(() => req.destroy(new Error(`no complete response within ${deadline} ms`)), deadline)
  req.end()
  try {
    const [res] = await once(req, 'response') as [IncomingMessage]
    const chunks: Buffer[] = []
    for await (const chunk of res) chunks.push(chunk as Buffer)
    return { statusCode: res.statusCode ?? 0, headers: res.headers as IncomingHttpHeaders, body: Buffer.concat(chunks) }
  } finally {
    clearTimeout(timer)
  }
}

function cookieNames (headers: IncomingHttpHeaders | Record<string, unknown>): string[] {
  return ([] as string[]).concat((headers['set-cookie'] as string[] | string | undefined) ?? []).map((line) => line.split('=')[0])
}

test('a target failing before the client got anything, without a Set-Cookie of its own: the 502/504 carries the gateway cookies once', async (t) => {
  const cases: Array<[string, string, boolean, number]> = [
    ['collected, cut off', 'HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1000\r\n\r\npartial', true, 502],
    ['collected, stalled', 'HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1000\r\n\r\npartial', false, 504],
    ['streamed, closed after the headers', 'HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n', true, 502]
  ]
  for (const [what, response, close, status] of cases) {
    const url = await rawTarget(t, response, close)
    const app = await gateway(t, [url], { redispatch: false, idleTimeoutMs: 200 })
    const res = await app.inject({ url: '/' })
    t.equal(res.statusCode, status, `${what}: ${res.body}`)
    t.same(cookieNames(res.headers), ['AWSALB'], `${what}: set-cookie ${JSON.stringify(res.headers['set-cookie'])}`)
  }
})


test('a client leaving at each phase settles the outstanding count and ends the target request', async (t) => {
  // waiting: the target never answers
  const closedAt: string[] = []
  /** Phases whose target has the request (and, buffering, has flushed its partial answer). */
  const reached: string[] = []
  const hang = await rawServer(t, (socket) => {
    reached.push('waiting')
    socket.on('close', () => closedAt.push('waiting'))
  })
  // buffering: small typed response, half of its body, then nothing
  const half = await rawServer(t, (socket) => {
    socket.write('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1000\r\n\r\npartial', () => reached.push('buffering'))
    socket.on('close', () => closedAt.push('buffering'))
  })
  // streaming: large body, first part only
  const big = await rawServer(t, (socket) => {
    socket.write('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1000000\r\n\r\n' + 'x'.repeat(1000))
    socket.on('close', () => closedAt.push('streaming'))
  })
  const app = await gateway(t, [hang, half, big], { algorithm: 'round_robin', stickiness: false })
  const port = await listen(app)
  for (const [i, phase] of ['waiting', 'buffering', 'streaming'].entries()) {
    const req = httpRequest({ host: '127.0.0.1', port, path: `/${phase}`, agent: false })
    req.on('error', () => {})
    req.end()
    if (phase === 'streaming') {
      const [res] = await once(req, 'response') as [IncomingMessage]
      await once(res, 'data')
    } else {
      await waitFor(() => outstanding(app, `r${i}`) === 1 && reached.includes(phase), 2000, `${phase}: request at the target`)
    }
    req.destroy()
    await waitFor(() => closedAt.includes(phase), 2000, `${phase}: the target's connection to close`)
    await waitFor(() => outstanding(app, `r${i}`) === 0, 2000, `${phase}: outstanding back to 0`)
    t.equal(outstanding(app, `r${i}`), 0, `${phase}: settled`)
  }
})

test('a client leaving while its request waits in a full pool: counted once, never sent', async (t) => {
  let hits = 0
  const held: ServerResponse[] = []
  const origin = await startServer(t, (req, res) => {
    hits++
    if (req.url === '/hold') held.push(res)
    else res.end('ok')
  })
  const app = await gateway(t, [origin.url], { connectionsPerTarget: 1 })
  const port = await listen(app)
  const first = get(port, '/hold')
  await waitFor(() => held.length === 1, 2000, 'first request held')
  const req = httpRequest({ host: '127.0.0.1', port, path: '/queued', agent: false })
  req.on('error', () => {})
  req.end()
  await waitFor(() => outstanding(app) === 2, 2000, 'second request queued')
  req.destroy()
  await waitFor(() => outstanding(app) === 1, 2000, 'the queued request no longer counted')
  held[0].end('held')
  const res = await first
  t.equal(res.statusCode, 200)
  await waitFor(() => outstanding(app) === 0, 2000, 'the held response to settle')
  t.equal(outstanding(app), 0, 'nothing outstanding')
  t.equal(hits, 1, 'the abandoned request never reached the target')
  const again = await get(port, '/after')
  t.equal(again.statusCode, 200, 'the pool still serves')
  t.equal(outstanding(app), 0)
})

test('redispatch after a refused connection: each target settled once, the client answered once', async (t) => {
  const deadUrl = await refusedUrl()
  const origin = await startServer(t, (_req, res) => { res.setHeader('content-type', 'text/plain'); res.end('ok') })
  const app = await gateway(t, [deadUrl, origin.url])
  for (let i = 0; i < 4; i++) {
    const res = await app.inject({ url: '/x' })
    t.equal(res.statusCode, 200, res.body)
    t.equal(res.body, 'ok')
  }
  t.equal(outstanding(app, 'r0'), 0, 'refusing target settled')
  t.equal(outstanding(app, 'r1'), 0, 'serving target settled')
})

test('103 Early Hints, HEAD and 204 with a typed small length', async (t) => {
  const origin = await startServer(t, (req, res) => {
    if (req.url === '/103') {
      res.writeEarlyHints({ link: '</a.css>; rel=preload' })
      res.setHeader('content-type', 'text/plain')
      res.end('after hints')
      return
    }
    const status = Number(req.url?.slice(1)) || 200
    res.writeHead(status, { 'content-type': 'text/plain', 'content-length': '5', etag: '"e"' })
    res.end(status === 200 ? 'hello' : undefined)
  })
  const app = await gateway(t, [origin.url])
  const port = await listen(app)
  const hints = await get(port, '/103')
  t.equal(hints.statusCode, 200)
  t.equal(hints.body.toString(), 'after hints')
  const head = await get(port, '/200', 'HEAD')
  t.equal(head.statusCode, 200)
  t.equal(head.headers['content-length'], '5')
  const noContent = await get(port, '/204')
  t.equal(noContent.statusCode, 204)
  await waitFor(() => outstanding(app) === 0, 1000, 'settled')
  t.equal(outstanding(app), 0)
})

test('a 304 to a conditional GET may carry the Content-Length of the representation (RFC 9110 §8.6)', async (t) => {
  // Pre-existing (undici 7.30 client-h1 onMessageComplete: bytesRead 0 !== content-length → UND_ERR_RES_CONTENT_LENGTH_MISMATCH).
  const url = await rawTarget(t, 'HTTP/1.1 304 Not Modified\r\netag: "e"\r\ncontent-length: 5\r\n\r\n')
  const app = await gateway(t, [url])
  const res = await app.inject({ url: '/', headers: { 'if-none-match': '"e"' } })
  t.equal(res.statusCode, 304, res.body)
  t.equal(res.headers.etag, '"e"')
})

test('an onSend hook that replaces a streamed body: the target request is ended, not held forever', async (t) => {
  let targetClosed = false
  const origin = await startServer(t, (_req, res) => {
    res.on('close', () => { targetClosed = true })
    res.writeHead(500, { 'content-type': 'text/html', 'content-length': String(4 * 1024 * 1024) })
    res.end(Buffer.alloc(4 * 1024 * 1024, 'x'))
  })
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifySticky, { keys: [TEST_KEY], targetGroups: [{ name: 'g', targets: [{ id: 'r0', url: origin.url }] }] })
  // A common pattern: hide upstream error pages behind the gateway's own.
  app.addHook('onSend', async (_request, reply, payload) => reply.statusCode >= 500 ? 'gateway error page' : payload)
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const port = await listen(app)
  const res = await get(port, '/')
  t.equal(res.statusCode, 500)
  t.equal(res.body.toString(), 'gateway error page')
  await waitFor(() => outstanding(app) === 0, 2000, 'outstanding back to 0').catch((err: Error) => t.fail(err.message))
  await waitFor(() => targetClosed, 2000, 'the target response to end').catch((err: Error) => t.fail(err.message))
  const pool = (app.targetGroups.get('g') as any).get('r0').pool
  const running = pool.stats.running
  t.equal(running, 0, `pool running ${running}: no connection held by a paused response`)
  // Otherwise app.close() waits for that response forever (the test would hang until tap's timeout).
  if (running !== 0) await pool.destroy()
})

/** Runs `fn` with uncaught exceptions collected instead of ending the test process; returns them. */
async function collectUncaught (fn: () => Promise<void>): Promise<string[]> {
  const uncaught: string[] = []
  const listeners = process.listeners('uncaughtException')
  process.removeAllListeners('uncaughtException')
  const catcher = (err: Error & { code?: string }): void => { uncaught.push(`${err.code}: ${err.message}`) }
  process.on('uncaughtException', catcher)
  try {
    await fn()
    // An error emitted by a destroyed stream surfaces on a later tick: let those run first.
    for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve))
  } finally {
    process.off('uncaughtException', catcher)
    for (const listener of listeners) process.on('uncaughtException', listener)
  }
  return uncaught
}

test('a streamed body nobody reads (payload replaced in onSend), then the target drops the connection: no uncaught error', async (t) => {
  let targetSocket: Socket | null = null
  let targetClosed = false
  const url = await rawServer(t, (socket) => {
    targetSocket = socket
    socket.on('close', () => { targetClosed = true })
    socket.write('HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/html\r\ncontent-length: 10000000\r\n\r\n')
    socket.write(Buffer.alloc(5000, 'x'))
  })
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifySticky, { keys: [TEST_KEY], targetGroups: [{ name: 'g', targets: [{ id: 'r0', url }] }] })
  app.addHook('onSend', async (_request, reply, payload) => reply.statusCode >= 500 ? 'gateway error page' : payload)
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const port = await listen(app)
  const uncaught = await collectUncaught(async () => {
    const res = await get(port, '/')
    t.equal(res.statusCode, 500)
    t.equal(res.body.toString(), 'gateway error page')
    // The target restarts with this response unfinished (if the gateway has not ended it already).
    if (!targetClosed) (targetSocket as Socket | null)?.resetAndDestroy()
    await waitFor(() => targetClosed && outstanding(app) === 0, 2000, 'the target request to end')
  })
  t.same(uncaught, [], 'no uncaught exception (in production: the gateway process dies)')
})

test('an async onSend hook still running when a streamed response fails: no uncaught error', async (t) => {
  let targetSocket: Socket | null = null
  const url = await rawServer(t, (socket) => {
    targetSocket = socket
    socket.write('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1000000\r\n\r\npartial')
  })
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifySticky, { keys: [TEST_KEY], redispatch: false, targetGroups: [{ name: 'g', targets: [{ id: 'r0', url }] }] })
  // e.g. an audit hook that writes somewhere before the response goes out: it ends once the target failed
  let hookRunning = false
  let endHook = (): void => {}
  const hookEnds = new Promise<void>((resolve) => { endHook = resolve })
  app.addHook('onSend', async (_request, _reply, payload) => {
    hookRunning = true
    await hookEnds
    return payload
  })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const port = await listen(app)
  let status: number | string = 0
  const uncaught = await collectUncaught(async () => {
    const answered = get(port, '/').then((res) => res.statusCode, (err: Error) => err.message)
    await waitFor(() => hookRunning, 2000, 'the onSend hook to run')
    ;(targetSocket as Socket | null)?.resetAndDestroy()
    await waitFor(() => outstanding(app) === 0, 2000, 'the gateway to see the target fail')
    endHook()
    status = await answered
  })
  t.same(uncaught, [], 'no uncaught exception (in production: the gateway process dies)')
  t.equal(status, 502, 'a clean 502, as nothing was sent yet')
})

test('a client that does not read a streamed body holds the target back (backpressure, no unbounded buffering)', async (t) => {
  const total = 128 * 1024 * 1024
  let written = 0
  let targetRes: ServerResponse | null = null
  const origin = await startServer(t, (_req, res) => {
    targetRes = res
    res.writeHead(200, { 'content-type': 'application/octet-stream' })
    const chunk = Buffer.alloc(64 * 1024, 'x')
    const pump = () => {
      while (written < total) {
        written += chunk.length
        if (!res.write(chunk)) { res.once('drain', pump); return }
      }
      res.end()
    }
    pump()
  })
  const app = await gateway(t, [origin.url])
  const port = await listen(app)
  const client = connect(port, '127.0.0.1')
  client.on('error', () => {})
  t.teardown(() => client.destroy())
  await once(client, 'connect')
  client.pause()
  client.write('GET /big HTTP/1.1\r\nhost: x\r\n\r\n')
  await waitFor(() => targetRes !== null, 2000, 'the request at the target')
  // Let it run until the target can write no more.
  let last = -1
  for (let i = 0; i < 40 && written !== last; i++) {
    last = written
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  t.ok(written < total / 2, `the target wrote ${(written / 1048576).toFixed(1)} MiB of ${total / 1048576} MiB while the client read nothing`)
  const heap = process.memoryUsage()
  t.comment(`gateway process heap ${(heap.heapUsed / 1048576).toFixed(0)} MiB, external ${(heap.external / 1048576).toFixed(0)} MiB, arrayBuffers ${(heap.arrayBuffers / 1048576).toFixed(0)} MiB`)
  client.destroy()
  await waitFor(() => outstanding(app) === 0, 2000, 'settled after the client left')
})

test('hooks after the target answered run in the request’s own async context (AsyncLocalStorage, e.g. @fastify/request-context)', async (t) => {
  const { AsyncLocalStorage } = await import('node:async_hooks')
  const als = new AsyncLocalStorage<{ id: string }>()
  const origin = await startServer(t, (req, res) => {
    res.setHeader('content-type', 'text/plain')
    if (req.url === '/big') res.end(Buffer.alloc(100_000, 'x'))
    else res.end('ok')
  })
  const app = await gateway(t, [origin.url])
  app.addHook('onRequest', (request, _reply, done) => als.run({ id: request.id }, done))
  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id)
    reply.header('x-context-id', als.getStore()?.id ?? 'none')
  })
  const port = await listen(app)
  for (const path of ['/a', '/b', '/c', '/big', '/big']) {
    const res = await get(port, path)
    t.equal(res.headers['x-context-id'], res.headers['x-request-id'], `${path}: onSend saw the store of request ${String(res.headers['x-context-id'])}, it serves request ${String(res.headers['x-request-id'])}`)
  }
})

test('target response headers named like Object.prototype members pass through as sent', async (t) => {
  // undici's own parseHeaders guards these names (Object.hasOwn, defineProperty for __proto__); parseRawHeaders does not.
  const url = await rawTarget(t, 'HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconstructor: one\r\n__proto__: two\r\nx-after: 1\r\n\r\nok')
  const app = await gateway(t, [url])
  const port = await listen(app)
  const res = await get(port, '/')
  t.equal(res.statusCode, 200)
  t.equal(res.headers.constructor, 'one', `constructor header: ${JSON.stringify(res.headers.constructor)}`)
  t.notOk('0' in res.headers || '1' in res.headers, `no invented headers: ${JSON.stringify({ 0: res.headers['0'], 1: res.headers['1'] })}`)
  t.equal(res.headers['x-after'], '1')
})

test('redispatch: false, a streamed POST body and a refused connection: the client still gets its 502', async (t) => {
  const deadUrl = await refusedUrl()
  const app = await gateway(t, [deadUrl], { redispatch: false })
  await app.register(stickyProxy, { prefix: '/p', targetGroup: 'g' })
  const port = await listen(app)
  const req = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: '/p/upload', agent: false, headers: { 'content-type': 'application/octet-stream', 'content-length': '200000' } })
  const outcome = new Promise<string>((resolve) => {
    req.on('response', (res) => { res.resume(); resolve(`status ${res.statusCode}`) })
    req.on('error', (err) => resolve(`error ${err.message}`))
  })
  // More than requestBufferBytes (16 KiB): the gateway takes a connection and starts streaming.
  req.write(Buffer.alloc(20_000))
  const result = await outcome
  req.destroy()
  t.equal(result, 'status 502')
  t.equal(outstanding(app), 0)
})

test('app.close() settles within an idle timeout even while a target streams a response for ever', async (t) => {
  const server = await startServer(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    const ticker = setInterval(() => res.write('data: tick\n\n'), 50)
    res.on('close', () => clearInterval(ticker))
  })
  const app = Fastify()
  await app.register(fastifySticky, { keys: [TEST_KEY], idleTimeoutMs: 500, targetGroups: [{ name: 'g', targets: [{ id: 'r0', url: server.url }] }] })
  app.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const port = await listen(app)
  const req = httpRequest({ host: '127.0.0.1', port, path: '/events', agent: false })
  req.end()
  const [res] = await once(req, 'response') as [IncomingMessage]
  let ticks = 0
  res.on('data', () => { ticks++ })
  const ended = new Promise((resolve) => { res.on('close', resolve); res.on('error', resolve) })
  await waitFor(() => ticks >= 3, 2000, 'the stream to flow')
  const started = Date.now()
  const closed = await Promise.race([app.close().then(() => 'closed'), new Promise((resolve) => setTimeout(resolve, 5000, 'hung').unref())])
  t.equal(closed, 'closed', 'app.close() settled')
  t.ok(Date.now() - started < 2000, `within about the idle timeout: ${Date.now() - started} ms`)
  await ended
  t.pass('the client’s stream ended')
})

test('a client that stops reading a large response cannot hold the target’s connection: it is closed after the idle timeout', async (t) => {
  let finished = 0
  let cut = 0
  const server = await startServer(t, (req, res) => {
    if (req.url === '/quick') {
      res.end('ok')
      return
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream' })
    const chunk = Buffer.alloc(65_536)
    let sent = 0
    const pump = (): void => {
      // 64 MiB: far more than socket buffers hold, so the target must wait for the client.
      while (sent < 1024) {
        sent++
        if (!res.write(chunk)) return
      }
      res.end()
    }
    res.on('drain', pump)
    res.on('close', () => { if (res.writableFinished) finished++; else cut++ })
    pump()
  })
  const app = await gateway(t, [server.url], { idleTimeoutMs: 500, connectionsPerTarget: 1 })
  const port = await listen(app)
  const socket = connect(port, '127.0.0.1')
  t.teardown(() => socket.destroy())
  await once(socket, 'connect')
  socket.write('GET /large HTTP/1.1\r\nhost: gw\r\n\r\n')
  await once(socket, 'data')
  // Reads nothing more from here on.
  socket.pause()
  const started = Date.now()
  await waitFor(() => cut === 1, 5000, 'the target’s response to be cut')
  t.ok(Date.now() - started < 3000, `within about the idle timeout: ${Date.now() - started} ms`)
  t.equal(finished, 0)
  t.equal(outstanding(app), 0, 'nothing is left outstanding on the target')
  const quick = await get(port, '/quick')
  t.equal(quick.statusCode, 200, 'the target’s only connection serves the next client')
})
