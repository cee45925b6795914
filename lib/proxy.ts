import { EventEmitter } from 'node:events'
import type { IncomingHttpHeaders } from 'node:http'
import type { FastifyReply, FastifyRequest } from 'fastify'
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

type Body = string | Buffer | NodeJS.ReadableStream | undefined

/**
 * One forwarded request. It is also the undici request's abort signal (undici takes an
 * EventEmitter that emits `abort`): when the client goes away, the target's request is ended
 * too, instead of holding a pooled connection until the idle timeout.
 */
class Exchange extends EventEmitter {
  target: Target
  redispatched = false

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
}

/**
 * Sends requests of bound routes to their affinity's target through that target's own undici
 * pool, and maps failures to ALB's status codes. The target's own responses, 4xx and 5xx
 * included, pass through untouched; nothing is retried except a refused connection, once, on
 * another target (HAProxy's redispatch), because then nothing was sent.
 */
export class Proxy {
  readonly #settings: ProxySettings

  constructor (settings: ProxySettings) {
    this.#settings = settings
  }

  /** Forwards `reply.request` to its affinity's target; `path` replaces the request's own path and query. */
  forward (reply: FastifyReply, rule: ListenerRule | null, path: string | undefined): FastifyReply {
    const request = reply.request
    const affinity = request.affinity
    if (rule === null || affinity === null) throw new FST_STICKY_ROUTE_UNBOUND(`${request.method} ${request.routeOptions.url ?? ''}`)
    if (affinity.target === null) return reply.send(new FST_STICKY_TARGET_GROUP_UNAVAILABLE(affinity.targetGroup))
    const headers = this.#requestHeaders(request)
    if (headers === null) return reply.send(new FST_STICKY_FORWARDED_FOR_TOO_LONG(MAX_FORWARDED_FOR_ADDRESSES))
    const exchange = new Exchange(request, reply, rule, originFormOf(path ?? request.raw.url ?? '/'), headers,
      requestBody(request, headers), affinity.target as Target)
    const res = reply.raw
    res.once('close', () => {
      if (!res.writableFinished) exchange.emit('abort')
    })
    this.#send(exchange)
    return reply
  }

  #send (exchange: Exchange): void {
    const target = exchange.target
    target.begin()
    target.pool.request({
      path: exchange.path,
      method: exchange.request.method as Dispatcher.HttpMethod,
      headers: exchange.headers,
      body: exchange.body as Dispatcher.DispatchOptions['body'],
      signal: exchange
    }, (err, data) => {
      if (err !== null) {
        target.settle()
        this.#fail(exchange, err)
      } else {
        data.body.once('close', () => target.settle())
        respond(exchange, data)
      }
    })
  }

  #fail (exchange: Exchange, err: Error & { code?: string }): void {
    const { request, reply, rule, target } = exchange
    // The client is gone: nobody to answer, nothing to log as a target failure.
    if (reply.sent || request.raw.destroyed) return
    const code = err.code ?? 'UNKNOWN'
    if (code === 'ECONNREFUSED' && this.#settings.redispatch && !exchange.redispatched && isReplayable(exchange.body)) {
      const decision = choose(rule.group, rule.stickiness, 'target-unreachable', target)
      if (decision.target !== null) {
        request.log.info({ targetGroup: rule.group.name, target: target.id, to: decision.target.id, code }, 'fastify-sticky: target refused the connection, redispatching')
        request.affinity = decision
        replaceStickyCookies(reply, rule.setCookies(decision.target as Target))
        exchange.target = decision.target as Target
        exchange.redispatched = true
        this.#send(exchange)
        return
      }
    }
    // Only the error code is logged: undici's messages carry the target's address.
    request.log.warn({ targetGroup: rule.group.name, target: target.id, code }, 'fastify-sticky: target request failed')
    reply.send(this.#gatewayError(code))
  }

  #gatewayError (code: string): Error {
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

function respond (exchange: Exchange, data: Dispatcher.ResponseData): void {
  const { reply, request } = exchange
  if (reply.sent || request.raw.destroyed) {
    data.body.destroy()
    return
  }
  reply.code(data.statusCode)
  const headers = data.headers as IncomingHttpHeaders
  const connection = headers.connection
  const listed = connection === undefined ? null : connectionTokens(connection)
  for (const name in headers) {
    if (HOP_BY_HOP_RESPONSE.has(name) || (listed !== null && listed.has(name))) continue
    const value = headers[name]
    if (value !== undefined) reply.header(name, value)
  }
  reply.send(data.body)
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

function requestBody (request: FastifyRequest, headers: Record<string, string | string[]>): Body {
  const parsed = request.body
  if (parsed !== undefined) {
    // A content-type parser of the user's route already read the body: send what it made of it.
    const body = typeof parsed === 'string' || Buffer.isBuffer(parsed) ? parsed : JSON.stringify(parsed)
    headers['content-length'] = String(Buffer.byteLength(body))
    return body
  }
  const raw = request.raw
  const length = raw.headers['content-length']
  if ((length === undefined || length === '0') && raw.headers['transfer-encoding'] === undefined) return undefined
  return raw
}

function isReplayable (body: Body): boolean {
  if (body === undefined || typeof body === 'string' || Buffer.isBuffer(body)) return true
  const stream = body as NodeJS.ReadableStream & { readableDidRead?: boolean, destroyed?: boolean }
  return stream.readableDidRead === false && stream.destroyed !== true
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

/** Swaps this plugin's stickiness cookies on the reply for `lines`, keeping every other Set-Cookie. */
function replaceStickyCookies (reply: FastifyReply, lines: readonly string[] | null): void {
  const current = reply.getHeader('set-cookie')
  const kept = (current === undefined ? [] : Array.isArray(current) ? current : [String(current)])
    .filter((line) => !line.startsWith(`${LB_COOKIE}=`) && !line.startsWith(`${LB_CORS_COOKIE}=`))
  reply.removeHeader('set-cookie')
  const next = lines === null ? kept : [...kept, ...lines]
  if (next.length > 0) reply.header('set-cookie', next)
}
