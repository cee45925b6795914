import { once } from 'node:events'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Server as HttpsServer } from 'node:https'
import { createConnection, createServer as createNetServer, type AddressInfo, type Socket } from 'node:net'
import diagnosticsChannel from 'node:diagnostics_channel'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import fastifySticky, { TARGET_HEALTH_CHANNEL, type FastifyStickyOptions, type TargetHealthChange } from '../lib/index.js'

/** What a test target answers: who it is and what it saw. */
export interface Echo {
  target: string
  method: string
  url: string
  headers: Record<string, string | string[] | undefined>
  body: string
}

export interface TestTarget {
  id: string
  url: string
  server: Server
  hits: number
  /** Requests whose connection the gateway closed before this target answered. */
  abandoned: number
  /** Answers every request held on `/hold` (200). */
  release (): void
  /** Stops listening and drops every connection: requests to it are then refused. */
  stop (): Promise<void>
  /** Listens again on the same port. */
  start (): Promise<void>
}

interface Tap {
  teardown (fn: () => unknown): void
}

/**
 * Starts `count` real HTTP servers on 127.0.0.1, ids `t0`, `t1`, …. Each echoes what it got as
 * JSON with `x-served-by: <id>`. Paths: `/status/<code>` answers that code, `/hang` never
 * answers, `/hold` answers when the test calls `release()`, `/sleep/<ms>` answers after that
 * long, `/big-headers` sends 40 KB of headers. `…/login` sets an app session cookie
 * `sid=<id>.<n>; Path=/; HttpOnly`; `…/logout` deletes it with `Max-Age=0`, `…/logout-expires`
 * with a past `Expires`.
 */
export async function startTargets (t: Tap, count: number, prefix = 't'): Promise<TestTarget[]> {
  const targets: TestTarget[] = []
  for (let i = 0; i < count; i++) targets.push(await startTarget(`${prefix}${i}`))
  t.teardown(() => Promise.all(targets.map((target) => target.stop())))
  return targets
}

async function startTarget (id: string): Promise<TestTarget> {
  const hanging = new Set<ServerResponse>()
  const held = new Set<() => void>()
  let sessions = 0
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    target.hits++
    res.on('close', () => { if (!res.writableFinished) target.abandoned++ })
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      const url = req.url ?? '/'
      if (url === '/hang') {
        hanging.add(res)
        res.on('close', () => hanging.delete(res))
        return
      }
      const sleep = /^\/sleep\/(\d+)/.exec(url)
      const status = /^\/status\/(\d+)/.exec(url)
      const echo: Echo = { target: id, method: req.method ?? '', url, headers: req.headers, body: Buffer.concat(chunks).toString() }
      const send = () => {
        if (url === '/big-headers') res.setHeader('x-big', 'x'.repeat(40_000))
        res.setHeader('x-served-by', id)
        res.setHeader('content-type', 'application/json')
        if (url.startsWith('/set-cookie')) res.setHeader('set-cookie', ['app=1; Path=/', 'other=2; Path=/'])
        if (url.endsWith('/login')) res.setHeader('set-cookie', `sid=${id}.${++sessions}; Path=/; HttpOnly`)
        if (url.endsWith('/logout')) res.setHeader('set-cookie', 'sid=; Max-Age=0; Path=/')
        if (url.endsWith('/logout-expires')) res.setHeader('set-cookie', 'sid=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/')
        res.statusCode = status === null ? 200 : Number(status[1])
        res.end(JSON.stringify(echo))
      }
      if (url === '/hold') {
        held.add(send)
        res.on('close', () => held.delete(send))
      } else if (sleep === null) {
        send()
      } else {
        setTimeout(send, Number(sleep[1]))
      }
    })
  }
  let server = createServer({ maxHeaderSize: 65_536 }, handler)
  server.keepAliveTimeout = 30_000
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as AddressInfo).port
  const target: TestTarget = {
    id,
    url: `http://127.0.0.1:${port}`,
    get server () { return server },
    hits: 0,
    abandoned: 0,
    release () {
      for (const send of held) send()
      held.clear()
    },
    async stop () {
      if (!server.listening) return
      for (const res of hanging) res.destroy()
      const closed = once(server, 'close')
      server.close()
      server.closeAllConnections()
      await closed
    },
    async start () {
      if (server.listening) return
      server = createServer({ maxHeaderSize: 65_536 }, handler)
      server.keepAliveTimeout = 30_000
      server.listen(port, '127.0.0.1')
      await once(server, 'listening')
    }
  }
  return target
}

/** A 32-byte key as 64 hex characters, fixed so tests are repeatable. */
export const TEST_KEY = 'a1'.repeat(32)
export const OTHER_KEY = 'b2'.repeat(32)

/** A real Fastify with the plugin registered; closed by the test's teardown. */
export async function buildGateway (t: Tap, options: FastifyStickyOptions, serverOptions: FastifyServerOptions = {}): Promise<FastifyInstance> {
  const app = Fastify(serverOptions)
  t.teardown(() => app.close())
  await app.register(fastifySticky, { keys: [TEST_KEY], ...options })
  return app
}

/**
 * A browser's cookie jar, reduced to what the tests need: name → value, from Set-Cookie lines.
 * It judges `Expires` by `now`: a test that gives the gateway a clock gives the jar the same one,
 * or the jar would drop the gateway's cookies once the real date passes the test's.
 */
export class CookieJar {
  readonly cookies = new Map<string, string>()
  readonly #now: () => number

  constructor (now: () => number = Date.now) {
    this.#now = now
  }

  /** Stores every cookie of a response's `set-cookie` header; one with `Max-Age` ≤ 0 or an `Expires` not after the clock's now is dropped, as a browser does. */
  store (setCookie: string | string[] | undefined): void {
    if (setCookie === undefined) return
    for (const line of Array.isArray(setCookie) ? setCookie : [setCookie]) {
      const [pair, ...attributes] = line.split(';')
      const at = pair.indexOf('=')
      const name = pair.slice(0, at).trim()
      const maxAge = attributes.find((attribute) => /^\s*max-age=/i.test(attribute))
      const expires = attributes.find((attribute) => /^\s*expires=/i.test(attribute))
      const gone = maxAge !== undefined ? Number(maxAge.split('=')[1]) <= 0 : expires !== undefined && Date.parse(expires.split('=')[1]) <= this.#now()
      if (gone) this.cookies.delete(name)
      else this.cookies.set(name, pair.slice(at + 1).trim())
    }
  }

  /** The request headers a browser would send: `{ cookie }`, or none when the jar is empty. */
  headers (): Record<string, string> {
    if (this.cookies.size === 0) return {}
    return { cookie: [...this.cookies].map(([name, value]) => `${name}=${value}`).join('; ') }
  }
}

/** Parses a response body as the test targets' echo. */
export function echoOf (res: { body: string }): Echo {
  return JSON.parse(res.body) as Echo
}

/** Polls `check` until it returns true or `timeoutMs` passes. */
export async function waitFor (check: () => boolean | Promise<boolean>, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

/** Copies each bound request's decision into an `x-affinity` header: `hit`, `new`, `reassigned;<reason>`, `unavailable`. */
export function exposeAffinity (app: FastifyInstance): void {
  app.addHook('onSend', async (request, reply) => {
    const affinity = request.affinity
    if (affinity !== null) reply.header('x-affinity', affinity.outcome === 'reassigned' ? `reassigned;${affinity.reason}` : affinity.outcome)
  })
}

/** Calls `onChange` with every message on the target-health channel of one group until the test ends. */
export function onHealthChange (t: Tap, group: string, onChange: (change: TargetHealthChange) => void): void {
  const listen = (message: unknown): void => {
    const change = message as TargetHealthChange
    if (change.targetGroup === group) onChange(change)
  }
  diagnosticsChannel.subscribe(TARGET_HEALTH_CHANNEL, listen)
  t.teardown(() => diagnosticsChannel.unsubscribe(TARGET_HEALTH_CHANNEL, listen))
}

/** The messages of one group on the target-health channel (of the given kinds), collected until the test ends. */
export function recordHealthChanges (t: Tap, group: string, kinds: ReadonlyArray<TargetHealthChange['change']> = ['state', 'ejected', 'returned']): TargetHealthChange[] {
  const changes: TargetHealthChange[] = []
  onHealthChange(t, group, (change) => { if (kinds.includes(change.change)) changes.push(change) })
  return changes
}

/**
 * Puts an HTTP or HTTPS server on an ephemeral port of 127.0.0.1, closed (with its connections)
 * by the test's teardown; resolves to the port.
 */
export async function listenOnLoopback (t: Tap, server: Server | HttpsServer): Promise<number> {
  t.teardown(() => {
    const closed = once(server, 'close')
    server.close()
    server.closeAllConnections()
    return closed
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return (server.address() as AddressInfo).port
}

/** A real loopback HTTP server with a custom handler, closed (with its connections) by the test's teardown. */
export async function startServer (t: Tap, handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ server: Server, url: string }> {
  const server = createServer({ maxHeaderSize: 65_536 }, handler)
  const port = await listenOnLoopback(t, server)
  return { server, url: `http://127.0.0.1:${port}` }
}

/** A raw TCP target on 127.0.0.1: `onRequest` gets each connection's socket at its first request bytes. */
export async function rawServer (t: Tap, onRequest: (socket: Socket, data: Buffer) => void): Promise<string> {
  const sockets = new Set<Socket>()
  const server = createNetServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    socket.once('data', (data: Buffer) => onRequest(socket, data))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => {
    for (const socket of sockets) socket.destroy()
    return new Promise((resolve) => server.close(resolve))
  })
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

/** A raw TCP target that answers every request with `response` (then closes, when asked). */
export async function rawTarget (t: Tap, response: string, close = false): Promise<string> {
  return rawServer(t, (socket) => {
    socket.write(response)
    if (close) socket.destroy()
  })
}

/** A response as read from a raw socket: status, headers by lower-case name (repeated ones as arrays), body as text. */
export interface RawResponse {
  status: number
  headers: Record<string, string | string[]>
  body: string
}

/**
 * Writes `request` to the server at `port` exactly as given (no client library normalises the
 * request line or the headers) and reads until the server closes the connection, or until
 * `timeoutMs` passes; a connection closed without a response gives status 0. Send
 * `Connection: close` with requests the server would otherwise keep open.
 */
export async function rawRequest (port: number, request: string, timeoutMs = 5000): Promise<RawResponse> {
  const socket = createConnection(port, '127.0.0.1')
  socket.on('error', () => {})
  const chunks: Buffer[] = []
  socket.on('data', (chunk: Buffer) => chunks.push(chunk))
  const timer = setTimeout(() => socket.destroy(), timeoutMs)
  socket.write(request)
  await once(socket, 'close')
  clearTimeout(timer)
  const text = Buffer.concat(chunks).toString('latin1')
  const headEnd = text.indexOf('\r\n\r\n')
  const lines = (headEnd === -1 ? text : text.slice(0, headEnd)).split('\r\n')
  const headers: Record<string, string | string[]> = {}
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':')
    if (colon === -1) continue
    const name = line.slice(0, colon).trim().toLowerCase()
    const value = line.slice(colon + 1).trim()
    const existing = headers[name]
    headers[name] = existing === undefined ? value : Array.isArray(existing) ? [...existing, value] : [existing, value]
  }
  return {
    status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0])?.[1] ?? 0),
    headers,
    body: headEnd === -1 ? '' : text.slice(headEnd + 4)
  }
}

/** An address where nothing listens: connections to it are refused. */
export async function refusedUrl (): Promise<string> {
  const server = createNetServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as AddressInfo).port
  await new Promise((resolve) => server.close(resolve))
  return `http://127.0.0.1:${port}`
}

/**
 * Writes `bytes` to the gateway at `port` on a raw socket (no client library to rewrite a
 * header) and resolves with everything it answered once it closes the connection: end the last
 * request with `Connection: close`. Rejects after `timeoutMs`.
 */
export async function rawExchange (port: number, bytes: string, host = '127.0.0.1', timeoutMs = 3000): Promise<string> {
  const socket = createConnection(port, host)
  const chunks: Buffer[] = []
  socket.on('data', (chunk: Buffer) => chunks.push(chunk))
  const timer = setTimeout(() => socket.destroy(new Error(`no close within ${timeoutMs} ms; got ${JSON.stringify(Buffer.concat(chunks).toString('latin1'))}`)), timeoutMs)
  try {
    socket.write(bytes)
    await once(socket, 'close')
  } finally {
    clearTimeout(timer)
  }
  return Buffer.concat(chunks).toString('latin1')
}

/** The responses in what `rawExchange` returned, in order: status, head (status line and headers) and body (by Content-Length). */
export function parseRawResponses (text: string): Array<{ status: number, head: string, body: string }> {
  const responses: Array<{ status: number, head: string, body: string }> = []
  let at = 0
  while (at < text.length) {
    const end = text.indexOf('\r\n\r\n', at)
    if (end === -1) throw new Error(`an incomplete response: ${JSON.stringify(text.slice(at))}`)
    const head = text.slice(at, end)
    const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0)
    responses.push({ status: Number(head.slice(9, 12)), head, body: text.slice(end + 4, end + 4 + length) })
    at = end + 4 + length
  }
  return responses
}

/** A response read off a raw socket, names lower-cased. */
export interface WireResponse {
  readonly status: number
  readonly headers: ReadonlyArray<readonly [string, string]>
  readonly body: Buffer
}

/** All values of header `name` in `headers`. */
export function valuesOf (headers: ReadonlyArray<readonly [string, string]>, name: string): string[] {
  return headers.filter(([key]) => key === name).map(([, value]) => value)
}

/**
 * Parses one HTTP/1.x response from `data` (1xx interim ones skipped; no body for HEAD, 204 and
 * 304); null while incomplete. Throws on bytes that are no response.
 */
export function parseWireResponse (data: Buffer, closed: boolean, method = 'GET'): { response: WireResponse, rest: Buffer } | null {
  let offset = 0
  for (;;) {
    const end = data.indexOf('\r\n\r\n', offset)
    if (end === -1) return null
    const lines = data.subarray(offset, end).toString('latin1').split('\r\n')
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0])?.[1])
    if (Number.isNaN(status)) throw new Error(`not an HTTP response: ${JSON.stringify(lines[0])}`)
    const headers = lines.slice(1).map((line): [string, string] => {
      const colon = line.indexOf(':')
      return [line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()]
    })
    const bodyAt = end + 4
    if (status >= 100 && status < 200) {
      offset = bodyAt
      continue
    }
    if (method === 'HEAD' || status === 204 || status === 304) return { response: { status, headers, body: Buffer.alloc(0) }, rest: data.subarray(bodyAt) }
    const length = valuesOf(headers, 'content-length')[0]
    if (length !== undefined) {
      const stop = bodyAt + Number(length)
      if (data.length < stop) return null
      return { response: { status, headers, body: data.subarray(bodyAt, stop) }, rest: data.subarray(stop) }
    }
    if (valuesOf(headers, 'transfer-encoding').some((value) => /chunked/i.test(value))) {
      const parts: Buffer[] = []
      let at = bodyAt
      for (;;) {
        const lineEnd = data.indexOf('\r\n', at)
        if (lineEnd === -1) return null
        const size = parseInt(data.subarray(at, lineEnd).toString('latin1'), 16)
        if (size === 0) {
          const trailerEnd = data.indexOf('\r\n\r\n', lineEnd)
          if (trailerEnd === -1) return null
          return { response: { status, headers, body: Buffer.concat(parts) }, rest: data.subarray(trailerEnd + 4) }
        }
        if (data.length < lineEnd + 2 + size + 2) return null
        parts.push(data.subarray(lineEnd + 2, lineEnd + 2 + size))
        at = lineEnd + 2 + size + 2
      }
    }
    if (!closed) return null
    return { response: { status, headers, body: data.subarray(bodyAt) }, rest: Buffer.alloc(0) }
  }
}
