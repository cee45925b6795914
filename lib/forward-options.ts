import type { IncomingHttpHeaders } from 'node:http'
import type { Readable } from 'node:stream'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { FST_STICKY_OPTION_INVALID } from './errors.js'
import { invalid, refuseUnknownKeys, requireObject } from './validate.js'

/** The target's response as `onResponse` gets it: its status, its headers (after `rewriteHeaders`) and its body. */
export interface ForwardedResponse {
  statusCode: number
  headers: IncomingHttpHeaders
  stream: Readable
}

/**
 * Per-call options of `reply.forward(path, options)`, with the names and meanings of
 * @fastify/reply-from's `reply.from(source, options)`. The target is always the affinity's.
 */
export interface ReplyForwardOptions {
  /** Changes the headers sent to the target; hop-by-hop headers it adds are dropped again. */
  rewriteRequestHeaders?: (request: FastifyRequest, headers: Record<string, string | string[]>) => Record<string, string | string[] | number | undefined>
  /** Changes the target's response headers before they are copied onto the reply (and before `onResponse`). */
  rewriteHeaders?: (headers: IncomingHttpHeaders, request: FastifyRequest) => IncomingHttpHeaders
  /** Takes over the response: the reply has the target's status and headers; send `response.stream` (or what you make of it) yourself. */
  onResponse?: (request: FastifyRequest, reply: FastifyReply, response: ForwardedResponse) => void
  /** Answers a failure before any response byte instead of the gateway's 502/503/504 (`error` is that gateway error). */
  onError?: (reply: FastifyReply, failure: { error: Error & { statusCode?: number, code?: string } }) => void
  /** The query sent to the target: an object (replaces the request's), or a function of the request's `search`, the request URL and the request. */
  queryString?: Record<string, unknown> | ((search: string, url: string, request: FastifyRequest) => string)
  /** The method sent to the target. */
  method?: string
  /** A body in place of the request's: a string or Buffer with `contentType`, else serialised as JSON; `null` sends none. */
  body?: unknown
  /** The Content-Type of `body`. */
  contentType?: string
  /** Milliseconds for the target's response headers (at most the plugin's `idleTimeoutMs`). */
  timeout?: number
}

const KNOWN = ['rewriteRequestHeaders', 'rewriteHeaders', 'onResponse', 'onError', 'queryString', 'method', 'body', 'contentType', 'timeout'] as const

/** reply-from options that would bypass or duplicate what the gateway does, and what to use instead. */
const REFUSED: Record<string, string> = {
  getUpstream: 'not supported: the request goes to its affinity\'s target; bind the route to a target group (or a listener whose rules choose one)',
  retriesCount: 'not supported: failed requests are sent again by the plugin\'s redispatch and redispatchIdempotent options',
  retryDelay: 'not supported: failed requests are sent again by the plugin\'s redispatch and redispatchIdempotent options',
  maxRetriesOn503: 'not supported: failed requests are sent again by the plugin\'s redispatch and redispatchIdempotent options',
  retryMethods: 'not supported: failed requests are sent again by the plugin\'s redispatch and redispatchIdempotent options'
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/

/** Options already checked (by stickyProxy at registration, or on a previous call): not checked again. */
const checked = new WeakSet<object>()

/** Checks `reply.forward()` options once per object; `path` names them in errors. */
export function checkForwardOptions (raw: unknown, path: string): ReplyForwardOptions {
  const options = requireObject(raw, path)
  if (checked.has(options)) return options as ReplyForwardOptions
  for (const key of Object.keys(options)) {
    if (key in REFUSED) throw new FST_STICKY_OPTION_INVALID(`${path}.${key} is ${REFUSED[key]}`)
  }
  refuseUnknownKeys(options, KNOWN, `${path}.`)
  for (const name of ['rewriteRequestHeaders', 'rewriteHeaders', 'onResponse', 'onError'] as const) {
    if (options[name] !== undefined && typeof options[name] !== 'function') invalid(`${path}.${name}`, 'a function', options[name])
  }
  const query = options.queryString
  if (query !== undefined && typeof query !== 'function' && (query === null || typeof query !== 'object')) invalid(`${path}.queryString`, 'an object or a function', query)
  if (options.method !== undefined && (typeof options.method !== 'string' || !TOKEN.test(options.method))) invalid(`${path}.method`, 'an HTTP method name', options.method)
  if (options.contentType !== undefined && typeof options.contentType !== 'string') invalid(`${path}.contentType`, 'a string', options.contentType)
  const timeout = options.timeout
  if (timeout !== undefined && (typeof timeout !== 'number' || !Number.isInteger(timeout) || timeout < 1)) invalid(`${path}.timeout`, 'a positive integer (milliseconds)', timeout)
  checked.add(options)
  return options as ReplyForwardOptions
}

/** The query part (with its `?`, or '') a `queryString` option makes of the request's. */
export function queryOf (option: ReplyForwardOptions['queryString'], search: string, url: string, request: FastifyRequest): string {
  if (typeof option === 'function') {
    const query = option(search, url, request)
    return query ? `?${query}` : ''
  }
  if (option !== undefined) {
    const query = new URLSearchParams()
    for (const [name, value] of Object.entries(option)) {
      if (Array.isArray(value)) for (const item of value) query.append(name, String(item))
      else if (value !== undefined) query.append(name, String(value))
    }
    const text = query.toString()
    return text === '' ? '' : `?${text}`
  }
  return search
}
