import { Agent, request as httpsRequest } from 'node:https'
import { connect, constants as http2Constants, type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2'
import type { AddressInfo } from 'node:net'
import { test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import fastifySticky, { stickyProxy, type FastifyStickyOptions, type TargetGroupOptions } from '../lib/index.js'
import { echoOf, exposeAffinity, rawServer, refusedUrl, startServer, startTargets, TEST_KEY, waitFor, type Echo, type TestTarget } from './setup.js'
import { localhostCert, testCa } from './tls.js'

type Tap = Parameters<typeof startTargets>[0]

/** What a client got: status, headers by lower-case name, every Set-Cookie line on its own, body as text. */
interface Answer {
  status: number
  headers: Record<string, string | string[] | undefined>
  setCookie: string[]
  body: string
}

interface Send {
  method?: string
  /** A header given as an array is sent as that many fields (`cookie` above all: browsers split it on HTTP/2). */
  headers?: Record<string, string | string[]>
  /** Written as they come, the next only once `between` resolves; no Content-Length unless `headers` has one. */
  body?: string[]
  between?: (index: number) => Promise<void>
}

/** One client with its own connection to the gateway, kept between requests as a browser keeps it. */
interface Client {
  send (path: string, init?: Send): Promise<Answer>
  /** Starts a GET and returns how to give it up: the HTTP/1.1 connection closed, or the HTTP/2 stream cancelled. */
  start (path: string): { cancel: () => void }
  close (): void
}

/** The two ways a browser reaches the gateway: HTTP/1.1 over TLS, and HTTP/2 (ALPN h2) on the same port. */
const CLIENTS: ReadonlyArray<{ name: string, open: (port: number) => Client }> = [
  { name: 'HTTP/1.1', open: http1Client },
  { name: 'HTTP/2', open: http2Client }
]

function http1Client (port: number): Client {
  const agent = new Agent({ keepAlive: true, maxSockets: 1, ca: testCa })
  return {
    send: (path, init = {}) => new Promise((resolve, reject) => {
      const req = httpsRequest({ host: '127.0.0.1', port, path, method: init.method ?? 'GET', headers: init.headers, agent })
      req.on('error', reject)
      req.on('response', (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => { body += chunk })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, setCookie: res.headers['set-cookie'] ?? [], body }))
        res.on('error', reject)
      })
      writeBody(req, init).catch(reject)
    }),
    start: (path) => {
      const req = httpsRequest({ host: '127.0.0.1', port, path, agent })
      req.on('error', () => {})
      req.end()
      return { cancel: () => req.destroy() }
    },
    close: () => agent.destroy()
  }
}

function http2Client (port: number): Client {
  let session: ClientHttp2Session | null = null
  return {
    send: (path, init = {}) => new Promise((resolve, reject) => {
      if (session === null) {
        session = connect(`https://127.0.0.1:${port}`, { ca: testCa })
        session.on('error', () => {})
      }
      const method = init.method ?? 'GET'
      const stream = session.request({ ':method': method, ':path': path, ...init.headers }, { endStream: init.body === undefined })
      let headers: IncomingHttpHeaders = {}
      let body = ''
      stream.setEncoding('utf8')
      stream.on('response', (received) => { headers = received })
      stream.on('data', (chunk: string) => { body += chunk })
      stream.on('end', () => {
        const setCookie = headers['set-cookie'] ?? []
        resolve({ status: Number(headers[':status']), headers, setCookie, body })
      })
      stream.on('error', reject)
      if (init.body !== undefined) writeBody(stream, init).catch(reject)
    }),
    start: (path) => {
      session ??= connect(`https://127.0.0.1:${port}`, { ca: testCa }).on('error', () => {})
      const stream = session.request({ ':path': path })
      stream.on('error', () => {})
      return { cancel: () => stream.close(http2Constants.NGHTTP2_CANCEL) }
    },
    close: () => { session?.close() }
  }
}

/** Writes the request's body, chunk after chunk, and ends it. */
async function writeBody (out: NodeJS.WritableStream, init: Send): Promise<void> {
  const chunks = init.body ?? []
  for (let i = 0; i < chunks.length; i++) {
    if (i > 0) await init.between?.(i)
    out.write(chunks[i])
  }
  out.end()
}

/**
 * A gateway that speaks HTTP/2 and HTTP/1.1 on one TLS port, as browsers reach it: group `g`
 * behind every path (`x-affinity` tells the decision), and behind `/p` through stickyProxy
 * (bodies unparsed).
 */
async function gateway (t: Tap, group: Omit<TargetGroupOptions, 'name'>, options: Partial<FastifyStickyOptions> = {},
  routes: (app: FastifyInstance) => void = () => {}): Promise<{ app: FastifyInstance, port: number }> {
  const app = Fastify({ http2: true, https: { ...localhostCert, allowHTTP1: true } }) as unknown as FastifyInstance
  t.teardown(() => app.close())
  await app.register(fastifySticky, { keys: [TEST_KEY], ...options, targetGroups: [{ name: 'g', ...group }] })
  exposeAffinity(app)
  routes(app)
  app.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  await app.register(stickyProxy, { prefix: '/p', targetGroup: 'g' })
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, port: (app.server.address() as AddressInfo).port }
}

function targetsOf (targets: TestTarget[]): Array<{ id: string, url: string }> {
  return targets.map(({ id, url }) => ({ id, url }))
}

/** The client's cookies as a browser keeps them: name → value, from the Set-Cookie lines it got. */
function store (jar: Map<string, string>, answer: Answer): void {
  for (const line of answer.setCookie) {
    const pair = line.split(';')[0]
    const at = pair.indexOf('=')
    jar.set(pair.slice(0, at), pair.slice(at + 1))
  }
}

/** The jar as an HTTP/2 browser sends it: one `cookie` field per cookie (RFC 9113 §8.2.3); as one line over HTTP/1.1. */
function cookieFields (jar: Map<string, string>, split: boolean): string | string[] {
  const pairs = [...jar].map(([name, value]) => `${name}=${value}`)
  return split ? pairs : pairs.join('; ')
}

for (const { name, open } of CLIENTS) {
  const split = name === 'HTTP/2'

  test(`${name}: lb_cookie pins the client (new, then hit), and moves it with a new cookie when its target stops`, async (t) => {
    const targets = await startTargets(t, 3)
    const { port } = await gateway(t, { targets: targetsOf(targets), stickiness: { type: 'lb_cookie' } })
    const client = open(port)
    t.teardown(client.close)
    const jar = new Map<string, string>()
    const first = await client.send('/cart')
    store(jar, first)
    t.equal(first.status, 200, `answered: ${first.body.slice(0, 120)}`)
    t.equal(first.headers['x-affinity'], 'new')
    const pinned = echoOf(first).target
    for (let i = 0; i < 5; i++) {
      const res = await client.send(`/cart?i=${i}`, { headers: { cookie: cookieFields(jar, split) } })
      store(jar, res)
      t.equal(res.headers['x-affinity'], 'hit', `request ${i + 1} is a hit`)
      t.equal(echoOf(res).target, pinned, `request ${i + 1} stays on ${pinned}`)
    }
    await targets.find((target) => target.id === pinned)?.stop()
    const moved = await client.send('/cart', { headers: { cookie: cookieFields(jar, split) } })
    store(jar, moved)
    t.equal(moved.status, 200, 'a stopped target costs the client nothing: redispatched')
    t.match(moved.headers['x-affinity'], /^reassigned;/, `reassigned: ${String(moved.headers['x-affinity'])}`)
    const next = echoOf(moved).target
    t.not(next, pinned, 'on another target')
    const after = await client.send('/cart', { headers: { cookie: cookieFields(jar, split) } })
    t.equal(after.headers['x-affinity'], 'hit', 'the new cookie pins the client there')
    t.equal(echoOf(after).target, next)
  })

  test(`${name}: app_cookie: the AWSALBAPP shards follow the app cookie, and the client stays where it logged in`, async (t) => {
    const targets = await startTargets(t, 3)
    const { port } = await gateway(t, { targets: targetsOf(targets), stickiness: { type: 'app_cookie', cookieName: 'sid' } })
    const client = open(port)
    t.teardown(client.close)
    const jar = new Map<string, string>()
    const login = await client.send('/login')
    store(jar, login)
    const target = echoOf(login).target
    t.match(login.setCookie[0], new RegExp(`^sid=${target}\\.1; Path=/; HttpOnly$`), 'the app cookie as the target set it, a line of its own')
    t.same(login.setCookie.slice(1).map((line) => line.split('=')[0]), ['AWSALBAPP-0', 'AWSALBAPP-1', 'AWSALBAPP-2', 'AWSALBAPP-3'], 'four shard lines, each a line of its own')
    for (let i = 0; i < 4; i++) {
      const res = await client.send('/cart', { headers: { cookie: cookieFields(jar, split) } })
      store(jar, res)
      t.equal(res.headers['x-affinity'], 'hit', `request ${i + 1} is a hit`)
      t.equal(echoOf(res).target, target, `request ${i + 1} stays on ${target}`)
      t.equal(echoOf(res).headers.cookie, `sid=${target}.1`, 'the target gets the app cookie alone, as one Cookie header')
    }
  })

  test(`${name}: header stickiness: one key, one target; no cookie`, async (t) => {
    const targets = await startTargets(t, 4)
    const { port } = await gateway(t, { targets: targetsOf(targets), stickiness: { type: 'header', name: 'x-session-id' } })
    const client = open(port)
    t.teardown(client.close)
    const seen = new Map<string, Set<string>>()
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 12; i++) {
        const res = await client.send('/cart', { headers: { 'x-session-id': `session-${i}` } })
        t.equal(res.headers['x-affinity'], 'hit')
        t.same(res.setCookie, [], 'no cookie')
        seen.set(`session-${i}`, (seen.get(`session-${i}`) ?? new Set()).add(echoOf(res).target))
      }
    }
    t.ok([...seen.values()].every((set) => set.size === 1), 'each key stayed on one target')
    t.ok(new Set([...seen.values()].map((set) => [...set][0])).size >= 2, 'the keys spread over the targets')
  })

  test(`${name}: cookies in several fields are read as one: the pin holds, the gateway's cookies never reach the target, the rest do`, async (t) => {
    const targets = await startTargets(t, 3)
    const { port } = await gateway(t, { targets: targetsOf(targets), stickiness: { type: 'lb_cookie' } })
    const client = open(port)
    t.teardown(client.close)
    const jar = new Map<string, string>()
    const first = await client.send('/')
    store(jar, first)
    const pinned = echoOf(first).target
    // The gateway's cookies between and after the app's, each in its own field.
    const fields = ['theme=dark', `AWSALB=${jar.get('AWSALB') ?? ''}`, 'sid=abc', `AWSALBCORS=${jar.get('AWSALBCORS') ?? ''}`, 'lang=fr']
    for (let i = 0; i < 3; i++) {
      const res = await client.send('/cart', { headers: { cookie: fields } })
      t.equal(res.headers['x-affinity'], 'hit', `request ${i + 1}: the AWSALB of the second field is read`)
      t.equal(echoOf(res).target, pinned, `request ${i + 1} stays on ${pinned}`)
      t.equal(echoOf(res).headers.cookie, 'theme=dark; sid=abc; lang=fr', 'the target gets the other cookies, in order, as one Cookie header')
    }
    const alone = await client.send('/cart', { headers: { cookie: [`AWSALB=${jar.get('AWSALB') ?? ''}`, `AWSALBCORS=${jar.get('AWSALBCORS') ?? ''}`] } })
    t.equal(alone.headers['x-affinity'], 'hit')
    t.notOk('cookie' in echoOf(alone).headers, `only the gateway's cookies: no Cookie header at the target (${String(echoOf(alone).headers.cookie)})`)
  })

  test(`${name}: the target gets Host (from :authority over HTTP/2), no pseudo-header, and X-Forwarded-Proto https`, async (t) => {
    const targets = await startTargets(t, 1)
    const { port } = await gateway(t, { targets: targetsOf(targets), stickiness: false })
    const client = open(port)
    t.teardown(client.close)
    const res = await client.send('/where?x=1')
    t.equal(res.status, 200, `answered: ${res.body.slice(0, 160)}`)
    const echo: Echo = echoOf(res)
    t.equal(echo.url, '/where?x=1', 'the path and query as sent')
    t.equal(echo.headers.host, `127.0.0.1:${port}`, 'Host names the authority the client asked for')
    t.same(Object.keys(echo.headers).filter((header) => header.startsWith(':')), [], 'no pseudo-header reaches the target')
    t.equal(echo.headers['x-forwarded-proto'], 'https')
    t.equal(echo.headers['x-forwarded-port'], String(port))
    if (split) {
      const named = await client.send('/where', { headers: { host: 'shop.example.test' } })
      t.equal(echoOf(named).headers.host, 'shop.example.test', 'a Host the client sent wins over :authority')
    }
  })

  test(`${name}: Set-Cookie lines arrive intact, one field each, and cookieSecure 'auto' makes the gateway's Secure`, async (t) => {
    const targets = await startTargets(t, 2)
    const { port } = await gateway(t, { targets: targetsOf(targets), stickiness: { type: 'lb_cookie' } }, { cookieSecure: 'auto' })
    const client = open(port)
    t.teardown(client.close)
    const res = await client.send('/set-cookie')
    t.equal(res.setCookie.length, 4, `four lines: ${JSON.stringify(res.setCookie)}`)
    t.match(res.setCookie[0], /^AWSALB=[A-Za-z0-9_-]+; Expires=[^;]+; Path=\/; Secure$/, 'AWSALB is Secure over TLS')
    t.match(res.setCookie[1], /^AWSALBCORS=[A-Za-z0-9_-]+; Expires=[^;]+; Path=\/; SameSite=None; Secure$/)
    t.same(res.setCookie.slice(2), ['app=1; Path=/', 'other=2; Path=/'], "the target's lines, untouched")
  })

  test(`${name}: a request body streams through to the target, with or without a declared length`, async (t) => {
    const received: string[] = []
    const target = await startServer(t, (req, res) => {
      let body = ''
      req.setEncoding('utf8')
      req.on('data', (chunk: string) => {
        body += chunk
        received.push(chunk)
      })
      req.on('end', () => {
        res.setHeader('content-type', 'application/json')
        res.end(JSON.stringify({ body, length: req.headers['content-length'] ?? null, type: req.headers['content-type'] ?? null }))
      })
    })
    // Nothing is held back: the target reads the first chunk while the client still writes.
    const { port } = await gateway(t, { targets: [{ id: 't0', url: target.url }], stickiness: false }, { requestBufferBytes: 0 })
    const client = open(port)
    t.teardown(client.close)
    const streamed = await client.send('/p/upload', {
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream' },
      body: ['first part,', 'second part'],
      between: () => waitFor(() => received.join('') === 'first part,', 3000, 'the first chunk at the target')
    })
    t.equal(streamed.status, 200, `answered: ${streamed.body.slice(0, 160)}`)
    t.same(JSON.parse(streamed.body), { body: 'first part,second part', length: null, type: 'application/octet-stream' }, 'the whole body, streamed')
    const sized = await client.send('/p/upload', { method: 'POST', headers: { 'content-type': 'text/plain', 'content-length': '11' }, body: ['hello', ' world'] })
    t.same(JSON.parse(sized.body), { body: 'hello world', length: '11', type: 'text/plain' }, 'a body of declared length')
  })

  test(`${name}: a careless target's hop-by-hop response fields never reach the client, and cannot crash the gateway`, async (t) => {
    const response = 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nKeep-Alive: timeout=77, max=3\r\nUpgrade: h2c\r\n' +
      'Proxy-Connection: keep-alive\r\nTE: gzip\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nTrailer: X-Checksum\r\nProxy-Authenticate: Basic\r\n' +
      'Connection: keep-alive, X-Private\r\nX-Private: 1\r\nX-Kept: yes\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n'
    const url = await rawServer(t, (socket) => {
      socket.write(response)
      socket.on('data', () => socket.write(response))
    })
    const { port } = await gateway(t, { targets: [{ id: 'careless', url }], stickiness: false })
    const client = open(port)
    t.teardown(client.close)
    for (let i = 0; i < 2; i++) {
      const res = await client.send(`/x${i}`)
      t.equal(res.status, 200)
      t.equal(res.body, 'ok')
      t.equal(res.headers['x-kept'], 'yes', 'end-to-end fields pass')
      for (const field of ['upgrade', 'proxy-connection', 'te', 'http2-settings', 'trailer', 'proxy-authenticate', 'x-private']) {
        t.equal(res.headers[field], undefined, `no ${field}`)
      }
      // The gateway's own HTTP/1.1 server may announce its keep-alive (Node 24 does): never the target's.
      t.notMatch(String(res.headers['keep-alive'] ?? ''), /timeout=77/, 'not the target\'s keep-alive')
    }
  })

  test(`${name}: a body the target cuts mid-way reaches the client as cut, never as complete`, async (t) => {
    const target = await startServer(t, (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' })
      res.write('x'.repeat(100))
      // The target dies mid-body.
      setTimeout(() => res.socket?.destroy(), 50)
    })
    const { port } = await gateway(t, { targets: [{ id: 't0', url: target.url }], stickiness: false })
    const client = open(port)
    t.teardown(client.close)
    const outcome = await client.send('/download').then((answer) => `complete: ${answer.body.length} bytes`, (err: Error) => `cut: ${err.message}`)
    t.match(outcome, /^cut: /, 'the client sees the body was cut')
  })

  test(`${name}: at the drain deadline an event stream ends cleanly and another unfinished body is cut`, async (t) => {
    const target = await startServer(t, (req, res) => {
      const events = req.url === '/events'
      res.writeHead(200, { 'content-type': events ? 'text/event-stream' : 'application/octet-stream' })
      const timer = setInterval(() => res.write(events ? 'data: tick\n\n' : 'x'.repeat(100)), 50)
      res.on('close', () => clearInterval(timer))
    })
    const { app, port } = await gateway(t, { targets: [{ id: 't0', url: target.url }], stickiness: false, deregistrationDelayMs: 400 })
    // Each on a connection of its own: an HTTP/1.1 client has one request at a time on each.
    const client = open(port)
    t.teardown(client.close)
    const other = open(port)
    t.teardown(other.close)
    const events = client.send('/events')
    const download = other.send('/download').then(() => 'complete', (err: Error) => `cut: ${err.message}`)
    await waitFor(() => app.targetGroups.get('g')?.describe().targets[0]?.inFlight === 2, 2000, 'both in flight')
    await app.targetGroups.get('g')?.deregister('t0')
    const ended = await events
    t.match(ended.body, /^(data: tick\n\n)+$/, 'the event stream ended complete, on a whole event')
    t.match(await download, /^cut: /, 'the download ended as cut')
  })

  test(`${name}: a client that left before an async handler forwarded costs the target nothing`, async (t) => {
    const targets = await startTargets(t, 1)
    let reached = false
    let gone = false
    let release!: () => void
    const gate = new Promise<void>((resolve) => { release = resolve })
    const { port } = await gateway(t, { targets: targetsOf(targets), stickiness: false }, {}, (app) => {
      app.get('/slow', { config: { targetGroup: 'g' } }, async (_request, reply) => {
        reached = true
        reply.raw.once('close', () => { gone = true })
        await gate
        return reply.forward()
      })
    })
    const client = open(port)
    t.teardown(client.close)
    const { cancel } = client.start('/slow')
    await waitFor(() => reached, 3000, 'the handler running')
    cancel()
    await waitFor(() => gone, 3000, 'the gateway seeing the client leave')
    release()
    const after = await client.send('/cart')
    t.equal(after.status, 200)
    t.equal(targets[0].hits, 1, `the target got the next request only, not the one given up (${targets[0].hits} hits)`)
  })

  test(`${name}: a refused connection is a 502 with the gateway's JSON error`, async (t) => {
    const { port } = await gateway(t, { targets: [{ id: 'gone', url: await refusedUrl() }], stickiness: false })
    const client = open(port)
    t.teardown(client.close)
    const res = await client.send('/cart')
    t.equal(res.status, 502)
    t.match(JSON.parse(res.body), { statusCode: 502, code: 'FST_STICKY_TARGET_CONNECTION_FAILED' })
  })

  test(`${name}: a client too slow with its body gets 408, with Connection: close only over HTTP/1.1`, async (t) => {
    const targets = await startTargets(t, 1)
    const { port } = await gateway(t, { targets: targetsOf(targets), stickiness: false }, { clientBodyTimeoutMs: 200 })
    const warnings: string[] = []
    const onWarning = (warning: Error): void => { warnings.push(warning.message) }
    process.on('warning', onWarning)
    t.teardown(() => process.off('warning', onWarning))
    const client = open(port)
    t.teardown(client.close)
    let release!: () => void
    const held = new Promise<void>((resolve) => { release = resolve })
    const answer = client.send('/p/upload', { method: 'POST', headers: { 'content-type': 'text/plain', 'content-length': '10' }, body: ['12345', '67890'], between: () => held })
    const res = await answer.finally(release)
    t.equal(res.status, 408)
    t.match(JSON.parse(res.body), { code: 'FST_STICKY_REQUEST_TIMEOUT' })
    if (split) {
      await new Promise((resolve) => setImmediate(resolve))
      t.same(warnings.filter((message) => /connection header/i.test(message)), [], 'no Connection field set on an HTTP/2 reply (Node drops it with a warning)')
    } else {
      t.equal(res.headers.connection, 'close')
    }
  })
}
