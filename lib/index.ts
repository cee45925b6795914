import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction, onErrorHookHandler, onRequestHookHandler, onSendHookHandler } from 'fastify'
import fp from 'fastify-plugin'
import FindMyWay from 'find-my-way'
import { CookieCodec } from './cookie-codec.js'
import { refuseConnect } from './connect-method.js'
import { checkForwardOptions, type ReplyForwardOptions } from './forward-options.js'
import { DnsDiscovery, MAX_DISCOVERY_START_WAIT_MS } from './dns-discovery.js'
import { GroupForward } from './group-forward.js'
import { KeyHasher } from './hashing/key-hash.js'
import { MemoryLearnStore, type LearnStore } from './stickiness/learn-store.js'
import { RedisLearnStore } from './stickiness/redis-learn-store.js'
import { Listener } from './listener.js'
import { createMetrics } from './metrics.js'
import { resolveListenerRule, type RouteBinding, type RuleContext } from './listener-rule.js'
import { resolveOptions, type ResolvedLearnStore } from './options.js'
import { answerOtherForm, Proxy } from './proxy.js'
import { originFormOf } from './request-target.js'
import { APP_COOKIE_PREFIX, AppCookieSealer, AppCookieWriter } from './stickiness/app-cookie.js'
import { CORS_SUFFIX, LB_COOKIE, LbCookieWriter, LbSetSealer, TG_COOKIE } from './stickiness/lb-cookie.js'
import { decisionHeaderValue } from './stickiness/affinity.js'
import type { Pinned } from './stickiness/source.js'
import { TargetGroup } from './target-group.js'
import type { AffinityDecision, FastifyStickyOptions, RuleMatch } from './types.js'
import { kWebSocketRoute, listenForUpgrades } from './websocket/upgrade.js'

/** Where a request keeps the forward its affinity was decided on, for `reply.forward()`. */
const kForward = Symbol('fastify-sticky.forward')
/** What the route's pinning source kept of the request for its response (see `PinSource`). */
const kPinState = Symbol('fastify-sticky.pinState')

type StickyRequest = FastifyRequest & { [kForward]: GroupForward | null, [kPinState]: unknown, [kWebSocketRoute]: boolean }

async function fastifySticky (fastify: FastifyInstance, raw: FastifyStickyOptions): Promise<void> {
  const options = resolveOptions(raw)
  if (options.keysGenerated) {
    fastify.log.warn('fastify-sticky: no keys given, so cookies are sealed with a random key of this process: they will not survive a restart or be shared between gateway instances')
  }

  const poolSettings = {
    connections: options.connectionsPerTarget,
    connectTimeoutMs: options.connectTimeoutMs,
    idleTimeoutMs: options.idleTimeoutMs,
    now: options.now,
    log: fastify.log
  }
  const groups = new Map<string, TargetGroup>()
  // Made before the groups start their checks: a metrics mistake leaves nothing running.
  const metrics = options.metrics === null
    ? null
    : await createMetrics(options.metrics, { groups, learnStore: () => learnStore, learnStoreType: options.learnStore.type, now: options.now })
  const discoveries: DnsDiscovery[] = []
  for (const group of options.targetGroups) {
    const targetGroup = new TargetGroup(group, poolSettings)
    targetGroup.metrics = metrics
    groups.set(group.name, targetGroup)
    if (group.discovery != null) discoveries.push(new DnsDiscovery(targetGroup, group.discovery, group.tls !== null, fastify.log, options.now))
    if (group.tls?.rejectUnauthorized === false) {
      fastify.log.warn({ targetGroup: group.name }, `fastify-sticky: target group '${group.name}' has tls.rejectUnauthorized: false, so its targets' certificates are not verified: anyone on the path to them can read and change its traffic`)
    }
  }
  const codec = new CookieCodec(options.keys)
  const prefix = options.cookiePrefix
  const listeners = new Map<string, Listener>()
  const proxy = new Proxy(options)
  let learnStore: LearnStore | null = null
  const context: RuleContext = {
    hasher: new KeyHasher(options.keys[0]),
    peers: proxy.peers,
    learnStore: () => (learnStore ??= createLearnStore(options.learnStore, fastify.log)),
    groups,
    codec,
    lbWriter: new LbCookieWriter(prefix + LB_COOKIE, options.cookieHttpOnly),
    appWriter: new AppCookieWriter(prefix + APP_COOKIE_PREFIX, options.cookieHttpOnly),
    appSealer: new AppCookieSealer(codec, prefix + APP_COOKIE_PREFIX),
    lbSetSealer: new LbSetSealer(codec, prefix + LB_COOKIE + CORS_SUFFIX),
    secureCookies: options.cookieSecure,
    corsCookies: options.corsCookies,
    listeners,
    cookiePrefix: prefix,
    clockSkewSeconds: options.cookieClockSkewSeconds,
    decisionHeader: options.exposeDecision,
    now: options.now
  }
  const listenerContext = { ...context, tgWriter: new LbCookieWriter(prefix + TG_COOKIE, options.cookieHttpOnly) }
  for (const listener of options.listeners) listeners.set(listener.name, new Listener(listener, listenerContext))

  fastify.decorate('targetGroups', groups as ReadonlyMap<string, TargetGroup>)
  fastify.decorate('stickyMetrics', metrics === null ? null : Object.freeze({ registry: metrics.registry }))
  fastify.decorateRequest('affinity', null)
  fastify.decorateRequest(kForward, null)
  fastify.decorateRequest(kPinState, null)
  fastify.decorateRequest(kWebSocketRoute, false)
  // Routes added before this plugin finished registering (a missing `await`) were not seen by
  // onRoute: bind them on their first forward, so they work, and say how to bind them earlier.
  const lateRules = new WeakMap<object, RouteBinding | null>()
  function bindLate (request: FastifyRequest, reply: FastifyReply): GroupForward | null | Promise<GroupForward | null> {
    const config = request.routeOptions.config
    let binding = lateRules.get(config)
    if (binding === undefined) {
      const route = `${request.method} ${request.routeOptions.url ?? ''}`
      binding = resolveListenerRule(config, route, context)
      lateRules.set(config, binding)
      if (binding !== null) {
        request.log.warn(`fastify-sticky: route ${route} was added before the plugin finished registering, so request.affinity is only set when reply.forward() runs, and app-cookie stickiness writes no cookies; await app.register(fastifySticky, …) before adding routes`)
      }
    }
    if (binding === null) return null
    const pending = applyAffinity(binding, request, reply)
    if (pending !== undefined) return pending.then(() => (request as StickyRequest)[kForward])
    return (request as StickyRequest)[kForward]
  }

  fastify.decorateReply('forward', function forward (this: FastifyReply, path?: string, options?: ReplyForwardOptions) {
    const request = this.request as StickyRequest
    if (options !== undefined) options = checkForwardOptions(options, 'reply.forward() options')
    const rule = request[kForward] ?? bindLate(request, this)
    if (rule instanceof Promise) {
      rule.then((bound) => proxy.forward(this, bound, path, options), (err: Error) => this.send(err))
      return this
    }
    return proxy.forward(this, rule, path, options)
  })

  // The paths of routes that tunnel WebSockets, for telling their upgrades from another upgrade listener's.
  const webSocketRoutes = FindMyWay()
  const webSocketPaths = new Set<string>()
  let stopUpgrades: (() => void) | null = null
  // A WebSocket's 101 never reaches onResponse hooks: it is counted as it goes.
  proxy.onUpgradeResponse = metrics === null
    ? pinResponse
    : (request, reply) => {
        pinResponse(request, reply)
        metrics.responded(request, reply, 101)
      }

  // Listener rules are resolved once per route, here; the request path only runs the hooks.
  fastify.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method.join(',') : route.method
    const binding = resolveListenerRule(route.config, `${methods} ${route.url}`, context)
    if (binding === null) return
    if (route.config?.websocket === true && methods.split(',').includes('GET') && !webSocketPaths.has(route.url)) {
      webSocketPaths.add(route.url)
      webSocketRoutes.on('GET', route.url, noop)
    }
    // Upgrades on bound routes are tunnelled or refused, never sent on as plain requests.
    stopUpgrades ??= listenForUpgrades(fastify, (raw) => webSocketRoutes.find('GET', pathOf(raw.url)) !== null)
    route.onRequest = [createAffinityHook(binding, route.config?.websocket === true), ...hooksOf(route.onRequest)]
    // Only routes that can reach an app-sticky group pay for a look at the response's cookies.
    const forwards = binding instanceof Listener ? binding.forwards : [binding]
    if (forwards.some((forward) => forward.pin?.atResponse !== undefined)) route.onSend = [...hooksOf(route.onSend), pinAtResponse]
    // Only bound routes are counted, and only with metrics on: otherwise no hook at all.
    if (metrics !== null) {
      route.onResponse = [...hooksOf(route.onResponse), metrics.onResponse]
      route.onError = [...hooksOf(route.onError), metrics.onError as onErrorHookHandler]
    }
  })

  // Fastify runs onClose only once every in-flight request has ended: a response that streams
  // for ever would hold app.close() for ever. Closing starts before that: in-flight requests get
  // an idle timeout to finish, then they end, so app.close() always settles.
  fastify.addHook('preClose', (done) => {
    for (const discovery of discoveries) discovery.stop()
    for (const group of groups.values()) void group.close()
    done()
  })
  fastify.addHook('onClose', async () => {
    stopUpgrades?.()
    await Promise.all([...groups.values()].map((group) => group.close()))
    await learnStore?.close()
    metrics?.close()
  })
  // A user's own 'connect' listener (a forward proxy) is left to serve CONNECT alone.
  if (fastify.server.listenerCount('connect') === 0) {
    const stopRefusingConnect = refuseConnect(fastify.server, () => fastify.supportedMethods)
    fastify.addHook('onClose', (_instance, done) => {
      stopRefusingConnect()
      done()
    })
  }
  // The first DNS answers, so discovered groups serve from the start; bounded, so that a silent DNS
  // server never makes the registration overrun Fastify's pluginTimeout.
  const pluginTimeoutMs = fastify.initialConfig.pluginTimeout ?? 0
  const startWaitMs = pluginTimeoutMs > 0 ? Math.min(MAX_DISCOVERY_START_WAIT_MS, pluginTimeoutMs / 2) : MAX_DISCOVERY_START_WAIT_MS
  await Promise.all(discoveries.map((discovery) => discovery.start(startWaitMs)))
}

function hooksOf<T> (hooks: T | T[] | undefined): T[] {
  return hooks === undefined ? [] : Array.isArray(hooks) ? hooks : [hooks]
}

/** The route-level onRequest hook that decides `request.affinity` and writes fresh cookies. */
function createAffinityHook (binding: RouteBinding, websocket: boolean): onRequestHookHandler {
  return function decideAffinity (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction) {
    // Read where the route's config may not show it (stickyProxy keeps its keys out of sight).
    if (websocket) (request as StickyRequest)[kWebSocketRoute] = true
    // `OPTIONS *` and targets that are no path are answered here, before any cookie or handler.
    const url = request.url
    if (url.charCodeAt(0) !== 47 /* / */ && originFormOf(url) === null) {
      answerOtherForm(reply)
      return
    }
    const pending = applyAffinity(binding, request, reply)
    if (pending === undefined) done()
    else pending.then(() => done(), done)
  }
}

/** Decides the request's affinity and writes the cookies that pin the client to its target group and target; a promise while a shared store is asked. */
function applyAffinity (binding: RouteBinding, request: FastifyRequest, reply: FastifyReply): Promise<void> | undefined {
  const nowMs = binding.now()
  let forward: GroupForward
  let match: RuleMatch | null = null
  if (binding instanceof GroupForward) {
    forward = binding
  } else {
    const routed = binding.route(request, reply, nowMs)
    forward = routed.forward
    match = routed.match
  }
  const decided = forward.decide(request, nowMs)
  if (decided instanceof Promise) return decided.then((pinned) => settleAffinity(forward, match, pinned, request, reply, nowMs))
  settleAffinity(forward, match, decided, request, reply, nowMs)
  return undefined
}

/** Sets the decision on the request, with the lines that pin the client now and what its response needs. */
function settleAffinity (forward: GroupForward, match: RuleMatch | null, pinned: Pinned<unknown>, request: FastifyRequest, reply: FastifyReply, nowMs: number): void {
  const affinity = pinned.decision
  if (affinity.target !== null) {
    const lines = forward.pinLines(pinned.state, affinity.target.id, nowMs, forward.secureFor(request), forward.corsFor(request))
    if (lines !== null) reply.header('set-cookie', lines)
  }
  const decisionHeader = forward.decisionHeader
  if (decisionHeader !== null) reply.header(decisionHeader, decisionHeaderValue(affinity))
  ;(request as StickyRequest)[kPinState] = pinned.state
  request.affinity = match === null ? affinity : { ...affinity, rule: match }
  forward.group.metrics?.decided(affinity)
  if ((request.log as LevelAware).isLevelEnabled?.('debug') === true) logDecision(request, request.affinity)
  ;(request as StickyRequest)[kForward] = forward
}

/** pino's loggers say which levels they write; Fastify's type leaves it out, and other loggers may lack it (then nothing is logged). */
interface LevelAware {
  isLevelEnabled?: (level: string) => boolean
}

/** The decision's debug line: ids, outcome and why, never a cookie value or an address. */
function logDecision (request: FastifyRequest, affinity: AffinityDecision): void {
  const rule = affinity.rule
  request.log.debug({
    targetGroup: affinity.targetGroup,
    route: `${request.method} ${request.routeOptions.url ?? ''}`,
    outcome: affinity.outcome,
    decidedBy: affinity.outcome === 'unavailable' ? null : affinity.decidedBy,
    reason: affinity.outcome === 'reassigned' ? affinity.reason : null,
    target: affinity.target?.id ?? null,
    previousTarget: affinity.outcome === 'reassigned' ? affinity.previousTargetId ?? null : null,
    stickiness: affinity.stickiness,
    listener: rule?.listener ?? null,
    rulePriority: rule?.priority ?? null,
    groupOutcome: rule?.groupOutcome ?? null
  }, 'fastify-sticky: affinity decided')
}

/**
 * The onSend hook of routes whose pinning source acts on the response: the `AWSALBAPP-*` shards
 * follow the app cookie the target set, kept or deleted; the learn store learns the session id
 * the target set, or forgets the one it deleted.
 */
const pinAtResponse: onSendHookHandler = function pinAtResponse (request, reply, payload, done) {
  pinResponse(request, reply)
  done(null, payload)
}

/** What the route's pinning source writes for the target's response (or its 101 to a WebSocket upgrade). */
function pinResponse (request: FastifyRequest, reply: FastifyReply): void {
  const forward = (request as StickyRequest)[kForward]
  const pin = forward?.pin
  if (forward != null && pin?.atResponse !== undefined) {
    const lines = pin.atResponse((request as StickyRequest)[kPinState], request.affinity?.target?.id ?? null, reply, request, forward.now(), forward.secureFor(request))
    if (lines !== null) reply.header('set-cookie', lines)
  }
}

/** The path of a request target, without its query. */
function pathOf (url: string | undefined): string {
  if (url === undefined) return '/'
  const query = url.indexOf('?')
  return query === -1 ? url : url.slice(0, query)
}

function noop (): void {}

/** The learn store the options name. */
function createLearnStore (options: ResolvedLearnStore, log: FastifyBaseLogger): LearnStore {
  if (options.type === 'memory') return new MemoryLearnStore({ maxEntries: options.maxEntries })
  return new RedisLearnStore({ url: options.url, keyPrefix: options.keyPrefix, timeoutMs: options.timeoutMs, localCacheMs: options.localCacheMs, logger: log })
}

/**
 * The fastify-sticky plugin: target groups, ALB-compatible stickiness on routes whose
 * `config.targetGroup` names a group, and `reply.forward()` through pools the plugin owns.
 */
const plugin = fp(fastifySticky, { name: 'fastify-sticky', fastify: '5.x' })
export default plugin
export { plugin as fastifySticky }
export { stickyProxy, type StickyProxyOptions } from './sticky-proxy.js'
export { stickyAdmin, type StickyAdminOptions } from './admin.js'
export type { ReplyForwardOptions, ForwardedResponse } from './forward-options.js'
export { CookieCodec, COOKIE_PURPOSE_LB, COOKIE_PURPOSE_LB_SET, COOKIE_PURPOSE_TG, COOKIE_PURPOSE_APP, type StickyPayload, type OpenedCookie } from './cookie-codec.js'
export { TargetGroup, TARGET_HEALTH_CHANNEL } from './target-group.js'
export { DNS_DISCOVERY_CHANNEL } from './dns-discovery.js'
export * from './errors.js'
export * from './types.js'
