import { randomBytes } from 'node:crypto'
import { Resolver } from 'node:dns'
import { isIP } from 'node:net'
import proxyAddr from '@fastify/proxy-addr'
import { FST_STICKY_OPTION_INVALID } from './errors.js'
import { parseMatcher, type StatusMatcher } from './health/matcher.js'
import type { InitialState } from './health/target-state.js'
import { compileConditions, type RuleConditions } from './rules/conditions.js'
import { resolveLearn } from './stickiness/learn.js'
import { DEFAULT_LEARN_MAX_ENTRIES } from './stickiness/learn-store.js'
import { DEFAULT_LEARN_KEY_PREFIX, DEFAULT_LEARN_LOCAL_CACHE_MS, DEFAULT_LEARN_TIMEOUT_MS } from './stickiness/redis-learn-store.js'
import { KEY_TYPES, resolveKeySource } from './stickiness/key-sources.js'
import { pinsClients, type ResolvedLearnSource, type ResolvedLink } from './stickiness/source.js'
import { requireHttpsTarget, resolveTls, type ResolvedTls } from './target-tls.js'
import { describeValue, invalid, optionalBoolean, optionalChoice, optionalInteger, refuseUnknownKeys, requireObject } from './validate.js'
import type {
  Algorithm, DnsDiscoveryOptions, FastifyStickyOptions, KeyStickinessType, LearnStoreOptions, ForwardOptions, GroupStickinessOptions, HealthCheckOptions, ListenerOptions, ListenerRuleOptions,
  MetricsClient, MetricsOptions, MetricsRegistry, OutlierDetectionOptions, StickinessOptions, TargetGroupOptions, TargetOptions, WebSocketOptions, WeightedTargetGroupOptions
} from './types.js'

export const DEFAULT_LB_COOKIE_DURATION_SECONDS = 86_400
/** prom-client's default histogram buckets, in seconds: 5 ms to 10 s. */
export const DEFAULT_METRICS_BUCKETS: readonly number[] = Object.freeze([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10])
export const DEFAULT_METRICS_PREFIX = 'fastify_sticky_'
export const MAX_METRICS_BUCKETS = 50
export const MAX_COOKIE_DURATION_SECONDS = 604_800
export const DEFAULT_IDLE_TIMEOUT_MS = 60_000
export const MAX_IDLE_TIMEOUT_MS = 4_000_000
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000
export const MAX_CONNECT_TIMEOUT_MS = 600_000
export const DEFAULT_CONNECTIONS_PER_TARGET = 128
export const MAX_CONNECTIONS_PER_TARGET = 65_536
export const DEFAULT_TARGET_WEIGHT = 1
export const MAX_TARGET_WEIGHT = 1000
export const KEY_BYTES = 32
export const DEFAULT_HEALTH_CHECK_PATH = '/'
export const DEFAULT_HEALTH_CHECK_INTERVAL_MS = 30_000
export const MIN_HEALTH_CHECK_INTERVAL_MS = 5_000
export const MAX_HEALTH_CHECK_INTERVAL_MS = 300_000
export const DEFAULT_HEALTH_CHECK_TIMEOUT_MS = 5_000
export const MIN_HEALTH_CHECK_TIMEOUT_MS = 2_000
export const MAX_HEALTH_CHECK_TIMEOUT_MS = 120_000
export const DEFAULT_HEALTHY_THRESHOLD = 5
export const DEFAULT_UNHEALTHY_THRESHOLD = 2
export const MIN_THRESHOLD = 2
export const MAX_THRESHOLD = 10
/** ALB's quota of targets per target group; also the largest `minimumHealthyTargets` count. */
export const MAX_TARGETS = 1000
export const DEFAULT_HEALTH_CHECK_MATCHER = '200'
export const DEFAULT_DEREGISTRATION_DELAY_MS = 300_000
export const MAX_DEREGISTRATION_DELAY_MS = 3_600_000
export const MIN_SLOW_START_MS = 30_000
export const MAX_SLOW_START_MS = 900_000
export const DEFAULT_CONSECUTIVE_ERRORS = 5
export const DEFAULT_CONSECUTIVE_GATEWAY_ERRORS = 5
export const DEFAULT_REQUEST_BUFFER_BYTES = 16_384
export const MAX_REQUEST_BUFFER_BYTES = 16_777_216
export const DEFAULT_CLIENT_BODY_TIMEOUT_MS = 60_000
export const MAX_CLIENT_BODY_TIMEOUT_MS = 3_600_000
export const MAX_CONSECUTIVE_ERRORS = 1000
export const DEFAULT_BASE_EJECTION_MS = 30_000
export const DEFAULT_MAX_EJECTION_MS = 300_000
export const MAX_EJECTION_MS = 3_600_000
export const DEFAULT_MAX_EJECTED_PERCENT = 10
/** ALB's quota of target groups per forward action. */
export const MAX_FORWARD_TARGET_GROUPS = 5
export const MAX_FORWARD_WEIGHT = 999
export const DEFAULT_FORWARD_WEIGHT = 1
export const MAX_RULE_PRIORITY = 50_000
export const MAX_COOKIE_PREFIX_LENGTH = 32
export const DEFAULT_COOKIE_CLOCK_SKEW_SECONDS = 5
export const MAX_COOKIE_CLOCK_SKEW_SECONDS = 300
export const MIN_BOUNDED_LOAD_FACTOR = 1.01
export const MAX_BOUNDED_LOAD_FACTOR = 100
export const MAX_LEARN_MAX_ENTRIES = 10_000_000
export const MAX_LEARN_TIMEOUT_MS = 10_000
export const MAX_LEARN_LOCAL_CACHE_MS = 60_000
export const MAX_WEBSOCKETS_PER_TARGET = 1_000_000
export const DEFAULT_WEBSOCKET_HANDSHAKE_TIMEOUT_MS = 10_000
export const MAX_WEBSOCKET_IDLE_TIMEOUT_MS = 86_400_000
export const DEFAULT_DISCOVERY_INTERVAL_MS = 30_000
export const MIN_DISCOVERY_INTERVAL_MS = 10
export const MAX_DISCOVERY_INTERVAL_MS = 3_600_000
export const DEFAULT_DISCOVERY_TIMEOUT_MS = 2_000
export const MAX_DISCOVERY_TIMEOUT_MS = 60_000
export const DEFAULT_DISCOVERY_TRIES = 2
export const MAX_DISCOVERY_TRIES = 10
export const MAX_DISCOVERY_SERVERS = 8

const ALGORITHMS: readonly Algorithm[] = ['round_robin', 'least_outstanding_requests', 'weighted_random', 'least_sessions']
const X_FORWARDED_FOR_MODES = ['append', 'preserve', 'remove'] as const
const NAME_PATTERN = /^[A-Za-z0-9._:-]{1,64}$/
const NAME_EXPECTED = 'a string of 1 to 64 characters from A-Z a-z 0-9 . _ : -'
const PLUGIN_KEYS = ['keys', 'targetGroups', 'idleTimeoutMs', 'connectTimeoutMs', 'redispatch', 'redispatchIdempotent', 'requestBufferBytes',
  'clientBodyTimeoutMs', 'xForwardedFor', 'trustedProxies', 'forwardStickyCookies', 'connectionsPerTarget', 'cookiePrefix', 'cookieSecure', 'corsCookies', 'cookieHttpOnly', 'cookieClockSkewSeconds', 'learnStore', 'listeners', 'exposeDecision', 'handoffHeaders', 'metrics', 'now']
const GROUP_KEYS = ['name', 'targets', 'algorithm', 'stickiness', 'healthCheck', 'minimumHealthyTargets', 'failOpen',
  'deregistrationDelayMs', 'drainingKeepsSessions', 'slowStartMs', 'outlierDetection', 'boundedLoadFactor', 'websocket', 'tls', 'discovery']
const DISCOVERY_KEYS = ['hostname', 'port', 'srv', 'family', 'intervalMs', 'timeoutMs', 'tries', 'servers']
/** RFC 1123 labels, and RFC 2782's `_service._proto` ones. */
const DISCOVERY_HOST_NAME = /^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*\.?$/
const SRV_NAME = /^_[^.]+\._[^.]+\./
const DNS_SERVER_EXPECTED = "an IP address with an optional port, such as '10.0.0.2', '127.0.0.1:5353' or '[fd00::53]:53'"
const WEBSOCKET_KEYS = ['maxConnectionsPerTarget', 'handshakeTimeoutMs', 'idleTimeoutMs', 'closeOnUnhealthy']
const HEALTH_CHECK_KEYS = ['path', 'port', 'intervalMs', 'timeoutMs', 'healthyThreshold', 'unhealthyThreshold', 'matcher', 'initialState', 'allowShortIntervals']
const OUTLIER_KEYS = ['consecutiveErrors', 'consecutiveGatewayErrors', 'baseEjectionMs', 'maxEjectionMs', 'maxEjectedPercent', 'keepSessions']
const TARGET_KEYS = ['id', 'url', 'weight']
const STICKINESS_KEYS = ['type', 'enabled', 'durationSeconds', 'cookieName', 'bindToCookieValue']
const STICKINESS_TYPES = ['lb_cookie', 'app_cookie', 'learn', ...KEY_TYPES] as const
/** Most sources in one stickiness chain. */
export const MAX_STICKINESS_CHAIN = 8
const LISTENER_KEYS = ['name', 'rules', 'default']
const RULE_KEYS = ['priority', 'conditions', 'forward']
const FORWARD_KEYS = ['targetGroups', 'stickiness']
const WEIGHTED_GROUP_KEYS = ['name', 'weight']
const GROUP_STICKINESS_KEYS = ['enabled', 'durationSeconds']
/** RFC 6265 §4.1.1: a cookie-name is an RFC 2616 token. */
const COOKIE_NAME_PATTERN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$/
const COOKIE_PREFIX_PATTERN = /^[A-Za-z0-9_-]*$/
/** RFC 9110 §5.1: a field name is a token. */
const HEADER_NAME_PATTERN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$/
/** Header names that frame a message, belong to one connection or that the gateway writes itself: no option may take them. */
const RESERVED_HEADER_NAMES = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'expect',
  'http2-settings', 'content-length', 'content-type', 'content-encoding', 'host', 'cookie', 'set-cookie', 'cache-control', 'location',
  'authorization', 'proxy-authorization', 'proxy-authenticate', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-port', 'x-forwarded-host', 'forwarded'])
export const DEFAULT_DECISION_HEADER = 'x-sticky-decision'
export const DEFAULT_PREVIOUS_TARGET_HEADER = 'x-sticky-previous-target'
export const DEFAULT_HANDOFF_REASON_HEADER = 'x-sticky-handoff-reason'
const HANDOFF_KEYS = ['previousTarget', 'reason']
/** ALB refuses app cookie names starting with `AWSALB`, `AWSALBAPP` or `AWSALBTG`: the first covers all three. */
const RESERVED_COOKIE_PREFIX = 'AWSALB'

/**
 * Stickiness after defaults: null means the route or group is not sticky. `type` is the source
 * that pins clients (`lb_cookie`, `app_cookie`, `learn`), or the first key type when none does;
 * `chain` lists every source in the order they are tried.
 */
export type ResolvedStickiness = ResolvedLbCookieStickiness | ResolvedAppCookieStickiness | ResolvedLearnStickiness | ResolvedKeyStickiness

interface ResolvedChain {
  readonly durationSeconds: number
  readonly chain: readonly ResolvedLink[]
}

export interface ResolvedLbCookieStickiness extends ResolvedChain {
  readonly type: 'lb_cookie'
}

export interface ResolvedAppCookieStickiness extends ResolvedChain {
  readonly type: 'app_cookie'
  readonly cookieName: string
  readonly bindToCookieValue: boolean
}

export interface ResolvedLearnStickiness extends ResolvedChain {
  readonly type: 'learn'
  readonly learn: ResolvedLearnSource
}

/** Only key sources: every request is hashed, no client is pinned (no window: `durationSeconds` is unused). */
export interface ResolvedKeyStickiness extends ResolvedChain {
  readonly type: KeyStickinessType
}

/** A forward action: its target groups with weights, and the group stickiness window (null: off). */
export interface ResolvedForward {
  readonly targetGroups: ReadonlyArray<{ readonly name: string, readonly weight: number }>
  readonly stickinessSeconds: number | null
}

export interface ResolvedListenerRule {
  readonly priority: number
  readonly conditions: RuleConditions
  readonly forward: ResolvedForward
}

export interface ResolvedListener {
  readonly name: string
  /** In order of priority, lowest first. */
  readonly rules: readonly ResolvedListenerRule[]
  readonly default: ResolvedForward
}

export interface ResolvedTarget {
  readonly id: string
  readonly origin: string
  readonly weight: number
}

export interface ResolvedHealthCheck {
  readonly path: string
  /** The port to check; null for the target's own (the traffic port). */
  readonly port: number | null
  readonly intervalMs: number
  readonly timeoutMs: number
  readonly healthyThreshold: number
  readonly unhealthyThreshold: number
  readonly matcher: StatusMatcher
  readonly initialState: InitialState
}

export interface ResolvedTargetGroup {
  readonly name: string
  readonly algorithm: Algorithm
  readonly stickiness: ResolvedStickiness | null
  readonly targets: readonly ResolvedTarget[]
  /** Null when the group has no active health checks. */
  readonly healthCheck: ResolvedHealthCheck | null
  readonly minimumHealthyTargets: MinimumHealthy
  readonly failOpen: boolean
  readonly deregistrationDelayMs: number
  readonly drainingKeepsSessions: boolean
  /** 0 when off. */
  readonly slowStartMs: number
  /** Null when passive checks are off. */
  readonly outlierDetection: ResolvedOutlierDetection | null
  /** 0 when off. */
  readonly boundedLoadFactor: number
  /** Null when the group has no `tls` (its https targets then use Node's defaults). */
  readonly tls: ResolvedTls | null
  readonly websocket: ResolvedWebSocket
  /** Null (or absent, in groups built by hand) when the group's targets are not found in DNS. */
  readonly discovery?: ResolvedDiscovery | null
}

/** A group's DNS discovery after defaults (see `DnsDiscoveryOptions`). */
export interface ResolvedDiscovery {
  readonly hostname: string
  /** Null with SRV (each record names its port). */
  readonly port: number | null
  readonly srv: boolean
  readonly family: 0 | 4 | 6
  readonly intervalMs: number
  readonly timeoutMs: number
  readonly tries: number
  /** Null: the system's servers. */
  readonly servers: readonly string[] | null
}

export interface ResolvedWebSocket {
  /** Infinity when there is no limit. */
  readonly maxConnectionsPerTarget: number
  readonly handshakeTimeoutMs: number
  /** 0 when off. */
  readonly idleTimeoutMs: number
  readonly closeOnUnhealthy: boolean
}

export type ResolvedLearnStore =
  | { readonly type: 'memory', readonly maxEntries: number }
  | { readonly type: 'redis', readonly url: string, readonly keyPrefix: string, readonly timeoutMs: number, readonly localCacheMs: number }

export interface ResolvedOutlierDetection {
  /** Infinity when the target's 5xx responses do not count. */
  readonly consecutiveErrors: number
  /** Infinity when off. */
  readonly consecutiveGatewayErrors: number
  readonly baseEjectionMs: number
  readonly maxEjectionMs: number
  readonly maxEjectedPercent: number
  readonly keepSessions: boolean
}

/** The healthy targets a group needs before it stops failing open: a count, or a share in percent. */
export type MinimumHealthy = { readonly count: number } | { readonly percent: number }

/** The `metrics` option; the registry and client are checked against each other when the plugin loads prom-client. */
export interface ResolvedMetrics {
  /** Null: the plugin makes one. */
  readonly registry: MetricsRegistry | null
  /** Null: the plugin imports prom-client. */
  readonly client: MetricsClient | null
  readonly prefix: string
  readonly buckets: readonly number[]
}

export interface ResolvedOptions {
  readonly keys: readonly Buffer[]
  /** True when no keys were given and a random one was made for this process. */
  readonly keysGenerated: boolean
  readonly targetGroups: readonly ResolvedTargetGroup[]
  readonly idleTimeoutMs: number
  readonly connectTimeoutMs: number
  readonly redispatch: boolean
  readonly redispatchIdempotent: boolean
  readonly requestBufferBytes: number
  readonly clientBodyTimeoutMs: number
  readonly xForwardedFor: 'append' | 'preserve' | 'remove'
  /** Whose forwarding headers are believed, by the peer's address (and 0, its hop); null: nobody's. */
  readonly trustedProxies: ((address: string, hop: number) => boolean) | null
  readonly forwardStickyCookies: boolean
  readonly connectionsPerTarget: number
  readonly cookiePrefix: string
  readonly cookieSecure: boolean | 'auto'
  /** When the `CORS` twins are written: `'auto'` where a client can keep them (HTTPS), `'always'` as ALB. */
  readonly corsCookies: 'auto' | 'always'
  readonly cookieHttpOnly: boolean
  readonly cookieClockSkewSeconds: number
  readonly learnStore: ResolvedLearnStore
  readonly listeners: readonly ResolvedListener[]
  /** The lower-case name of the decision header; null when off. */
  readonly exposeDecision: string | null
  /** The lower-case names of the hand-off headers; null when off. */
  readonly handoffHeaders: ResolvedHandoffHeaders | null
  /** Null when metrics are off. */
  readonly metrics: ResolvedMetrics | null
  readonly now: () => number
}

/** The hand-off headers' names, lower case. */
export interface ResolvedHandoffHeaders {
  readonly previousTarget: string
  readonly reason: string
}

/** Checks the plugin's options once and returns them frozen, with every default filled in. */
export function resolveOptions (raw: unknown): ResolvedOptions {
  const options = requireObject(raw, 'options') as Partial<FastifyStickyOptions>
  refuseUnknownKeys(options, PLUGIN_KEYS, '')

  const cookiePrefix = options.cookiePrefix ?? ''
  if (typeof cookiePrefix !== 'string' || cookiePrefix.length > MAX_COOKIE_PREFIX_LENGTH || !COOKIE_PREFIX_PATTERN.test(cookiePrefix)) {
    invalid('cookiePrefix', `a string of 0 to ${MAX_COOKIE_PREFIX_LENGTH} characters from A-Z a-z 0-9 _ -`, cookiePrefix)
  }
  const cookieSecure = options.cookieSecure ?? false
  if (typeof cookieSecure !== 'boolean' && cookieSecure !== 'auto') invalid('cookieSecure', "true, false or 'auto'", cookieSecure)
  // Browsers drop a __Secure- or __Host- cookie that lacks Secure (RFC 6265bis §4.1.3, matched
  // case-insensitively); __Host- also needs Path=/ and no Domain, which every gateway cookie has.
  const browserPrefix = /^__(secure|host)-/i.exec(cookiePrefix)
  if (browserPrefix !== null && cookieSecure !== true) {
    invalid('cookieSecure', `true when cookiePrefix starts with ${browserPrefix[0]} (browsers drop such cookies without Secure, and 'auto' leaves it off over HTTP)`, cookieSecure)
  }
  const rawGroups = options.targetGroups
  if (!Array.isArray(rawGroups) || rawGroups.length === 0) {
    invalid('targetGroups', 'a non-empty array of target groups', rawGroups)
  }
  // A group's WebSocket handshake timeout is bounded by it.
  const idleTimeoutMs = optionalInteger(options.idleTimeoutMs, 'idleTimeoutMs', 1, MAX_IDLE_TIMEOUT_MS, DEFAULT_IDLE_TIMEOUT_MS)
  const seen = new Map<string, number>()
  const targetGroups = rawGroups.map((group, i) => {
    const resolved = resolveTargetGroup(group, `targetGroups[${i}]`, cookiePrefix, idleTimeoutMs)
    const first = seen.get(resolved.name)
    if (first !== undefined) {
      invalid(`targetGroups[${i}].name`, `unique (targetGroups[${first}] has it too)`, resolved.name)
    }
    seen.set(resolved.name, i)
    return resolved
  })

  const listeners = resolveListeners(options.listeners, targetGroups)
  const keys = resolveKeys(options.keys)
  return Object.freeze({
    keys: keys ?? [randomBytes(KEY_BYTES)],
    keysGenerated: keys === undefined,
    targetGroups: Object.freeze(targetGroups),
    idleTimeoutMs,
    connectTimeoutMs: optionalInteger(options.connectTimeoutMs, 'connectTimeoutMs', 1, MAX_CONNECT_TIMEOUT_MS, DEFAULT_CONNECT_TIMEOUT_MS),
    redispatch: optionalBoolean(options.redispatch, 'redispatch', true),
    redispatchIdempotent: optionalBoolean(options.redispatchIdempotent, 'redispatchIdempotent', true),
    requestBufferBytes: optionalInteger(options.requestBufferBytes, 'requestBufferBytes', 0, MAX_REQUEST_BUFFER_BYTES, DEFAULT_REQUEST_BUFFER_BYTES),
    clientBodyTimeoutMs: optionalInteger(options.clientBodyTimeoutMs, 'clientBodyTimeoutMs', 1, MAX_CLIENT_BODY_TIMEOUT_MS, DEFAULT_CLIENT_BODY_TIMEOUT_MS),
    xForwardedFor: optionalChoice(options.xForwardedFor, 'xForwardedFor', X_FORWARDED_FOR_MODES, 'append'),
    trustedProxies: resolveTrustedProxies(options.trustedProxies),
    forwardStickyCookies: optionalBoolean(options.forwardStickyCookies, 'forwardStickyCookies', false),
    connectionsPerTarget: optionalInteger(options.connectionsPerTarget, 'connectionsPerTarget', 1, MAX_CONNECTIONS_PER_TARGET, DEFAULT_CONNECTIONS_PER_TARGET),
    cookiePrefix,
    cookieSecure,
    corsCookies: resolveCorsCookies(options.corsCookies),
    cookieHttpOnly: optionalBoolean(options.cookieHttpOnly, 'cookieHttpOnly', false),
    cookieClockSkewSeconds: optionalInteger(options.cookieClockSkewSeconds, 'cookieClockSkewSeconds', 0, MAX_COOKIE_CLOCK_SKEW_SECONDS, DEFAULT_COOKIE_CLOCK_SKEW_SECONDS),
    learnStore: resolveLearnStore(options.learnStore),
    listeners,
    exposeDecision: resolveExposeDecision(options.exposeDecision),
    handoffHeaders: resolveHandoffHeaders(options.handoffHeaders),
    metrics: resolveMetrics(options.metrics),
    now: resolveNow(options.now)
  })
}

function resolveExposeDecision (raw: unknown): string | null {
  if (raw === undefined || raw === false) return null
  if (raw === true) return DEFAULT_DECISION_HEADER
  if (typeof raw !== 'string') invalid('exposeDecision', `true, false or a header name (e.g. '${DEFAULT_DECISION_HEADER}')`, raw)
  return requireHeaderName(raw, 'exposeDecision', DEFAULT_DECISION_HEADER)
}

function resolveHandoffHeaders (raw: unknown): ResolvedHandoffHeaders | null {
  if (raw === false) return null
  if (raw === undefined || raw === true) return { previousTarget: DEFAULT_PREVIOUS_TARGET_HEADER, reason: DEFAULT_HANDOFF_REASON_HEADER }
  const names = requireObject(raw, 'handoffHeaders', 'true, false or an object { previousTarget, reason } of header names')
  refuseUnknownKeys(names, HANDOFF_KEYS, 'handoffHeaders.')
  const previousTarget = names.previousTarget === undefined ? DEFAULT_PREVIOUS_TARGET_HEADER : requireHeaderName(names.previousTarget, 'handoffHeaders.previousTarget', DEFAULT_PREVIOUS_TARGET_HEADER)
  const reason = names.reason === undefined ? DEFAULT_HANDOFF_REASON_HEADER : requireHeaderName(names.reason, 'handoffHeaders.reason', DEFAULT_HANDOFF_REASON_HEADER)
  if (previousTarget === reason) invalid('handoffHeaders.reason', `another name than handoffHeaders.previousTarget ('${previousTarget}')`, names.reason ?? reason)
  return Object.freeze({ previousTarget, reason })
}

/** A header name, lower-cased, that HTTP or the gateway does not use for something else. */
function requireHeaderName (raw: unknown, path: string, example: string): string {
  if (typeof raw !== 'string' || !HEADER_NAME_PATTERN.test(raw)) invalid(path, `a header name (a token of 1 to 128 characters, e.g. '${example}')`, raw)
  const name = raw.toLowerCase()
  if (RESERVED_HEADER_NAMES.has(name)) invalid(path, 'a header name that HTTP or the gateway does not use for something else', raw)
  return name
}

function resolveCorsCookies (raw: unknown): 'auto' | 'always' {
  if (raw === undefined) return 'auto'
  if (raw !== 'auto' && raw !== 'always') invalid('corsCookies', "'auto' or 'always'", raw)
  return raw
}

function resolveListeners (raw: unknown, groups: readonly ResolvedTargetGroup[]): readonly ResolvedListener[] {
  if (raw === undefined) return Object.freeze([])
  if (!Array.isArray(raw)) invalid('listeners', 'an array of listeners', raw)
  const byName = new Map(groups.map((group) => [group.name, group]))
  const seen = new Map<string, number>()
  return Object.freeze(raw.map((rawListener, i) => {
    const path = `listeners[${i}]`
    const listener = requireObject(rawListener, path) as Partial<ListenerOptions>
    refuseUnknownKeys(listener, LISTENER_KEYS, `${path}.`)
    const name = requireName(listener.name, `${path}.name`)
    const first = seen.get(name)
    if (first !== undefined) invalid(`${path}.name`, `unique (listeners[${first}] has it too)`, name)
    seen.set(name, i)
    const rawRules = listener.rules ?? []
    if (!Array.isArray(rawRules)) invalid(`${path}.rules`, 'an array of rules', rawRules)
    const priorities = new Map<number, number>()
    const rules = rawRules.map((rawRule, j) => {
      const rulePath = `${path}.rules[${j}]`
      const rule = requireObject(rawRule, rulePath) as Partial<ListenerRuleOptions>
      refuseUnknownKeys(rule, RULE_KEYS, `${rulePath}.`)
      const priority = rule.priority
      if (typeof priority !== 'number' || !Number.isInteger(priority) || priority < 1 || priority > MAX_RULE_PRIORITY) {
        invalid(`${rulePath}.priority`, `an integer from 1 to ${MAX_RULE_PRIORITY}`, priority)
      }
      const same = priorities.get(priority)
      if (same !== undefined) invalid(`${rulePath}.priority`, `unique within the listener (rules[${same}] has it too)`, priority)
      priorities.set(priority, j)
      return Object.freeze({
        priority,
        conditions: compileConditions(rule.conditions, `${rulePath}.conditions`),
        forward: resolveForward(rule.forward, `${rulePath}.forward`, byName)
      })
    })
    if (listener.default === undefined) invalid(`${path}.default`, 'a forward: the name of a target group, or { targetGroups, stickiness }', undefined)
    return Object.freeze({
      name,
      rules: Object.freeze(rules.sort((a, b) => a.priority - b.priority)),
      default: resolveForward(listener.default, `${path}.default`, byName)
    })
  }))
}

/** A forward action, with ALB's checks of weighted forwards and group stickiness. */
function resolveForward (raw: ForwardOptions | undefined, path: string, groups: ReadonlyMap<string, ResolvedTargetGroup>): ResolvedForward {
  const names = [...groups.keys()].join(', ')
  if (typeof raw === 'string') {
    if (!groups.has(raw)) invalid(path, `the name of a target group (${names})`, raw)
    return Object.freeze({ targetGroups: Object.freeze([Object.freeze({ name: raw, weight: DEFAULT_FORWARD_WEIGHT })]), stickinessSeconds: null })
  }
  const forward = requireObject(raw, path, 'the name of a target group, or { targetGroups, stickiness }') as { targetGroups?: unknown, stickiness?: unknown }
  refuseUnknownKeys(forward, FORWARD_KEYS, `${path}.`)
  const rawGroups = forward.targetGroups
  if (!Array.isArray(rawGroups) || rawGroups.length === 0 || rawGroups.length > MAX_FORWARD_TARGET_GROUPS) {
    invalid(`${path}.targetGroups`, `an array of 1 to ${MAX_FORWARD_TARGET_GROUPS} target groups (ALB's quota)`, rawGroups)
  }
  const weighted = rawGroups.length > 1
  const seen = new Map<string, number>()
  const targetGroups = rawGroups.map((rawGroup, i) => {
    const groupPath = `${path}.targetGroups[${i}]`
    const entry = requireObject(rawGroup, groupPath) as Partial<WeightedTargetGroupOptions>
    refuseUnknownKeys(entry, WEIGHTED_GROUP_KEYS, `${groupPath}.`)
    const group = typeof entry.name === 'string' ? groups.get(entry.name) : undefined
    if (group === undefined) invalid(`${groupPath}.name`, `the name of a target group (${names})`, entry.name)
    const first = seen.get(group.name)
    if (first !== undefined) invalid(`${groupPath}.name`, `unique within the forward (targetGroups[${first}] has it too)`, group.name)
    seen.set(group.name, i)
    if (weighted && group.stickiness?.type === 'app_cookie') {
      invalid(`${groupPath}.name`, 'a target group without app_cookie stickiness (ALB: application-based stickiness does not work with weighted target groups)', group.name)
    }
    return Object.freeze({ name: group.name, weight: optionalInteger(entry.weight, `${groupPath}.weight`, 0, MAX_FORWARD_WEIGHT, DEFAULT_FORWARD_WEIGHT) })
  })
  if (targetGroups.every((entry) => entry.weight === 0)) {
    invalid(`${path}.targetGroups`, 'a forward with at least one weight above 0', `weights ${targetGroups.map((entry) => entry.weight).join(', ')}`)
  }
  const stickinessSeconds = resolveGroupStickiness(forward.stickiness, `${path}.stickiness`)
  if (stickinessSeconds !== null && !weighted) {
    invalid(`${path}.stickiness`, 'false or absent for a forward to one target group (group stickiness chooses between groups)', forward.stickiness)
  }
  const sticky = targetGroups.find((entry) => groups.get(entry.name)?.stickiness != null)
  if (weighted && stickinessSeconds === null && sticky !== undefined) {
    throw new FST_STICKY_OPTION_INVALID(`${path}.stickiness must be { durationSeconds } (group stickiness) because target group '${sticky.name}' is sticky; ALB: "You must enable group stickiness on a rule if you enabled target stickiness on one of its target groups", received ${describeValue(forward.stickiness, false)}`)
  }
  return Object.freeze({ targetGroups: Object.freeze(targetGroups), stickinessSeconds })
}

function resolveGroupStickiness (raw: unknown, path: string): number | null {
  if (raw === undefined || raw === false) return null
  const stickiness = requireObject(raw, path, 'false or { durationSeconds }') as Partial<GroupStickinessOptions>
  refuseUnknownKeys(stickiness, GROUP_STICKINESS_KEYS, `${path}.`)
  if (!optionalBoolean(stickiness.enabled, `${path}.enabled`, true)) return null
  const seconds = stickiness.durationSeconds
  if (typeof seconds !== 'number' || !Number.isInteger(seconds) || seconds < 1 || seconds > MAX_COOKIE_DURATION_SECONDS) {
    invalid(`${path}.durationSeconds`, `an integer from 1 to ${MAX_COOKIE_DURATION_SECONDS} (required with group stickiness)`, seconds)
  }
  return seconds
}

function resolveTargetGroup (raw: unknown, path: string, cookiePrefix: string, idleTimeoutMs: number): ResolvedTargetGroup {
  const group = requireObject(raw, path) as Partial<TargetGroupOptions>
  refuseUnknownKeys(group, GROUP_KEYS, `${path}.`)
  const name = requireName(group.name, `${path}.name`)
  const algorithm = optionalChoice(group.algorithm, `${path}.algorithm`, ALGORITHMS, 'round_robin')

  const rawTargets = group.targets ?? []
  if (!Array.isArray(rawTargets)) invalid(`${path}.targets`, 'an array of targets', rawTargets)
  const ids = new Map<string, number>()
  const targets = rawTargets.map((target, i) => {
    const resolved = resolveTarget(target, `${path}.targets[${i}]`)
    const first = ids.get(resolved.id)
    if (first !== undefined) {
      invalid(`${path}.targets[${i}].id`, `unique within the group (targets[${first}] has it too)`, resolved.id)
    }
    ids.set(resolved.id, i)
    return resolved
  })

  let tls = resolveTls(group.tls, `${path}.tls`)
  if (tls !== null) targets.forEach((target, i) => requireHttpsTarget(target.origin, `${path}.targets[${i}].url`))
  const discovery = resolveDiscovery(group.discovery, `${path}.discovery`)
  if (discovery !== null && group.targets !== undefined) invalid(`${path}.targets`, 'absent when discovery is given (DNS finds the targets)', group.targets)
  // Discovered targets are registered by address: TLS still names the service, never the IP.
  if (discovery !== null && tls !== null && tls.servername === null) tls = Object.freeze({ ...tls, servername: discoveryServername(discovery.hostname) })
  const stickiness = resolveStickiness(group.stickiness, defaultStickiness(), `${path}.stickiness`, cookiePrefix)
  // ALB refuses stickiness on weighted_random target groups.
  if (stickiness !== null && algorithm === 'weighted_random') {
    throw new FST_STICKY_OPTION_INVALID(`${path}.stickiness must be false when algorithm is weighted_random (ALB does not combine them), received ${group.stickiness === undefined ? 'undefined (the default: lb_cookie stickiness)' : describeValue(group.stickiness, false)}`)
  }
  const healthCheck = resolveHealthCheck(group.healthCheck, `${path}.healthCheck`)
  const minimumHealthyTargets = resolveMinimumHealthy(group.minimumHealthyTargets, `${path}.minimumHealthyTargets`)
  const failOpen = optionalBoolean(group.failOpen, `${path}.failOpen`, true)
  const deregistrationDelayMs = optionalInteger(group.deregistrationDelayMs, `${path}.deregistrationDelayMs`, 0, MAX_DEREGISTRATION_DELAY_MS, DEFAULT_DEREGISTRATION_DELAY_MS)
  const drainingKeepsSessions = optionalBoolean(group.drainingKeepsSessions, `${path}.drainingKeepsSessions`, true)
  const slowStartMs = group.slowStartMs ?? 0
  if (slowStartMs !== 0 && (typeof slowStartMs !== 'number' || !Number.isInteger(slowStartMs) || slowStartMs < MIN_SLOW_START_MS || slowStartMs > MAX_SLOW_START_MS)) {
    invalid(`${path}.slowStartMs`, `0 (off) or an integer from ${MIN_SLOW_START_MS} to ${MAX_SLOW_START_MS}`, slowStartMs)
  }
  // ALB refuses slow start with least_outstanding_requests.
  if (slowStartMs !== 0 && algorithm === 'least_outstanding_requests') {
    invalid(`${path}.slowStartMs`, '0 when algorithm is least_outstanding_requests (ALB does not combine them)', slowStartMs)
  }
  const outlierDetection = resolveOutlierDetection(group.outlierDetection, `${path}.outlierDetection`)
  const boundedLoadFactor = group.boundedLoadFactor ?? 0
  if (boundedLoadFactor !== 0 && (typeof boundedLoadFactor !== 'number' || !(boundedLoadFactor >= MIN_BOUNDED_LOAD_FACTOR && boundedLoadFactor <= MAX_BOUNDED_LOAD_FACTOR))) {
    invalid(`${path}.boundedLoadFactor`, `0 (off) or a number from ${MIN_BOUNDED_LOAD_FACTOR} to ${MAX_BOUNDED_LOAD_FACTOR} (e.g. 1.25)`, boundedLoadFactor)
  }
  // Sessions are counted only where a cookie or the learn store pins them.
  if (algorithm === 'least_sessions' && !pinsClients(stickiness)) {
    invalid(`${path}.algorithm`, 'round_robin, least_outstanding_requests or weighted_random: least_sessions counts the sessions a cookie or the learn store pins, and this stickiness pins none', algorithm)
  }
  return Object.freeze({
    name,
    algorithm,
    stickiness,
    targets: Object.freeze(targets),
    healthCheck,
    minimumHealthyTargets,
    failOpen,
    deregistrationDelayMs,
    drainingKeepsSessions,
    slowStartMs,
    outlierDetection,
    boundedLoadFactor,
    websocket: resolveWebSocket(group.websocket, `${path}.websocket`, idleTimeoutMs),
    tls,
    discovery
  })
}

function resolveDiscovery (raw: unknown, path: string): ResolvedDiscovery | null {
  if (raw === undefined) return null
  const options = requireObject(raw, path, '{ hostname, port } (A/AAAA records) or { hostname } (SRV records)') as Partial<DnsDiscoveryOptions>
  refuseUnknownKeys(options, DISCOVERY_KEYS, `${path}.`)
  const hostname = options.hostname
  if (typeof hostname !== 'string' || !DISCOVERY_HOST_NAME.test(hostname) || isIP(hostname) !== 0) {
    invalid(`${path}.hostname`, 'a DNS name such as carts.default.svc.cluster.local or _http._tcp.carts.service.consul (not an IP address: list fixed targets in targets)', hostname)
  }
  const srv = optionalBoolean(options.srv, `${path}.srv`, SRV_NAME.test(hostname))
  let port: number | null = null
  if (srv) {
    if (options.port !== undefined) invalid(`${path}.port`, 'absent with SRV records (each record names its port)', options.port)
  } else {
    if (options.port === undefined) invalid(`${path}.port`, "the targets' port, an integer from 1 to 65535 (required for A/AAAA records)", undefined)
    port = optionalInteger(options.port, `${path}.port`, 1, 65_535, 0)
  }
  const family = options.family ?? 4
  if (family !== 0 && family !== 4 && family !== 6) invalid(`${path}.family`, '4 (A records), 6 (AAAA) or 0 (both)', family)
  return Object.freeze({
    hostname,
    port,
    srv,
    family,
    intervalMs: optionalInteger(options.intervalMs, `${path}.intervalMs`, MIN_DISCOVERY_INTERVAL_MS, MAX_DISCOVERY_INTERVAL_MS, DEFAULT_DISCOVERY_INTERVAL_MS),
    timeoutMs: optionalInteger(options.timeoutMs, `${path}.timeoutMs`, 1, MAX_DISCOVERY_TIMEOUT_MS, DEFAULT_DISCOVERY_TIMEOUT_MS),
    tries: optionalInteger(options.tries, `${path}.tries`, 1, MAX_DISCOVERY_TRIES, DEFAULT_DISCOVERY_TRIES),
    servers: resolveDnsServers(options.servers, `${path}.servers`)
  })
}

function resolveDnsServers (raw: unknown, path: string): readonly string[] | null {
  if (raw === undefined) return null
  if (!Array.isArray(raw) || raw.length === 0 || raw.length > MAX_DISCOVERY_SERVERS) {
    invalid(path, `an array of 1 to ${MAX_DISCOVERY_SERVERS} DNS servers, each ${DNS_SERVER_EXPECTED}`, raw)
  }
  const probe = new Resolver()
  raw.forEach((server, i) => {
    if (typeof server !== 'string') invalid(`${path}[${i}]`, DNS_SERVER_EXPECTED, server)
    // Node's own parser decides: what it takes here, the resolver takes at registration.
    try {
      probe.setServers([server])
    } catch {
      invalid(`${path}[${i}]`, DNS_SERVER_EXPECTED, server)
    }
  })
  return Object.freeze([...raw as string[]])
}

/** The TLS server name of discovered targets: the discovery name without its SRV labels or final dot. */
function discoveryServername (hostname: string): string {
  return hostname.replace(SRV_NAME, '').replace(/\.$/, '')
}

function resolveWebSocket (raw: unknown, path: string, idleTimeoutMs: number): ResolvedWebSocket {
  const options = raw === undefined ? {} : requireObject(raw, path) as Partial<WebSocketOptions>
  refuseUnknownKeys(options, WEBSOCKET_KEYS, `${path}.`)
  const max = optionalInteger(options.maxConnectionsPerTarget, `${path}.maxConnectionsPerTarget`, 0, MAX_WEBSOCKETS_PER_TARGET, 0)
  return Object.freeze({
    maxConnectionsPerTarget: max === 0 ? Infinity : max,
    handshakeTimeoutMs: optionalInteger(options.handshakeTimeoutMs, `${path}.handshakeTimeoutMs`, 1, idleTimeoutMs, Math.min(DEFAULT_WEBSOCKET_HANDSHAKE_TIMEOUT_MS, idleTimeoutMs)),
    idleTimeoutMs: optionalInteger(options.idleTimeoutMs, `${path}.idleTimeoutMs`, 0, MAX_WEBSOCKET_IDLE_TIMEOUT_MS, 0),
    closeOnUnhealthy: optionalBoolean(options.closeOnUnhealthy, `${path}.closeOnUnhealthy`, false)
  })
}

function resolveOutlierDetection (raw: unknown, path: string): ResolvedOutlierDetection | null {
  if (raw === false) return null
  // Absent: gateway failures only (Envoy's consecutive_gateway_failure); given: 5xx count too.
  const options = raw === undefined ? {} : requireObject(raw, path, 'false or an object') as Partial<OutlierDetectionOptions>
  refuseUnknownKeys(options, OUTLIER_KEYS, `${path}.`)
  const baseEjectionMs = optionalInteger(options.baseEjectionMs, `${path}.baseEjectionMs`, 1, MAX_EJECTION_MS, DEFAULT_BASE_EJECTION_MS)
  const maxEjectionMs = optionalInteger(options.maxEjectionMs, `${path}.maxEjectionMs`, baseEjectionMs, MAX_EJECTION_MS, Math.max(baseEjectionMs, DEFAULT_MAX_EJECTION_MS))
  const consecutiveErrors = optionalInteger(options.consecutiveErrors, `${path}.consecutiveErrors`, 0, MAX_CONSECUTIVE_ERRORS, raw === undefined ? 0 : DEFAULT_CONSECUTIVE_ERRORS)
  const consecutiveGatewayErrors = optionalInteger(options.consecutiveGatewayErrors, `${path}.consecutiveGatewayErrors`, 0, MAX_CONSECUTIVE_ERRORS, DEFAULT_CONSECUTIVE_GATEWAY_ERRORS)
  if (consecutiveErrors === 0 && consecutiveGatewayErrors === 0) return null
  return Object.freeze({
    consecutiveErrors: consecutiveErrors === 0 ? Infinity : consecutiveErrors,
    consecutiveGatewayErrors: consecutiveGatewayErrors === 0 ? Infinity : consecutiveGatewayErrors,
    baseEjectionMs,
    maxEjectionMs,
    maxEjectedPercent: optionalInteger(options.maxEjectedPercent, `${path}.maxEjectedPercent`, 1, 100, DEFAULT_MAX_EJECTED_PERCENT),
    keepSessions: optionalBoolean(options.keepSessions, `${path}.keepSessions`, false)
  })
}

function resolveMinimumHealthy (raw: unknown, path: string): MinimumHealthy {
  if (raw === undefined) return Object.freeze({ count: 1 })
  if (typeof raw === 'number' && Number.isInteger(raw) && raw >= 1 && raw <= MAX_TARGETS) return Object.freeze({ count: raw })
  const percent = typeof raw === 'string' && /^\d{1,3}%$/.test(raw) ? Number(raw.slice(0, -1)) : 0
  if (percent < 1 || percent > 100) invalid(path, `a count from 1 to ${MAX_TARGETS}, or a percentage from '1%' to '100%'`, raw)
  return Object.freeze({ percent })
}

function resolveHealthCheck (raw: unknown, path: string): ResolvedHealthCheck | null {
  if (raw === undefined) return null
  const check = requireObject(raw, path) as Partial<HealthCheckOptions>
  refuseUnknownKeys(check, HEALTH_CHECK_KEYS, `${path}.`)
  const short = optionalBoolean(check.allowShortIntervals, `${path}.allowShortIntervals`, false)
  const checkPath = check.path ?? DEFAULT_HEALTH_CHECK_PATH
  // A path and query only: an origin or a fragment here could send the check elsewhere.
  if (typeof checkPath !== 'string' || !/^\/[\x21-\x7e]*$/.test(checkPath) || checkPath.startsWith('//') || checkPath.includes('#')) {
    invalid(`${path}.path`, 'a path starting with / (a query is allowed), printable ASCII without spaces', checkPath)
  }
  const intervalMs = optionalInteger(check.intervalMs, `${path}.intervalMs`, short ? 1 : MIN_HEALTH_CHECK_INTERVAL_MS, MAX_HEALTH_CHECK_INTERVAL_MS, DEFAULT_HEALTH_CHECK_INTERVAL_MS)
  const timeoutMs = optionalInteger(check.timeoutMs, `${path}.timeoutMs`, short ? 1 : MIN_HEALTH_CHECK_TIMEOUT_MS, MAX_HEALTH_CHECK_TIMEOUT_MS, DEFAULT_HEALTH_CHECK_TIMEOUT_MS)
  if (timeoutMs >= intervalMs) invalid(`${path}.timeoutMs`, `below intervalMs (${intervalMs})`, timeoutMs)
  const rawMatcher = check.matcher ?? DEFAULT_HEALTH_CHECK_MATCHER
  const matcher = typeof rawMatcher === 'string' ? parseMatcher(rawMatcher) : null
  if (matcher === null) invalid(`${path}.matcher`, "status codes from 200 to 499: '200', a list '200,202' or a range '200-299'", rawMatcher)
  const port = check.port ?? 'traffic-port'
  if (port !== 'traffic-port' && (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65_535)) {
    invalid(`${path}.port`, "'traffic-port' or an integer from 1 to 65535", port)
  }
  return Object.freeze({
    path: checkPath,
    port: port === 'traffic-port' ? null : port,
    intervalMs,
    timeoutMs,
    healthyThreshold: optionalInteger(check.healthyThreshold, `${path}.healthyThreshold`, MIN_THRESHOLD, MAX_THRESHOLD, DEFAULT_HEALTHY_THRESHOLD),
    unhealthyThreshold: optionalInteger(check.unhealthyThreshold, `${path}.unhealthyThreshold`, MIN_THRESHOLD, MAX_THRESHOLD, DEFAULT_UNHEALTHY_THRESHOLD),
    matcher,
    initialState: optionalChoice(check.initialState, `${path}.initialState`, ['initial', 'healthy'] as const, 'initial')
  })
}

/** Checks one target's options; used at registration and by `TargetGroup#register` at run time. */
export function resolveTarget (raw: unknown, path: string): ResolvedTarget {
  const target = requireObject(raw, path) as Partial<TargetOptions>
  refuseUnknownKeys(target, TARGET_KEYS, `${path}.`)
  const id = requireName(target.id, `${path}.id`)
  const origin = requireOrigin(target.url, `${path}.url`)
  const weight = optionalInteger(target.weight, `${path}.weight`, 1, MAX_TARGET_WEIGHT, DEFAULT_TARGET_WEIGHT)
  return Object.freeze({ id, origin, weight })
}

/**
 * Resolves stickiness options over `base`: for a group, `base` is the default; for a route's
 * override, it is the group's stickiness, so `{ durationSeconds: 3600 }` changes only the window.
 */
export function resolveStickiness (raw: StickinessOptions | undefined, base: ResolvedStickiness | null, path: string, cookiePrefix: string): ResolvedStickiness | null {
  if (raw === undefined) return base
  if (raw === false) return null
  if (Array.isArray(raw)) return resolveChain(raw, base, path, cookiePrefix)
  const stickiness = requireObject(raw, path, 'false, an object or an array of them (a fallback chain)') as Partial<Record<string, unknown>>
  if (optionalBoolean(stickiness.enabled, `${path}.enabled`, true) === false) {
    refuseUnknownKeys(stickiness, STICKINESS_KEYS, `${path}.`)
    return null
  }
  const type = optionalChoice(stickiness.type, `${path}.type`, STICKINESS_TYPES, base?.type ?? 'lb_cookie')
  // Fields without a type change the base's own source (`{ durationSeconds: 3600 }` on a route): its chain stays.
  if (stickiness.type === undefined && base !== null && base.chain.length > 1) {
    refuseUnknownKeys(stickiness, ['enabled', 'durationSeconds'], `${path}.`)
    const durationSeconds = optionalInteger(stickiness.durationSeconds, `${path}.durationSeconds`, 1, MAX_COOKIE_DURATION_SECONDS, base.durationSeconds)
    return Object.freeze({ ...base, durationSeconds })
  }
  return resolveChain([{ ...stickiness, type }], base, path, cookiePrefix, true)
}

/** A chain of sources: the first that yields a key decides; at most one source pins clients. */
function resolveChain (raw: readonly unknown[], base: ResolvedStickiness | null, path: string, cookiePrefix: string, single = false): ResolvedStickiness | null {
  if (raw.length === 0 || raw.length > MAX_STICKINESS_CHAIN) invalid(path, `false, an object, or an array of 1 to ${MAX_STICKINESS_CHAIN} sources`, raw)
  const chain: ResolvedLink[] = []
  let pin: ResolvedStickiness | null = null
  let pinAt = ''
  for (let i = 0; i < raw.length; i++) {
    const at = single ? path : `${path}[${i}]`
    const source = requireObject(raw[i], at, 'an object with a type') as Partial<Record<string, unknown>>
    if (optionalBoolean(source.enabled, `${at}.enabled`, true) === false) continue
    if (source.type === undefined) invalid(`${at}.type`, `one of ${STICKINESS_TYPES.join(', ')} (required in a chain)`, undefined)
    const type = optionalChoice(source.type, `${at}.type`, STICKINESS_TYPES, 'lb_cookie')
    if (type === 'lb_cookie' || type === 'app_cookie' || type === 'learn') {
      if (pin !== null) invalid(`${at}.type`, `a key type (source_ip, header, query, path): ${pinAt} already pins the client, and a chain has one source that does`, type)
      pin = resolvePin(type, source, base, at, cookiePrefix)
      pinAt = at
      chain.push(type === 'learn' ? (pin as ResolvedLearnStickiness).learn : { type })
    } else {
      const { enabled: _enabled, ...rest } = source
      chain.push(resolveKeySource(type, rest, at))
    }
  }
  if (chain.length === 0) return null
  const frozen = Object.freeze(chain)
  if (pin !== null) return Object.freeze({ ...pin, chain: frozen })
  // Only keys: nothing pins a client, so no window applies (kept for a route that adds a cookie).
  return Object.freeze({ type: chain[0].type as KeyStickinessType, durationSeconds: base?.durationSeconds ?? DEFAULT_LB_COOKIE_DURATION_SECONDS, chain: frozen })
}

/** A source that pins the client (lb_cookie, app_cookie, learn), over `base` when it is of the same type. */
function resolvePin (type: 'lb_cookie' | 'app_cookie' | 'learn', stickiness: Partial<Record<string, unknown>>, base: ResolvedStickiness | null, path: string, cookiePrefix: string): ResolvedStickiness {
  const durationSeconds = optionalInteger(stickiness.durationSeconds, `${path}.durationSeconds`, 1,
    MAX_COOKIE_DURATION_SECONDS, base?.durationSeconds ?? DEFAULT_LB_COOKIE_DURATION_SECONDS)
  if (type === 'learn') {
    const { type: _type, enabled: _enabled, durationSeconds: _duration, ...rest } = stickiness
    const learn = base?.type === 'learn' && Object.keys(rest).length === 0 ? base.learn : resolveLearn({ type, ...rest }, path, cookiePrefix)
    return { type, durationSeconds, learn, chain: [] }
  }
  refuseUnknownKeys(stickiness, STICKINESS_KEYS, `${path}.`)
  if (type === 'lb_cookie') {
    for (const key of ['cookieName', 'bindToCookieValue']) {
      if (stickiness[key] !== undefined) invalid(`${path}.${key}`, "absent unless type is 'app_cookie'", stickiness[key])
    }
    return { type, durationSeconds, chain: [] }
  }
  const appBase = base?.type === 'app_cookie' ? base : null
  const cookieName = stickiness.cookieName ?? appBase?.cookieName
  if (typeof cookieName !== 'string' || !COOKIE_NAME_PATTERN.test(cookieName)) {
    invalid(`${path}.cookieName`, "the application's cookie name (a token of 1 to 128 characters, e.g. 'JSESSIONID'), required with type 'app_cookie'", cookieName)
  }
  for (const reserved of new Set([RESERVED_COOKIE_PREFIX, `${cookiePrefix}${RESERVED_COOKIE_PREFIX}`])) {
    if (cookieName.startsWith(reserved)) {
      invalid(`${path}.cookieName`, `a name not starting with ${reserved}, ${reserved}APP or ${reserved}TG (the gateway's own cookies; ALB refuses them too)`, cookieName)
    }
  }
  const bindToCookieValue = optionalBoolean(stickiness.bindToCookieValue, `${path}.bindToCookieValue`, appBase?.bindToCookieValue ?? false)
  return { type, durationSeconds, cookieName, bindToCookieValue, chain: [] }
}


const LB_COOKIE_CHAIN: readonly ResolvedLink[] = Object.freeze([Object.freeze({ type: 'lb_cookie' as const })])

function defaultStickiness (): ResolvedStickiness {
  return { type: 'lb_cookie', durationSeconds: DEFAULT_LB_COOKIE_DURATION_SECONDS, chain: LB_COOKIE_CHAIN }
}

const LEARN_STORE_KEYS = { memory: ['type', 'maxEntries'], redis: ['type', 'url', 'keyPrefix', 'timeoutMs', 'localCacheMs'] }

function resolveLearnStore (raw: unknown): ResolvedLearnStore {
  if (raw === undefined) return Object.freeze({ type: 'memory', maxEntries: DEFAULT_LEARN_MAX_ENTRIES })
  const store = requireObject(raw, 'learnStore', "{ type: 'memory' } or { type: 'redis', url }") as Partial<LearnStoreOptions> & Record<string, unknown>
  const type = optionalChoice(store.type, 'learnStore.type', ['memory', 'redis'] as const, 'memory')
  refuseUnknownKeys(store, LEARN_STORE_KEYS[type], 'learnStore.')
  if (type === 'memory') {
    return Object.freeze({ type, maxEntries: optionalInteger(store.maxEntries, 'learnStore.maxEntries', 1, MAX_LEARN_MAX_ENTRIES, DEFAULT_LEARN_MAX_ENTRIES) })
  }
  const url = store.url
  let valid = false
  if (typeof url === 'string') {
    try {
      const parsed = new URL(url)
      valid = (parsed.protocol === 'redis:' || parsed.protocol === 'rediss:') && parsed.hostname !== ''
    } catch {}
  }
  // The URL may carry a password: described by its length only.
  if (!valid) invalid('learnStore.url', 'a redis:// or rediss:// URL such as redis://127.0.0.1:6379', url, true)
  const keyPrefix = store.keyPrefix ?? DEFAULT_LEARN_KEY_PREFIX
  if (typeof keyPrefix !== 'string' || keyPrefix.length > 128) invalid('learnStore.keyPrefix', 'a string of 0 to 128 characters', keyPrefix)
  return Object.freeze({
    type,
    url: url as string,
    keyPrefix,
    timeoutMs: optionalInteger(store.timeoutMs, 'learnStore.timeoutMs', 1, MAX_LEARN_TIMEOUT_MS, DEFAULT_LEARN_TIMEOUT_MS),
    localCacheMs: optionalInteger(store.localCacheMs, 'learnStore.localCacheMs', 0, MAX_LEARN_LOCAL_CACHE_MS, DEFAULT_LEARN_LOCAL_CACHE_MS)
  })
}

const METRICS_KEYS = ['registry', 'client', 'prefix', 'buckets']
const METRICS_NAME_PREFIX = /^([A-Za-z_:][A-Za-z0-9_:]{0,63})?$/

function resolveMetrics (raw: unknown): ResolvedMetrics | null {
  if (raw === undefined || raw === false) return null
  if (raw === true) return Object.freeze({ registry: null, client: null, prefix: DEFAULT_METRICS_PREFIX, buckets: DEFAULT_METRICS_BUCKETS })
  const metrics = requireObject(raw, 'metrics', 'true, false or { registry, client, prefix, buckets }') as Partial<MetricsOptions>
  refuseUnknownKeys(metrics, METRICS_KEYS, 'metrics.')
  const { registry, client } = metrics
  if (registry !== undefined && (registry === null || typeof registry !== 'object' || typeof registry.metrics !== 'function' || typeof registry.registerMetric !== 'function')) {
    invalid('metrics.registry', 'a prom-client Registry', registry)
  }
  if (client !== undefined && (client === null || typeof client !== 'object' || !['Registry', 'Counter', 'Gauge', 'Histogram'].every((name) => typeof (client as unknown as Record<string, unknown>)[name] === 'function'))) {
    invalid('metrics.client', "the prom-client module (import * as client from 'prom-client')", client)
  }
  const prefix = metrics.prefix ?? DEFAULT_METRICS_PREFIX
  if (typeof prefix !== 'string' || !METRICS_NAME_PREFIX.test(prefix)) {
    invalid('metrics.prefix', 'a string of 0 to 64 characters from a-z A-Z 0-9 _ :, not starting with a digit', prefix)
  }
  const buckets = metrics.buckets ?? DEFAULT_METRICS_BUCKETS
  if (!Array.isArray(buckets) || buckets.length === 0 || buckets.length > MAX_METRICS_BUCKETS ||
      !buckets.every((bound, i) => typeof bound === 'number' && Number.isFinite(bound) && bound > 0 && (i === 0 || bound > buckets[i - 1]))) {
    invalid('metrics.buckets', `an array of 1 to ${MAX_METRICS_BUCKETS} increasing positive numbers (seconds)`, buckets)
  }
  return Object.freeze({ registry: registry ?? null, client: client ?? null, prefix, buckets: Object.freeze([...buckets]) })
}

function resolveKeys (raw: unknown): Buffer[] | undefined {
  if (raw === undefined) return undefined
  if (!Array.isArray(raw) || raw.length === 0) invalid('keys', `a non-empty array of ${KEY_BYTES}-byte keys`, raw, true)
  return raw.map((key, i) => {
    const bytes = decodeKey(key)
    if (bytes === null) {
      invalid(`keys[${i}]`, `${KEY_BYTES} bytes: a Buffer, ${KEY_BYTES * 2} hex characters, or base64 or base64url of ${KEY_BYTES} bytes`, key, true)
    }
    return bytes
  })
}

function decodeKey (key: unknown): Buffer | null {
  if (Buffer.isBuffer(key)) return key.length === KEY_BYTES ? Buffer.from(key) : null
  if (typeof key !== 'string') return null
  if (/^[0-9a-fA-F]{64}$/.test(key)) return Buffer.from(key, 'hex')
  if (/^[A-Za-z0-9+/_-]{43}={0,1}$/.test(key)) {
    const bytes = Buffer.from(key.replace(/\+/g, '-').replace(/\//g, '_'), 'base64url')
    if (bytes.length === KEY_BYTES) return bytes
  }
  return null
}

const TRUSTED_PROXIES_EXPECTED = "true, false, a string of comma-separated addresses and CIDR blocks ('10.0.0.0/8, 127.0.0.1'), an array of them, or a function (address, hop) => boolean"
const TRUSTED_PROXY_EXPECTED = 'an IP address, a CIDR block (10.0.0.0/8, fd00::/8), or loopback, linklocal or uniquelocal'

/**
 * Fastify's `trustProxy` forms, but a hop count: whether a peer is a proxy is told by its
 * address, never by how many X-Forwarded-For entries it sends. Null: no peer is trusted.
 */
function resolveTrustedProxies (raw: unknown): ((address: string, hop: number) => boolean) | null {
  if (raw === undefined || raw === false) return null
  if (raw === true) return trustEvery
  if (typeof raw === 'function') return raw as (address: string, hop: number) => boolean
  if (typeof raw === 'number') {
    invalid('trustedProxies', `the proxies' addresses, not a hop count (${TRUSTED_PROXIES_EXPECTED})`, raw)
  }
  let entries: readonly unknown[]
  if (typeof raw === 'string') entries = raw.split(',').map((entry) => entry.trim())
  else if (Array.isArray(raw)) entries = raw
  else invalid('trustedProxies', TRUSTED_PROXIES_EXPECTED, raw)
  if (entries.length === 0) return null
  entries.forEach((entry, i) => {
    const path = Array.isArray(raw) ? `trustedProxies[${i}]` : 'trustedProxies'
    if (typeof entry !== 'string') invalid(path, TRUSTED_PROXY_EXPECTED, entry)
    try {
      proxyAddr.compile(entry)
    } catch {
      invalid(path, TRUSTED_PROXY_EXPECTED, entry)
    }
  })
  return proxyAddr.compile(entries as string[])
}

function trustEvery (): boolean {
  return true
}

function resolveNow (raw: unknown): () => number {
  if (raw === undefined) return Date.now
  if (typeof raw !== 'function') invalid('now', 'a function returning milliseconds since the epoch', raw)
  return raw as () => number
}

function requireName (raw: unknown, path: string): string {
  if (typeof raw !== 'string' || !NAME_PATTERN.test(raw)) invalid(path, NAME_EXPECTED, raw)
  return raw
}

function requireOrigin (raw: unknown, path: string): string {
  const expected = 'an http: or https: origin such as http://127.0.0.1:3001 (no path, query or credentials)'
  if (typeof raw !== 'string') invalid(path, expected, raw)
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    invalid(path, expected, raw)
  }
  const plain = (url.protocol === 'http:' || url.protocol === 'https:') && url.username === '' &&
    url.password === '' && url.pathname === '/' && url.search === '' && url.hash === '' && !raw.endsWith('?')
  if (!plain) invalid(path, expected, raw)
  return url.origin
}
