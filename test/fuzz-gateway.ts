import diagnosticsChannel from 'node:diagnostics_channel'
import { once } from 'node:events'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { connect, createServer as createNetServer, type AddressInfo, type Socket } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { stickyProxy, type FastifyStickyOptions } from '../lib/index.js'
import { buildGateway, listenOnLoopback, parseWireResponse, valuesOf, type WireResponse } from './setup.js'

// A real gateway for the end-to-end fuzz properties, reused across the cases of a property:
// two recording targets behind it, a forbidden server nothing may ever reach, and a raw client
// that writes request bytes exactly as generated.

/** The header the harness tags every request with, to tell which case a request at a target belongs to. */
export const CASE_HEADER = 'x-fuzz-case'
/** The tag of a request the gateway received without one: a client's second request in one write. */
export const PIPELINED = 'pipelined'
/** A request header whose value (base64 of a JSON array) the targets send back as Set-Cookie lines. */
export const SET_COOKIE_HEADER = 'x-fuzz-set-cookie'
/** Longest wait for the gateway's answer to one case; it answers in milliseconds, but the machine may be loaded. */
export const CASE_DEADLINE_MS = 5000

/** A request as a target got it. */
export interface TargetRecord {
  readonly target: string
  readonly method: string
  readonly url: string
  /** Names lower-cased, in order, repeats kept. */
  readonly headers: ReadonlyArray<readonly [string, string]>
  readonly tag: string | undefined
  readonly bodyBytes: number
}

/** A response read off a raw socket, names lower-cased. */
export type RawResponse = WireResponse

/** What came back for one request: a response, the connection closed without one, or nothing in time. */
export type Reply = { readonly kind: 'response', readonly response: RawResponse } | { readonly kind: 'closed', readonly data: string } | { readonly kind: 'timeout', readonly data: string }

interface Tap {
  teardown (fn: () => unknown): void
}

export { valuesOf }


/** One client connection to the gateway, writing bytes as given and reading one response at a time. */
class RawConnection {
  readonly socket: Socket
  #data: Buffer = Buffer.alloc(0)
  closed = false
  #wake: (() => void) | null = null

  constructor (port: number) {
    this.socket = connect(port, '127.0.0.1')
    this.socket.setNoDelay(true)
    this.socket.on('data', (chunk: Buffer) => {
      this.#data = Buffer.concat([this.#data, chunk])
      this.#wake?.()
    })
    this.socket.on('close', () => {
      this.closed = true
      this.#wake?.()
    })
    this.socket.on('error', () => {})
  }

  async read (method: string, deadlineMs: number): Promise<Reply> {
    const deadline = Date.now() + deadlineMs
    for (;;) {
      let parsed: ReturnType<typeof parseWireResponse>
      try {
        parsed = parseWireResponse(this.#data, this.closed, method)
      } catch {
        return { kind: 'closed', data: this.#data.toString('latin1') }
      }
      if (parsed !== null) {
        this.#data = parsed.rest
        return { kind: 'response', response: parsed.response }
      }
      if (this.closed) return { kind: 'closed', data: this.#data.toString('latin1') }
      const left = deadline - Date.now()
      if (left <= 0) return { kind: 'timeout', data: this.#data.toString('latin1') }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left)
        this.#wake = () => {
          clearTimeout(timer)
          this.#wake = null
          resolve()
        }
      })
    }
  }

  /** True when nothing more came after the last response: the connection can carry the next request. */
  get idle (): boolean {
    return !this.closed && this.#data.length === 0
  }

  destroy (): void {
    this.socket.destroy()
  }
}

/** A gateway over two recording targets, with a forbidden server beside them. */
export interface FuzzGateway {
  readonly app: FastifyInstance
  readonly port: number
  /** `127.0.0.1:<port>` of the gateway, of each target, of the forbidden server. */
  readonly address: string
  readonly targetAddresses: readonly string[]
  readonly forbiddenAddress: string
  /** Connections the forbidden server accepted: must stay 0. */
  readonly forbiddenConnections: () => number
  /** Every address the gateway's pools tried to connect to, once each. */
  readonly connectAttempts: string[]
  /** How many requests the targets got. */
  readonly recordCount: () => number
  /** Takes the requests the targets got with this tag (once: a long run keeps no history). */
  readonly take: (tag: number) => TargetRecord[]
  /** Requests a target got without a tag the harness or the gateway gave: smuggled in a body. */
  readonly untagged: TargetRecord[]
  /** Requests a client pipelined, which the gateway received and tagged. */
  readonly pipelined: TargetRecord[]
  /** Requests the gateway is working on (between onRequest and the response or the client's abort). */
  readonly inflight: () => number
  /** Writes `bytes` (on the kept connection when `reuse`, else a new one), half-closes when `end`, and reads one reply. */
  send (bytes: Buffer, options: { method: string, reuse: boolean, end: boolean }): Promise<Reply>
  /** Waits (up to a second) until the gateway works on no request: whatever a case sent has reached the targets by then. */
  settle (): Promise<void>
}

/** Options of the gateway: `cookiePrefix`, and the plugin's others. */
export async function fuzzGateway (t: Tap, options: Partial<FastifyStickyOptions> = {}): Promise<FuzzGateway> {
  const byTag = new Map<string, TargetRecord[]>()
  const untagged: TargetRecord[] = []
  const pipelined: TargetRecord[] = []
  let recordCount = 0
  const record = (entry: TargetRecord): void => {
    recordCount++
    if (entry.tag === PIPELINED) pipelined.push(entry)
    else if (entry.tag === undefined || !/^\d+$/.test(entry.tag)) untagged.push(entry)
    else byTag.set(entry.tag, [...(byTag.get(entry.tag) ?? []), entry])
  }
  const targetAddresses: string[] = []
  const targets: Array<{ id: string, url: string }> = []
  for (const id of ['t0', 't1']) {
    const server = createServer({ maxHeaderSize: 256 * 1024 }, (req: IncomingMessage, res: ServerResponse) => {
      const headers: Array<[string, string]> = []
      for (let i = 0; i < req.rawHeaders.length; i += 2) headers.push([req.rawHeaders[i].toLowerCase(), req.rawHeaders[i + 1]])
      let bodyBytes = 0
      req.on('data', (chunk: Buffer) => { bodyBytes += chunk.length })
      req.on('end', () => {
        const tag = valuesOf(headers, CASE_HEADER)[0]
        record({ target: id, method: req.method ?? '', url: req.url ?? '', headers, tag, bodyBytes })
        const setCookie = valuesOf(headers, SET_COOKIE_HEADER)[0]
        if (setCookie !== undefined) {
          // Lines Node refuses to write (controls) are left out: the target's own bug, not the gateway's.
          try {
            res.setHeader('set-cookie', JSON.parse(Buffer.from(setCookie, 'base64').toString('utf8')) as string[])
          } catch {}
        }
        res.setHeader('x-served-by', id)
        res.setHeader('content-type', 'application/json')
        res.end(JSON.stringify({ target: id, url: req.url }))
      })
    })
    server.keepAliveTimeout = 60_000
    const address = `127.0.0.1:${await listenOnLoopback(t, server)}`
    targetAddresses.push(address)
    targets.push({ id, url: `http://${address}` })
  }

  let forbiddenConnections = 0
  const forbiddenSockets = new Set<Socket>()
  const forbidden = createNetServer((socket) => {
    forbiddenConnections++
    forbiddenSockets.add(socket)
    socket.on('close', () => forbiddenSockets.delete(socket))
    socket.on('error', () => {})
    socket.end('HTTP/1.1 418 Forbidden Server\r\ncontent-length: 0\r\nconnection: close\r\n\r\n')
  })
  forbidden.listen(0, '127.0.0.1')
  await once(forbidden, 'listening')
  t.teardown(() => {
    for (const socket of forbiddenSockets) socket.destroy()
    return new Promise((resolve) => forbidden.close(resolve))
  })
  const forbiddenAddress = `127.0.0.1:${(forbidden.address() as AddressInfo).port}`

  // Every connection the gateway's undici pools open is announced here, before connecting.
  const connectAttempts: string[] = []
  const onConnect = (message: unknown): void => {
    const { hostname, port } = (message as { connectParams: { hostname: string, port: string | number } }).connectParams
    const address = `${hostname}:${port}`
    if (!connectAttempts.includes(address)) connectAttempts.push(address)
  }
  diagnosticsChannel.subscribe('undici:client:beforeConnect', onConnect)
  t.teardown(() => diagnosticsChannel.unsubscribe('undici:client:beforeConnect', onConnect))

  const app = await buildGateway(t, {
    targetGroups: [{ name: 'g', targets, stickiness: { type: 'lb_cookie', durationSeconds: 3600 } }],
    clientBodyTimeoutMs: 1000,
    ...options
  })
  // Until the response is written, or the connection closed before it (Fastify runs no hook then).
  const inflight = new Set<string>()
  app.addHook('onRequest', async (request, reply) => {
    // A request the client pipelined in a body (its framing broken on purpose) is the client's
    // own: tagged here, so an untagged one at a target is one the gateway never received.
    if (request.raw.headers[CASE_HEADER] === undefined) request.raw.headers[CASE_HEADER] = PIPELINED
    inflight.add(request.id)
    reply.raw.once('close', () => inflight.delete(request.id))
  })
  // What the target group decided, for the properties that compare two requests.
  app.addHook('onSend', async (request, reply) => {
    const affinity = request.affinity
    if (affinity !== null) reply.header('x-affinity', affinity.outcome === 'reassigned' ? `reassigned;${affinity.reason}` : affinity.outcome)
  })
  // A user route that forwards whatever it gets, one with app-cookie stickiness, and a whole
  // prefix mounted with a rewrite.
  app.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  app.all('/app/*', { config: { targetGroup: 'g', stickiness: { type: 'app_cookie', cookieName: 'sid', durationSeconds: 3600 } } }, (_request, reply) => reply.forward())
  await app.register(stickyProxy, { prefix: '/p', targetGroup: 'g', rewritePrefix: '/r' })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as AddressInfo).port

  let kept: RawConnection | null = null
  t.teardown(() => kept?.destroy())
  return {
    app,
    port,
    address: `127.0.0.1:${port}`,
    targetAddresses,
    forbiddenAddress,
    forbiddenConnections: () => forbiddenConnections,
    connectAttempts,
    recordCount: () => recordCount,
    take (tag) {
      const records = byTag.get(String(tag)) ?? []
      byTag.delete(String(tag))
      return records
    },
    untagged,
    pipelined,
    inflight: () => inflight.size,
    async send (bytes, { method, reuse, end }) {
      let connection = reuse && kept !== null && kept.idle ? kept : null
      if (connection === null) {
        kept?.destroy()
        connection = new RawConnection(port)
        await once(connection.socket, 'connect')
      }
      kept = connection
      connection.socket.write(bytes)
      if (end) connection.socket.end()
      const reply = await connection.read(method, CASE_DEADLINE_MS)
      const closes = reply.kind !== 'response' || valuesOf(reply.response.headers, 'connection').some((value) => /close/i.test(value))
      if (!reuse || closes) {
        connection.destroy()
        kept = null
      }
      return reply
    },
    async settle () {
      const deadline = Date.now() + 1000
      while (inflight.size > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5))
    }
  }
}
