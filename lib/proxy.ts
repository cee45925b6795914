import type { IncomingHttpHeaders } from 'node:http'
import { AsyncResource } from 'node:async_hooks'
import { Readable } from 'node:stream'
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import type { Dispatcher } from 'undici'
import {
  FST_STICKY_FORWARDED_FOR_TOO_LONG,
  FST_STICKY_REQUEST_INVALID,
  FST_STICKY_ROUTE_UNBOUND,
  FST_STICKY_TARGET_CONNECT_TIMEOUT,
  FST_STICKY_TARGET_CONNECTION_FAILED,
  FST_STICKY_TARGET_DEREGISTERED,
  FST_STICKY_TARGET_GROUP_UNAVAILABLE,
  FST_STICKY_TARGET_RESPONSE_INVALID,
  FST_STICKY_TARGET_TIMEOUT
} from './errors.js'
import type { GroupForward } from './group-forward.js'
import { choose } from './stickiness/affinity.js'
import type { Target } from './target.js'
import type { AffinityDecision } from './types.js'

/** The proxy's share of the resolved options. */
export interface ProxySettings {
  readonly idleTimeoutMs: number
  readonly connectTimeoutMs: number
  readonly redispatch: boolean
  readonly xForwardedFor: 'append' | 'preserve' | 'remove'
}

/** ALB answers 463 when X-Forwarded-For carries more addresses than this. */
export const MAX_FORWARDED_FOR_ADDRESSES = 30

/**
 * Responses with a Content-Type and a Content-Length up to this size are collected and sent in
 * one write (no stream per response); larger, unsized or untyped ones stream through.
 */
export const BUFFERED_RESPONSE_BYTES = 65_536

/** Request headers that belong to one connection (RFC 9110 §7.6.1) or that undici refuses. */
const HOP_BY_HOP_REQUEST = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade',
  'proxy-authorization', 'http2-settings', 'expect',
  'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-port'
])
const HOP_BY_HOP_RESPONSE = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade',
  'proxy-authenticate'
])

type Body = string | Buffer | Readable | UnreadBody | undefined

/** Errors after which nothing reached the target, so the request may go to another one. */
const NOTHING_SENT = new Set(['ECONNREFUSED', 'UND_ERR_CLOSED', 'UND_ERR_DESTROYED'])

/** Errors caused by the request (or the gateway's own deregistration), not by the target: passive checks ignore them. */
const CLIENT_FAULTS = new Set(['UND_ERR_INVALID_ARG', 'UND_ERR_NOT_SUPPORTED', 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH', 'UND_ERR_ABORTED',
  'UND_ERR_CLOSED', 'UND_ERR_DESTROYED', 'FST_STICKY_TARGET_DEREGISTERED'])

/** Where an exchange is: waiting for the target's headers, collecting a small body, streaming one, or finished. */
type Phase = 'waiting' | 'buffering' | 'streaming' | 'done'

/**
 * One forwarded request, and the undici dispatch handler of its request to the target: the
 * target's response goes to the client without a stream per response when it is small.
 * When the client goes away, the target's request is aborted too, instead of holding a pooled
 * connection until the idle timeout.
 */
class Exchange extends AsyncResource implements Dispatcher.DispatchHandler {
  target: Target
  redispatched = false
  /** The client closed its connection before the response was complete. */
  clientGone = false
  phase: Phase = 'waiting'
  /** The target whose outstanding count this exchange holds, until its response ends. */
  #counted: Target | null = null
  #abort: ((err?: Error) => void) | null = null
  #status = 0
  /** Body bytes received from the target. */
  #received = 0
  #chunks: Buffer[] = []
  #stream: ResponseStream | null = null
  /** Header names copied from the target onto the reply, and how many Set-Cookie lines the reply had before them. */
  #copied: string[] = []
  #ownCookieCount = 0

  constructor (
    readonly proxy: Proxy,
    readonly request: FastifyRequest,
    readonly reply: FastifyReply,
    readonly rule: GroupForward,
    readonly path: string,
    readonly headers: Record<string, string | string[]>,
    readonly body: Body,
    target: Target
  ) {
    // undici calls the handler in the async context of the pooled socket, which belongs to the
    // request that opened it: the callbacks that reach Fastify run in this request's own.
    super('FASTIFY_STICKY_EXCHANGE', { requireManualDestroy: true })
    this.target = target
  }

  /** Counts the request as outstanding on `target` (and no longer on a previous one). */
  begin (target: Target): void {
    this.settle()
    this.target = target
    target.begin()
    this.#counted = target
    this.#abort = null
    this.phase = 'waiting'
  }

  /** Ends the outstanding count; safe to call more than once. */
  settle (): void {
    if (this.#counted !== null) {
      this.#counted.settle()
      this.#counted = null
    }
  }

  /**
   * The client's connection closed: abort what is still running. That includes a response that
   * finished without our body (an onSend hook replaced it), which nobody would read to its end.
   */
  onClientClose (finished: boolean): void {
    if (!finished) this.clientGone = true
    if (this.phase !== 'done') {
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

  // undici's dispatch handler

  onConnect (abort: (err?: Error) => void): void {
    if (this.clientGone) abort()
    else this.#abort = abort
  }

  onHeaders (statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    // 1xx interim responses (100 Continue, 103 Early Hints) are not passed on.
    if (statusCode < 200) return true
    return this.runInAsyncScope(this.#onHeaders, this, statusCode, rawHeaders, resume)
  }

  #onHeaders (statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    const { reply } = this
    if (this.clientGone || reply.sent) {
      this.phase = 'done'
      this.abortTarget()
      return false
    }
    // Fastify refuses codes past 599: a malformed response.
    if (statusCode > 599) {
      this.phase = 'done'
      this.abortTarget()
      this.settle()
      this.proxy.logFailure(this, 'INVALID_STATUS')
      reply.send(new FST_STICKY_TARGET_RESPONSE_INVALID())
      return false
    }
    this.#status = statusCode
    // Passive checks: a 5xx counts against the target; any other response clears its count once complete.
    if (statusCode >= 500) this.target.recordOutcome(true)
    const headers = this.#copyHeaders(rawHeaders)
    const length = headers['content-length']
    if (headers['content-type'] !== undefined && length !== undefined && this.request.method !== 'HEAD' &&
        statusCode !== 204 && statusCode !== 304 && Number(length) <= BUFFERED_RESPONSE_BYTES) {
      this.phase = 'buffering'
      return true
    }
    this.phase = 'streaming'
    const stream = new ResponseStream(this, resume)
    this.#stream = stream
    reply.code(statusCode)
    reply.send(stream)
    return true
  }

  onData (chunk: Buffer): boolean {
    this.#received += chunk.length
    if (this.phase === 'buffering') {
      this.#chunks.push(chunk)
      return true
    }
    return this.#stream?.push(chunk) ?? false
  }

  onComplete (): void {
    this.runInAsyncScope(this.#onComplete, this)
  }

  onError (err: Error & { code?: string }): void {
    this.runInAsyncScope(this.#onError, this, err)
  }

  #onComplete (): void {
    if (this.#status < 500) this.target.recordOutcome(false)
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
      this.#stream?.push(null)
    }
  }

  #onError (err: Error & { code?: string }): void {
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
      if (!CLIENT_FAULTS.has(code)) this.target.recordOutcome(true)
      this.proxy.logFailure(this, code)
      this.#restoreHeaders()
      this.reply.send(this.proxy.gatewayError(code))
    } else if (phase === 'streaming') {
      const stream = this.#stream
      if (stream === null || stream.destroyed) return
      // A 204 or 304 never has a body, though it may carry the Content-Length of the
      // representation (RFC 9110 §8.6); undici counts the missing bytes as a mismatch.
      if ((this.#status === 204 || this.#status === 304) && this.#received === 0 && err.code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH') {
        stream.push(null)
        return
      }
      if (this.clientGone) {
        stream.destroy()
        return
      }
      // Fastify answers with this error if no header went out yet, else closes the connection.
      const code = errorCodeOf(err)
      if (!CLIENT_FAULTS.has(code)) this.target.recordOutcome(true)
      this.proxy.logFailure(this, code)
      if (!this.reply.raw.headersSent) this.#restoreHeaders()
      stream.destroy(this.proxy.gatewayError(code))
    }
  }

  /** Copies the target's end-to-end headers onto the reply; returns them by lower-case name. */
  #copyHeaders (rawHeaders: Buffer[]): IncomingHttpHeaders {
    const { reply } = this
    const headers = parseRawHeaders(rawHeaders)
    // Fastify appends the target's Set-Cookie lines after ours: count ours, copy them only on failure.
    const current = reply.getHeader('set-cookie')
    this.#ownCookieCount = current === undefined ? 0 : Array.isArray(current) ? current.length : 1
    const connection = headers.connection
    const listed = connection === undefined ? null : connectionTokens(connection)
    const copied = this.#copied
    for (const name in headers) {
      if (HOP_BY_HOP_RESPONSE.has(name) || (listed !== null && listed.has(name))) continue
      const value = headers[name]
      if (value === undefined) continue
      reply.header(name, value)
      copied.push(name)
    }
    return headers
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

/** A streamed response body: undici pushes, the client's pace resumes it, destroying it aborts the target's request. */
class ResponseStream extends Readable {
  readonly #exchange: Exchange
  readonly #resume: () => void

  constructor (exchange: Exchange, resume: () => void) {
    super()
    this.#exchange = exchange
    this.#resume = resume
    // Fastify reports a failure through its own listener, once it has attached it; before that
    // (an async onSend hook still running, or a hook that replaced this body) it must not be
    // an uncaught error.
    this.on('error', noop)
  }

  override _read (): void {
    this.#resume()
  }

  override _destroy (err: Error | null, callback: (error?: Error | null) => void): void {
    if (this.#exchange.phase !== 'done') this.#exchange.abortTarget()
    callback(err)
  }
}

/**
 * Sends requests of bound routes to their affinity's target through that target's own undici
 * pool, and maps failures to ALB's status codes. The target's own responses, 4xx and 5xx
 * included, pass through untouched; nothing is retried except a request that never reached
 * its target (refused connection, or a pool closed by deregistration), once, on another target
 * (HAProxy's redispatch).
 */
export class Proxy {
  readonly #settings: ProxySettings

  constructor (settings: ProxySettings) {
    this.#settings = settings
  }

  /** Forwards `reply.request` to its affinity's target; `path` replaces the request's own path and query. */
  forward (reply: FastifyReply, rule: GroupForward | null, path: string | undefined): FastifyReply {
    const request = reply.request
    const res = reply.raw
    // An async handler may forward after the client left: there is nobody to answer.
    if (res.destroyed) return reply
    if (rule === null || request.affinity === null) throw new FST_STICKY_ROUTE_UNBOUND(`${request.method} ${request.routeOptions.url ?? ''}`)
    let affinity = request.affinity
    let target = targetOf(rule, affinity)
    // Deregistered after the decision (e.g. while an async handler awaited): decide again.
    if (target === undefined && affinity.target !== null) {
      affinity = choose(rule.group, rule.stickiness, 'target-deregistered', rule.now())
      repin(reply, rule, affinity)
      target = targetOf(rule, affinity)
    }
    if (target === undefined) return reply.send(new FST_STICKY_TARGET_GROUP_UNAVAILABLE(affinity.targetGroup))
    const headers = this.#requestHeaders(request)
    if (headers === null) {
      // 463 has no reason phrase for Fastify's error handler to add: write the body here.
      const err = new FST_STICKY_FORWARDED_FOR_TOO_LONG(MAX_FORWARDED_FOR_ADDRESSES)
      return reply.code(463).send({ statusCode: 463, code: err.code, error: 'X-Forwarded-For Too Long', message: err.message })
    }
    const requestTarget = originFormOf(path ?? request.raw.url ?? '/')
    // The route matched the path as sent: `/cart/../admin` must not reach `/admin` on the target.
    if (hasDotSegment(requestTarget)) return reply.send(new FST_STICKY_REQUEST_INVALID())
    const exchange = new Exchange(this, request, reply, rule, requestTarget, headers,
      requestBody(request, headers, this.#settings.redispatch), target)
    res.once('close', () => exchange.onClientClose(res.writableFinished))
    this.send(exchange, target)
    return reply
  }

  /** Dispatches the exchange's request on `target`'s pool. */
  send (exchange: Exchange, target: Target): void {
    exchange.begin(target)
    target.pool.dispatch({
      path: exchange.path,
      method: exchange.request.method as Dispatcher.HttpMethod,
      headers: exchange.headers,
      body: exchange.body as Dispatcher.DispatchOptions['body']
    }, exchange)
  }

  /** The target's request failed before any response: redispatch once, or answer with ALB's status. */
  fail (exchange: Exchange, err: Error & { code?: string }): void {
    const { request, reply, rule, target } = exchange
    // The client is gone: nobody to answer, nothing to log as a target failure.
    if (exchange.clientGone || reply.sent) return
    const code = errorCodeOf(err)
    if (!CLIENT_FAULTS.has(code)) target.recordOutcome(true)
    if (NOTHING_SENT.has(code) && this.#settings.redispatch && !exchange.redispatched && isReplayable(exchange.body)) {
      const nowMs = rule.now()
      const decision = choose(rule.group, rule.stickiness, 'target-unreachable', nowMs, target)
      const next = targetOf(rule, decision)
      if (next !== undefined) {
        // The client is pinned to `next` now, not to the target that refused it.
        if (rule.stickiness !== null && exchange.request.affinity?.outcome !== 'hit') target.sessions.cancel(rule.stickiness.durationSeconds, Math.floor(nowMs / 1000))
        request.log.info({ targetGroup: rule.group.name, target: target.id, to: next.id, code }, 'fastify-sticky: target did not take the request, redispatching')
        repin(reply, rule, decision)
        exchange.redispatched = true
        this.send(exchange, next)
        return
      }
    }
    this.logFailure(exchange, code)
    reply.send(this.gatewayError(code))
  }

  logFailure (exchange: Exchange, code: string): void {
    // Only the error code is logged: undici's messages and errors carry the target's address.
    exchange.request.log.warn({ targetGroup: exchange.rule.group.name, target: exchange.target.id, code }, 'fastify-sticky: target request failed')
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
      case 'UND_ERR_INVALID_ARG':
      case 'UND_ERR_NOT_SUPPORTED':
      case 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH':
        return new FST_STICKY_REQUEST_INVALID()
      default:
        return code.startsWith('HPE_') ? new FST_STICKY_TARGET_RESPONSE_INVALID() : new FST_STICKY_TARGET_CONNECTION_FAILED()
    }
  }

  /** The headers to send: hop-by-hop ones dropped, X-Forwarded-* set; null when X-Forwarded-For is too long (463). */
  #requestHeaders (request: FastifyRequest): Record<string, string | string[]> | null {
    const incoming = request.raw.headers
    const headers: Record<string, string | string[]> = {}
    const connection = incoming.connection
    const listed = connection === undefined ? null : connectionTokens(connection)
    for (const name in incoming) {
      if (HOP_BY_HOP_REQUEST.has(name) || (listed !== null && listed.has(name))) continue
      const value = incoming[name]
      if (value !== undefined) headers[name] = value
    }

    const forwardedFor = incoming['x-forwarded-for']
    if (forwardedFor !== undefined && countAddresses(forwardedFor) > MAX_FORWARDED_FOR_ADDRESSES) return null
    const mode = this.#settings.xForwardedFor
    if (mode === 'append') {
      const client = request.raw.socket?.remoteAddress
      if (client !== undefined) headers['x-forwarded-for'] = forwardedFor === undefined ? client : `${forwardedFor}, ${client}`
      else if (forwardedFor !== undefined) headers['x-forwarded-for'] = forwardedFor
    } else if (mode === 'preserve' && forwardedFor !== undefined) {
      headers['x-forwarded-for'] = forwardedFor
    }
    headers['x-forwarded-proto'] = request.protocol
    const port = request.raw.socket?.localPort
    if (port !== undefined) headers['x-forwarded-port'] = String(port)
    return headers
  }
}

/** Cheap test for what may start a dot segment: `/.`, `%2e`, or a separator a target may decode (`%2f`, `%5c`, `\\`). */
const DOT_SEGMENT_HINT = /\/\.|%2e|%2f|%5c|\\/i

/**
 * True when the path (before `?`) has a `.` or `..` segment once `%2e`, `%2f`, `%5c` and `\\`
 * are read as a lenient target would; a `;` ends a segment's name (`..;jsessionid`).
 */
export function hasDotSegment (target: string): boolean {
  const query = target.indexOf('?')
  const path = query === -1 ? target : target.slice(0, query)
  if (!DOT_SEGMENT_HINT.test(path)) return false
  const plain = path.replace(/%2e/gi, '.').replace(/%2f|%5c|\\/gi, '/')
  for (const segment of plain.split('/')) {
    const name = segment.split(';')[0]
    if (name === '.' || name === '..') return true
  }
  return false
}

/** The request target in origin-form: absolute-form (`GET http://other/x`) keeps only path and query, so it can never pick the origin. */
export function originFormOf (url: string): string {
  if (url.charCodeAt(0) === 47 /* / */) return url
  try {
    const parsed = new URL(url)
    return `${parsed.pathname}${parsed.search}`
  } catch {
    return `/${url}`
  }
}

const FORM = /^application\/x-www-form-urlencoded/i
const JSON_TYPE = /^[^;]*[/+]json\s*(;|$)/i

function requestBody (request: FastifyRequest, headers: Record<string, string | string[]>, replayable: boolean): Body {
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
  if ((length === undefined || length === '0') && raw.headers['transfer-encoding'] === undefined) return undefined
  return replayable ? new UnreadBody(raw) : raw
}

/**
 * The client's body stream, handed to undici as an async iterable. undici destroys a stream
 * body when the connection fails, but only starts an iterable once connected: so after a
 * refused connection the client's stream is untouched and can go to another target.
 */
class UnreadBody implements AsyncIterable<Buffer> {
  started = false

  constructor (readonly stream: Readable) {}

  [Symbol.asyncIterator] (): AsyncIterator<Buffer> {
    this.started = true
    // Leave the client's stream to Fastify when undici stops early.
    return this.stream.iterator({ destroyOnReturn: false })
  }
}

function noop (): void {}

/** undici's error code; its parser errors sometimes come without one. */
function errorCodeOf (err: Error & { code?: string }): string {
  return err.code ?? (err.name === 'HTTPParserError' ? 'HPE_INVALID' : 'UNKNOWN')
}

function isReplayable (body: Body): boolean {
  return body === undefined || typeof body === 'string' || Buffer.isBuffer(body) || (body instanceof UnreadBody && !body.started)
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

/** Sets a new decision on the request and swaps the reply's stickiness cookies for ones that pin it. */
function repin (reply: FastifyReply, rule: GroupForward, decision: AffinityDecision): void {
  // The listener rule that routed the request still did.
  const match = reply.request.affinity?.rule
  reply.request.affinity = match === undefined ? decision : { ...decision, rule: match }
  replaceStickyCookies(reply, rule.lbCookieNames, decision.target === null ? null : rule.setCookies(decision.target.id))
}

/** The registered target, with its pool, that a decision names; undefined when it is gone. */
function targetOf (rule: GroupForward, decision: AffinityDecision): Target | undefined {
  return decision.target === null ? undefined : rule.group.get(decision.target.id)
}

/** Swaps this plugin's stickiness cookies on the reply for `lines`, keeping every other Set-Cookie. */
function replaceStickyCookies (reply: FastifyReply, names: readonly [string, string], lines: readonly string[] | null): void {
  const current = reply.getHeader('set-cookie')
  const kept = (current === undefined ? [] : Array.isArray(current) ? current : [String(current)])
    .filter((line) => !line.startsWith(`${names[0]}=`) && !line.startsWith(`${names[1]}=`))
  reply.removeHeader('set-cookie')
  const next = lines === null ? kept : [...kept, ...lines]
  if (next.length > 0) reply.header('set-cookie', next)
}
