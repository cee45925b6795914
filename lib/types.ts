import type { TargetStateName, TargetStateReason } from './health/target-state.js'
import type { RuleConditionsOptions } from './rules/conditions.js'
import type { TargetGroup } from './target-group.js'
import type { ReplyForwardOptions } from './forward-options.js'

export type { TargetStateName, TargetStateReason } from './health/target-state.js'
export type { RuleConditionsOptions } from './rules/conditions.js'

/** How a target group picks a target for a client that is not (or no longer) pinned. */
export type Algorithm = 'round_robin' | 'least_outstanding_requests' | 'weighted_random' | 'least_sessions'

/** What a stickiness type is called on the wire and in `request.affinity`; `none` when the route is not sticky. */
export type StickinessType = 'lb_cookie' | 'app_cookie' | 'learn' | KeyStickinessType | 'none'

/** Stickiness types that hash a key of the request onto the group's targets (consistent hashing): no cookie, no state. */
export type KeyStickinessType = 'source_ip' | 'header' | 'query' | 'path'

/**
 * Hashing of the client's address: after `trustedProxies` (from an untrusted peer, the peer's own
 * address; never a header it sent), with an optional prefix so a NAT or a mobile client moving
 * inside its network keeps its target.
 */
export interface SourceIpStickinessOptions {
  type: 'source_ip'
  /** Bits of an IPv4 address that count: 1 to 32 (24: every address of a /24 goes to one target). Default 32. */
  ipv4PrefixLength?: number
  /** Bits of an IPv6 address that count: 1 to 128 (64: a client keeps its target as its interface id changes). Default 128. */
  ipv6PrefixLength?: number
}

/** Hashing of a request header's value (e.g. `x-session-id`, `authorization`): hashed with a key of the ring, never logged. */
export interface HeaderStickinessOptions {
  type: 'header'
  /** The header's name, any case: a token of 1 to 128 characters. */
  name: string
}

/** Hashing of a query parameter's value, as sent (not decoded). */
export interface QueryStickinessOptions {
  type: 'query'
  /** The parameter's name, as sent: 1 to 128 characters, none of `&`, `=`, `#`. */
  name: string
}

/**
 * Hashing of a session id inside the path: by default the servlet form `;jsessionid=…`
 * (`/cart;jsessionid=ABC?x=1`), or another path parameter (`name`), or the first capture group
 * of `pattern` (e.g. `/^\/s\/([^/]+)\//`).
 */
export interface PathStickinessOptions {
  type: 'path'
  /** The path parameter (`;name=value`, name matched case-insensitively). Default `jsessionid` unless `pattern` is given. */
  name?: string
  /** A regular expression over the path (before `?`) whose first capture group is the key; not with `name`. */
  pattern?: RegExp
}

/**
 * nginx's `sticky learn`: the gateway learns the app's session id from the target's response
 * (its `Set-Cookie` of `cookieName`, or its header `headerName`) and remembers session id →
 * target in the learn store (see `learnStore`), so a client that returns with only the app's
 * own cookie (or header) stays on its target. Entries expire `durationSeconds` after their last use.
 */
export interface LearnStickinessOptions {
  type: 'learn'
  /** The app's session cookie (e.g. `JSESSIONID`): read from the request's Cookie, learned from the response's Set-Cookie. */
  cookieName?: string
  /** Or a header carrying the session id both ways (e.g. `x-session-id`); exactly one of the two. */
  headerName?: string
  /** Default true; `false` turns stickiness off. */
  enabled?: boolean
  /** How long an entry lives after its last use: 1 to 604800 s. Default 86400 (one day). */
  durationSeconds?: number
}

/** Duration-based stickiness with ALB's `AWSALB` + `AWSALBCORS` cookies. */
export interface LbCookieStickinessOptions {
  /** Default `lb_cookie` (or, on a route, the group's type). */
  type?: 'lb_cookie'
  /** Default true; `false` turns stickiness off, like `stickiness: false`. */
  enabled?: boolean
  /** The stickiness window, reset on every request: 1 to 604800 s. Default 86400 (one day). */
  durationSeconds?: number
}

/**
 * Application-based stickiness, ALB's `app_cookie`: once a target's response sets the app's own
 * cookie `cookieName`, the gateway writes its sealed `AWSALBAPP-0..3` cookies; a request that
 * brings both is kept on its target.
 */
export interface AppCookieStickinessOptions {
  type: 'app_cookie'
  /** The application's session cookie, e.g. `JSESSIONID`, `PHPSESSID`, `connect.sid`. Not starting with `AWSALB`. */
  cookieName: string
  /** Default true; `false` turns stickiness off. */
  enabled?: boolean
  /** The stickiness window, reset on every request: 1 to 604800 s. Default 86400 (one day). */
  durationSeconds?: number
  /**
   * Seal a hash of the app cookie's value into the binding, so `AWSALBAPP-*` copied from another
   * client (or kept across a new app session) does not steer this one. Default false (ALB checks the name only).
   */
  bindToCookieValue?: boolean
}

/** One stickiness source. */
export type StickinessSourceOptions = LbCookieStickinessOptions | AppCookieStickinessOptions | LearnStickinessOptions |
  SourceIpStickinessOptions | HeaderStickinessOptions | QueryStickinessOptions | PathStickinessOptions

/**
 * A target group's or a route's stickiness: one source, a fallback chain of sources (the first
 * that yields a key decides; at most one of `lb_cookie`, `app_cookie` and `learn`, which pins
 * the client; e.g. `[{ type: 'lb_cookie' }, { type: 'header', name: 'x-session-id' }, { type: 'source_ip' }]`),
 * or `false` for none.
 */
export type StickinessOptions = StickinessSourceOptions | StickinessSourceOptions[] | false

/** Where `learn` stickiness keeps session id → target: this process's memory (default), or Redis shared by several gateways. */
export type LearnStoreOptions = MemoryLearnStoreOptions | RedisLearnStoreOptions

/** A bounded LRU in this process: each gateway learns alone. */
export interface MemoryLearnStoreOptions {
  type: 'memory'
  /** Most sessions remembered; the least recently used go first: 1 to 10000000. Default 100000. */
  maxEntries?: number
}

/** Redis (through ioredis), shared by every gateway instance; a request waits for it `timeoutMs` at most. */
export interface RedisLearnStoreOptions {
  type: 'redis'
  /** `redis://[user:password@]host:port[/db]` or `rediss://…`. Never logged. */
  url: string
  /** Put before every key: 0 to 128 characters. Default `fastify-sticky:learn:`. */
  keyPrefix?: string
  /** Longest wait for a lookup before the request goes on without it (`store-unavailable`): 1 to 10000 ms. Default 50. */
  timeoutMs?: number
  /** How long a lookup's answer is reused in this process without a round trip: 0 to 60000 ms. Default 1000. */
  localCacheMs?: number
}

/** One upstream origin of a target group. */
export interface TargetOptions {
  /** Stable name, written (sealed) into cookies: 1 to 64 of `A-Z a-z 0-9 . _ : -`. Never an address. */
  id: string
  /** The target's origin, `http://host:port` or `https://host:port`; no path. */
  url: string
  /** Share of new sessions relative to the group's other targets: integer 1 to 1000. Default 1. */
  weight?: number
}

/**
 * Active health checks of a target group, with ALB's defaults and ranges. Each target is probed
 * with `GET path` through its own pool; one check at a time per target, with jitter.
 */
export interface HealthCheckOptions {
  /** Path (and query) to GET, starting with `/`. Default `/`. */
  path?: string
  /** Port to check on the target's host: `'traffic-port'` (the target's own) or 1 to 65535. Default `'traffic-port'`. */
  port?: number | 'traffic-port'
  /** Time between checks of one target: 5000 to 300000 ms. Default 30000. */
  intervalMs?: number
  /** No answer within this long fails the check (`Target.Timeout`): 2000 to 120000 ms, below `intervalMs`. Default 5000. */
  timeoutMs?: number
  /** Passing checks in a row that bring an unhealthy target back: 2 to 10. Default 5. */
  healthyThreshold?: number
  /** Failing checks in a row that take a target out: 2 to 10. Default 2. */
  unhealthyThreshold?: number
  /** Status codes that pass: `200`, a list `200,202` or a range `200-299`, codes 200 to 499. Default `200`. */
  matcher?: string
  /** Where a new target starts: `initial` (ALB: no new sessions until a check passes) or `healthy` (until a check fails). Default `initial`. */
  initialState?: 'initial' | 'healthy'
  /** For tests only: allows `intervalMs` and `timeoutMs` from 1 ms. Default false. */
  allowShortIntervals?: boolean
}

/** A named set of targets sharing algorithm and stickiness. */
export interface TargetGroupOptions {
  /** Unique name, bound into its cookies: 1 to 64 of `A-Z a-z 0-9 . _ : -`. */
  name: string
  /** Initial targets; more can be registered at run time. Default none. Not with `discovery`. */
  targets?: TargetOptions[]
  /** Targets found in DNS (a Kubernetes headless service, Consul) instead of `targets`, and followed as the answer changes; `app.ready()` waits up to 5 s for the first answer. */
  discovery?: DnsDiscoveryOptions
  /** Default `round_robin`. */
  algorithm?: Algorithm
  /** Default `{ type: 'lb_cookie', durationSeconds: 86400 }`; `false` for none. */
  stickiness?: StickinessOptions
  /** Active health checks; without it targets are not checked and count as healthy. */
  healthCheck?: HealthCheckOptions
  /**
   * Fewer healthy targets than this and the group fails open (or answers 503, see `failOpen`):
   * a count from 1 (capped at the number registered), or a percentage of the registered targets
   * such as `'50%'`. Default 1.
   */
  minimumHealthyTargets?: number | string
  /** Below `minimumHealthyTargets`, route to every registered target (true, ALB) or answer 503 (false). Default true. */
  failOpen?: boolean
  /**
   * How long a deregistered target drains before it is `unused` and its pool closes: 0 to
   * 3600000 ms (ALB's `deregistration_delay.timeout_seconds`, in ms). A request still running at
   * the end gets 502. Default 300000.
   */
  deregistrationDelayMs?: number
  /**
   * While a target drains, clients pinned to it stay on it until the delay ends (true), or are
   * re-pinned at their next request as ALB does (false). Default true.
   */
  drainingKeepsSessions?: boolean
  /**
   * A target that turns healthy gets a linearly growing share of new sessions over this window:
   * 0 (off) or 30000 to 900000 ms (ALB's `slow_start.duration_seconds`, in ms). Not with
   * `least_outstanding_requests`. Default 0.
   */
  slowStartMs?: number
  /**
   * Passive checks: live traffic's errors eject a target for a while. By default (absent) only
   * gateway failures count: 5 refused, reset, timed-out or cut-off requests in a row eject a
   * target; `{}` also counts the target's own 5xx responses (`consecutiveErrors`); `false` turns
   * passive checks off.
   */
  outlierDetection?: OutlierDetectionOptions | false
  /**
   * Bounded load (HAProxy's `hash-balance-factor`, Envoy's `hash_balance_factor`): a new
   * assignment skips a target holding more than this factor of the group's mean requests in
   * flight (by weight), so a hot target sheds new sessions, never its pinned ones: 0 (off), or
   * 1.01 to 100 (e.g. 1.25). With key stickiness alone every request is a new assignment. Default 0.
   */
  boundedLoadFactor?: number
  /** WebSocket connections to this group's targets, on routes that allow them (see `StickyRouteConfig.websocket`). */
  websocket?: WebSocketOptions
  /**
   * How the gateway speaks TLS to the group's targets, which must then all be `https://`
   * (registered at run time too). Certificates are read once, at registration. Without it,
   * `https://` targets are verified against Node's public CAs.
   */
  tls?: TargetGroupTlsOptions
}

/**
 * A target group's targets, found in DNS and followed as the answer changes: a new address is
 * registered (through `healthCheck.initialState` and slow start), a vanished one deregistered
 * (it drains). A failed or empty answer keeps the targets of the last good one. Targets are
 * `https://` when the group has `tls` (`tls: {}` for Node's defaults), and their TLS server name
 * is `tls.servername` or else this host name, never the address. Their ids are
 * `<group name>-<12 hex digits of the address and port's SHA-256>`, the same on every gateway.
 *
 * @example
 * discovery: { hostname: 'carts.default.svc.cluster.local', port: 8080, intervalMs: 10000 }
 */
export interface DnsDiscoveryOptions {
  /** The name to resolve: A/AAAA records, or SRV records for an RFC 2782 name such as `_http._tcp.carts.service.consul`. */
  hostname: string
  /** The targets' port, 1 to 65535: required for A/AAAA, absent with SRV (each record names its own). */
  port?: number
  /** Ask for SRV records (priority: only the lowest is used; weight: the target's weight, 1 to 1000). Default: true for a `_service._proto.` name. */
  srv?: boolean
  /** Address family: 4 (A records), 6 (AAAA) or 0 (both). Default 4. */
  family?: 0 | 4 | 6
  /** The longest time between two resolutions, 10 to 3600000 ms; a shorter TTL (at least 1 s) refreshes sooner. Failed resolutions are retried after it. Default 30000. */
  intervalMs?: number
  /** How long one DNS query waits for an answer before it is sent again, 1 to 60000 ms. Default 2000. */
  timeoutMs?: number
  /** How often a query is sent before the resolution fails, 1 to 10. Default 2. */
  tries?: number
  /** The DNS servers to ask, such as `['10.0.0.2', '127.0.0.1:5353', '[fd00::53]:53']`, 1 to 8. Default: the system's. */
  servers?: string[]
}

/**
 * Published on the diagnostics channel `fastify-sticky:dns-discovery` when a resolution changes a
 * group's targets, fails, or succeeds after failing.
 */
export interface DnsDiscoveryEvent {
  readonly targetGroup: string
  readonly hostname: string
  /** `resolved`: an answer with addresses came; `failed`: none came (error, timeout or empty answer), the targets stay as they were. */
  readonly outcome: 'resolved' | 'failed'
  /** Targets registered from this answer. */
  readonly registered: readonly TargetRef[]
  /** Ids of the targets deregistered (now draining) because the answer no longer holds them. */
  readonly deregistered: readonly string[]
  /** The resolver's error code (`ETIMEOUT`, `ENOTFOUND`, `ENODATA`, `ECONNREFUSED`…) when it failed; null otherwise. */
  readonly error: string | null
  /** When the resolution ended (ms since the epoch, the plugin's clock). */
  readonly atMs: number
}

/**
 * Limits of the WebSocket connections the gateway tunnels to a group's targets. An upgraded
 * connection counts as a request in flight on its target until it closes.
 */
export interface WebSocketOptions {
  /** Most open WebSockets per target: an upgrade past it is answered 503 `FST_STICKY_TARGET_WEBSOCKET_LIMIT`. 0 (no limit) to 1 000 000. Default 0. */
  maxConnectionsPerTarget?: number
  /** Time for the target's answer to an upgrade (101 or a refusal): 504 after it. 1 ms to the plugin's `idleTimeoutMs`. Default 10 000 or `idleTimeoutMs` if lower. */
  handshakeTimeoutMs?: number
  /** An open WebSocket with no byte either way for this long is closed with 1001 (Going Away): 0 (off) or 1 ms to 86 400 000 ms. Default 0. */
  idleTimeoutMs?: number
  /** A target turning unhealthy (or ejected) closes its open WebSockets with 1001; by default they stay open, as at ALB. Default false. */
  closeOnUnhealthy?: boolean
}

/**
 * PEM text (a string holding `-----BEGIN`, or a Buffer), or the path of a PEM file (any other
 * string; a relative one from the process's working directory), read once at registration.
 */
export type PemSource = string | Buffer

/**
 * TLS towards a target group's `https://` targets, for its traffic and its health checks alike.
 *
 * @example
 * tls: { ca: '/etc/gateway/internal-ca.pem', servername: 'carts.internal' }
 */
export interface TargetGroupTlsOptions {
  /** The CAs that sign the targets' certificates, trusted instead of Node's public ones: one source or an array of them (bundles allowed). Default: the public CAs. */
  ca?: PemSource | PemSource[]
  /** A client certificate (leaf first, then its intermediates) for targets that ask for one (mutual TLS); needs `key`. */
  cert?: PemSource
  /** The private key of `cert` (unencrypted PEM); needs `cert`. */
  key?: PemSource
  /**
   * The name sent in SNI and looked for in the target's certificate: a host name, not an IP
   * address. Default: the target URL's host name (for an IP address, no SNI, and the address is
   * looked for in the certificate). Never the client's `Host`.
   */
  servername?: string
  /** Refuse a target whose certificate does not verify (untrusted, expired, another name). `false` logs a warning at registration. Default true. */
  rejectUnauthorized?: boolean
  /** The lowest TLS version offered: `'TLSv1.2'` (default) or `'TLSv1.3'`. */
  minVersion?: 'TLSv1.2' | 'TLSv1.3'
}

/**
 * Passive checks (outlier detection): consecutive connection errors, timeouts or 5xx responses
 * from live traffic eject a target from the group for a time that grows with each ejection.
 */
export interface OutlierDetectionOptions {
  /** Consecutive failed requests of any kind (the target's 5xx responses included) that eject a target: 0 (5xx not counted) to 1000. Default 5 when `outlierDetection` is given, 0 when it is absent. */
  consecutiveErrors?: number
  /** Consecutive gateway failures (refused, reset, timed out, response cut off) that eject a target: 0 (off) to 1000. Default 5. */
  consecutiveGatewayErrors?: number
  /** First ejection's length; the n-th lasts n times as long: 1 to 3600000 ms. Default 30000. */
  baseEjectionMs?: number
  /** Longest ejection: `baseEjectionMs` to 3600000 ms. Default 300000 (or `baseEjectionMs` if longer). */
  maxEjectionMs?: number
  /** Most targets ejected at once, in percent of the registered ones (at least one of two or more): 1 to 100. Default 10. */
  maxEjectedPercent?: number
  /** Clients pinned to an ejected target stay on it (true: the app prefers errors over losing state) or are re-pinned (false). Default false. */
  keepSessions?: boolean
}

/**
 * Options of the fastify-sticky plugin, checked once at registration.
 *
 * @example
 * await app.register(fastifySticky, {
 *   keys: [process.env.STICKY_KEY!],
 *   targetGroups: [{
 *     name: 'carts',
 *     targets: [{ id: 'cart-a', url: 'http://127.0.0.1:3001' }, { id: 'cart-b', url: 'http://127.0.0.1:3002' }],
 *     stickiness: { type: 'lb_cookie', durationSeconds: 3600 }
 *   }]
 * })
 */
export interface FastifyStickyOptions {
  /** Key ring of 32-byte keys (Buffer, 64 hex characters or base64/base64url); the first seals, every one opens. Default: one random key per process, with a warning. */
  keys?: Array<string | Buffer>
  /** The target groups; names are unique. */
  targetGroups: TargetGroupOptions[]
  /** No response byte from the target within this time → 504: 1 to 4000000 ms. Default 60000 (ALB's idle timeout). */
  idleTimeoutMs?: number
  /** No connection to the target within this time → 504: 1 to 600000 ms. Default 10000 (ALB's). */
  connectTimeoutMs?: number
  /** When the chosen target refuses the connection (or it goes away before the request was sent), send the request once to another target and re-pin. Default true; false gives ALB's plain 502. */
  redispatch?: boolean
  /**
   * When the target resets or closes the connection before any response byte, send an
   * idempotent request (GET, HEAD, OPTIONS, or a route with `config.idempotent: true`) once to
   * another target and re-pin. A request that is not idempotent is never sent twice. Default true.
   */
  redispatchIdempotent?: boolean
  /**
   * Request bodies up to this many bytes (with a Content-Length) are received completely before
   * a connection to the target is taken; longer or chunked ones stream once this many bytes have
   * come: 0 to 16777216. Default 16384 (nginx's `client_body_buffer_size` on 64-bit).
   */
  requestBufferBytes?: number
  /**
   * The buffered part of a request body must arrive within this time, and a streamed one may
   * pause no longer between chunks, else 408: 1 to 3600000 ms. Default 60000 (nginx's `client_body_timeout`).
   */
  clientBodyTimeoutMs?: number
  /** ALB's X-Forwarded-For processing: `append` the client address (default), `preserve` the header as it came, or `remove` it. */
  xForwardedFor?: 'append' | 'preserve' | 'remove'
  /**
   * Whose `X-Forwarded-For`, `-Proto`, `-Port`, `-Host` and `Forwarded` are believed, by the
   * address of the connection's peer, judged once per connection: `true` (every peer), a string
   * of comma-separated addresses and CIDR blocks, an array of them (`loopback`, `linklocal` and
   * `uniquelocal` name ranges), or a function called with the peer's address and `0`, true to
   * trust it: Fastify's `trustProxy` forms, but a hop count. From any other peer,
   * `X-Forwarded-For` is its address alone, `X-Forwarded-Proto` and `-Port` are the gateway's
   * own, `X-Forwarded-Host` and `Forwarded` are not passed. Default: no peer is trusted.
   */
  trustedProxies?: boolean | string | string[] | ((address: string, hop: number) => boolean)
  /**
   * Send the gateway's own cookies (`<cookiePrefix>AWSALB`, `…CORS`, `…TG`, `…TGCORS`,
   * `…APP-0` to `-3`) on to the target in its Cookie header, for apps that read them. Default
   * `false`: they are taken out, as HAProxy's `cookie … indirect` does.
   */
  forwardStickyCookies?: boolean
  /** Most connections the gateway opens to one target: 1 to 65536. Default 128. */
  connectionsPerTarget?: number
  /**
   * Put before every cookie name the gateway writes and reads (`<prefix>AWSALB`, `<prefix>AWSALBAPP-0`,
   * `<prefix>AWSALBTG`, …), so two layers of gateways keep their own: 0 to 32 of `A-Z a-z 0-9 _ -`. Default `''`.
   */
  cookiePrefix?: string
  /**
   * `Secure` on the gateway's cookies (`AWSALB`, `AWSALBTG`, `AWSALBAPP-*`; the `CORS` twins always
   * have it): `true`, `false`, or `'auto'` (when `request.protocol` is `https`). Default `false`, ALB's
   * output. Must be `true` with a `__Host-` or `__Secure-` cookie prefix.
   */
  cookieSecure?: boolean | 'auto'
  /**
   * When the `CORS` twins (`AWSALBCORS`, `AWSALBTGCORS`, with `SameSite=None; Secure`) are written
   * beside `AWSALB` and `AWSALBTG`: `'auto'` only where a client can keep a `Secure` cookie, i.e.
   * when `request.protocol` is `https` (Fastify's `trustProxy` decides whether a proxy's
   * `X-Forwarded-Proto` counts) or `cookieSecure` is `true`; `'always'` on every response, as ALB
   * does (clients drop them over plain HTTP, and some, as got with tough-cookie, fail the request).
   * Default `'auto'`.
   */
  corsCookies?: 'auto' | 'always'
  /** `HttpOnly` on every gateway cookie, so page scripts cannot read them. Default `false`, ALB's output. */
  cookieHttpOnly?: boolean
  /**
   * How far in the future a cookie's sealed issue time may lie (clocks of gateways sharing keys
   * differ a little) before the cookie is not honoured (`reassigned`, `issued-in-future`): 0 to
   * 300 s. Default 5.
   */
  cookieClockSkewSeconds?: number
  /** Where `learn` stickiness remembers session ids. Default `{ type: 'memory' }`. */
  learnStore?: LearnStoreOptions
  /** Named sets of listener rules, bound to routes with `config.listener`. Default none. */
  listeners?: ListenerOptions[]
  /**
   * Adds a header saying what the gateway decided to every response of a bound route (the
   * gateway's own 502, 503 and 504 and a WebSocket's 101 included), for debugging:
   * `<outcome>;<why>;<target id>`, e.g. `hit;lb_cookie;cart-a`, `new;round_robin;cart-b`,
   * `reassigned;target-unreachable;cart-c` (`why`: `decidedBy` for `hit` and `new`, `reason`
   * for `reassigned`), or `unavailable;;`. Target ids only, never addresses. `true` names it
   * `x-sticky-decision`; a string names it (a header name). Default `false`.
   */
  exposeDecision?: boolean | string
  /**
   * When a client is re-pinned (`reassigned` away from a target its binding named, or moved
   * by a redispatch), the request to its new target carries that target's id and the reason,
   * so the app can take the session over from it: `x-sticky-previous-target` and
   * `x-sticky-handoff-reason` with `true` (the default), other names with an object, none
   * with `false`. Copies of these headers that clients send are never passed on.
   */
  handoffHeaders?: boolean | HandoffHeadersOptions
  /**
   * Prometheus metrics through prom-client (an optional peer dependency): `true` for a registry
   * of the plugin's own, or `{ registry, client, prefix, buckets }`. Read the registry from
   * `app.stickyMetrics.registry` (see docs/metrics.md). Default off: no hook, no cost.
   */
  metrics?: MetricsOptions | boolean
  /** Clock in milliseconds since the epoch, for tests. Default `Date.now`. */
  now?: () => number
}

/** The names of the hand-off headers (see `handoffHeaders`). */
export interface HandoffHeadersOptions {
  /** Carries the id of the target the client was pinned to. Default `x-sticky-previous-target`. */
  previousTarget?: string
  /** Carries why it was re-pinned (a `ReassignReason`). Default `x-sticky-handoff-reason`. */
  reason?: string
}

/**
 * A Prometheus registry: prom-client's `Registry` (or `@prometheus-io/client`'s), of the module
 * the plugin's metrics are made with.
 */
export interface MetricsRegistry {
  /** The Content-Type of `metrics()`'s text. */
  readonly contentType: string
  /** Every metric of the registry in Prometheus's text format (this is what a scrape answers). */
  metrics (): Promise<string>
  registerMetric (metric: any): void
  getSingleMetric (name: string): unknown
  removeSingleMetric (name: string): void
}

/** The prom-client module, as `import * as client from 'prom-client'` gives it (or `@prometheus-io/client`). */
export interface MetricsClient {
  Registry: abstract new (...args: any[]) => object
  Counter: new (...args: any[]) => object
  Gauge: new (...args: any[]) => object
  Histogram: new (...args: any[]) => object
}

/**
 * The plugin's Prometheus metrics (names and labels in docs/metrics.md).
 *
 * @example
 * import * as client from 'prom-client'
 * const registry = new client.Registry()
 * await app.register(fastifySticky, { targetGroups, metrics: { registry, client } })
 */
export interface MetricsOptions {
  /** Where the metrics are registered. Default: a new Registry of the plugin's own (`app.stickyMetrics.registry`). */
  registry?: MetricsRegistry
  /**
   * Your prom-client module, whose classes make the metrics: give it when `registry` is yours, so
   * that one copy of prom-client makes both (two installed copies keep two of everything).
   * Default: `import('prom-client')` from the plugin, which must find it installed.
   */
  client?: MetricsClient
  /** Put before every metric name: 0 to 64 of `a-z A-Z 0-9 _ :`, not starting with a digit. Default `fastify_sticky_`. */
  prefix?: string
  /** Histogram buckets in seconds, increasing: 1 to 50 positive numbers. Default prom-client's, 0.005 to 10. */
  buckets?: number[]
}

/** What `app.stickyMetrics` holds while metrics are on. */
export interface StickyMetrics {
  /** The registry holding the plugin's metrics: answer a scrape with its `metrics()`, as `contentType`. */
  readonly registry: MetricsRegistry
}

/**
 * A named set of listener rules, as an ALB listener has: the rule with the lowest `priority`
 * whose conditions all match decides; when none does, `default`.
 *
 * @example
 * { name: 'web', rules: [{ priority: 10, conditions: { httpHeader: [{ name: 'x-beta', values: ['1'] }] }, forward: 'beta' }],
 *   default: { targetGroups: [{ name: 'blue', weight: 90 }, { name: 'green', weight: 10 }], stickiness: { durationSeconds: 3600 } } }
 */
export interface ListenerOptions {
  /** Unique name, used in `config.listener`: 1 to 64 of `A-Z a-z 0-9 . _ : -`. */
  name: string
  /** Rules tried in order of priority. Default none. */
  rules?: ListenerRuleOptions[]
  /** Where requests go that match no rule. */
  default: ForwardOptions
}

/** One listener rule: conditions (all must match) and where a matching request goes. */
export interface ListenerRuleOptions {
  /** 1 to 50000, unique within the listener; the lowest matching one wins. */
  priority: number
  conditions: RuleConditionsOptions
  forward: ForwardOptions
}

/** A forward action: one target group by name, or up to 5 weighted target groups. */
export type ForwardOptions = string | WeightedForwardOptions

/** ALB's weighted forward: new clients are spread by weight; group stickiness keeps them on their side. */
export interface WeightedForwardOptions {
  /** 1 to 5 target groups. */
  targetGroups: WeightedTargetGroupOptions[]
  /**
   * Group stickiness (`AWSALBTG` + `AWSALBTGCORS`): required when the forward has two or more
   * groups and any of them is sticky. Default off.
   */
  stickiness?: GroupStickinessOptions | false
}

/** A target group in a weighted forward. */
export interface WeightedTargetGroupOptions {
  name: string
  /** Share of new clients: 0 to 999 (0: none, though clients it holds stay). Default 1. */
  weight?: number
}

/** ALB's `TargetGroupStickinessConfig`. */
export interface GroupStickinessOptions {
  /** Default true. */
  enabled?: boolean
  /** How long a client stays on its target group, reset on every request: 1 to 604800 s. Required. */
  durationSeconds: number
}

/** A route's binding, given as `config` in Fastify's route options: a target group, or a listener. */
export interface StickyRouteConfig {
  /** Name of the target group that serves this route. */
  targetGroup?: string
  /** Overrides the group's stickiness on this route: `false`, or fields to change (e.g. `{ durationSeconds: 3600 }`). */
  stickiness?: StickinessOptions
  /** Name of a listener (see `listeners`) whose rules choose the target group per request; not with `targetGroup`. */
  listener?: string
  /** Every method of this route is idempotent (e.g. a PUT-like POST): a request reset before any response byte may go to another target (see `redispatchIdempotent`). Default false. */
  idempotent?: boolean
  /**
   * An upgrade to WebSocket on this route is tunnelled to the affinity's target (`reply.forward()`),
   * with the same decision and cookies as a plain request; when false it is answered 400
   * `FST_STICKY_WEBSOCKET_NOT_ALLOWED`. Default false (true under `stickyProxy`).
   */
  websocket?: boolean
}

/** Why a client's cookie did not keep it on its target. */
export type ReassignReason =
  | 'undecodable'
  | 'expired'
  | 'issued-in-future'
  | 'group-mismatch'
  | 'target-unknown'
  | 'target-deregistered'
  | 'target-unreachable'
  | 'target-unhealthy'
  | 'target-ejected'
  | 'app-cookie-withheld'
  | 'app-cookie-mismatch'
  | 'target-overloaded'
  | 'store-unavailable'

/** Why a weighted forward's `AWSALBTG` cookie did not keep the client on its target group. */
export type GroupReassignReason = 'undecodable' | 'expired' | 'issued-in-future' | 'group-mismatch'

/** On a route bound to a listener: which rule decided, and how its forward chose the target group. */
export interface RuleMatch {
  readonly listener: string
  /** The matching rule's priority; `'default'` when no rule matched. */
  readonly priority: number | 'default'
  /**
   * `single` for a one-group forward; for a weighted one: `hit` (its `AWSALBTG` cookie),
   * `new` (by weight), or `reassigned` (by weight, the cookie could not be honoured).
   */
  readonly groupOutcome: 'single' | 'hit' | 'new' | 'reassigned'
  /** Why, when `groupOutcome` is `reassigned`. */
  readonly groupReason?: GroupReassignReason
}

/** One target in `TargetGroup#describe()`. */
export interface TargetDescription {
  readonly id: string
  readonly origin: string
  readonly weight: number
  /** ALB's state: `initial`, `healthy`, `unhealthy`, `draining`, `unused`. */
  readonly state: TargetStateName
  /** ALB's reason code, e.g. `Target.Timeout`; null while healthy. */
  readonly reason: TargetStateReason
  /** When the target entered its state (ms since the epoch, the plugin's clock). */
  readonly sinceMs: number
  /** Takes new sessions and keeps its pinned clients now (healthy, or the group fails open). */
  readonly routable: boolean
  /** False while an operator keeps it out of service (`setInService(id, false)`, the admin API's `out-of-service`). */
  readonly inService: boolean
  /** Requests for it whose response has not ended, those waiting for one of its connections included. */
  readonly inFlight: number
  /** Of those, how many wait in the gateway's queue for one of its connections (`connectionsPerTarget` are busy). */
  readonly queued: number
  /** Of the requests in flight, how many are open WebSockets. */
  readonly webSockets: number
  /**
   * Estimate of the sticky sessions pinned to it: clients pinned here whose stickiness window,
   * counted from their last request, is still open (see docs/health-and-lifecycle.md).
   */
  readonly boundSessions: number
  /** A client whose cookie names it stays on it now (routable, or draining / ejected with sessions kept). */
  readonly keepsSessions: boolean
  /** Ejected by passive checks until this time; null when not ejected. */
  readonly ejectedUntilMs: number | null
  /** In slow start until this time; null when not. */
  readonly slowStartEndsMs: number | null
  /** While draining: when the deregistration delay ends; null otherwise. */
  readonly drainDeadlineMs: number | null
}

/** What `TargetGroup#describe()` returns. */
export interface TargetGroupDescription {
  readonly name: string
  readonly algorithm: Algorithm
  /** Fewer healthy targets than `minimumHealthyTargets`: failing open (or answering 503). */
  readonly degraded: boolean
  readonly failOpen: boolean
  /** Registered and draining targets, in registration order. */
  readonly targets: readonly TargetDescription[]
}

/**
 * Published on the diagnostics channel `fastify-sticky:target-health` at every target state
 * change (`change: 'state'`), when passive checks eject a target or it returns, and when an
 * operator takes it out of service or puts it back (`setInService`; for those four the state stays
 * as it was).
 */
export interface TargetHealthChange {
  readonly change: 'state' | 'ejected' | 'returned' | 'out-of-service' | 'in-service'
  readonly targetGroup: string
  readonly target: TargetRef
  /** The previous state; null when the target was just registered. */
  readonly from: TargetStateName | null
  readonly to: TargetStateName
  readonly reason: TargetStateReason
  /** When the change happened (ms since the epoch, the plugin's clock). */
  readonly atMs: number
}

/** The target chosen for a request, as handlers see it. */
export interface TargetRef {
  /** The target's stable id. */
  readonly id: string
  /** The target's origin, e.g. `http://127.0.0.1:3001`. */
  readonly origin: string
}

interface AffinityBase {
  /** Name of the target group the route is bound to. */
  readonly targetGroup: string
  /** The route's stickiness type (`none` when the route is not sticky). */
  readonly stickiness: StickinessType
  /** Set on routes bound to a listener. */
  readonly rule?: RuleMatch
}

/** The request's cookie named a routable target of this group within its window. */
export interface AffinityHit extends AffinityBase {
  readonly outcome: 'hit'
  readonly target: TargetRef
  /**
   * What decided: the `AWSALB` cookie, the app cookie with the `AWSALBAPP-*` shards, the learn
   * store, or the hash of a key (`source_ip`, `header`, `query`, `path`) whose first choice took it.
   */
  readonly decidedBy: 'lb_cookie' | 'app_cookie' | 'learn' | KeyStickinessType
}

/** No stickiness cookie came (or the route is not sticky): the algorithm chose. */
export interface AffinityNew extends AffinityBase {
  readonly outcome: 'new'
  readonly target: TargetRef
  readonly decidedBy: Algorithm
}

/**
 * The client could not stay where it was: its cookie could not be honoured, or the chosen target
 * refused the connection (`target-unreachable`). The algorithm chose again; a new cookie is written.
 */
export interface AffinityReassigned extends AffinityBase {
  readonly outcome: 'reassigned'
  readonly reason: ReassignReason
  readonly target: TargetRef
  /** The algorithm, or the key whose hash walked past its first choice (which gave `reason`). */
  readonly decidedBy: Algorithm | KeyStickinessType
  /**
   * The id of the target the client was pinned to (its cookie's or learned binding's, its key's
   * first choice, or the target that refused the connection), when known and not `target`.
   */
  readonly previousTargetId?: string
}

/** The group has no routable target (none registered, or none healthy with `failOpen: false`): the gateway answers 503. */
export interface AffinityUnavailable extends AffinityBase {
  readonly outcome: 'unavailable'
  readonly target: null
}

/** The affinity decision for one request on a bound route, discriminated by `outcome`. */
export type AffinityDecision = AffinityHit | AffinityNew | AffinityReassigned | AffinityUnavailable

declare module 'fastify' {
  interface FastifyRequest {
    /** The affinity decision on a route bound to a target group; null elsewhere. */
    affinity: AffinityDecision | null
  }
  interface FastifyReply {
    /**
     * Proxies the request to `request.affinity.target` through the plugin's pools and sends
     * the target's response. `path` (path and query) replaces the request's own on the target:
     * origin-form (`/a?b`) or absolute-form (`http://host/a?b`, sent as `/a?b`); anything else is
     * answered with 400 `FST_STICKY_REQUEST_INVALID`. `options` are @fastify/reply-from's
     * per-call options that carry over (see `ReplyForwardOptions`).
     */
    forward (path?: string, options?: ReplyForwardOptions): FastifyReply
  }
  interface FastifyInstance {
    /** The plugin's target groups by name; register and deregister targets here at run time. */
    targetGroups: ReadonlyMap<string, TargetGroup>
    /** The plugin's Prometheus metrics (option `metrics`); null when they are off. */
    stickyMetrics: StickyMetrics | null
  }
  interface FastifyContextConfig extends StickyRouteConfig {}
}
