import { COOKIE_PURPOSE_APP, COOKIE_PURPOSE_LB, COOKIE_PURPOSE_LB_SET, SEAL_OVERHEAD_BYTES, type CookieCodec } from './cookie-codec.js'
import type { PeerTrust } from './client-address.js'
import type { KeyHasher } from './hashing/key-hash.js'
import { MAX_COOKIE_DURATION_SECONDS, pinsClients, type ResolvedAppCookieStickiness, type ResolvedStickiness } from './options.js'
import { LearnSource, type LearnState } from './stickiness/learn.js'
import type { LearnLookup, LearnStore } from './stickiness/learn-store.js'
import { createKeySource } from './stickiness/key-sources.js'
import type { KeySource, RequestView } from './stickiness/source.js'
import { carriedBindings, choose, decideAppAffinity, decideByKey, decideLbAffinity, judgeLearned, type LbAffinity } from './stickiness/affinity.js'
import { decodeBindings, encodeBindings, hashCookieValue, MAX_APP_BINDINGS, type AppBinding } from './stickiness/app-bindings.js'
import { APP_COOKIE_SHARDS, MAX_COOKIE_BYTES, maxShardLength, readAppCookieChange, readAppShards, readCookieValue, type AppCookieWriter } from './stickiness/app-cookie.js'
import { readLbCookies, type LbCookieWriter } from './stickiness/lb-cookie.js'
import type { TargetGroup } from './target-group.js'
import type { AffinityDecision, ReassignReason } from './types.js'

/** What every forward shares: built once per plugin instance. */
export interface ForwardContext {
  /** Hashes the keys of key stickiness and the learn store's session ids. */
  readonly hasher: KeyHasher
  /** `trustedProxies` applied to connections, for `source_ip`. */
  readonly peers: PeerTrust
  /** The learn store, made when a route first needs it. */
  readonly learnStore: () => LearnStore
  readonly groups: ReadonlyMap<string, TargetGroup>
  readonly codec: CookieCodec
  /** `AWSALB` + `AWSALBCORS` (with the cookie prefix). */
  readonly lbWriter: LbCookieWriter
  /** `AWSALBAPP-0..3` (with the cookie prefix). */
  readonly appWriter: AppCookieWriter
  readonly appSealer: AppCookieSealer
  /** Seals `AWSALB` values that carry several lb-cookie groups' bindings. */
  readonly lbSetSealer: BindingSealer
  /** `Secure` on the gateway's cookies: always, never, or `'auto'` (over HTTPS). */
  readonly secureCookies: boolean | 'auto'
  /** How far in the future a sealed issue time may lie before the cookie is `issued-in-future`. */
  readonly clockSkewSeconds: number
  readonly now: () => number
}

/** What a request on an app-sticky route brought, kept for its response. */
export interface AppRequestState {
  /** Every binding the request's `AWSALBAPP-*` shards carried (none when they were absent or broken). */
  readonly bindings: readonly AppBinding[]
  /** The app cookie's value in the request, if it came. */
  readonly appValue: string | undefined
  /** With `bindToCookieValue`, its hash (else null): computed once, for the decision and the new binding. */
  readonly appHash: string | null
}

const NO_BINDINGS: readonly AppBinding[] = Object.freeze([])

/** A request's decision on a forward with a stickiness chain, and what its response needs to pin the client. */
export interface ChainDecision {
  readonly decision: AffinityDecision
  /** `lb_cookie`: the other groups' bindings to write back beside this group's. */
  readonly carried: readonly AppBinding[]
  /** `app_cookie`: what the request brought, for the `AWSALBAPP-*` cookies. */
  readonly app: AppRequestState | null
  /** `learn`: the session id's store key and what the store named, for learning from the response. */
  readonly learn: LearnState | null
}

const NO_LEARN_KEY: LearnState = Object.freeze({ key: null, found: null })

/** Most lb-cookie groups one `AWSALB` value carries (the least recently used go first); fewer when they would not fit in one cookie. */
export const MAX_LB_BINDINGS = 32

/** One target's `AWSALB` value of one second, and its lines without and with `Secure`, built when first asked. */
interface SealedLines {
  readonly value: string
  plain: readonly [string, string] | null
  secure: readonly [string, string] | null
}

/**
 * A forward to one target group with a stickiness (the group's, or the route's override): how a
 * request is decided and how the client is pinned. Built once per route, or per listener rule.
 */
export class GroupForward {
  readonly group: TargetGroup
  readonly stickiness: ResolvedStickiness | null
  /** The app-cookie stickiness, when that is the type. */
  readonly app: ResolvedAppCookieStickiness | null
  readonly #context: ForwardContext
  /** `AWSALB` values sealed this second for clients of this group alone, by target id: such a value depends on nothing else. */
  readonly #sealed = new Map<string, SealedLines>()
  /** Values sealed this second for clients of several groups: by the carried bindings (shared arrays, see `decideLb`), then target id. */
  #sealedSets = new WeakMap<readonly AppBinding[], Map<string, SealedLines>>()
  #sealedSecond = -1
  /**
   * True when the stickiness is more than one cookie source (a chain, key types, learn): requests
   * are decided by `decideChain`; a lone `lb_cookie` or `app_cookie` keeps its own faster path.
   */
  readonly chained: boolean
  /** The learn source, when the chain has one. */
  readonly learn: LearnSource | null = null
  /** Key sources tried before the source that pins clients, and after it (all of them when none does). */
  readonly #keysBefore: readonly KeySource[] = []
  readonly #keysAfter: readonly KeySource[] = []
  /** Only keys: a key is the client's whole affinity (nothing pins it). */
  readonly #keysOnly: boolean

  constructor (group: TargetGroup, stickiness: ResolvedStickiness | null, context: ForwardContext) {
    this.group = group
    this.stickiness = stickiness
    this.app = stickiness?.type === 'app_cookie' ? stickiness : null
    this.#context = context
    this.chained = stickiness !== null && (stickiness.chain.length > 1 || (stickiness.type !== 'lb_cookie' && stickiness.type !== 'app_cookie'))
    this.#keysOnly = stickiness !== null && !pinsClients(stickiness)
    if (stickiness === null || !this.chained) return
    const before: KeySource[] = []
    const after: KeySource[] = []
    let pinned = false
    for (const link of stickiness.chain) {
      if (link.type === 'lb_cookie' || link.type === 'app_cookie') {
        pinned = true
      } else if (link.type === 'learn') {
        pinned = true
        this.learn = new LearnSource(link, context.learnStore(), context.hasher, stickiness.durationSeconds, group.name)
      } else {
        (pinned ? after : before).push(createKeySource(link, context))
      }
    }
    // Without a pinning source every key is tried in order, then the algorithm.
    if (pinned) {
      this.#keysBefore = before
      this.#keysAfter = after
    } else {
      this.#keysAfter = before
    }
    // The hash table is built now, when the route is added, not at its first request.
    if (before.length + after.length > 0) group.prepareHashing()
  }

  /**
   * The affinity of a request on a chained forward: the first source that yields a key decides
   * (a cookie or learned binding that holds, or a key's hash); with none, the algorithm. A
   * promise only while the learn store is asked.
   */
  decideChain (request: RequestView, nowMs: number): ChainDecision | Promise<ChainDecision> {
    const stickiness = this.stickiness as ResolvedStickiness
    const header = request.headers.cookie
    for (const source of this.#keysBefore) {
      const key = source.key(request)
      if (key === null) continue
      const decision = this.#byKey(source, key, nowMs)
      if (stickiness.type === 'lb_cookie') return { decision, carried: this.carriedBindings(header), app: null, learn: null }
      if (stickiness.type === 'app_cookie') return { decision, carried: NO_BINDINGS, app: this.decideApp(header, nowMs, () => decision).state, learn: null }
      if (this.learn !== null) return { decision, carried: NO_BINDINGS, app: null, learn: { key: this.learn.keyOf(request), found: null } }
      return { decision, carried: NO_BINDINGS, app: null, learn: null }
    }
    const place = (reason: ReassignReason | null): AffinityDecision => this.#placeAfter(request, reason, nowMs)
    if (stickiness.type === 'lb_cookie') {
      const decided = this.decideLb(header, nowMs, place)
      return { decision: decided.decision, carried: decided.carried, app: null, learn: null }
    }
    if (stickiness.type === 'app_cookie') {
      const decided = this.decideApp(header, nowMs, place)
      return { decision: decided.decision, carried: NO_BINDINGS, app: decided.state, learn: null }
    }
    const learn = this.learn
    if (learn === null) return { decision: place(null), carried: NO_BINDINGS, app: null, learn: null }
    const key = learn.keyOf(request)
    if (key === null) return { decision: place(null), carried: NO_BINDINGS, app: null, learn: NO_LEARN_KEY }
    const found = learn.lookup(key, nowMs)
    if (typeof found === 'object' && found !== null) return found.then((answer) => this.#afterLookup(request, key, answer, nowMs))
    return this.#afterLookup(request, key, found, nowMs)
  }

  #afterLookup (request: RequestView, key: string, found: LearnLookup, nowMs: number): ChainDecision {
    const stickiness = this.stickiness as ResolvedStickiness
    if (found === null) return { decision: this.#placeAfter(request, null, nowMs), carried: NO_BINDINGS, app: null, learn: { key, found: null } }
    if (found === 'unavailable') return { decision: this.#placeAfter(request, 'store-unavailable', nowMs), carried: NO_BINDINGS, app: null, learn: { key, found: null } }
    const judged = judgeLearned(this.group, stickiness, found, nowMs)
    const decision = typeof judged === 'string' ? this.#placeAfter(request, judged, nowMs) : judged
    return { decision, carried: NO_BINDINGS, app: null, learn: { key, found } }
  }

  /** A client no pinning source kept: the first key after it decides, else the algorithm. */
  #placeAfter (request: RequestView, reason: ReassignReason | null, nowMs: number): AffinityDecision {
    for (const source of this.#keysAfter) {
      const key = source.key(request)
      if (key !== null) return this.#byKey(source, key, nowMs)
    }
    return choose(this.group, this.stickiness, reason, nowMs)
  }

  #byKey (source: KeySource, key: string, nowMs: number): AffinityDecision {
    return decideByKey(this.group, this.stickiness as ResolvedStickiness, source.type, this.#context.hasher.hash(key), this.#keysOnly, nowMs)
  }

  /** The plugin's clock, in milliseconds: read once per request and handed to `decide` and `setCookies`. */
  now (): number {
    return this.#context.now()
  }

  /** Names of the duration-stickiness cookies this forward writes, to tell them from others on a reply. */
  get lbCookieNames (): readonly [string, string] {
    return [this.#context.lbWriter.name, this.#context.lbWriter.corsName]
  }

  /** The affinity of a request carrying this Cookie header, for `lb_cookie` stickiness or none. */
  decide (cookieHeader: string | undefined, nowMs = this.#context.now()): AffinityDecision {
    return this.decideLb(cookieHeader, nowMs).decision
  }

  /** `decide`, and the other lb-cookie groups' bindings the client's value carried, for `setCookies`. */
  decideLb (cookieHeader: string | undefined, nowMs = this.#context.now(), place?: (reason: ReassignReason | null) => AffinityDecision): LbAffinity {
    const stickiness = this.stickiness
    return decideLbAffinity({
      group: this.group,
      stickiness,
      cookies: stickiness === null || stickiness.type !== 'lb_cookie' ? [] : readLbCookies(cookieHeader, this.#context.lbWriter.name),
      codec: this.#context.codec,
      nowSeconds: Math.floor(nowMs / 1000),
      skewSeconds: this.#context.clockSkewSeconds,
      place
    })
  }

  /** The other lb-cookie groups' bindings in this Cookie header (for re-pinning after the decision). */
  carriedBindings (cookieHeader: string | undefined): readonly AppBinding[] {
    if (this.stickiness?.type !== 'lb_cookie') return NO_BINDINGS
    return carriedBindings(this.#context.codec, readLbCookies(cookieHeader, this.#context.lbWriter.name), this.group.name)
  }

  /** Whether the gateway's cookies on the response to `request` carry `Secure` (see `cookieSecure`); its protocol is read only for `'auto'`. */
  secureFor (request: { readonly protocol: string }): boolean {
    const secure = this.#context.secureCookies
    return secure === 'auto' ? request.protocol === 'https' : secure
  }

  /** The affinity of a request for `app_cookie` stickiness, and what its response needs to re-pin it. */
  decideApp (cookieHeader: string | undefined, nowMs = this.#context.now(), place?: (reason: ReassignReason | null) => AffinityDecision): { decision: AffinityDecision, state: AppRequestState } {
    const app = this.app as ResolvedAppCookieStickiness
    const context = this.#context
    const shards = readAppShards(cookieHeader, context.appWriter.prefix)
    const bindings = shards === null ? null : shards === 'invalid' ? 'invalid' : context.appSealer.open(shards) ?? 'invalid'
    const appValue = readCookieValue(cookieHeader, app.cookieName)
    const appHash = app.bindToCookieValue && appValue !== undefined ? hashCookieValue(appValue) : null
    const decision = decideAppAffinity({ group: this.group, stickiness: app, bindings, appValue, appHash, nowSeconds: Math.floor(nowMs / 1000), skewSeconds: context.clockSkewSeconds, place })
    return { decision, state: { bindings: typeof bindings === 'string' || bindings === null ? NO_BINDINGS : bindings, appValue, appHash } }
  }

  /**
   * Fresh `AWSALB` + `AWSALBCORS` lines pinning the client to the target `targetId`, with the window
   * starting now (ALB resets it on every request), and keeping the `carried` bindings of other
   * groups (see `decideLb`); `secure` adds `Secure`. Null when the stickiness is not `lb_cookie`.
   * A new array each call (Fastify appends to the one it is given).
   */
  setCookies (targetId: string, nowMs = this.#context.now(), secure = false, carried: readonly AppBinding[] = NO_BINDINGS): [string, string] | null {
    const stickiness = this.stickiness
    if (stickiness === null || stickiness.type !== 'lb_cookie') return null
    const context = this.#context
    const nowSeconds = Math.floor(nowMs / 1000)
    // A value of this group alone holds group, target, key and whole seconds only: every client
    // pinned to this target in this second gets the same one, sealed once (a fresh nonce each
    // second). With other groups' bindings, the same holds for every client that carried them.
    if (nowSeconds !== this.#sealedSecond) {
      this.#sealedSecond = nowSeconds
      this.#sealed.clear()
      this.#sealedSets = new WeakMap()
    }
    let sealed: SealedLines | undefined
    if (carried.length !== 0) {
      let byTarget = this.#sealedSets.get(carried)
      sealed = byTarget?.get(targetId)
      if (sealed === undefined) {
        const bindings = this.#withCarried(targetId, carried, nowSeconds)
        if (bindings !== null) {
          sealed = { value: context.lbSetSealer.seal(bindings, nowSeconds), plain: null, secure: null }
          if (byTarget === undefined) {
            byTarget = new Map()
            this.#sealedSets.set(carried, byTarget)
          }
          byTarget.set(targetId, sealed)
        }
      }
    }
    sealed ??= this.#sealed.get(targetId)
    if (sealed === undefined) {
      const value = context.codec.seal(COOKIE_PURPOSE_LB, {
        group: this.group.name,
        targetId,
        stickyUntilSeconds: nowSeconds + stickiness.durationSeconds,
        issuedAtSeconds: nowSeconds
      })
      sealed = { value, plain: null, secure: null }
      this.#sealed.set(targetId, sealed)
    }
    let lines = secure ? sealed.secure : sealed.plain
    if (lines === null) {
      lines = context.lbWriter.setCookies(sealed.value, nowMs, secure)
      if (secure) sealed.secure = lines
      else sealed.plain = lines
    }
    return [lines[0], lines[1]]
  }

  /** This group's fresh binding first, then the carried ones no window can have ended or that are not from the future; null when none is left. */
  #withCarried (targetId: string, carried: readonly AppBinding[], nowSeconds: number): AppBinding[] | null {
    const latest = nowSeconds + this.#context.clockSkewSeconds
    let bindings: AppBinding[] | null = null
    for (const binding of carried) {
      if (binding.issuedAtSeconds + MAX_COOKIE_DURATION_SECONDS < nowSeconds || binding.issuedAtSeconds > latest) continue
      bindings ??= [{ group: this.group.name, targetId, issuedAtSeconds: nowSeconds, valueHash: null }]
      bindings.push(binding)
      if (bindings.length === MAX_LB_BINDINGS) break
    }
    return bindings
  }

  /**
   * ALB's four `AWSALBAPP-*` lines for a response: this group's binding follows the app cookie
   * (set by the response, or brought by the request) to `targetId`, the request's target; the
   * bindings of other groups ride along. A response that deletes the app cookie ends the binding,
   * and when none is left the shards are deleted too. With no binding at all, four `_remove_`.
   * `sameSiteNone` adds `SameSite=None; Secure` (see `sameSiteNoneFor`).
   */
  appCookies (state: AppRequestState, targetId: string | null, setCookie: unknown, sameSiteNone: boolean, nowMs: number, secure = false): string[] {
    const app = this.app as ResolvedAppCookieStickiness
    const context = this.#context
    const nowSeconds = Math.floor(nowMs / 1000)
    const name = this.group.name
    const change = readAppCookieChange(setCookie, app.cookieName, nowMs)
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
      return change === 'deleted' ? context.appWriter.clearCookies(sameSiteNone, secure) : context.appWriter.setCookies(null, nowMs, sameSiteNone, secure) as string[]
    }
    // Most recently used first, so the cap drops the longest unused.
    const bindings = own === null ? kept : [own, ...kept]
    if (bindings.length > MAX_APP_BINDINGS) bindings.length = MAX_APP_BINDINGS
    return context.appWriter.setCookies(context.appSealer.seal(bindings, nowSeconds), nowMs, sameSiteNone, secure) as string[]
  }
}

/**
 * Seals and opens a value of bindings for one purpose (`AWSALBAPP`, or `AWSALB` of several groups),
 * most recently used first, leaving out the last ones when all would not fit in `maxChars`.
 * Equal binding sets sealed in the same second share one value, sealed once; opened short values
 * are remembered by the codec.
 */
export class BindingSealer {
  readonly #codec: CookieCodec
  readonly #purpose: number
  readonly #maxChars: number
  /** The longest plaintext whose sealed base64url still fits in `maxChars`. */
  readonly #maxPlainBytes: number
  readonly #sealed = new Map<string, string>()
  #second = -1

  constructor (codec: CookieCodec, purpose: number, maxChars: number) {
    this.#codec = codec
    this.#purpose = purpose
    this.#maxChars = maxChars
    this.#maxPlainBytes = Math.floor(maxChars * 3 / 4) - SEAL_OVERHEAD_BYTES
  }

  /** Seals `bindings`, most recently used first; the last ones are left out when all would not fit. */
  seal (bindings: readonly AppBinding[], nowSeconds: number): string {
    if (nowSeconds !== this.#second || this.#sealed.size >= SEALED_PER_SECOND) {
      this.#second = nowSeconds
      this.#sealed.clear()
    }
    let plain = encodeBindings(bindings)
    for (let count = bindings.length - 1; plain.length > this.#maxPlainBytes; count--) plain = encodeBindings(bindings.slice(0, count))
    const key = plain.toString('latin1')
    let value = this.#sealed.get(key)
    if (value === undefined) {
      value = this.#codec.sealBytes(this.#purpose, plain)
      this.#sealed.set(key, value)
    }
    return value
  }

  /** The bindings of a sealed value; null when it does not open. */
  open (value: string): readonly AppBinding[] | null {
    return this.#codec.openWith(this.#purpose, value, this.#maxChars, decodeBindings, this.#purpose !== COOKIE_PURPOSE_APP)
  }
}

/** The `AWSALBAPP` value, split over four shards of cookies named with `prefix`. */
export class AppCookieSealer extends BindingSealer {
  constructor (codec: CookieCodec, prefix: string) {
    super(codec, COOKIE_PURPOSE_APP, maxShardLength(prefix) * APP_COOKIE_SHARDS)
  }
}

/** The `AWSALB` value of a client of several lb-cookie groups: it fits in one cookie named `corsName` (the longer of the pair). */
export class LbSetSealer extends BindingSealer {
  constructor (codec: CookieCodec, corsName: string) {
    super(codec, COOKIE_PURPOSE_LB_SET, MAX_COOKIE_BYTES - corsName.length - 1)
  }
}

/** Most distinct binding sets remembered within one second. */
const SEALED_PER_SECOND = 1024
