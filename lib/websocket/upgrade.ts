import { ServerResponse, type IncomingHttpHeaders, type IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import type { FastifyInstance } from 'fastify'

/** Most bytes a client may send after its upgrade request before the target's 101: past it, the connection is dropped. */
const MAX_EARLY_BYTES = 65_536

/**
 * An upgrade request's socket, and the bytes that came after its headers until it is answered.
 * The socket is read meanwhile, so a client that leaves is seen at once.
 */
export class PendingUpgrade {
  #early: Buffer[] = []
  #earlyBytes = 0
  readonly #collect = (chunk: Buffer): void => {
    this.#earlyBytes += chunk.length
    if (this.#earlyBytes > MAX_EARLY_BYTES) this.socket.destroy()
    else this.#early.push(chunk)
  }

  /** A client that ends its side before the 101 has given up (the server's sockets allow half-open ones). */
  readonly #gone = (): void => { this.socket.destroy() }

  constructor (readonly socket: Socket, head: Buffer) {
    if (head.length > 0) this.#collect(head)
    socket.on('data', this.#collect)
    socket.on('end', this.#gone)
  }

  /** Stops collecting: the bytes that came so far, for the target. */
  takeEarly (): Buffer {
    this.socket.off('data', this.#collect)
    this.socket.off('end', this.#gone)
    const early = this.#early
    this.#early = []
    return early.length === 1 ? early[0] : Buffer.concat(early)
  }
}

/** Set on a request of a route whose `config.websocket` is true (its config as Fastify keeps it may not show it). */
export const kWebSocketRoute = Symbol('fastify-sticky.webSocketRoute')

/** How long the client has to read a refusal (a non-101 answer) before its socket is destroyed. */
const REFUSAL_LINGER_MS = 1000

const pending = new WeakMap<IncomingMessage, PendingUpgrade>()

/** The socket and leftover bytes of a request that came with `Upgrade`; undefined for any other request. */
export function upgradeOf (raw: IncomingMessage): PendingUpgrade | undefined {
  return pending.get(raw)
}

/** One upgrade listener per server, shared by every fastify-sticky plugin registered on it. */
interface SharedListener {
  readonly owners: Set<(raw: IncomingMessage) => boolean>
  readonly stop: () => void
}
const listeners = new WeakMap<object, SharedListener>()

/**
 * Takes the server's upgrade requests through Fastify's router, so that the route's hooks
 * (the affinity among them) and handler run as for any request: the handler's
 * `reply.forward()` then tunnels the connection, or its reply (an error, a refusal) is written
 * to the socket, which is closed after it. Node only fires 'upgrade' while someone listens; with
 * another listener on the server (e.g. @fastify/websocket), only the requests `owns` claims
 * are taken. Returns a function that stops listening.
 */
export function listenForUpgrades (fastify: FastifyInstance, owns: (raw: IncomingMessage) => boolean): () => void {
  const server = fastify.server
  let shared = listeners.get(server)
  if (shared === undefined) {
    const owners = new Set<(raw: IncomingMessage) => boolean>()
    const onUpgrade = (raw: IncomingMessage, socket: Socket, head: Buffer): void => {
      if (server.listenerCount('upgrade') > 1 && !claimed(owners, raw)) return
      route(fastify, raw, socket, head)
    }
    server.on('upgrade', onUpgrade)
    shared = { owners, stop: () => { server.off('upgrade', onUpgrade) } }
    listeners.set(server, shared)
  }
  const { owners, stop } = shared
  owners.add(owns)
  return () => {
    owners.delete(owns)
    if (owners.size > 0) return
    stop()
    listeners.delete(server)
  }
}

function claimed (owners: Set<(raw: IncomingMessage) => boolean>, raw: IncomingMessage): boolean {
  for (const owns of owners) if (owns(raw)) return true
  return false
}

function route (fastify: FastifyInstance, raw: IncomingMessage, socket: Socket, head: Buffer): void {
  // Only a WebSocket handshake waits for a 101 (an `h2c` upgrade, say, is served as a plain request).
  if (asksForWebSocket(raw.headers)) pending.set(raw, new PendingUpgrade(socket, head))
  const res = new ServerResponse(raw)
  // The connection ends with this answer: Node parses nothing more after an upgrade request.
  res.shouldKeepAlive = false
  res.assignSocket(socket)
  socket.on('error', noop)
  res.on('finish', () => {
    socket.end()
    const linger = setTimeout(() => socket.destroy(), REFUSAL_LINGER_MS)
    linger.unref()
    socket.once('close', () => clearTimeout(linger))
  })
  fastify.routing(raw, res)
}

/** Why an upgrade request is no WebSocket handshake the gateway passes on (RFC 6455 §4.2.1); null when it is one. */
export type HandshakeFault = 'invalid' | 'version' | null

const WEBSOCKET_KEY = /^[A-Za-z0-9+/]{21}[AQgw]==$/

/** Checks the WebSocket handshake fields of an upgrade request: a 16-byte base64 key, version 13, GET with no body. */
export function checkHandshake (method: string, headers: IncomingHttpHeaders): HandshakeFault {
  const key = headers['sec-websocket-key']
  if (method !== 'GET' || typeof key !== 'string' || !WEBSOCKET_KEY.test(key.trim())) return 'invalid'
  if ((headers['content-length'] !== undefined && headers['content-length'] !== '0') || headers['transfer-encoding'] !== undefined) return 'invalid'
  return headers['sec-websocket-version']?.trim() === '13' ? null : 'version'
}

/** True when the request asks to become a WebSocket (`Upgrade: websocket`, whatever the case; other protocols may be listed too). */
export function asksForWebSocket (headers: IncomingHttpHeaders): boolean {
  const upgrade = headers.upgrade
  if (upgrade === undefined) return false
  for (const token of upgrade.split(',')) if (token.trim().toLowerCase() === 'websocket') return true
  return false
}

function noop (): void {}
