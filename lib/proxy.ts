import { EventEmitter } from 'node:events'
import type { IncomingHttpHeaders } from 'node:http'
import type { Readable } from 'node:stream'
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import type { Dispatcher } from 'undici'
import {
  FST_STICKY_FORWARDED_FOR_TOO_LONG,
  FST_STICKY_REQUEST_INVALID,
  FST_STICKY_ROUTE_UNBOUND,
  FST_STICKY_TARGET_CONNECT_TIMEOUT,
  FST_STICKY_TARGET_CONNECTION_FAILED,
  FST_STICKY_TARGET_GROUP_UNAVAILABLE,
  FST_STICKY_TARGET_RESPONSE_INVALID,
  FST_STICKY_TARGET_TIMEOUT
} from './errors.js'
import type { ListenerRule } from './listener-rule.js'
import { choose } from './stickiness/affinity.js'
import { LB_CORS_COOKIE, LB_COOKIE } from './stickiness/lb-cookie.js'
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

type ResponseBody = Dispatcher.ResponseData['body']

/**
 * One forwarded request. It is also the undici request's abort signal (undici takes an
 * EventEmitter that emits `abort`): when the client goes away, the target's request is ended
 * too, instead of holding a pooled connection until the idle timeout.
 */
class Exchange extends EventEmitter {
  target: Target
  redispatched = false
  /** The client closed its connection before the response was complete. */
  clientGone = false
  /** The target's response body, once its headers came. */
  response: ResponseBody | null = null
  /** The target whose outstanding count this exchange holds, until its response ends. */
  #counted: Target | null = null

  constructor (
    readonly request: FastifyRequest,
    readonly reply: FastifyReply,
    readonly rule: ListenerRule,
    readonly path: string,
    readonly headers: Record<string, string | string[]>,
    readonly body: Body,
    target: Target
  ) {
    super()
    this.target = target
  }

  /** Counts the request as outstanding on `target` (and no longer on a previous one). */
  begin (target: Target): void {
    this.settle()
    this.target = target
    target.begin()
    this.#counted = target
  }

  /** Ends the outstanding count; safe to call more than once. */
  settle (): void {
    if (this.#counted !== null) {
      this.#counted.settle()
      this.#counted = null
    }
  }

  /** The client's connection closed: abort what is still running. */
  onClientClose (finished: boolean): void {
    if (!finished) {
      this.clientGone = true
      this.emit('abort')
      this.response?.destroy()
    }
    this.settle()
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
  forward (reply: FastifyReply, rule: ListenerRule | null, path: string | undefined): FastifyReply {
    const request = reply.request
    const res = reply.raw
    // An async handler may forward after the client left: there is nobody to answer.
    if (res.destroyed) return reply
    if (rule === null || request.affinity === null) throw new FST_STICKY_ROUTE_UNBOUND(`${request.method} ${request.routeOptions.url ?? ''}`)
    let affinity = request.affinity
    let target = targetOf(rule, affinity)
    // Deregistered after the decision (e.g. while an async handler awaited): decide again.
    if (target === undefined && affinity.target !== null) {
      affinity = choose(rule.group, rule.stickiness, 'target-deregistered')
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
    const exchange = new Exchange(request, reply, rule, requestTarget, headers,
      requestBody(request, headers, this.#settings.redispatch), target)
    res.once('close', () => exchange.onClientClose(res.writableFinished))
    this.#send(exchange, exchange.target)
    return reply
  }

  #send (exchange: Exchange, target: Target): void {
    exchange.begin(target)
    target.pool.request({
      path: exchange.path,
      method: exchange.request.method as Dispatcher.HttpMethod,
      headers: exchange.headers,
      body: exchange.body as Dispatcher.DispatchOptions['body'],
      signal: exchange
    }, (err, data) => {
      if (err !== null) this.#fail(exchange, err)
      else this.#respond(exchange, data)
    })
  }

  #fail (exchange: Exchange, err: Error & { code?: string }): void {
    exchange.settle()
    const { request, reply, rule, target } = exchange
    // The client is gone: nobody to answer, nothing to log as a target failure.
    if (exchange.clientGone || reply.sent) return
    const code = errorCodeOf(err)
    if (NOTHING_SENT.has(code) && this.#settings.redispatch && !exchange.redispatched && isReplayable(exchange.body)) {
      const decision = choose(rule.group, rule.stickiness, 'target-unreachable', target)
      const next = targetOf(rule, decision)
      if (next !== undefined) {
        request.log.info({ targetGroup: rule.group.name, target: target.id, to: next.id, code }, 'fastify-sticky: target did not take the request, redispatching')
        repin(reply, rule, decision)
        exchange.redispatched = true
        this.#send(exchange, next)
        return
      }
    }
    this.#logFailure(exchange, code)
    reply.send(this.#gatewayError(code))
  }

  #respond (exchange: Exchange, data: Dispatcher.ResponseData): void {
    const { reply } = exchange
    const body = data.body
    if (exchange.clientGone || reply.sent) {
      exchange.settle()
      body.destroy()
      return
    }
    exchange.response = body
    body.once('close', () => exchange.settle())
    const status = data.statusCode
    // Fastify refuses codes outside 100-599, and 1xx is no final answer: a malformed response.
    if (status < 200 || status > 599) {
      body.destroy()
      this.#logFailure(exchange, 'INVALID_STATUS')
      reply.send(new FST_STICKY_TARGET_RESPONSE_INVALID())
      return
    }

    // Fastify appends the target's Set-Cookie lines to the array it holds: keep a copy of ours.
    const current = reply.getHeader('set-cookie')
    const ownCookies = Array.isArray(current) ? [...current] : current
    const copied: string[] = []
    const headers = data.headers as IncomingHttpHeaders
    const connection = headers.connection
    const listed = connection === undefined ? null : connectionTokens(connection)
    for (const name in headers) {
      if (HOP_BY_HOP_RESPONSE.has(name) || (listed !== null && listed.has(name))) continue
      const value = headers[name]
      if (value === undefined) continue
      reply.header(name, value)
      copied.push(name)
    }

    // undici ends a failing body with destroy(err); Fastify then answers with that error if no
    // header went out yet, or closes the connection. Map the error first, so the client gets
    // ALB's 502/504 without the target's headers, and nothing logged carries the address.
    const destroy = body.destroy
    body.destroy = (err?: Error) => {
      if (err !== undefined && err !== null && !isGatewayError(err)) {
        const code = errorCodeOf(err)
        this.#logFailure(exchange, code)
        if (!reply.raw.headersSent) {
          for (const name of copied) reply.removeHeader(name)
          if (ownCookies !== undefined) reply.header('set-cookie', ownCookies)
        }
        err = this.#gatewayError(code)
      }
      return destroy.call(body, err)
    }
    reply.code(status)
    reply.send(body)
  }

  #logFailure (exchange: Exchange, code: string): void {
    // Only the error code is logged: undici's messages and errors carry the target's address.
    exchange.request.log.warn({ targetGroup: exchange.rule.group.name, target: exchange.target.id, code }, 'fastify-sticky: target request failed')
  }

  #gatewayError (code: string): FastifyError {
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

/** undici's error code; its parser errors sometimes come without one. */
function errorCodeOf (err: Error & { code?: string }): string {
  return err.code ?? (err.name === 'HTTPParserError' ? 'HPE_INVALID' : 'UNKNOWN')
}

function isGatewayError (err: Error & { code?: unknown }): boolean {
  return typeof err.code === 'string' && err.code.startsWith('FST_STICKY_')
}

function isReplayable (body: Body): boolean {
  return body === undefined || typeof body === 'string' || Buffer.isBuffer(body) || (body instanceof UnreadBody && !body.started)
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
function repin (reply: FastifyReply, rule: ListenerRule, decision: AffinityDecision): void {
  reply.request.affinity = decision
  replaceStickyCookies(reply, decision.target === null ? null : rule.setCookies(decision.target.id))
}

/** The registered target, with its pool, that a decision names; undefined when it is gone. */
function targetOf (rule: ListenerRule, decision: AffinityDecision): Target | undefined {
  return decision.target === null ? undefined : rule.group.get(decision.target.id)
}

/** Swaps this plugin's stickiness cookies on the reply for `lines`, keeping every other Set-Cookie. */
function replaceStickyCookies (reply: FastifyReply, lines: readonly string[] | null): void {
  const current = reply.getHeader('set-cookie')
  const kept = (current === undefined ? [] : Array.isArray(current) ? current : [String(current)])
    .filter((line) => !line.startsWith(`${LB_COOKIE}=`) && !line.startsWith(`${LB_CORS_COOKIE}=`))
  reply.removeHeader('set-cookie')
  const next = lines === null ? kept : [...kept, ...lines]
  if (next.length > 0) reply.header('set-cookie', next)
}
