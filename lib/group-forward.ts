import type { PeerTrust } from './client-address.js'
import type { CookieCodec } from './cookie-codec.js'
import type { KeyHasher } from './hashing/key-hash.js'
import type { ResolvedStickiness } from './options.js'
import { choose, decideByKey } from './stickiness/affinity.js'
import type { AppCookieSealer, AppCookieWriter } from './stickiness/app-cookie.js'
import { createKeySource } from './stickiness/key-sources.js'
import type { LbCookieWriter, LbSetSealer } from './stickiness/lb-cookie.js'
import type { LearnStore } from './stickiness/learn-store.js'
import { createPinSource } from './stickiness/pin-sources.js'
import { pinsClients, type KeySource, type PinSource, type Pinned, type Place, type RequestView, type ResponseRequest } from './stickiness/source.js'
import type { TargetGroup } from './target-group.js'
import type { AffinityDecision, ReassignReason } from './types.js'

/** What every forward shares: built once per plugin instance. */
export interface ForwardContext {
  readonly groups: ReadonlyMap<string, TargetGroup>
  readonly codec: CookieCodec
  /** `AWSALB` + `AWSALBCORS` (with the cookie prefix). */
  readonly lbWriter: LbCookieWriter
  /** `AWSALBAPP-0..3` (with the cookie prefix). */
  readonly appWriter: AppCookieWriter
  readonly appSealer: AppCookieSealer
  /** Seals `AWSALB` values that carry several lb-cookie groups' bindings. */
  readonly lbSetSealer: LbSetSealer
  /** `Secure` on the gateway's cookies: always, never, or `'auto'` (over HTTPS). */
  readonly secureCookies: boolean | 'auto'
  /** When the `CORS` twins are written: `'auto'` (where a client can keep them) or `'always'` (ALB). */
  readonly corsCookies: 'auto' | 'always'
  /** How far in the future a sealed issue time may lie before the cookie is `issued-in-future`. */
  readonly clockSkewSeconds: number
  /** Hashes the keys of key stickiness and the learn store's session ids. */
  readonly hasher: KeyHasher
  /** `trustedProxies` applied to connections, for `source_ip`. */
  readonly peers: PeerTrust
  /** The learn store, made when a route first needs it. */
  readonly learnStore: () => LearnStore
  /** The name of the header that tells the client the decision (`exposeDecision`); null when off. */
  readonly decisionHeader?: string | null
  readonly now: () => number
}

/**
 * A forward to one target group with a stickiness (the group's, or the route's override): how a
 * request is decided and how the client is pinned. Built once per route, or per listener rule.
 * The stickiness is a chain of sources (see `decide`): key sources (lib/stickiness/key-sources.ts)
 * and at most one source that pins clients (lib/stickiness/pin-sources.ts).
 */
export class GroupForward {
  readonly group: TargetGroup
  readonly stickiness: ResolvedStickiness | null
  /** The source that pins clients (`lb_cookie`, `app_cookie`, `learn`); null when none does. */
  readonly pin: PinSource | null
  /** The name of the header that tells the client the decision (`exposeDecision`); null when off. */
  readonly decisionHeader: string | null
  readonly #context: ForwardContext
  /** Key sources tried before the source that pins clients, and after it (all of them when none does). */
  readonly #keysBefore: readonly KeySource[]
  readonly #keysAfter: readonly KeySource[]
  /** Only keys: a key is the client's whole affinity (nothing pins it). */
  readonly #keysOnly: boolean

  constructor (group: TargetGroup, stickiness: ResolvedStickiness | null, context: ForwardContext) {
    this.group = group
    this.stickiness = stickiness
    this.#context = context
    this.decisionHeader = context.decisionHeader ?? null
    this.#keysOnly = stickiness !== null && !pinsClients(stickiness)
    this.pin = createPinSource(group, stickiness, context)
    const before: KeySource[] = []
    const after: KeySource[] = []
    let pinned = false
    for (const link of stickiness?.chain ?? []) {
      if (link.type === 'lb_cookie' || link.type === 'app_cookie' || link.type === 'learn') pinned = true
      else (pinned ? after : before).push(createKeySource(link, context))
    }
    // Without a pinning source every key is tried in order, then the algorithm.
    this.#keysBefore = pinned ? before : []
    this.#keysAfter = pinned ? after : before
    // The hash table is built now, when the route is added, not at its first request.
    if (before.length + after.length > 0) group.prepareHashing()
  }

  /** The plugin's clock, in milliseconds: read once per request and handed to `decide`. */
  now (): number {
    return this.#context.now()
  }

  /**
   * The affinity of a request: the first source of the chain that yields a key decides (a
   * binding that holds, or a key's hash); with none, the group's algorithm. With what the
   * pinning source keeps for the response (`state`). A promise only while a shared store is asked.
   */
  decide (request: RequestView, nowMs: number): Pinned<unknown> | Promise<Pinned<unknown>> {
    const pin = this.pin
    for (const source of this.#keysBefore) {
      const key = source.key(request)
      if (key === null) continue
      return { decision: this.#byKey(source, key, nowMs), state: pin === null ? null : pin.stateOf(request, nowMs) }
    }
    // A closure over the request only when keys come after the pin; else one made once.
    const place = this.#keysAfter.length === 0 ? this.#byAlgorithm : (reason: ReassignReason | null, now: number, previousTargetId?: string): AffinityDecision => this.#placeAfter(request, reason, now, previousTargetId)
    if (pin !== null) return pin.decide(request, nowMs, place)
    return { decision: place(null, nowMs), state: null }
  }

  /** `Set-Cookie` lines pinning the client to `targetId` as soon as it is decided (`state` from `decide`); null when none. `cors`: with the `CORS` twin (see `corsFor`). */
  pinLines (state: unknown, targetId: string, nowMs: number, secure: boolean, cors: boolean): string[] | null {
    return this.pin === null ? null : this.pin.pinLines(state, targetId, nowMs, secure, cors)
  }

  /** The lines that pin the client to `targetId` after a redispatch moved it there. */
  repinLines (request: ResponseRequest, targetId: string, nowMs: number, secure: boolean): string[] | null {
    const pin = this.pin
    return pin === null ? null : pin.pinLines(pin.stateOf(request, nowMs), targetId, nowMs, secure, this.corsFor(request))
  }

  /** Whether the gateway's cookies on the response to `request` carry `Secure` (see `cookieSecure`); its protocol is read only for `'auto'`. */
  secureFor (request: { readonly protocol: string }): boolean {
    const secure = this.#context.secureCookies
    return secure === 'auto' ? request.protocol === 'https' : secure
  }

  /** Whether the response to `request` carries the `CORS` twins (see `corsCookies`). */
  corsFor (request: { readonly protocol: string }): boolean {
    return writesCorsTwins(this.#context, request)
  }

  /** The group's algorithm places the client. */
  readonly #byAlgorithm: Place = (reason, nowMs, previousTargetId) => choose(this.group, this.stickiness, reason, nowMs, undefined, previousTargetId)

  /** A client no pinning source kept: the first key after it decides, else the algorithm. */
  #placeAfter (request: RequestView, reason: ReassignReason | null, nowMs: number, previousTargetId?: string): AffinityDecision {
    for (const source of this.#keysAfter) {
      const key = source.key(request)
      if (key !== null) return this.#byKey(source, key, nowMs)
    }
    return choose(this.group, this.stickiness, reason, nowMs, undefined, previousTargetId)
  }

  #byKey (source: KeySource, key: string, nowMs: number): AffinityDecision {
    return decideByKey(this.group, this.stickiness as ResolvedStickiness, source.type, this.#context.hasher.hash(key), this.#keysOnly, nowMs)
  }
}

/**
 * Whether a response carries the `CORS` twins (`AWSALBCORS`, `AWSALBTGCORS`): they have
 * `SameSite=None; Secure`, which a client keeps only from an HTTPS origin (RFC 6265bis §5.7:
 * Chromium, Firefox, curl, tough-cookie; got fails the request on one), so by default they are
 * written over HTTPS (`request.protocol`, after Fastify's `trustProxy`) or when `cookieSecure: true`
 * says every client comes over HTTPS; `corsCookies: 'always'` writes them on every response, as ALB.
 */
export function writesCorsTwins (context: Pick<ForwardContext, 'corsCookies' | 'secureCookies'>, request: { readonly protocol: string }): boolean {
  return context.corsCookies === 'always' || context.secureCookies === true || request.protocol === 'https'
}
