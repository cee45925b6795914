import { COOKIE_PURPOSE_APP, type CookieCodec } from '../cookie-codec.js'
import { MAX_COOKIE_DURATION_SECONDS, type ResolvedAppCookieStickiness } from '../options.js'
import type { TargetGroup } from '../target-group.js'
import type { AffinityDecision } from '../types.js'
import { choose, judgeTarget } from './affinity.js'
import { BindingSealer, hashCookieValue, MAX_APP_BINDINGS, NO_BINDINGS, type AppBinding } from './app-bindings.js'
import { GATEWAY_COOKIE_LIFETIME_SECONDS, MAX_COOKIE_BYTES, readAppCookieChange, readCookieValue } from './cookie-text.js'
import type { PinSource, Pinned, Place, RequestView, ResponseRequest, ResponseView } from './source.js'

/** ALB's application-stickiness cookies: `AWSALBAPP-0` to `AWSALBAPP-3`, one value split over them. */
export const APP_COOKIE_PREFIX = 'AWSALBAPP-'
/** ALB writes at most 16 KB: four shards. */
export const APP_COOKIE_SHARDS = 4
/** What an unused shard carries (ALB's sentinel); read as "no shard". */
export const REMOVED_SHARD = '_remove_'

const SHARD_VALUE = /^[A-Za-z0-9_-]+$/

/** The shards of one request: the value they make up, `null` when none came, or `'invalid'` for a broken set. */
export type ShardRead = string | null | 'invalid'

/** Most characters of one shard's value under `prefix`: name, `=` and value in 4096 bytes. */
export function maxShardLength (prefix = APP_COOKIE_PREFIX): number {
  return MAX_COOKIE_BYTES - (prefix.length + 1 + 1)
}

/**
 * Reads `<prefix>0` … `<prefix>3` from a Cookie header and joins them in shard order. A name
 * repeated with another value makes the set `'invalid'` (a repeat of the same value is one
 * shard); `_remove_` is no shard. Shards must run from 0 without a gap,
 * be of base64url characters and each fit in a cookie: anything else is `'invalid'` (the caller
 * reassigns). A reordered or mixed set joins into a value that does not open: the AEAD seal
 * catches it, not this function.
 */
export function readAppShards (header: string | undefined, prefix = APP_COOKIE_PREFIX): ShardRead {
  if (header === undefined || !header.includes(prefix)) return null
  const shards: Array<string | undefined> = new Array(APP_COOKIE_SHARDS)
  for (const pair of header.split(';')) {
    const equals = pair.indexOf('=')
    if (equals === -1) continue
    const name = pair.slice(0, equals).trim()
    if (name.length !== prefix.length + 1 || !name.startsWith(prefix)) continue
    const index = name.charCodeAt(prefix.length) - 48
    if (index < 0 || index >= APP_COOKIE_SHARDS) continue
    const shard = pair.slice(equals + 1).trim()
    const seen = shards[index]
    // Two different values of one shard name: no way to tell which the client meant.
    if (seen !== undefined && seen !== shard) return 'invalid'
    shards[index] = shard
  }
  const limit = maxShardLength(prefix)
  let value = ''
  let ended = false
  for (const shard of shards) {
    const present = shard !== undefined && shard !== REMOVED_SHARD && shard !== ''
    if (!present) {
      ended = true
      continue
    }
    if (ended || shard.length > limit || !SHARD_VALUE.test(shard)) return 'invalid'
    value += shard
  }
  return value === '' ? null : value
}

/** Past `Expires` of the lines that delete the shards. */
const EPOCH = new Date(0).toUTCString()

/**
 * Writes ALB's four `Set-Cookie` lines for a value: `<prefix>0=<first part>; Expires=<now + 7 d>;
 * Path=/`, and so on, every name always written, the unused ones as `_remove_`; `SameSite=None;
 * Secure` when asked (the caller decides: Chromium 80 and later, as ALB), else `; Secure` when
 * asked; `; HttpOnly` on every line with `httpOnly`. The attribute suffixes are rebuilt once per
 * second, not per response.
 */
export class AppCookieWriter {
  readonly prefix: string
  readonly #limit: number
  readonly #httpOnly: string
  #second = -1
  /** This second's suffixes: plain, `Secure`, `SameSite=None; Secure`. */
  #suffixes: [string, string, string] = ['', '', '']
  /** The four `_remove_` lines of this second, with each suffix. */
  #removed: [string[], string[], string[]] = [[], [], []]

  constructor (prefix = APP_COOKIE_PREFIX, httpOnly = false) {
    this.prefix = prefix
    this.#limit = maxShardLength(prefix)
    this.#httpOnly = httpOnly ? '; HttpOnly' : ''
  }

  /** Four lines carrying `value` (null: four `_remove_`), kept 7 days; null when it needs more than four shards. */
  setCookies (value: string | null, nowMs: number, sameSiteNone: boolean, secure = false): string[] | null {
    const limit = this.#limit
    if (value !== null && value.length > limit * APP_COOKIE_SHARDS) return null
    const second = Math.floor(nowMs / 1000)
    if (second !== this.#second) {
      this.#second = second
      const base = `; Expires=${new Date((second + GATEWAY_COOKIE_LIFETIME_SECONDS) * 1000).toUTCString()}; Path=/`
      this.#suffixes = [base + this.#httpOnly, `${base}; Secure${this.#httpOnly}`, `${base}; SameSite=None; Secure${this.#httpOnly}`]
      this.#removed = [this.#lines(null, this.#suffixes[0]), this.#lines(null, this.#suffixes[1]), this.#lines(null, this.#suffixes[2])]
    }
    const variant = sameSiteNone ? 2 : secure ? 1 : 0
    // A new array each call: Fastify appends to the one it is given.
    if (value === null) return [...this.#removed[variant]]
    return this.#lines(value, this.#suffixes[variant])
  }

  #lines (value: string | null, suffix: string): string[] {
    const limit = this.#limit
    const lines: string[] = []
    for (let i = 0; i < APP_COOKIE_SHARDS; i++) {
      const part = value === null ? '' : value.slice(i * limit, (i + 1) * limit)
      lines.push(`${this.prefix}${i}=${part === '' ? REMOVED_SHARD : part}${suffix}`)
    }
    return lines
  }

  /** Four lines that make a browser drop the shards (`Expires` in the past): the app ended its session. */
  clearCookies (sameSiteNone: boolean, secure = false): string[] {
    const suffix = `; Expires=${EPOCH}; Path=/${sameSiteNone ? '; SameSite=None; Secure' : secure ? '; Secure' : ''}${this.#httpOnly}`
    const lines: string[] = []
    for (let i = 0; i < APP_COOKIE_SHARDS; i++) lines.push(`${this.prefix}${i}=${REMOVED_SHARD}${suffix}`)
    return lines
  }
}

const CHROMIUM = /(?:Chrome|Chromium)\/(\d+)/

/** True for Chromium 80 and later (Chrome, Edge, Opera, …): ALB's test for `SameSite=None` on app cookies. */
export function isChromium80OrLater (userAgent: string | undefined): boolean {
  if (userAgent === undefined) return false
  const match = CHROMIUM.exec(userAgent)
  return match !== null && Number(match[1]) >= 80
}

/** What a request on an app-sticky route brought, kept for its response. */
export interface AppRequestState {
  /** Every binding the request's `AWSALBAPP-*` shards carried (none when they were absent or broken). */
  readonly bindings: readonly AppBinding[]
  /** The app cookie's value in the request, if it came. */
  readonly appValue: string | undefined
  /** With `bindToCookieValue`, its hash (else null): computed once, for the decision and the new binding. */
  readonly appHash: string | null
  /**
   * The shards hold a binding of this group but the app cookie did not come: a browser withholds
   * a live `SameSite=Lax` (or `Strict`) cookie from a cross-site request and sends the shards
   * (`SameSite=None`), so the shards are left as they are (see `AppCookieSource#appCookies`).
   */
  readonly withheld: boolean
}

/** What an app-cookie source needs of the gateway. */
export interface AppCookieContext {
  /** `AWSALBAPP-0..3` (with the cookie prefix). */
  readonly appWriter: AppCookieWriter
  readonly appSealer: AppCookieSealer
  readonly clockSkewSeconds: number
}

/**
 * ALB's application-based stickiness on one route: the `AWSALBAPP-*` shards follow the app's own
 * cookie, written once the response is known (the target sets, keeps or deletes that cookie).
 */
export class AppCookieSource implements PinSource<AppRequestState> {
  readonly type = 'app_cookie'
  readonly pinNames: readonly string[] = Object.freeze([])
  readonly cookiesAtResponse = true
  readonly #group: TargetGroup
  readonly #stickiness: ResolvedAppCookieStickiness
  readonly #writer: AppCookieWriter
  readonly #sealer: AppCookieSealer
  readonly #skewSeconds: number

  constructor (group: TargetGroup, stickiness: ResolvedAppCookieStickiness, context: AppCookieContext) {
    this.#group = group
    this.#stickiness = stickiness
    this.#writer = context.appWriter
    this.#sealer = context.appSealer
    this.#skewSeconds = context.clockSkewSeconds
  }

  decide (request: RequestView, nowMs: number, place: Place): Pinned<AppRequestState> {
    const { bindings, appValue, appHash } = this.#read(request.headers.cookie)
    const decision = decideAppAffinity({ group: this.#group, stickiness: this.#stickiness, bindings, appValue, appHash, nowSeconds: Math.floor(nowMs / 1000), skewSeconds: this.#skewSeconds, place })
    return { decision, state: this.#state(bindings, appValue, appHash) }
  }

  stateOf (request: RequestView): AppRequestState {
    const { bindings, appValue, appHash } = this.#read(request.headers.cookie)
    return this.#state(bindings, appValue, appHash)
  }

  #state (bindings: readonly AppBinding[] | null | 'invalid', appValue: string | undefined, appHash: string | null): AppRequestState {
    if (typeof bindings === 'string' || bindings === null) return { bindings: NO_BINDINGS, appValue, appHash, withheld: false }
    return { bindings, appValue, appHash, withheld: appValue === undefined && bindingOf(bindings, this.#group.name) !== undefined }
  }

  /** The shards are written at the response, when its app cookie is known. */
  pinLines (): null {
    return null
  }

  atResponse (state: AppRequestState, targetId: string | null, response: ResponseView, request: ResponseRequest, nowMs: number, secure: boolean): string[] | null {
    return this.appCookies(state, targetId, response.getHeader('set-cookie'), sameSiteNoneFor(request), nowMs, secure)
  }

  #read (header: string | undefined): { bindings: readonly AppBinding[] | null | 'invalid', appValue: string | undefined, appHash: string | null } {
    const app = this.#stickiness
    const shards = readAppShards(header, this.#writer.prefix)
    const bindings = shards === null ? null : shards === 'invalid' ? 'invalid' : this.#sealer.open(shards) ?? 'invalid'
    const appValue = readCookieValue(header, app.cookieName)
    const appHash = app.bindToCookieValue && appValue !== undefined ? hashCookieValue(appValue) : null
    return { bindings, appValue, appHash }
  }

  /**
   * ALB's four `AWSALBAPP-*` lines for a response: this group's binding follows the app cookie
   * (set by the response, or brought by the request) to `targetId`, the request's target; the
   * bindings of other groups ride along. A response that deletes the app cookie ends the binding,
   * and when none is left the shards are deleted too. With no binding at all, four `_remove_`.
   * `sameSiteNone` adds `SameSite=None; Secure` (see `sameSiteNoneFor`).
   *
   * A request that brought a binding of this group without the app cookie (`withheld`) gets no
   * line (null), unless the response deletes the app cookie: a cross-site request carries the
   * shards but not a `Lax` app cookie, and the browser would keep whatever the gateway wrote here
   * (`_remove_`, or a binding to an app cookie it refuses from a cross-site response) over the
   * binding its next first-party request needs.
   */
  appCookies (state: AppRequestState, targetId: string | null, setCookie: unknown, sameSiteNone: boolean, nowMs: number, secure = false): string[] | null {
    const app = this.#stickiness
    const nowSeconds = Math.floor(nowMs / 1000)
    const name = this.#group.name
    const change = readAppCookieChange(setCookie, app.cookieName, nowMs)
    if (state.withheld && change !== 'deleted') return null
    let own: AppBinding | null = null
    const kept: AppBinding[] = []
    for (const binding of state.bindings) {
      if (binding.group === name) {
        // No target this time (503): the client keeps its binding as it was.
        if (targetId === null && change !== 'deleted') own = binding
      } else if (binding.issuedAtSeconds + MAX_COOKIE_DURATION_SECONDS >= nowSeconds) {
        // Another group's window is judged on its own routes; here only what no window can outlive goes.
        kept.push(binding)
      }
    }
    if (targetId !== null && change !== 'deleted') {
      const value = change === null ? state.appValue : change.value
      const valueHash = !app.bindToCookieValue ? null : change === null ? state.appHash : hashCookieValue(change.value)
      if (value !== undefined) own = Object.freeze({ group: name, targetId, issuedAtSeconds: nowSeconds, valueHash })
    }
    if (own === null && kept.length === 0) {
      return change === 'deleted' ? this.#writer.clearCookies(sameSiteNone, secure) : this.#writer.setCookies(null, nowMs, sameSiteNone, secure) as string[]
    }
    // Most recently used first, so the cap drops the longest unused.
    const bindings = own === null ? kept : [own, ...kept]
    if (bindings.length > MAX_APP_BINDINGS) bindings.length = MAX_APP_BINDINGS
    return this.#writer.setCookies(this.#sealer.seal(bindings, nowSeconds), nowMs, sameSiteNone, secure) as string[]
  }}

/**
 * ALB adds `SameSite=None; Secure` to `AWSALBAPP-*` for Chromium 80 and later; here only over
 * HTTPS too (`request.protocol`, which honours `trustProxy`), since Chromium drops `Secure`
 * cookies that come over plain HTTP from any host but localhost, which would end stickiness.
 */
function sameSiteNoneFor (request: ResponseRequest): boolean {
  const agent = request.headers['user-agent']
  return request.protocol === 'https' && isChromium80OrLater(Array.isArray(agent) ? agent[0] : agent)
}

/** Everything an app-cookie decision depends on. */
export interface AppAffinityInput {
  readonly group: TargetGroup
  readonly stickiness: ResolvedAppCookieStickiness
  /** The opened `AWSALBAPP` bindings; null when no shard came, `'invalid'` when they did not open. */
  readonly bindings: readonly AppBinding[] | null | 'invalid'
  /** The app cookie's value in the request, if it came. */
  readonly appValue: string | undefined
  /** With `bindToCookieValue`: `hashCookieValue(appValue)`, computed once per request by the caller. */
  readonly appHash: string | null
  readonly nowSeconds: number
  readonly skewSeconds: number
  /** As `AffinityInput#place`. */
  readonly place?: Place
}

/**
 * ALB's application-cookie decision: a `hit` only when the request brings both the app cookie
 * and shards holding a binding of this group, inside its window, to a target that keeps its
 * clients (and, with `bindToCookieValue`, bound to this app cookie value). No binding of this
 * group is `new`; any other case is `reassigned`.
 */
export function decideAppAffinity (input: AppAffinityInput): AffinityDecision {
  const { group, stickiness, bindings } = input
  const nowMs = input.nowSeconds * 1000
  const place: Place = input.place ?? ((reason, now, previousTargetId) => choose(group, stickiness, reason, now, undefined, previousTargetId))
  if (bindings === null) return place(null, nowMs)
  if (bindings === 'invalid') return place('undecodable', nowMs)
  const binding = bindingOf(bindings, group.name)
  if (binding === undefined) return place(null, nowMs)
  // ALB: "clients have to send back both cookies". A browser withholds a Lax app cookie from a
  // cross-site request while it still lives: no stickiness for this request, and the binding stays.
  if (input.appValue === undefined) return place('app-cookie-withheld', nowMs)
  if (stickiness.bindToCookieValue && binding.valueHash !== input.appHash) return place('app-cookie-mismatch', nowMs)
  const verdict = judgeTarget(group, stickiness.durationSeconds, binding.targetId, binding.issuedAtSeconds, input.nowSeconds, input.skewSeconds)
  if (typeof verdict === 'string') return place(verdict, nowMs, binding.targetId)
  return { outcome: 'hit', targetGroup: group.name, target: verdict.ref, stickiness: 'app_cookie', decidedBy: 'app_cookie' }
}

/** The binding of group `name` in a set, if it holds one. */
function bindingOf (bindings: readonly AppBinding[], name: string): AppBinding | undefined {
  for (const binding of bindings) if (binding.group === name) return binding
  return undefined
}

/** The `AWSALBAPP` value, split over four shards of cookies named with `prefix`. */
export class AppCookieSealer extends BindingSealer {
  constructor (codec: CookieCodec, prefix: string) {
    super(codec, COOKIE_PURPOSE_APP, maxShardLength(prefix) * APP_COOKIE_SHARDS)
  }
}
