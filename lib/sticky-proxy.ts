import { randomBytes } from 'node:crypto'
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteShorthandOptions } from 'fastify'
import { FST_STICKY_OPTION_INVALID, FST_STICKY_REQUEST_INVALID } from './errors.js'
import fastifySticky from './index.js'
import { checkForwardOptions, type ReplyForwardOptions } from './forward-options.js'
import { checkWithin, rewritePrefixOf, type PrefixMatching } from './prefix-rewrite.js'
import { originFormOf, refusesPath } from './request-target.js'
import { invalid, refuseUnknownKeys, requireObject } from './validate.js'
import type { StickinessOptions } from './types.js'

/** A route-level hook as Fastify takes it: one function or several. */
type RouteHook = NonNullable<RouteShorthandOptions['preHandler']>

/**
 * Options of `stickyProxy`, registered with Fastify's `prefix` like @fastify/http-proxy, whose
 * options it takes with the same names, defaults and meanings where they carry over.
 */
export interface StickyProxyOptions {
  /** Path prefix to mount, from Fastify's register options; may hold route parameters (`/api/:tenant`). */
  prefix?: string
  /** The target group that serves every path under the prefix; or give `listener` or `upstream`. */
  targetGroup?: string
  /** A listener (see the plugin's `listeners`) whose rules choose the target group per request; instead of `targetGroup`. */
  listener?: string
  /**
   * One target, as @fastify/http-proxy's `upstream` (`http://host:port[/path]`): the fastify-sticky
   * plugin is registered inside this prefix with one target group of that target and stickiness
   * off (so not where the plugin is already registered). The URL's path is the default `rewritePrefix`.
   */
  upstream?: string
  /** Overrides the group's stickiness under this prefix (e.g. `false` for `/static`). */
  stickiness?: StickinessOptions
  /** Replaces the prefix on the way to the target; may name the prefix's parameters (`/v2/:tenant`). Default `''` (the prefix is removed). */
  rewritePrefix?: string
  /** Tunnels WebSocket upgrades under the prefix to the affinity's target (see the route option `config.websocket`). Default true. */
  websocket?: boolean
  /** Methods routed. Default every method Fastify knows (@fastify/http-proxy: DELETE, GET, HEAD, PATCH, POST, PUT, OPTIONS). */
  httpMethods?: string[]
  /** Paths under the prefix that are routed. Default `['/', '/*']`. */
  routes?: string[]
  /** Route constraints (e.g. `{ host: 'api.example.com' }`), as Fastify's route option. */
  constraints?: Record<string, unknown>
  /** The routes' `config`, as `request.routeOptions.config` shows it (the plugin's own keys stay out of sight). */
  config?: Record<string, unknown>
  /** Route hooks, run before the request is forwarded. */
  preHandler?: RouteHook
  /** @fastify/http-proxy's old name of `preHandler`. */
  beforeHandler?: RouteHook
  /** A preValidation hook; with it, bodies are parsed by the server's content-type parsers (so the hook sees `request.body`) and forwarded as parsed. */
  preValidation?: RouteHook
  /** false: bodies are parsed by the server's content-type parsers and forwarded as parsed (re-serialised). Default true: they stream through unparsed. */
  proxyPayloads?: boolean
  /** Changes the request URL (path and query) before the prefix is rewritten: `(url, params, prefix) => url`. */
  preRewrite?: (url: string, params: Record<string, string>, prefix: string) => string
  /** Per-request options of `reply.forward()` (header rewriting, onResponse, onError, queryString, …). */
  replyOptions?: ReplyForwardOptions
  /** A relative `Location` from the target gets the prefix back in place of `rewritePrefix`. Default true. */
  internalRewriteLocationHeader?: boolean
  /** Serves the request instead of forwarding it: `(request, reply, dest, replyOptions)`; `reply.forward(dest, replyOptions)` forwards it. */
  handler?: (request: FastifyRequest, reply: FastifyReply, dest: string, options: ReplyForwardOptions) => unknown
  /** @fastify/http-proxy's transport options: only `http.requestOptions.timeout` carries over (as `replyOptions.timeout`); `true`/`false` choose no transport here (targets are always reached through the plugin's undici pools). */
  http?: boolean | { requestOptions?: { timeout?: number } }
  /** @fastify/http-proxy's `undici` flag: the plugin's pools are undici's already; an object of pool options is refused. */
  undici?: boolean
  /** @fastify/http-proxy's WebSocket upstream: accepted when it names `upstream`'s origin (the same target), refused otherwise. */
  wsUpstream?: string
  /** Changes the upgrade request sent to the target: `rewriteRequestHeaders(headers, request)`, extra `headers`, `queryString`. */
  wsClientOptions?: {
    rewriteRequestHeaders?: (headers: Record<string, string | string[]>, request: FastifyRequest) => Record<string, string | string[]>
    headers?: Record<string, string>
    queryString?: ReplyForwardOptions['queryString']
  }
}

/** Every key stickyProxy takes, with Fastify's own register options. */
const KNOWN = ['prefix', 'logLevel', 'logSerializers', 'targetGroup', 'listener', 'upstream', 'wsUpstream', 'stickiness', 'rewritePrefix', 'websocket',
  'httpMethods', 'routes', 'constraints', 'config', 'preHandler', 'beforeHandler', 'preValidation', 'proxyPayloads', 'preRewrite',
  'replyOptions', 'internalRewriteLocationHeader', 'handler', 'http', 'undici', 'wsClientOptions']

const RETRIES = 'the plugin\'s redispatch and redispatchIdempotent options'
/** @fastify/http-proxy (and @fastify/reply-from) options that cannot carry over, and what to use instead. */
const REFUSED: Record<string, string> = {
  getUpstream: 'the affinity chooses the target: bind the prefix to a targetGroup, or to a listener whose rules choose one',
  wsHooks: 'the gateway tunnels WebSocket bytes as they come, so no message passes through a hook: read them in the target',
  wsReconnect: 'a WebSocket whose target goes away is closed with 1001 and the client reconnects through its affinity: see the group option websocket',
  wsServerOptions: 'the gateway tunnels WebSocket bytes unchanged (frame size and compression are the target\'s); per-target limits are the group option websocket',
  http2: 'targets are reached over HTTP/1.1 (HTTP/2 clients are served): drop the option',
  base: 'give upstream, or targets in a target group',
  retriesCount: RETRIES,
  retryDelay: RETRIES,
  maxRetriesOn503: RETRIES,
  retryMethods: RETRIES,
  globalAgent: 'connections are the plugin\'s pools: see its connectionsPerTarget, connectTimeoutMs and idleTimeoutMs',
  destroyAgent: 'connections are the plugin\'s pools: see its connectionsPerTarget, connectTimeoutMs and idleTimeoutMs',
  sessionTimeout: 'connections are the plugin\'s pools: see its idleTimeoutMs',
  disableCache: 'no URL is cached: drop the option',
  cacheURLs: 'no URL is cached: drop the option',
  contentTypesToEncode: 'a parsed body is sent in the format its Content-Type names: drop the option',
  disableRequestLogging: 'the gateway logs no line per forwarded request: drop the option'
}

/** Where a stickyProxy route keeps what the plugin reads of it, out of `request.routeOptions.config`'s enumerable keys. */
function routeConfig (user: Record<string, unknown> | undefined, own: Record<string, unknown>): Record<string, unknown> {
  const config: Record<string, unknown> = { ...user }
  for (const [key, value] of Object.entries(own)) {
    Object.defineProperty(config, key, { value, enumerable: false, writable: false, configurable: true })
  }
  return config
}

/**
 * Mounts a whole prefix onto a target group in one call:
 * `app.register(stickyProxy, { prefix: '/cart', targetGroup: 'carts' })`. Every method and
 * path under the prefix is forwarded, bodies stream through unparsed. Register the
 * fastify-sticky plugin first (or give `upstream`).
 */
export async function stickyProxy (instance: FastifyInstance, options: StickyProxyOptions): Promise<void> {
  requireObject(options, 'stickyProxy options')
  for (const key of Object.keys(options)) {
    if (key in REFUSED) throw new FST_STICKY_OPTION_INVALID(`stickyProxy ${key} is not supported: ${REFUSED[key]}`)
  }
  refuseUnknownKeys(options, KNOWN, 'stickyProxy ')
  checkWsUpstream(options)
  const upstream = options.upstream
  if (upstream !== undefined) await registerUpstream(instance, options)
  const prefix = instance.prefix
  const rewritePrefix = effectiveRewritePrefix(prefix, options)
  if (!instance.hasReplyDecorator('forward')) {
    invalid('stickyProxy', 'registered after the fastify-sticky plugin', 'no reply.forward decorator')
  }
  const groups = instance.targetGroups
  if (upstream !== undefined) {
    if (options.targetGroup !== undefined || options.listener !== undefined) invalid('stickyProxy upstream', 'given without targetGroup and listener', upstream)
  } else if (options.listener !== undefined) {
    if (options.targetGroup !== undefined) invalid('stickyProxy listener', 'given without targetGroup (the listener\'s rules choose the group)', options.listener)
  } else if (typeof options.targetGroup !== 'string' || !groups.has(options.targetGroup)) {
    invalid('stickyProxy targetGroup', `the name of a target group (${[...groups.keys()].join(', ')})`, options.targetGroup)
  }

  const websocket = options.websocket ?? true
  if (typeof websocket !== 'boolean') invalid('stickyProxy websocket', 'a boolean', websocket)
  const methods = optionalStrings(options.httpMethods, 'stickyProxy httpMethods', 'an array of HTTP method names') ?? instance.supportedMethods
  const routes = optionalStrings(options.routes, 'stickyProxy routes', 'an array of paths') ?? ['/', '/*']
  for (const name of ['preHandler', 'beforeHandler', 'preValidation'] as const) checkHook(options[name], `stickyProxy ${name}`)
  const preRewrite = options.preRewrite
  if (preRewrite !== undefined && typeof preRewrite !== 'function') invalid('stickyProxy preRewrite', 'a function', preRewrite)
  const handler = options.handler
  if (handler !== undefined && typeof handler !== 'function') invalid('stickyProxy handler', 'a function', handler)
  const proxyPayloads = options.proxyPayloads ?? true
  if (typeof proxyPayloads !== 'boolean') invalid('stickyProxy proxyPayloads', 'a boolean', proxyPayloads)
  const rewriteLocation = options.internalRewriteLocationHeader ?? true
  if (typeof rewriteLocation !== 'boolean') invalid('stickyProxy internalRewriteLocationHeader', 'a boolean', rewriteLocation)
  if (options.config !== undefined) requireObject(options.config, 'stickyProxy config')
  if (options.constraints !== undefined) requireObject(options.constraints, 'stickyProxy constraints')
  if (options.undici !== undefined && typeof options.undici !== 'boolean') {
    invalid('stickyProxy undici', 'a boolean (connections are the plugin\'s undici pools: see its connectionsPerTarget, connectTimeoutMs and idleTimeoutMs)', options.undici)
  }
  const replyOptions = replyOptionsOf(options, prefix, rewritePrefix, rewriteLocation)
  const upgradeOptions = upgradeOptionsOf(options.wsClientOptions, replyOptions)

  if (options.preValidation === undefined && proxyPayloads) {
    // Bodies are streamed to the target as they came, never parsed here.
    instance.removeAllContentTypeParsers()
    instance.addContentTypeParser('*', passBody)
  } else if (!instance.hasContentTypeParser('*')) {
    // Parsed where the server has a parser (the hook sees request.body), streamed otherwise.
    instance.addContentTypeParser('*', passBody)
  }

  const config = routeConfig(options.config, options.listener !== undefined
    ? { listener: options.listener, stickiness: options.stickiness, websocket }
    : { targetGroup: options.targetGroup ?? UPSTREAM_GROUP, stickiness: options.stickiness, websocket })
  const matching = prefixMatching(instance)
  // As @fastify/http-proxy: the prefix is replaced by rewritePrefix ('/p/a?q' → '/a?q', '/p' → '/').
  function forwardPrefix (this: FastifyInstance, request: FastifyRequest, reply: FastifyReply) {
    let url = originFormOf(request.raw.url ?? '/')
    // Not a path (`*`, another scheme): reply.forward() answers the request as it came.
    if (url === null) return reply.forward()
    const params = request.params as Record<string, string>
    if (preRewrite !== undefined) url = preRewrite(url, params, prefix)
    const { url: dest, within } = rewritePrefixOf(url, params, prefix, rewritePrefix, matching)
    const query = dest.indexOf('?')
    const path = query === -1 ? dest : dest.slice(0, query)
    // A dot segment is refused as on any bound route; then a path that would leave the origin
    // (`//host/x`) or climb out of rewritePrefix, as @fastify/http-proxy refuses it.
    if (refusesPath(url)) return reply.send(new FST_STICKY_REQUEST_INVALID())
    checkWithin(path, within)
    const forwardOptions = upgradeOptions !== null && request.headers.upgrade !== undefined ? upgradeOptions : replyOptions
    if (handler !== undefined) return handler(request, reply, path, forwardOptions ?? {})
    return reply.forward(dest, forwardOptions)
  }
  const preHandler = options.preHandler ?? options.beforeHandler
  for (const url of routes) {
    instance.route({
      method: methods,
      url,
      config,
      constraints: options.constraints,
      preHandler,
      preValidation: options.preValidation,
      handler: forwardPrefix
    })
  }
}

function passBody (_request: FastifyRequest, _payload: unknown, done: (err: Error | null, body?: unknown) => void): void {
  done(null)
}

/**
 * `wsUpstream` carries over when it names `upstream`'s own origin (as a `ws:` URL, say): a
 * WebSocket goes where the client's other requests go. Any other is refused: the target of an
 * upgrade is its affinity's. Its path is not used, as @fastify/http-proxy does not use it for an
 * upgrade's absolute path.
 */
function checkWsUpstream (options: StickyProxyOptions): void {
  const ws = options.wsUpstream
  if (ws === undefined) return
  const why = 'not supported unless it names the origin of upstream: a WebSocket goes to the same target as the client\'s other requests (its affinity); give websocket: true'
  if (options.upstream === undefined) throw new FST_STICKY_OPTION_INVALID(`stickyProxy wsUpstream is ${why}`)
  let origin: string
  try {
    origin = upstreamUrl(ws).origin
  } catch {
    throw new FST_STICKY_OPTION_INVALID(`stickyProxy wsUpstream is ${why}`)
  }
  if (origin !== upstreamUrl(options.upstream).origin) throw new FST_STICKY_OPTION_INVALID(`stickyProxy wsUpstream is ${why}`)
}

/** The group `upstream` makes, inside its prefix. */
const UPSTREAM_GROUP = 'upstream'

/**
 * What replaces the prefix: `rewritePrefix`, else the path of `upstream`, else nothing; as
 * @fastify/http-proxy, `/api` → `/v2/` forwards `/api/a` as `/v2/a`, not `/v2//a`.
 */
export function effectiveRewritePrefix (prefix: string, options: StickyProxyOptions): string {
  let rewritePrefix = options.rewritePrefix ?? (options.upstream === undefined ? '' : upstreamUrl(options.upstream).pathname)
  if (typeof rewritePrefix !== 'string' || (rewritePrefix !== '' && !rewritePrefix.startsWith('/'))) {
    invalid('stickyProxy rewritePrefix', "'' or a path starting with /", rewritePrefix)
  }
  if (!prefix.endsWith('/') && rewritePrefix.endsWith('/')) rewritePrefix = rewritePrefix.slice(0, -1)
  return rewritePrefix
}

function upstreamUrl (upstream: unknown): URL {
  let url: URL
  try {
    url = new URL(String(upstream))
  } catch {
    invalid('stickyProxy upstream', 'an http:, https:, ws: or wss: URL', upstream)
  }
  if (!UPSTREAM_SCHEMES.has(url.protocol) || url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') {
    invalid('stickyProxy upstream', 'an http:, https:, ws: or wss: URL with no credentials, query or fragment', upstream)
  }
  // As @fastify/http-proxy, a ws: upstream serves HTTP too: one origin, both protocols.
  if (url.protocol === 'ws:' || url.protocol === 'wss:') return new URL(url.href.replace(/^ws/, 'http'))
  return url
}

const UPSTREAM_SCHEMES = new Set(['http:', 'https:', 'ws:', 'wss:'])

/** Registers the plugin inside the prefix with one target group, the `upstream` target. */
async function registerUpstream (instance: FastifyInstance, options: StickyProxyOptions): Promise<void> {
  const upstream = options.upstream
  const url = upstreamUrl(upstream)
  if (instance.hasReplyDecorator('forward')) {
    invalid('stickyProxy upstream', 'used where the fastify-sticky plugin is not registered yet (with it, add the upstream to a target group and give targetGroup)', upstream)
  }
  await instance.register(fastifySticky, {
    // Stickiness is off: nothing is sealed with it, but a key keeps the plugin from warning that none was given.
    keys: [randomBytes(32)],
    targetGroups: [{ name: UPSTREAM_GROUP, targets: [{ id: UPSTREAM_GROUP, url: url.origin }], stickiness: false }]
  })
}

/** The router options a prefix was matched with. */
export function prefixMatching (instance: FastifyInstance): PrefixMatching {
  const initial = instance.initialConfig as Record<string, unknown> & { routerOptions?: Record<string, unknown> }
  const router = initial.routerOptions ?? {}
  return {
    caseSensitive: (router.caseSensitive ?? initial.caseSensitive ?? true) !== false,
    ignoreDuplicateSlashes: (router.ignoreDuplicateSlashes ?? initial.ignoreDuplicateSlashes) === true,
    ignoreTrailingSlash: (router.ignoreTrailingSlash ?? initial.ignoreTrailingSlash) === true
  }
}

/** `replyOptions`, with the Location rewrite and `http.requestOptions.timeout`; undefined when there is nothing to do. */
function replyOptionsOf (options: StickyProxyOptions, prefix: string, rewritePrefix: string, rewriteLocation: boolean): ReplyForwardOptions | undefined {
  const given = options.replyOptions === undefined ? {} : { ...checkForwardOptions(options.replyOptions, 'stickyProxy replyOptions') }
  if (options.http !== undefined && typeof options.http !== 'boolean') {
    const http = requireObject(options.http, 'stickyProxy http', 'a boolean or { requestOptions: { timeout } }')
    refuseUnknownKeys(http, ['requestOptions'], 'stickyProxy http.')
    const requestOptions = requireObject(http.requestOptions ?? {}, 'stickyProxy http.requestOptions')
    refuseUnknownKeys(requestOptions, ['timeout'], 'stickyProxy http.requestOptions.')
    if (requestOptions.timeout !== undefined && given.timeout === undefined) given.timeout = requestOptions.timeout as number
  }
  if (rewriteLocation && prefix !== rewritePrefix) {
    const own = given.rewriteHeaders
    given.rewriteHeaders = (headers, request) => {
      const location = headers.location
      if (location !== undefined && !EXTERNAL_URL.test(location)) headers.location = location.replace(rewritePrefix, prefix)
      return own === undefined ? headers : own(headers, request)
    }
  }
  if (Object.keys(given).length === 0) return undefined
  return Object.freeze(checkForwardOptions(given, 'stickyProxy replyOptions'))
}

const EXTERNAL_URL = /^https?:\/\//

/** The options of an upgrade's forward, when `wsClientOptions` changes its request; null when it does not. */
function upgradeOptionsOf (raw: StickyProxyOptions['wsClientOptions'], replyOptions: ReplyForwardOptions | undefined): ReplyForwardOptions | null {
  if (raw === undefined) return null
  const given = requireObject(raw, 'stickyProxy wsClientOptions')
  refuseUnknownKeys(given, ['rewriteRequestHeaders', 'headers', 'queryString'], 'stickyProxy wsClientOptions.')
  const rewrite = given.rewriteRequestHeaders
  if (rewrite !== undefined && typeof rewrite !== 'function') invalid('stickyProxy wsClientOptions.rewriteRequestHeaders', 'a function', rewrite)
  const extra = given.headers === undefined ? {} : requireObject(given.headers, 'stickyProxy wsClientOptions.headers') as Record<string, string>
  const queryString = given.queryString as ReplyForwardOptions['queryString']
  if (queryString !== undefined) checkForwardOptions({ queryString }, 'stickyProxy wsClientOptions')
  const options: ReplyForwardOptions = {
    ...replyOptions,
    queryString: queryString ?? replyOptions?.queryString,
    // As @fastify/http-proxy's ws client: the extra headers, then the rewrite (of those, with the client's headers around them).
    rewriteRequestHeaders: (request, headers) => {
      const merged = { ...headers, ...extra }
      return typeof rewrite === 'function' ? (rewrite as (h: Record<string, string | string[]>, r: FastifyRequest) => Record<string, string | string[]>)(merged, request) : merged
    }
  }
  return Object.freeze(checkForwardOptions(options, 'stickyProxy wsClientOptions'))
}

function optionalStrings (raw: unknown, path: string, expected: string): string[] | undefined {
  if (raw === undefined) return undefined
  if (!Array.isArray(raw) || raw.length === 0 || raw.some((item) => typeof item !== 'string' || item === '')) invalid(path, expected, raw)
  return raw as string[]
}

function checkHook (raw: unknown, path: string): void {
  if (raw === undefined) return
  const hooks = Array.isArray(raw) ? raw : [raw]
  if (hooks.length === 0 || hooks.some((hook) => typeof hook !== 'function')) invalid(path, 'a function or an array of functions', raw)
}
