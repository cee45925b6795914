import { validateHeaderName, validateHeaderValue, type IncomingHttpHeaders } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { constants as http2Constants } from 'node:http2'
import type { TLSSocket } from 'node:tls'
import { AsyncResource } from 'node:async_hooks'
import { performance } from 'node:perf_hooks'
import { Readable } from 'node:stream'
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import type { Dispatcher } from 'undici'
import {
  FST_STICKY_FORWARDED_FOR_TOO_LONG,
  FST_STICKY_REQUEST_INVALID,
  FST_STICKY_REQUEST_TIMEOUT,
  FST_STICKY_ROUTE_UNBOUND,
  FST_STICKY_TARGET_CONNECT_TIMEOUT,
  FST_STICKY_TARGET_CONNECTION_FAILED,
  FST_STICKY_TARGET_DEREGISTERED,
  FST_STICKY_TARGET_GROUP_UNAVAILABLE,
  FST_STICKY_TARGET_RESPONSE_INVALID,
  FST_STICKY_TARGET_TIMEOUT,
  FST_STICKY_TARGET_TLS_FAILED,
  FST_STICKY_TARGET_WEBSOCKET_LIMIT,
  FST_STICKY_WEBSOCKET_HANDSHAKE_INVALID,
  FST_STICKY_WEBSOCKET_NOT_ALLOWED,
  FST_STICKY_WEBSOCKET_VERSION_UNSUPPORTED
} from './errors.js'
import { PeerTrust } from './client-address.js'
import { queryOf, type ReplyForwardOptions } from './forward-options.js'
import { DeadlineList, type Timed } from './deadlines.js'
import { encodeRequestTarget, originFormOf, refusesPath } from './request-target.js'
import { GatewayCookieNames, privateCacheControl, stripGatewayCookies } from './gateway-cookies.js'
import type { GroupForward } from './group-forward.js'
import { DEFAULT_HANDOFF_REASON_HEADER, DEFAULT_PREVIOUS_TARGET_HEADER, type ResolvedHandoffHeaders } from './options.js'
import { pinsClients } from './stickiness/source.js'
import { choose, decisionHeaderValue } from './stickiness/affinity.js'
import { OUTCOME_5XX, OUTCOME_GATEWAY, OUTCOME_OK, POOL_REPLACED, type Target, type TargetRequest } from './target.js'
import { isTlsFailure } from './target-tls.js'
import type { AffinityDecision } from './types.js'
import { Tunnel } from './websocket/tunnel.js'
import { checkHandshake, kWebSocketRoute, upgradeOf, type PendingUpgrade } from './websocket/upgrade.js'

/** The proxy's share of the resolved options. */
export interface ProxySettings {
  readonly idleTimeoutMs: number
  readonly connectTimeoutMs: number
  readonly redispatch: boolean
  readonly redispatchIdempotent: boolean
  readonly requestBufferBytes: number
  readonly clientBodyTimeoutMs: number
  readonly xForwardedFor: 'append' | 'preserve' | 'remove'
  /** Whose X-Forwarded-* and Forwarded headers are believed, asked once per connection with the peer's address and 0; null: nobody's. */
  readonly trustedProxies: ((address: string, hop: number) => boolean) | null
  /** Send the gateway's own cookies (`<cookiePrefix>AWSALB…`) on to the target too. */
  readonly forwardStickyCookies: boolean
  readonly cookiePrefix: string
  /** The decision header's name (`exposeDecision`); null when off. */
  readonly exposeDecision: string | null
  /** The hand-off headers' names; null when off. */
  readonly handoffHeaders: ResolvedHandoffHeaders | null
}

/** ALB answers 463 when X-Forwarded-For carries more addresses than this. */
export const MAX_FORWARDED_FOR_ADDRESSES = 30

/**
 * Responses with a Content-Type and a Content-Length up to this size are collected and sent in
 * one write (no stream per response); larger, unsized or untyped ones stream through.
 */
export const BUFFERED_RESPONSE_BYTES = 65_536

/** How far a streamed response may run ahead of a slow client before the target is paused. */
const STREAMED_RESPONSE_AHEAD_BYTES = 65_536

/** Request headers that belong to one connection (RFC 9110 §7.6.1) or that undici refuses. */
const HOP_BY_HOP_REQUEST = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade',
  'proxy-authorization', 'http2-settings', 'expect',
  'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-port'
])
/** The same, and the forwarding headers only a trusted peer may send on: from anyone else they are not passed. */
const UNTRUSTED_REQUEST = new Set([...HOP_BY_HOP_REQUEST, 'x-forwarded-host', 'forwarded'])
/** Also every field an HTTP/2 response may not carry (RFC 9113 §8.2.2), which Node throws on: `http2-settings` only ever belongs to a request. */
const HOP_BY_HOP_RESPONSE = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade',
  'proxy-authenticate', 'http2-settings'
])

/** The response fields a shared cache obeys: Cache-Control, and the one CDNs read in its place (RFC 9213). */
const CACHE_CONTROL_FIELDS = ['cache-control', 'cdn-cache-control']

/** A request body as undici gets it: none, in memory, or the client's stream behind the part that already came. */
type Body = string | Buffer | StreamedBody | undefined

/** A connection the target reset or closed before any response byte: an idempotent request may go to another target. */
const RESET = new Set(['UND_ERR_SOCKET', 'ECONNRESET', 'EPIPE'])

/** The request itself cannot go (or the client was too slow): never sent again, never the target's fault. */
const REQUEST_FAULTS = new Set(['UND_ERR_INVALID_ARG', 'UND_ERR_NOT_SUPPORTED', 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH', 'UND_ERR_ABORTED',
  'FST_STICKY_REQUEST_TIMEOUT'])

/** Errors caused by the request or by the gateway itself (deregistration, a replaced pool, a target taken away), not by the target: passive checks ignore them. */
const CLIENT_FAULTS = new Set([...REQUEST_FAULTS, 'UND_ERR_CLOSED', 'UND_ERR_DESTROYED', 'FST_STICKY_TARGET_DEREGISTERED', POOL_REPLACED, 'FST_STICKY_TARGET_GONE'])

/**
 * The gateway itself ended the target's request: its deregistration delay ran out, the app
 * closes, or its pool was replaced. A server-sent event stream cut so is ended cleanly instead
 * (see `isEventStream`).
 */
const GATEWAY_ENDED = new Set(['FST_STICKY_TARGET_DEREGISTERED', 'UND_ERR_DESTROYED', POOL_REPLACED])

/** Methods that are idempotent by definition (RFC 9110 §9.2.2) and safe to send to a second target; TRACE is never forwarded that far. */
const IDEMPOTENT_METHODS = new Set(['GET', 'HEAD', 'OPTIONS'])

/** Ends a request that waited in a target's queue when that target went away: nothing of it was sent. */
const TARGET_GONE = Object.assign(new Error('the target went away before the request was sent'), { code: 'FST_STICKY_TARGET_GONE' })

/**
 * Where an exchange is: receiving the client's body (before any target), waiting for a
 * connection in the target's queue, waiting for the target's headers, collecting a small
 * response body, streaming one, or finished.
 */
type Phase = 'receiving' | 'queued' | 'waiting' | 'buffering' | 'streaming' | 'done'

/**
 * One forwarded request, and the undici dispatch handler of its request to the target: the
 * target's response goes to the client without a stream per response when it is small.
 * When the client goes away, the target's request is aborted too, instead of holding a pooled
 * connection until the idle timeout. Its deadline counts from when the gateway had the request
 * (headers, or the whole body when it is buffered): waiting for a connection, connecting and
 * waiting for the response all count.
 */
class Exchange extends AsyncResource implements Dispatcher.DispatchHandler, TargetRequest, Timed {
  target!: Target
  body: Body = undefined
  redispatched = false
  /** Sent again on the same target after its pool was replaced. */
  resent = false
  /** The client closed its connection before the response was complete. */
  clientGone = false
  phase: Phase = 'receiving'
  /** undici began writing the request (onConnect): from here on, it may have reached the target. */
  connected = false
  /** It waited in the target's queue for a connection: a timeout is then not the target's fault alone. */
  waited = false
  /** A WebSocket upgrade: the client's socket, tunnelled to the target's once it answers 101. */
  upgrade: PendingUpgrade | null = null
  /** The deadline for the target's response headers, for the 504's message. */
  timeoutMs = 0
  /** The method sent to the target (reply.forward()'s `method`, or the request's). */
  method = ''
  /** Milliseconds the target has for its response headers: the plugin's idleTimeoutMs, or less by reply.forward()'s `timeout`. */
  responseTimeoutMs: number
  #options: ReplyForwardOptions | null = null
  /** The target whose outstanding count this exchange holds, until its response ends. */
  #counted: Target | null = null
  /** The target whose connection (or place in undici's queue) this exchange holds, until undici ends its request. */
  #dispatched: Target | null = null
  #inDispatch = false
  #failedInDispatch = false
  // Its place in the proxy's DeadlineList.
  deadlineAtMs = Infinity
  prevTimed: Timed | null = null
  nextTimed: Timed | null = null
  timed = false
  #abort: ((err?: Error) => void) | null = null
  #status = 0
  /** Body bytes received from the target. */
  #received = 0
  #chunks: Buffer[] = []
  #stream: ResponseStream | null = null
  /** Header names copied from the target onto the reply, and how many Set-Cookie lines the reply had before them. */
  #copied: string[] = []
  #ownCookieCount = 0
  /** The response streams server-sent events: the gateway may end it at an event boundary. */
  #eventStream = false

  constructor (
    readonly proxy: Proxy,
    readonly request: FastifyRequest,
    readonly reply: FastifyReply,
    readonly rule: GroupForward,
    readonly path: string,
    readonly headers: Record<string, string | string[]>
  ) {
    // undici calls the handler in the async context of the pooled socket, which belongs to the
    // request that opened it: the callbacks that reach Fastify run in this request's own.
    super('FASTIFY_STICKY_EXCHANGE', { requireManualDestroy: true })
    this.method = request.method
    this.responseTimeoutMs = proxy.idleTimeoutMs
  }

  /** reply.forward()'s options for this request (see ReplyForwardOptions). */
  setOptions (options: ReplyForwardOptions, idleTimeoutMs: number): void {
    this.#options = options
    if (options.timeout !== undefined) this.responseTimeoutMs = Math.min(options.timeout, idleTimeoutMs)
  }

  /** Answers with a gateway error, or hands it to reply.forward()'s `onError`. */
  sendError (error: Error): void {
    const onError = this.#options?.onError
    if (onError === undefined) this.reply.send(error)
    else onError(this.reply, { error })
  }

  /**
   * True while it waits in the target's queue for a connection with time left to be answered:
   * one whose deadline is about to pass is not sent any more (its 504 is on its way).
   */
  get waiting (): boolean {
    return this.phase === 'queued' && performance.now() < this.deadlineAtMs - this.proxy.dispatchMarginMs
  }

  /** Counts the request as outstanding on `target` (and no longer on a previous one); it then waits for a connection. */
  begin (target: Target): void {
    this.settle()
    this.target = target
    target.begin()
    this.#counted = target
    this.#abort = null
    this.connected = false
    this.waited = false
    this.phase = 'queued'
  }

  /** A connection to `target` is free: dispatch on its pool. */
  start (target: Target): void {
    // Taken out of this target's queue meanwhile and now waiting for another's: not ours to send.
    if (target !== this.target) {
      target.release()
      return
    }
    this.phase = 'waiting'
    this.#dispatched = target
    this.#inDispatch = true
    target.pool.dispatch({
      path: this.path,
      method: this.method as Dispatcher.HttpMethod,
      headers: this.headers,
      body: this.body as Dispatcher.DispatchOptions['body'],
      upgrade: this.upgrade === null ? undefined : 'websocket',
      // undici's Request reads it (its types leave it out): see Target.servername.
      servername: target.servername
    } as Dispatcher.DispatchOptions, this)
    this.#inDispatch = false
    if (this.#failedInDispatch) {
      // undici's pool keeps a connection slot marked busy for good after a synchronous failure:
      // give the target a fresh pool, letting the old one finish what it runs.
      this.#failedInDispatch = false
      target.replacePool(true)
    }
  }

  /** The target went away while this waited in its queue: it goes to another target, or is answered. */
  evict (): void {
    if (this.phase !== 'queued') return
    this.settle()
    // Called from whatever took the target away (an admin request, a health check): answer in
    // this request's own async context.
    this.runInAsyncScope(this.proxy.fail, this.proxy, this, TARGET_GONE)
  }

  /** The body streams to the target: the client's pace rules now (clientBodyTimeoutMs), not the response deadline. */
  holdDeadline (): void {
    this.clearDeadline()
  }

  /** The whole body reached the target: the response deadline starts. */
  resumeDeadline (): void {
    if (this.phase === 'waiting' && !this.timed) this.startDeadline(this.responseTimeoutMs)
  }

  /** Ends the outstanding count; safe to call more than once. */
  settle (): void {
    if (this.#counted !== null) {
      this.#counted.settle()
      this.#counted = null
    }
  }

  /** Starts the deadline: no response headers within `ms` → 504. */
  startDeadline (ms: number): void {
    if (this.timeoutMs === 0) this.timeoutMs = ms
    this.proxy.deadlines.add(this, ms)
  }

  clearDeadline (): void {
    this.proxy.deadlines.remove(this)
  }

  /** The deadline passed with no response headers: 504, in the request's own async context. */
  expire (): void {
    this.runInAsyncScope(this.#expire, this)
  }

  /** 504, whether the request waited for a connection, connected or was sent. */
  #expire (): void {
    if ((this.phase !== 'queued' && this.phase !== 'waiting') || this.clientGone || this.reply.sent) return
    if (this.phase === 'queued') this.target.forget()
    this.phase = 'done'
    // A request undici has not started yet is aborted at its onConnect.
    this.abortTarget()
    this.settle()
    // Passive checks count the timeout only when the target had the request for the whole
    // deadline: one that first waited for a connection behind a burst is the burst's.
    if (this.connected && !this.waited) this.target.recordOutcome(OUTCOME_GATEWAY)
    this.proxy.logFailure(this, 'UND_ERR_HEADERS_TIMEOUT')
    this.sendError(new FST_STICKY_TARGET_TIMEOUT(this.upgrade === null ? this.responseTimeoutMs : this.timeoutMs))
  }

  /**
   * The client's connection closed: abort what is still running. That includes a response that
   * finished without our body (an onSend hook replaced it), which nobody would read to its end.
   */
  onClientClose (finished: boolean): void {
    if (!finished) this.clientGone = true
    this.clearDeadline()
    if (this.phase !== 'done') {
      if (this.phase === 'queued') {
        this.phase = 'done'
        this.target.forget()
      }
      this.abortTarget()
      this.#stream?.destroy()
    }
    this.settle()
  }

  /** Ends the target's request if it is still running; undici then reports it through onError. */
  abortTarget (): void {
    const abort = this.#abort
    this.#abort = null
    abort?.()
  }

  /** undici ended the request (answered or failed): its connection is free for the target's next. */
  #release (): void {
    const target = this.#dispatched
    if (target !== null) {
      this.#dispatched = null
      target.release()
    }
  }

  // undici's dispatch handler

  onConnect (abort: (err?: Error) => void): void {
    this.connected = true
    this.#dispatched?.progressed()
    if (this.clientGone || this.phase === 'done') abort()
    else this.#abort = abort
  }

  onHeaders (statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    // 1xx interim responses (100 Continue, 103 Early Hints) are not passed on.
    if (statusCode < 200) return true
    return this.runInAsyncScope(this.#onHeaders, this, statusCode, rawHeaders, resume)
  }

  #onHeaders (statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    const { reply } = this
    this.clearDeadline()
    if (this.clientGone || reply.sent || this.phase === 'done') {
      this.phase = 'done'
      this.abortTarget()
      return false
    }
    // Fastify refuses codes past 599: a malformed response.
    if (statusCode > 599) {
      this.phase = 'done'
      this.abortTarget()
      this.settle()
      this.target.recordOutcome(OUTCOME_GATEWAY)
      this.proxy.logFailure(this, 'INVALID_STATUS')
      reply.send(new FST_STICKY_TARGET_RESPONSE_INVALID())
      return false
    }
    this.#status = statusCode
    // Passive checks: a 5xx counts against the target; any other response clears its count once complete.
    if (statusCode >= 500) this.target.recordOutcome(OUTCOME_5XX)
    const headers = this.#copyHeaders(rawHeaders)
    const length = headers['content-length']
    const onResponse = this.#options?.onResponse
    if (onResponse === undefined && headers['content-type'] !== undefined && length !== undefined && this.request.method !== 'HEAD' &&
        statusCode !== 204 && statusCode !== 304 && Number(length) <= BUFFERED_RESPONSE_BYTES) {
      this.phase = 'buffering'
      return true
    }
    this.phase = 'streaming'
    this.#eventStream = isEventStream(headers['content-type'])
    const stream = new ResponseStream(this, resume, this.proxy.idleTimeoutMs)
    this.#stream = stream
    reply.code(statusCode)
    if (onResponse === undefined) reply.send(stream)
    else onResponse(this.request, reply, { statusCode, headers, stream })
    return true
  }

  /** The target answered a WebSocket upgrade with 101: the connection left its pool, and becomes a tunnel. */
  onUpgrade (_statusCode: number, rawHeaders: Buffer[] | string[] | null, socket: Duplex): void {
    this.runInAsyncScope(this.#onUpgrade, this, rawHeaders ?? [], socket as Socket)
  }

  #onUpgrade (rawHeaders: Buffer[], socket: Socket): void {
    this.#release()
    this.clearDeadline()
    const { reply, target, upgrade } = this
    const phase = this.phase
    this.phase = 'done'
    this.#abort = null
    if (upgrade === null || this.clientGone || reply.sent || phase !== 'waiting' || !upgrade.socket.writable) {
      socket.destroy()
      this.settle()
      return
    }
    target.recordOutcome(OUTCOME_OK)
    // The target's headers (Sec-WebSocket-Accept, -Protocol, -Extensions, its cookies) and the
    // gateway's cookies, including those that follow the target's (app-cookie stickiness).
    this.#copyHeaders(rawHeaders)
    this.proxy.onUpgradeResponse?.(this.request, reply)
    const head = switchingProtocolsHead(reply)
    // The tunnel holds the target's count from here, until both sockets close.
    this.#counted = null
    reply.hijack()
    upgrade.socket.write(head)
    const early = upgrade.takeEarly()
    const tunnel = new Tunnel(upgrade.socket, socket, target, this.rule.group.websocket.idleTimeoutMs)
    tunnel.fromClient(early)
  }

  onData (chunk: Buffer): boolean {
    this.#received += chunk.length
    if (this.phase === 'buffering') {
      this.#chunks.push(chunk)
      return true
    }
    return this.#stream?.pushChunk(chunk) ?? false
  }

  onComplete (): void {
    this.runInAsyncScope(this.#onComplete, this)
  }

  onError (err: Error & { code?: string }): void {
    if (this.#inDispatch) this.#failedInDispatch = true
    this.runInAsyncScope(this.#onError, this, err)
  }

  #onComplete (): void {
    this.#release()
    if (this.#status < 500) this.target.recordOutcome(OUTCOME_OK)
    this.settle()
    const phase = this.phase
    this.phase = 'done'
    this.#abort = null
    if (phase === 'buffering') {
      if (this.clientGone || this.reply.sent) return
      const chunks = this.#chunks
      this.reply.code(this.#status)
      this.reply.send(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks))
    } else if (phase === 'streaming') {
      this.#stream?.complete()
    }
  }

  #onError (err: Error & { code?: string }): void {
    this.#release()
    this.settle()
    const phase = this.phase
    this.phase = 'done'
    this.#abort = null
    if (phase === 'waiting') {
      this.proxy.fail(this, err)
    } else if (phase === 'buffering') {
      // Nothing went to the client yet: a clean gateway error, without the target's headers.
      if (this.clientGone || this.reply.sent) return
      const code = errorCodeOf(err)
      if (!CLIENT_FAULTS.has(code)) this.target.recordOutcome(OUTCOME_GATEWAY)
      this.proxy.logFailure(this, code)
      this.#restoreHeaders()
      this.sendError(this.proxy.gatewayError(code))
    } else if (phase === 'streaming') {
      const stream = this.#stream
      if (stream === null || stream.destroyed) return
      // A 204 or 304 never has a body, though it may carry the Content-Length of the
      // representation (RFC 9110 §8.6); undici counts the missing bytes as a mismatch.
      if ((this.#status === 204 || this.#status === 304) && this.#received === 0 && err.code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH') {
        stream.complete()
        return
      }
      if (this.clientGone) {
        stream.destroy()
        return
      }
      if (this.#eventStream && err.code !== undefined && GATEWAY_ENDED.has(err.code)) {
        // The gateway ends it (drain deadline, app.close()): see isEventStream.
        stream.complete()
        return
      }
      // Fastify answers with this error if no header went out yet, else closes the connection.
      const code = errorCodeOf(err)
      if (!CLIENT_FAULTS.has(code)) this.target.recordOutcome(OUTCOME_GATEWAY)
      this.proxy.logFailure(this, code)
      const error = this.proxy.gatewayError(code)
      if (!this.reply.raw.headersSent) this.#restoreHeaders()
      // A response cut after its head: Fastify's onError hooks, where errors are counted, never see it.
      else this.rule.group.metrics?.gatewayError(this.rule.group.name, error.code)
      stream.destroy(error)
    }
  }

  /** Copies the target's end-to-end headers onto the reply; returns them by lower-case name. */
  #copyHeaders (rawHeaders: Buffer[]): IncomingHttpHeaders {
    const { reply } = this
    let headers = parseRawHeaders(rawHeaders)
    const rewriteHeaders = this.#options?.rewriteHeaders
    if (rewriteHeaders !== undefined) headers = rewriteHeaders(headers, this.request)
    // Fastify appends the target's Set-Cookie lines after ours: count ours, copy them only on failure.
    const current = reply.getHeader('set-cookie')
    this.#ownCookieCount = current === undefined ? 0 : Array.isArray(current) ? current.length : 1
    const connection = headers.connection
    const listed = connection === undefined ? null : listedHeaders(connection)
    const copied = this.#copied
    for (const name in headers) {
      if (this.proxy.droppedResponseHeaders.has(name) || (listed !== null && listed.has(name))) continue
      let value = headers[name]
      if (value === undefined) continue
      if (name === 'set-cookie') {
        value = this.#targetCookies(value as string[])
        if (value.length === 0) continue
      }
      reply.header(name, value)
      copied.push(name)
    }
    // Every gateway cookie of this response is on the reply by now (a redispatch already swapped
    // them), except AWSALBAPP-*, which the route's onSend hook writes on every response.
    if (this.rule.pin?.cookiesAtResponse === true || this.proxy.gatewayCookies.anyIn(current)) this.#keepFromSharedCaches()
    return headers
  }

  /**
   * The target's Set-Cookie lines, less those of the gateway's own names: Fastify appends them
   * after the gateway's, so the browser would keep the target's value. Each name dropped is
   * logged, at most once per target and second (never a value or an address).
   */
  #targetCookies (lines: string[]): string[] {
    const result = this.proxy.gatewayCookies.drop(lines)
    if (result === null) return lines
    for (const cookie of result.dropped) {
      const suppressed = this.target.warnable(`set-cookie:${cookie}`)
      if (suppressed < 0) continue
      this.request.log.warn({ targetGroup: this.rule.group.name, target: this.target.id, cookie, suppressed }, "fastify-sticky: target set a cookie named as one of the gateway's own, line dropped")
    }
    return result.kept
  }

  /**
   * HAProxy's `cookie … nocache`: a response carrying a gateway cookie is marked so that no
   * shared cache stores it (see `privateCacheControl`), in Cache-Control and, when the target
   * sent one, in CDN-Cache-Control (RFC 9213), which CDNs that read it obey instead.
   */
  #keepFromSharedCaches (): void {
    const { reply } = this
    for (const name of CACHE_CONTROL_FIELDS) {
      const current = reply.getHeader(name)
      if (current === undefined && name !== 'cache-control') continue
      const value = privateCacheControl(current)
      if (value === null) continue
      reply.header(name, value)
      // A gateway error in the response's place takes it off again.
      if (!this.#copied.includes(name)) this.#copied.push(name)
    }
  }

  /** Takes the target's headers off the reply again, for a gateway error in their place. */
  #restoreHeaders (): void {
    const { reply } = this
    const current = reply.getHeader('set-cookie')
    const own = current === undefined ? [] : (Array.isArray(current) ? current : [String(current)]).slice(0, this.#ownCookieCount)
    for (const name of this.#copied) reply.removeHeader(name)
    // Fastify would append ours to whatever Set-Cookie the reply holds: start from none.
    reply.removeHeader('set-cookie')
    if (own.length > 0) reply.header('set-cookie', own)
  }
}

/**
 * A streamed response body: undici pushes, the client's pace resumes it, destroying it aborts
 * the target's request. A client that reads nothing for the idle timeout while the target has
 * more to send (nginx's `send_timeout`) gets its connection closed: undici stops its own body
 * timeout while the response is paused, so a client that stops reading would hold the target's
 * connection for good.
 */
class ResponseStream extends Readable {
  readonly #exchange: Exchange
  readonly #resume: () => void
  readonly #stallMs: number
  #stalled: NodeJS.Timeout | null = null

  constructor (exchange: Exchange, resume: () => void, stallMs: number) {
    // Up to 64 KiB ahead of the client: a response that fits frees the target's connection at once.
    super({ highWaterMark: STREAMED_RESPONSE_AHEAD_BYTES })
    this.#exchange = exchange
    this.#resume = resume
    this.#stallMs = stallMs
    // Fastify reports a failure through its own listener, once it has attached it; before that
    // (an async onSend hook still running, or a hook that replaced this body) it must not be
    // an uncaught error.
    this.on('error', noop)
  }

  /** A chunk from the target; false when the client is behind, which starts the send deadline. */
  pushChunk (chunk: Buffer): boolean {
    const more = this.push(chunk)
    if (!more && this.#stalled === null && !this.destroyed) {
      this.#stalled = setTimeout(stallResponse, this.#stallMs, this)
      this.#stalled.unref()
    }
    return more
  }

  /** The target sent all of it: however slowly the client reads the rest, the target waits for nothing. */
  complete (): void {
    if (this.#stalled !== null) clearTimeout(this.#stalled)
    this.#stalled = null
    this.push(null)
  }

  override _read (): void {
    if (this.#stalled !== null) {
      clearTimeout(this.#stalled)
      this.#stalled = null
    }
    this.#resume()
  }

  override _destroy (err: Error | null, callback: (error?: Error | null) => void): void {
    if (this.#stalled !== null) clearTimeout(this.#stalled)
    this.#stalled = null
    if (this.#exchange.phase !== 'done') this.#exchange.abortTarget()
    if (err !== null) resetHttp2Stream(this.#exchange.reply)
    callback(err)
  }
}

/**
 * A response cut after its head went out must look cut. Over HTTP/1.1 the connection is closed
 * before the body's end; over HTTP/2, Fastify's `res.destroy()` would end the stream with
 * RST_STREAM NO_ERROR, which a client reads as a complete response: it is reset with
 * INTERNAL_ERROR first (RFC 9113 §8.1), as nginx does when its upstream fails mid-body.
 */
function resetHttp2Stream (reply: FastifyReply): void {
  const res = reply.raw as { headersSent: boolean, stream?: { closed: boolean, close: (code: number) => void } }
  if (res.stream !== undefined && res.headersSent && !res.stream.closed) res.stream.close(http2Constants.NGHTTP2_INTERNAL_ERROR)
}

function stallResponse (stream: ResponseStream): void {
  stream.destroy(Object.assign(new Error('the client read nothing of the response within the idle timeout'), { code: 'FST_STICKY_CLIENT_STALLED' }))
}

/**
 * Sends requests of bound routes to their affinity's target through that target's own undici
 * pool, and maps failures to ALB's status codes. The target's own responses, 4xx and 5xx
 * included, pass through untouched. A request goes once to another target (HAProxy's
 * redispatch) when nothing of it reached its target (refused or timed-out connection, a target
 * that went away while it waited), or when it is idempotent and the target reset the connection
 * before any response byte; nothing else is ever sent twice.
 */
export class Proxy {
  readonly #settings: ProxySettings
  /** A queued request with less time than this left before its deadline is not sent: 50 ms, or a twentieth of a shorter idle timeout. */
  readonly dispatchMarginMs: number
  readonly idleTimeoutMs: number
  /** Every forwarded request's deadline for its response headers, on one timer. */
  readonly deadlines = new DeadlineList()
  /** The cookies this gateway writes (with its `cookiePrefix`): no target's response may set them. */
  readonly gatewayCookies: GatewayCookieNames
  /** `trustedProxies` applied to connections (shared with `source_ip` stickiness). */
  readonly peers: PeerTrust
  /** Called with the target's 101 on the reply, before it is written: the route's pinning source acts on it as on any response. */
  onUpgradeResponse: ((request: FastifyRequest, reply: FastifyReply) => void) | null = null
  /** Response headers never copied from a target: hop-by-hop ones, and the decision header, which only the gateway writes. */
  readonly droppedResponseHeaders: ReadonlySet<string>
  /** Request headers not passed on from a trusted peer, and from any other: hop-by-hop ones, and the hand-off headers, which only the gateway writes. */
  readonly #droppedTrusted: ReadonlySet<string>
  readonly #droppedUntrusted: ReadonlySet<string>

  constructor (settings: ProxySettings & { readonly cookiePrefix: string }) {
    this.#settings = settings
    this.dispatchMarginMs = Math.min(50, settings.idleTimeoutMs / 20)
    this.idleTimeoutMs = settings.idleTimeoutMs
    this.gatewayCookies = new GatewayCookieNames(settings.cookiePrefix)
    this.peers = new PeerTrust(settings.trustedProxies)
    // A client never sends the hand-off headers on: not even the default names when they are off,
    // so an app written for them is never fooled.
    const handoff = [DEFAULT_PREVIOUS_TARGET_HEADER, DEFAULT_HANDOFF_REASON_HEADER]
    if (settings.handoffHeaders !== null) handoff.push(settings.handoffHeaders.previousTarget, settings.handoffHeaders.reason)
    this.#droppedTrusted = new Set([...HOP_BY_HOP_REQUEST, ...handoff])
    this.#droppedUntrusted = new Set([...UNTRUSTED_REQUEST, ...handoff])
    this.droppedResponseHeaders = settings.exposeDecision === null ? HOP_BY_HOP_RESPONSE : new Set([...HOP_BY_HOP_RESPONSE, settings.exposeDecision])
  }

  /** Forwards `reply.request` to its affinity's target; `path` replaces the request's own path and query. */
  forward (reply: FastifyReply, rule: GroupForward | null, path: string | undefined, options?: ReplyForwardOptions): FastifyReply {
    const request = reply.request
    const res = reply.raw
    // An async handler may forward after the client left: there is nobody to answer.
    if (clientLeft(res)) return reply
    if (rule === null || request.affinity === null) throw new FST_STICKY_ROUTE_UNBOUND(`${request.method} ${request.routeOptions.url ?? ''}`)
    // Two Host headers may name two origins: which one the target believes is not ours to guess.
    if (hasRepeatedHost(request.raw.rawHeaders)) return reply.send(new FST_STICKY_REQUEST_INVALID())
    let headers = this.#requestHeaders(request)
    if (headers === null) {
      // 463 has no reason phrase for Fastify's error handler to add: write the body here.
      const err = new FST_STICKY_FORWARDED_FOR_TOO_LONG(MAX_FORWARDED_FOR_ADDRESSES)
      rule.group.metrics?.gatewayError(rule.group.name, err.code)
      return reply.code(463).send({ statusCode: 463, code: err.code, error: 'X-Forwarded-For Too Long', message: err.message })
    }
    // A path given to reply.forward() may hold what no request line can (`?q=a b`): encoded here,
    // since undici would refuse it in a way that leaves a connection slot of its pool busy for good.
    const given = path === undefined ? request.raw.url ?? '/' : encodeRequestTarget(path)
    if (given === null) return reply.send(new FST_STICKY_REQUEST_INVALID())
    let requestTarget = originFormOf(given)
    if (requestTarget === null) return path === undefined ? answerOtherForm(reply) : reply.send(new FST_STICKY_REQUEST_INVALID())
    if (options?.queryString !== undefined) requestTarget = withQuery(requestTarget, options.queryString, request)
    // The route matched the path as sent: `/cart/../admin` must not reach `/admin` on the target,
    // nor `/public\admin` reach `/public/admin` on one that reads `\` as `/`.
    if (refusesPath(requestTarget)) return reply.send(new FST_STICKY_REQUEST_INVALID())
    // An upgrade to another protocol (`h2c`, say) is served as the plain request it also is.
    const upgrade = upgradeOf(request.raw)
    if (upgrade !== undefined) {
      if (options?.rewriteRequestHeaders !== undefined) headers = rewrittenRequestHeaders(options.rewriteRequestHeaders, request, headers)
      return this.#forwardUpgrade(reply, rule, requestTarget, headers, upgrade, options)
    }
    const method = options?.method ?? request.method
    const parsed = options?.body !== undefined ? givenBody(options, method, headers) : parsedBody(request, headers)
    if (options?.rewriteRequestHeaders !== undefined) headers = rewrittenRequestHeaders(options.rewriteRequestHeaders, request, headers)
    const exchange = new Exchange(this, request, reply, rule, requestTarget, headers)
    exchange.method = method
    if (options !== undefined) exchange.setOptions(options, this.#settings.idleTimeoutMs)
    res.once('close', () => exchange.onClientClose(res.writableFinished))
    if (parsed !== null) {
      exchange.body = parsed
      this.#dispatch(exchange, exchange.responseTimeoutMs - reply.elapsedTime)
      return reply
    }
    // The body is still on its way: a small one is received whole before a connection to the
    // target is taken, a large or chunked one only once its first requestBufferBytes came, so a
    // slow client holds no connection of the target (nginx's proxy_request_buffering).
    const raw = request.raw
    const declared = raw.headers['transfer-encoding'] === undefined ? Number(raw.headers['content-length']) : NaN
    const limit = this.#settings.requestBufferBytes
    const whole = declared <= limit
    const timeoutMs = this.#settings.clientBodyTimeoutMs
    if (!whole && limit === 0) {
      exchange.body = new StreamedBody([], raw, timeoutMs, exchange)
      this.#dispatch(exchange, exchange.responseTimeoutMs - reply.elapsedTime)
      return reply
    }
    collectBody(raw, whole ? declared : limit, whole, timeoutMs).then((collected) => {
      if (exchange.clientGone || clientLeft(res) || reply.sent) return
      if (collected === 'timeout') {
        // The rest of the body is not read: the connection cannot carry another request.
        closeConnectionAfter(reply)
        exchange.sendError(new FST_STICKY_REQUEST_TIMEOUT(timeoutMs))
        return
      }
      if (collected === 'gone') return
      const { chunks } = collected
      exchange.body = whole ? (chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)) : new StreamedBody(chunks, raw, timeoutMs, exchange)
      this.#dispatch(exchange, exchange.responseTimeoutMs)
    }, noop)
    return reply
  }

  /**
   * A WebSocket upgrade on a route that allows it: sent to the affinity's target like any
   * request (queue, redispatch of a refused connection, a deadline: the group's
   * `websocket.handshakeTimeoutMs`); the target's 101 makes it a tunnel, any other answer
   * passes through.
   */
  #forwardUpgrade (reply: FastifyReply, rule: GroupForward, path: string, headers: Record<string, string | string[]>, upgrade: PendingUpgrade, options: ReplyForwardOptions | undefined): FastifyReply {
    const request = reply.request
    if ((request as { [kWebSocketRoute]?: boolean })[kWebSocketRoute] !== true && (request.routeOptions.config as { websocket?: unknown }).websocket !== true) {
      return reply.send(new FST_STICKY_WEBSOCKET_NOT_ALLOWED())
    }
    // An HTTP/1.0 request cannot upgrade (RFC 6455 §4.1 asks for HTTP/1.1 or later).
    const fault = request.raw.httpVersion === '1.0' ? 'invalid' : checkHandshake(request.method, request.raw.headers)
    if (fault === 'invalid') return reply.send(new FST_STICKY_WEBSOCKET_HANDSHAKE_INVALID())
    if (fault === 'version') return reply.header('sec-websocket-version', '13').send(new FST_STICKY_WEBSOCKET_VERSION_UNSUPPORTED())
    const exchange = new Exchange(this, request, reply, rule, path, headers)
    exchange.upgrade = upgrade
    if (options !== undefined) exchange.setOptions(options, this.#settings.idleTimeoutMs)
    reply.raw.once('close', () => exchange.onClientClose(reply.raw.writableFinished))
    this.#dispatch(exchange, rule.group.websocket.handshakeTimeoutMs - reply.elapsedTime)
    return reply
  }

  /** Sends the exchange to its affinity's target, with `deadlineMs` for the response headers. */
  #dispatch (exchange: Exchange, deadlineMs: number): void {
    const { request, reply, rule } = exchange
    let affinity = request.affinity as AffinityDecision
    let target = targetOf(rule, affinity)
    // Deregistered after the decision (e.g. while an async handler awaited): decide again.
    if (target === undefined && affinity.target !== null) {
      affinity = choose(rule.group, rule.stickiness, 'target-deregistered', rule.now(), undefined, pinnedTo(affinity))
      repin(reply, rule, affinity)
      target = targetOf(rule, affinity)
    }
    if (target === undefined) {
      exchange.sendError(new FST_STICKY_TARGET_GROUP_UNAVAILABLE(affinity.targetGroup))
      return
    }
    this.#handOff(exchange.headers, affinity)
    exchange.startDeadline(Math.max(0, deadlineMs))
    this.send(exchange, target)
  }

  /** Queues the exchange's request for a connection to `target`. */
  send (exchange: Exchange, target: Target): void {
    if (exchange.upgrade !== null) {
      const limit = exchange.rule.group.websocket.maxConnectionsPerTarget
      if (target.tunnels.size >= limit) {
        exchange.settle()
        exchange.clearDeadline()
        exchange.phase = 'done'
        exchange.sendError(new FST_STICKY_TARGET_WEBSOCKET_LIMIT(limit))
        return
      }
    }
    exchange.begin(target)
    target.admit(exchange)
    if (exchange.phase === 'queued') exchange.waited = true
  }

  /** The target's request failed before any response: send it to another target when that is safe, or answer with ALB's status. */
  fail (exchange: Exchange, err: Error & { code?: string }): void {
    const { request, reply, rule, target } = exchange
    // The client is gone: nobody to answer, nothing to log as a target failure.
    if (exchange.clientGone || reply.sent) {
      exchange.clearDeadline()
      return
    }
    const code = errorCodeOf(err)
    // A failed TLS handshake carried nothing of the request (in TLS 1.3 a refused client
    // certificate is told after undici began writing): like a refused connection.
    const sent = exchange.connected && !isTlsFailure(code)
    // A pool replaced for making no progress: what it never sent goes to the same target's new pool, once.
    if (code === POOL_REPLACED && !sent && !exchange.resent && rule.group.get(target.id) === target) {
      exchange.resent = true
      this.send(exchange, target)
      return
    }
    if (!CLIENT_FAULTS.has(code)) target.recordOutcome(OUTCOME_GATEWAY)
    let noOtherTarget = false
    if (this.#mayRedispatch(exchange, code, sent)) {
      const nowMs = rule.now()
      // A client pinned here is handed off from the target that refused it.
      const decision = choose(rule.group, rule.stickiness, 'target-unreachable', nowMs, target, exchange.request.affinity === null ? undefined : pinnedTo(exchange.request.affinity))
      const next = targetOf(rule, decision)
      if (next !== undefined) {
        // The client is pinned to `next` now, not to the target that failed it.
        if (pinsClients(rule.stickiness) && exchange.request.affinity?.outcome !== 'hit') target.sessions.cancel(rule.stickiness.durationSeconds, Math.floor(nowMs / 1000))
        const suppressed = target.warnable(`redispatch:${code}`)
        if (suppressed >= 0) {
          request.log.info({ targetGroup: rule.group.name, target: target.id, to: next.id, code, suppressed }, 'fastify-sticky: target did not take the request, redispatching')
        }
        repin(reply, rule, decision)
        this.#handOff(exchange.headers, decision)
        exchange.redispatched = true
        this.send(exchange, next)
        return
      }
      noOtherTarget = true
    }
    exchange.clearDeadline()
    if (code === TARGET_GONE.code && noOtherTarget) {
      exchange.sendError(new FST_STICKY_TARGET_GROUP_UNAVAILABLE(rule.group.name))
      return
    }
    this.logFailure(exchange, code)
    if (code === 'FST_STICKY_REQUEST_TIMEOUT') closeConnectionAfter(reply)
    exchange.sendError(this.gatewayError(code))
  }

  /**
   * Whether a failed request may go to another target: once, with a body that can be sent
   * again, when nothing of it was sent (redispatch), or when it is idempotent and the
   * connection was reset before any response byte (redispatchIdempotent).
   */
  #mayRedispatch (exchange: Exchange, code: string, sent: boolean): boolean {
    if (exchange.redispatched || REQUEST_FAULTS.has(code) || !isReplayable(exchange.body)) return false
    if (!sent) return this.#settings.redispatch
    return RESET.has(code) && this.#settings.redispatchIdempotent && isIdempotent(exchange.request)
  }

  /** Sets the hand-off headers when the client moves away from a target it was pinned to (see `handoffHeaders`). */
  #handOff (headers: Record<string, string | string[]>, decision: AffinityDecision): void {
    const names = this.#settings.handoffHeaders
    if (names === null || decision.outcome !== 'reassigned' || decision.previousTargetId === undefined) return
    headers[names.previousTarget] = decision.previousTargetId
    headers[names.reason] = decision.reason
  }

  logFailure (exchange: Exchange, code: string): void {
    // At most one line per target, code and second; the next says how many were left out.
    const suppressed = exchange.target.warnable(code)
    if (suppressed < 0) return
    // Only the error code is logged: undici's messages and errors carry the target's address.
    exchange.request.log.warn({ targetGroup: exchange.rule.group.name, target: exchange.target.id, code, suppressed }, 'fastify-sticky: target request failed')
  }

  gatewayError (code: string): FastifyError {
    switch (code) {
      case 'UND_ERR_CONNECT_TIMEOUT':
      case 'ETIMEDOUT':
        return new FST_STICKY_TARGET_CONNECT_TIMEOUT(this.#settings.connectTimeoutMs)
      case 'UND_ERR_HEADERS_TIMEOUT':
      case 'UND_ERR_BODY_TIMEOUT':
        return new FST_STICKY_TARGET_TIMEOUT(this.#settings.idleTimeoutMs)
      case 'UND_ERR_HEADERS_OVERFLOW':
      case 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH':
      case 'UND_ERR_RES_EXCEEDED_MAX_SIZE':
        return new FST_STICKY_TARGET_RESPONSE_INVALID()
      case 'FST_STICKY_TARGET_DEREGISTERED':
        return new FST_STICKY_TARGET_DEREGISTERED()
      case 'FST_STICKY_REQUEST_TIMEOUT':
        return new FST_STICKY_REQUEST_TIMEOUT(this.#settings.clientBodyTimeoutMs)
      case 'UND_ERR_INVALID_ARG':
      case 'UND_ERR_NOT_SUPPORTED':
      case 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH':
        return new FST_STICKY_REQUEST_INVALID()
      default:
        if (isTlsFailure(code)) return new FST_STICKY_TARGET_TLS_FAILED()
        return code.startsWith('HPE_') ? new FST_STICKY_TARGET_RESPONSE_INVALID() : new FST_STICKY_TARGET_CONNECTION_FAILED()
    }
  }

  /**
   * The headers to send: hop-by-hop ones dropped, the gateway's cookies taken out of Cookie
   * (unless forwardStickyCookies), X-Forwarded-* set by the trust rule; null when
   * X-Forwarded-For is too long (463).
   */
  #requestHeaders (request: FastifyRequest): Record<string, string | string[]> | null {
    const incoming = request.raw.headers
    const socket = request.raw.socket as TLSSocket | undefined
    const trusted = this.peers.trusts(socket)
    const dropped = trusted ? this.#droppedTrusted : this.#droppedUntrusted
    const cookiePrefix = this.#settings.forwardStickyCookies ? null : this.#settings.cookiePrefix
    const headers: Record<string, string | string[]> = {}
    const connection = incoming.connection
    const listed = connection === undefined ? null : listedHeaders(connection)
    for (const name in incoming) {
      if (dropped.has(name) || (listed !== null && listed.has(name)) || isPseudoHeader(name)) continue
      let value = incoming[name]
      if (value === undefined) continue
      if (cookiePrefix !== null && name === 'cookie' && typeof value === 'string') {
        value = stripGatewayCookies(value, cookiePrefix)
        if (value === '') continue
      }
      headers[name] = value
    }
    if (headers.host === undefined) hostFromAuthority(headers, incoming)

    const forwardedFor = incoming['x-forwarded-for']
    if (forwardedFor !== undefined && countAddresses(forwardedFor) > MAX_FORWARDED_FOR_ADDRESSES) return null
    setForwardingHeaders(headers, trusted ? incoming : null, listed, socket, this.#settings.xForwardedFor)
    return headers
  }

}

/**
 * Sets X-Forwarded-For, -Proto and -Port. `given` holds the request's headers when its peer is
 * trusted: its X-Forwarded-For counts in ALB's mode, and its X-Forwarded-Proto and -Port when
 * well-formed. Otherwise X-Forwarded-For is the peer's address alone (none in mode `remove`),
 * and Proto and Port are the gateway's own. A forwarding header the request's Connection header
 * names is dropped with it; what the gateway adds is still sent.
 */
function setForwardingHeaders (headers: Record<string, string | string[]>, given: IncomingHttpHeaders | null, listed: Set<string> | null,
  socket: TLSSocket | undefined, mode: 'append' | 'preserve' | 'remove'): void {
  const client = socket?.remoteAddress
  if (mode !== 'remove') {
    const forwardedFor = given === null ? undefined : givenValue(given, 'x-forwarded-for', listed)
    let value: string | undefined
    if (given === null) value = client
    else if (mode === 'preserve') value = forwardedFor
    else value = forwardedFor === undefined ? client : client === undefined ? forwardedFor : `${forwardedFor}, ${client}`
    if (value !== undefined) headers['x-forwarded-for'] = value
  }
  const proto = given === null ? undefined : givenValue(given, 'x-forwarded-proto', listed)?.toLowerCase()
  headers['x-forwarded-proto'] = proto === 'http' || proto === 'https' ? proto : socket?.encrypted === true ? 'https' : 'http'
  const port = given === null ? undefined : givenValue(given, 'x-forwarded-port', listed)
  if (port !== undefined && PORT.test(port) && Number(port) <= 65_535) headers['x-forwarded-port'] = String(Number(port))
  else if (socket?.localPort !== undefined) headers['x-forwarded-port'] = String(socket.localPort)
}

/** An HTTP/2 pseudo-header (`:method`, `:path`, `:authority`, …): it belongs to the client's connection, never goes upstream. */
function isPseudoHeader (name: string): boolean {
  return name.charCodeAt(0) === 58 /* : */
}

/**
 * An HTTP/2 request names its origin in `:authority` and may have no Host (RFC 9113 §8.3.1):
 * the target gets it as Host, as an HTTP/1.1 request would carry it. A Host the client sent wins
 * (as Fastify's `request.host` reads it).
 */
function hostFromAuthority (headers: Record<string, string | string[]>, incoming: IncomingHttpHeaders): void {
  const authority = incoming[':authority']
  if (typeof authority === 'string' && authority !== '') headers.host = authority
}

/** A port number, 1 to 65535 once its digits are read. */
const PORT = /^0*[1-9][0-9]{0,4}$/

/** A forwarding header of the request, unless its Connection header names it. */
function givenValue (given: IncomingHttpHeaders, name: string, listed: Set<string> | null): string | undefined {
  const value = given[name]
  if (typeof value !== 'string' || (listed !== null && listed.has(name))) return undefined
  return value
}

/** GET, HEAD and OPTIONS, or any method on a route with `config.idempotent: true`. */
function isIdempotent (request: FastifyRequest): boolean {
  return IDEMPOTENT_METHODS.has(request.method) || (request.routeOptions.config as { idempotent?: unknown }).idempotent === true
}

/**
 * Answers a request whose target is neither origin-form nor absolute-form. `OPTIONS *` asks
 * about the server itself (RFC 9110 §9.3.7): 200 with the route's methods in `Allow`, no
 * target asked (undici cannot send `*`); any other, 400.
 */
export function answerOtherForm (reply: FastifyReply): FastifyReply {
  const request = reply.request
  if (request.raw.url !== '*' || request.method !== 'OPTIONS') return reply.send(new FST_STICKY_REQUEST_INVALID())
  const method = request.routeOptions.method
  return reply.code(200).header('allow', Array.isArray(method) ? method.join(', ') : method).send()
}

/** True when the request has more than one Host header (RFC 9112 §3.2: 400), whatever their case or values. */
function hasRepeatedHost (rawHeaders: readonly string[]): boolean {
  let seen = false
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]
    if (name.length !== 4 || name.toLowerCase() !== 'host') continue
    if (seen) return true
    seen = true
  }
  return false
}

const FORM = /^application\/x-www-form-urlencoded/i
const JSON_TYPE = /^[^;]*[/+]json\s*(;|$)/i

/**
 * The request's body when it is already in memory: what a content-type parser of the route made
 * of it, or nothing; null when it is still the client's stream.
 */
function parsedBody (request: FastifyRequest, headers: Record<string, string | string[]>): string | Buffer | undefined | null {
  const parsed = request.body
  if (parsed !== undefined) {
    // A content-type parser of the user's route already read the body: send what it made of it,
    // in a format its content-type names (objects from a form parser go back as a form).
    let body: string | Buffer
    if (typeof parsed === 'string' || Buffer.isBuffer(parsed)) {
      body = parsed
    } else if (FORM.test(String(headers['content-type']))) {
      body = new URLSearchParams(parsed as Record<string, string>).toString()
    } else {
      body = JSON.stringify(parsed)
      if (!JSON_TYPE.test(String(headers['content-type']))) headers['content-type'] = 'application/json'
    }
    headers['content-length'] = String(Buffer.byteLength(body))
    return body
  }
  const raw = request.raw
  const length = raw.headers['content-length']
  if ((length === undefined || length === '0') && raw.headers['transfer-encoding'] === undefined && !http2BodyFollows(raw, length)) return undefined
  return null
}

/** The request target with the query reply.forward()'s `queryString` makes of its own. */
function withQuery (target: string, option: NonNullable<ReplyForwardOptions['queryString']>, request: FastifyRequest): string {
  const query = target.indexOf('?')
  const path = query === -1 ? target : target.slice(0, query)
  const search = query === -1 ? '' : target.slice(query)
  return path + queryOf(option, search, request.raw.url ?? '/', request)
}

/** reply.forward()'s `body` in place of the request's (as reply-from sends it); undefined for none. */
function givenBody (options: ReplyForwardOptions, method: string, headers: Record<string, string | string[]>): string | Buffer | undefined {
  const given = options.body
  if (given === null) {
    headers['content-length'] = '0'
    delete headers['content-type']
    delete headers['transfer-encoding']
    return undefined
  }
  if (method === 'GET' || method === 'HEAD') throw new FST_STICKY_REQUEST_INVALID()
  let body: string | Buffer
  if (options.contentType !== undefined && (typeof given === 'string' || Buffer.isBuffer(given))) {
    body = given
    headers['content-type'] = options.contentType
  } else {
    body = JSON.stringify(given)
    headers['content-type'] = options.contentType ?? 'application/json'
  }
  delete headers['transfer-encoding']
  headers['content-length'] = String(Buffer.byteLength(body))
  return body
}

/**
 * The headers reply.forward()'s `rewriteRequestHeaders` makes: what it adds that belongs to one
 * connection is dropped again (undici refuses some, and a pooled connection could wedge).
 */
function rewrittenRequestHeaders (rewrite: NonNullable<ReplyForwardOptions['rewriteRequestHeaders']>, request: FastifyRequest, headers: Record<string, string | string[]>): Record<string, string | string[]> {
  const given = rewrite(request, headers)
  const result: Record<string, string | string[]> = {}
  for (const name in given) {
    const value = given[name]
    if (value === undefined || value === null) continue
    const lower = name.toLowerCase()
    if (REWRITE_DROPPED.has(lower)) continue
    result[lower] = typeof value === 'number' ? String(value) : value
  }
  return result
}

/** Headers a rewrite may not set: they belong to one connection (x-forwarded-* are the gateway's own to set, and a rewrite may). */
const REWRITE_DROPPED = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'http2-settings', 'expect'])

/**
 * An HTTP/2 request need not declare its body's length, and never says `chunked`: a body
 * follows when the stream did not end with the request's headers (RFC 9113 §8.1).
 */
function http2BodyFollows (raw: FastifyRequest['raw'], length: string | undefined): boolean {
  const stream = (raw as { stream?: { endAfterHeaders?: boolean } }).stream
  return length === undefined && stream?.endAfterHeaders === false
}

/** The client's connection is gone, or over HTTP/2 its stream (Node's HTTP/2 response has no `destroyed` of its own). */
function clientLeft (res: FastifyReply['raw']): boolean {
  return res.destroyed === true || (res as { stream?: { destroyed: boolean } }).stream?.destroyed === true
}

/**
 * Asks the client to close its connection after this reply: the rest of a request body was left
 * unread. Only HTTP/1.x has such a header; on HTTP/2 (where Node would drop it with a warning)
 * the request's own stream is ended and the connection serves others.
 */
function closeConnectionAfter (reply: FastifyReply): void {
  if (reply.request.raw.httpVersionMajor < 2) reply.header('connection', 'close')
}

/** What came of a body: its first chunks (all of it when `ended`), or a client too slow or gone. */
type Collected = { chunks: Buffer[], ended: boolean } | 'timeout' | 'gone'

/**
 * Reads the client's body: all of it (`whole`, `want` bytes declared), or until `want` bytes
 * came (then the stream is paused, the rest left in it); within `timeoutMs`.
 */
function collectBody (stream: Readable, want: number, whole: boolean, timeoutMs: number): Promise<Collected> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    let bytes = 0
    const finish = (result: Collected): void => {
      clearTimeout(timer)
      stream.off('data', onData)
      stream.off('end', onEnd)
      stream.off('error', onGone)
      stream.off('close', onGone)
      resolve(result)
    }
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk)
      bytes += chunk.length
      if (!whole && bytes >= want) {
        stream.pause()
        finish({ chunks, ended: false })
      }
    }
    const onEnd = (): void => finish({ chunks, ended: true })
    const onGone = (): void => finish('gone')
    const timer = setTimeout(finish, timeoutMs, 'timeout')
    stream.on('data', onData)
    stream.on('end', onEnd)
    stream.on('error', onGone)
    stream.on('close', onGone)
  })
}

/**
 * The client's body as undici gets it: the chunks that already came, then the rest of the
 * client's stream, which may pause at most `idleMs` between chunks. undici destroys a stream
 * body when the connection fails, but only starts an iterable once connected: so after a
 * refused connection the client's stream is untouched and can go to another target.
 */
class StreamedBody implements AsyncIterable<Buffer> {
  started = false

  constructor (readonly first: Buffer[], readonly stream: Readable, readonly idleMs: number, readonly exchange: Exchange) {}

  async * [Symbol.asyncIterator] (): AsyncGenerator<Buffer> {
    this.started = true
    // While the client's body comes, its own pace is judged (idleMs), not the target's answer.
    this.exchange.holdDeadline()
    try {
      yield * this.#chunks()
    } finally {
      this.exchange.resumeDeadline()
    }
  }

  async * #chunks (): AsyncGenerator<Buffer> {
    for (const chunk of this.first) yield chunk
    // Leave the client's stream to Fastify when undici stops early.
    const rest = this.stream.iterator({ destroyOnReturn: false })
    for (;;) {
      let timer: NodeJS.Timeout | undefined
      const late = new Promise<never>((_resolve, reject) => {
        timer = setTimeout(reject, this.idleMs, Object.assign(new Error('the request body paused too long'), { code: 'FST_STICKY_REQUEST_TIMEOUT' }))
      })
      let next: IteratorResult<Buffer>
      try {
        next = await Promise.race([rest.next(), late])
      } finally {
        clearTimeout(timer)
      }
      if (next.done === true) return
      yield next.value
    }
  }
}

function noop (): void {}

/**
 * A `text/event-stream` response (server-sent events) has no end of its own: when the gateway
 * must end it, it ends it as complete (the chunked terminator, or END_STREAM on HTTP/2) rather
 * than cut. An event that was only half sent is dropped by the client (an EventSource dispatches
 * only events ended by a blank line), and an EventSource reconnects after a clean end, through
 * the gateway to a target that is still there, with its `Last-Event-ID`.
 */
function isEventStream (contentType: string | string[] | undefined): boolean {
  return typeof contentType === 'string' && /^\s*text\/event-stream\s*(;|$)/i.test(contentType)
}

/** undici's error code; its parser errors sometimes come without one. */
function errorCodeOf (err: Error & { code?: string }): string {
  // A TLS alert after the handshake reaches us as a closed socket, the alert as its cause (see targetConnector).
  const cause = err.cause as { code?: string } | undefined
  if (err.code === 'UND_ERR_SOCKET' && isTlsFailure(cause?.code)) return cause?.code as string
  return err.code ?? (err.name === 'HTTPParserError' ? 'HPE_INVALID' : 'UNKNOWN')
}

function isReplayable (body: Body): boolean {
  return body === undefined || typeof body === 'string' || Buffer.isBuffer(body) || !body.started
}

/** The target's response headers by lower-case name; repeated names become arrays, as Node's own parser gives them. */
function parseRawHeaders (raw: Buffer[]): IncomingHttpHeaders {
  // No prototype: a header named `__proto__` or `constructor` is just a header.
  const headers: Record<string, string | string[]> = Object.create(null)
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toString('latin1').toLowerCase()
    const value = raw[i + 1].toString('latin1')
    const existing = headers[name]
    if (existing === undefined) headers[name] = name === 'set-cookie' ? [value] : value
    else if (Array.isArray(existing)) existing.push(value)
    else headers[name] = [existing, value]
  }
  return headers
}

/**
 * The header names a Connection header lists, to drop with it; null when it lists none beyond
 * hop-by-hop ones. `keep-alive` and `close` alone, nearly every Connection header, cost no Set.
 */
function listedHeaders (value: string | string[]): Set<string> | null {
  if (typeof value === 'string' && value.length <= 10) {
    const token = value.toLowerCase()
    if (token === 'keep-alive' || token === 'close') return null
  }
  return connectionTokens(value)
}

function connectionTokens (value: string | string[]): Set<string> {
  const tokens = new Set<string>()
  for (const token of String(value).toLowerCase().split(',')) tokens.add(token.trim())
  return tokens
}

function countAddresses (value: string | string[]): number {
  const text = String(value)
  let count = 1
  for (let i = text.indexOf(','); i !== -1; i = text.indexOf(',', i + 1)) count++
  return count
}

/** Reply headers a 101 cannot carry, or that the gateway writes itself. */
const NOT_IN_SWITCHING_PROTOCOLS = new Set(['upgrade', 'connection', 'content-length', 'content-type', 'transfer-encoding', 'keep-alive', 'cache-control', 'cdn-cache-control'])

/** The 101 the client gets: the target's headers and the gateway's cookies, as the reply holds them. */
function switchingProtocolsHead (reply: FastifyReply): string {
  let head = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
  const headers = reply.getHeaders()
  for (const name in headers) {
    const value = headers[name]
    if (value === undefined || NOT_IN_SWITCHING_PROTOCOLS.has(name)) continue
    for (const line of Array.isArray(value) ? value : [String(value)]) {
      // A hook's header Node would refuse in a response is left out, not sent raw.
      try {
        validateHeaderName(name)
        validateHeaderValue(name, line)
      } catch {
        continue
      }
      head += `${name}: ${line}\r\n`
    }
  }
  return head + '\r\n'
}

/** Sets a new decision on the request and swaps the reply's stickiness cookies for ones that pin it. */
function repin (reply: FastifyReply, rule: GroupForward, decision: AffinityDecision): void {
  // The listener rule that routed the request still did.
  const match = reply.request.affinity?.rule
  reply.request.affinity = match === undefined ? decision : { ...decision, rule: match }
  rule.group.metrics?.decided(decision)
  const request = reply.request
  const lines = decision.target === null ? null : rule.repinLines(request, decision.target.id, rule.now(), rule.secureFor(request))
  if (rule.pin !== null && rule.pin.pinNames.length > 0) replaceStickyCookies(reply, rule.pin.pinNames, lines)
  const decisionHeader = rule.decisionHeader
  if (decisionHeader !== null) reply.header(decisionHeader, decisionHeaderValue(decision))
}

/**
 * The target a client was pinned to before this request (a `hit`, or a `reassigned` one moved
 * there), for the hand-off headers when it must move again; a new client was pinned nowhere.
 */
function pinnedTo (decision: AffinityDecision): string | undefined {
  return decision.outcome === 'hit' || decision.outcome === 'reassigned' ? decision.target.id : undefined
}

/** The registered target, with its pool, that a decision names; undefined when it is gone. */
function targetOf (rule: GroupForward, decision: AffinityDecision): Target | undefined {
  return decision.target === null ? undefined : rule.group.get(decision.target.id)
}

/** Swaps this plugin's stickiness cookies on the reply for `lines`, keeping every other Set-Cookie. */
function replaceStickyCookies (reply: FastifyReply, names: readonly string[], lines: readonly string[] | null): void {
  const current = reply.getHeader('set-cookie')
  const kept = (current === undefined ? [] : Array.isArray(current) ? current : [String(current)])
    .filter((line) => !names.some((name) => line.startsWith(`${name}=`)))
  reply.removeHeader('set-cookie')
  const next = lines === null ? kept : [...kept, ...lines]
  if (next.length > 0) reply.header('set-cookie', next)
}
