import { COOKIE_PURPOSE_LB, COOKIE_PURPOSE_LB_SET, type CookieCodec, type StickyPayload } from '../cookie-codec.js'
import { MAX_COOKIE_DURATION_SECONDS, type ResolvedStickiness } from '../options.js'
import type { TargetGroup } from '../target-group.js'
import type { AffinityDecision, ReassignReason } from '../types.js'
import { choose, judgeTarget } from './affinity.js'
import { BindingSealer, decodeBindings, NO_BINDINGS, type AppBinding } from './app-bindings.js'
import { GATEWAY_COOKIE_LIFETIME_SECONDS, MAX_COOKIE_BYTES, startsPair } from './cookie-text.js'
import type { PinSource, Pinned, Place, RequestView } from './source.js'

/** ALB's duration-stickiness cookie. */
export const LB_COOKIE = 'AWSALB'
/** Its twin for cross-site requests, with `SameSite=None; Secure`; same value. */
export const LB_CORS_COOKIE = 'AWSALBCORS'
/** ALB's target-group stickiness cookie of weighted forwards, written the same way (and its `CORS` twin). */
export const TG_COOKIE = 'AWSALBTG'
/** The suffix of every twin's name. */
export const CORS_SUFFIX = 'CORS'
/** Most distinct values read from one request; more are ignored (a forged header may repeat a name). */
export const MAX_LB_COOKIE_CANDIDATES = 4

const NO_VALUES: readonly string[] = Object.freeze([])

/**
 * The values of `AWSALB`, then of `AWSALBCORS`, in the order the header lists them, without
 * repeats (ALB: read `AWSALB` first, then `AWSALBCORS`). Browsers send both with the same
 * value, and several of one name when cookies of other paths or domains exist; the caller
 * tries them in this order, so the outcome does not depend on anything but the header.
 * `name` reads another pair the same way (`AWSALBTG` and `AWSALBTGCORS`, or prefixed names).
 */
export function readLbCookies (header: string | undefined, name = LB_COOKIE): readonly string[] {
  if (header === undefined) return NO_VALUES
  let at = header.indexOf(name)
  if (at === -1) return NO_VALUES
  // Allocated only when a value is found; one slice per value (this runs on every request).
  let lb: string[] | null = null
  let cors: string[] | null = null
  while (at !== -1) {
    const next = at + name.length
    let valueAt = -1
    let isCors = false
    if (startsPair(header, at)) {
      const after = header.charCodeAt(next)
      if (after === EQUALS) {
        valueAt = next + 1
      } else if (after === C && header.startsWith('CORS=', next)) {
        valueAt = next + 5
        isCors = true
      }
    }
    if (valueAt === -1) {
      at = header.indexOf(name, at + 1)
      continue
    }
    let end = header.indexOf(';', valueAt)
    if (end === -1) end = header.length
    const value = valueBetween(header, valueAt, end)
    if (value !== '') {
      if (isCors) cors = addCandidate(cors, value)
      else lb = addCandidate(lb, value)
    }
    at = header.indexOf(name, end)
  }
  if (cors !== null) {
    if (lb === null) return cors
    for (const value of cors) if (!lb.includes(value)) lb.push(value)
    if (lb.length > MAX_LB_COOKIE_CANDIDATES) lb.length = MAX_LB_COOKIE_CANDIDATES
  }
  return lb ?? NO_VALUES
}

const SPACE = 32
const TAB = 9
const EQUALS = 61
const C = 67
const DQUOTE = 34

function addCandidate (list: string[] | null, value: string): string[] {
  if (list === null) return [value]
  if (list.length < MAX_LB_COOKIE_CANDIDATES && !list.includes(value)) list.push(value)
  return list
}

/** The cookie-value between `from` and `to`: spaces and tabs trimmed, and DQUOTEs around it (RFC 6265 §4.1.1). */
function valueBetween (header: string, from: number, to: number): string {
  let start = from
  let end = to
  while (start < end && isBlank(header.charCodeAt(start))) start++
  while (end > start && isBlank(header.charCodeAt(end - 1))) end--
  if (end - start >= 2 && header.charCodeAt(start) === DQUOTE && header.charCodeAt(end - 1) === DQUOTE) {
    start++
    end--
  }
  return header.slice(start, end)
}

function isBlank (code: number): boolean {
  return code === SPACE || code === TAB
}

/**
 * Builds the two `Set-Cookie` lines in ALB's wire format:
 * `AWSALB=<v>; Expires=<now + 7 d>; Path=/` and `AWSALBCORS=<v>; Expires=<same>; Path=/; SameSite=None; Secure`
 * (or of another `name` and its `CORS` twin); `; Secure` on the first when asked, `; HttpOnly` on
 * both with `httpOnly`. The attribute suffixes are rebuilt once per second, not per response.
 */
export class LbCookieWriter {
  readonly name: string
  readonly corsName: string
  readonly #httpOnly: string
  #second = -1
  #suffix = ''
  #secureSuffix = ''
  #corsSuffix = ''

  constructor (name = LB_COOKIE, httpOnly = false) {
    this.name = name
    this.corsName = name + CORS_SUFFIX
    this.#httpOnly = httpOnly ? '; HttpOnly' : ''
  }

  setCookies (value: string, nowMs: number, secure = false): [string, string] {
    const second = Math.floor(nowMs / 1000)
    if (second !== this.#second) {
      this.#second = second
      const base = `; Expires=${new Date((second + GATEWAY_COOKIE_LIFETIME_SECONDS) * 1000).toUTCString()}; Path=/`
      this.#suffix = base + this.#httpOnly
      this.#secureSuffix = `${base}; Secure${this.#httpOnly}`
      this.#corsSuffix = `${base}; SameSite=None; Secure${this.#httpOnly}`
    }
    return [`${this.name}=${value}${secure ? this.#secureSuffix : this.#suffix}`, `${this.corsName}=${value}${this.#corsSuffix}`]
  }
}

/** Everything the decision depends on; nothing else is read. */
export interface AffinityInput {
  readonly group: TargetGroup
  /** The route's stickiness (the group's unless overridden); null when not sticky. */
  readonly stickiness: ResolvedStickiness | null
  /** Candidate cookie values in the order to try them (see `readLbCookies`). */
  readonly cookies: readonly string[]
  readonly codec: CookieCodec
  readonly nowSeconds: number
  /** How far past `nowSeconds` an issue time may lie (another gateway's clock): later is `issued-in-future`. */
  readonly skewSeconds: number
  /** Places a client the cookie did not keep (`reason`: why, null when none came); default: the group's algorithm (`choose`). */
  readonly place?: Place
}

/**
 * What an lb-cookie decision read from the cookies: the decision, and (`state`) the bindings of
 * other lb-cookie groups in the value it read (the first that opened), to write back beside this group's.
 */
export type LbAffinity = Pinned<readonly AppBinding[]>


/**
 * Decides which target serves a request, ALB's way: a cookie that opens, holds a binding of this
 * group inside its window, and names a target that keeps its clients is a `hit`; any other cookie
 * is `reassigned` with the reason of the first one tried; no cookie is `new`. No I/O and no clock
 * of its own; it counts the session on the target it pins (see `BoundSessions`).
 */
export function decideAffinity (input: AffinityInput): AffinityDecision {
  return decideLbAffinity(input).decision
}

/**
 * `decideAffinity`, and the other groups' bindings the client's `AWSALB` value carried: one
 * value holds a binding per lb-cookie group the client uses, so a client of `/a` and `/b` keeps
 * both targets (at ALB, each group's cookie overwrites the other's).
 */
export function decideLbAffinity (input: AffinityInput): LbAffinity {
  const { group, stickiness } = input
  const nowMs = input.nowSeconds * 1000
  const place: Place = input.place ?? ((reason, now, previousTargetId) => choose(group, stickiness, reason, now, undefined, previousTargetId))
  if (stickiness === null || input.cookies.length === 0) return { decision: place(null, nowMs), state: NO_BINDINGS }

  const name = group.name
  let reason: ReassignReason | null = null
  // The target the first binding of this group named: the client's session may still be there.
  let previous: string | undefined
  let carried: readonly AppBinding[] | null = null
  for (const value of input.cookies) {
    const opened = openLbValue(input.codec, value)
    if (opened === null) {
      reason ??= 'undecodable'
      continue
    }
    let own: StickyPayload | AppBinding | undefined
    if (isBindingSet(opened)) {
      for (const binding of opened) {
        if (binding.group === name) {
          own = binding
          break
        }
      }
      carried ??= own === undefined ? opened : othersIn(opened, name)
    } else if (opened.group === name) {
      own = opened
      carried ??= NO_BINDINGS
    } else {
      carried ??= asBindings(opened)
    }
    if (own === undefined) {
      reason ??= 'group-mismatch'
      continue
    }
    const verdict = judgeTarget(group, stickiness.durationSeconds, own.targetId, own.issuedAtSeconds, input.nowSeconds, input.skewSeconds)
    if (typeof verdict !== 'string') {
      return { decision: { outcome: 'hit', targetGroup: name, target: verdict.ref, stickiness: stickiness.type, decidedBy: 'lb_cookie' }, state: carried ?? NO_BINDINGS }
    }
    reason ??= verdict
    previous ??= own.targetId
  }
  return { decision: place(reason, nowMs, previous), state: carried ?? NO_BINDINGS }
}

/** The bindings of groups other than `groupName` in the first of `cookies` that opens; none when none does. */
export function carriedBindings (codec: CookieCodec, cookies: readonly string[], groupName: string): readonly AppBinding[] {
  for (const value of cookies) {
    const opened = openLbValue(codec, value)
    if (opened === null) continue
    if (isBindingSet(opened)) return othersIn(opened, groupName)
    return opened.group === groupName ? NO_BINDINGS : asBindings(opened)
  }
  return NO_BINDINGS
}

/** An `AWSALB` value opened: one group's payload, or a set of several groups' bindings; null when it is not ours. */
function openLbValue (codec: CookieCodec, value: string): StickyPayload | readonly AppBinding[] | null {
  const single = codec.open(COOKIE_PURPOSE_LB, value)
  if (single !== null) return single.payload
  return codec.openWith(COOKIE_PURPOSE_LB_SET, value, MAX_COOKIE_BYTES, decodeBindings)
}

function isBindingSet (opened: StickyPayload | readonly AppBinding[]): opened is readonly AppBinding[] {
  return Array.isArray(opened)
}

/**
 * The bindings of a set other than `groupName`'s. Opened sets are shared (the codec remembers
 * them), so the answer is kept with the set: the same array each time, which lets the writer
 * remember what it sealed for it (see `LbCookieSource#pinLines`).
 */
function othersIn (set: readonly AppBinding[], groupName: string): readonly AppBinding[] {
  let byGroup = othersOfSets.get(set)
  if (byGroup === undefined) {
    byGroup = new Map()
    othersOfSets.set(set, byGroup)
  }
  let others = byGroup.get(groupName)
  if (others === undefined) {
    others = Object.freeze(set.filter((binding) => binding.group !== groupName))
    // At most one entry per group the client's value named: bounded by the set's own size.
    byGroup.set(groupName, others)
  }
  return others
}

/** One group's payload as a one-binding set, kept with the (shared, remembered) payload. */
function asBindings (payload: StickyPayload): readonly AppBinding[] {
  let set = setsOfPayloads.get(payload)
  if (set === undefined) {
    set = Object.freeze([Object.freeze({ group: payload.group, targetId: payload.targetId, issuedAtSeconds: payload.issuedAtSeconds, valueHash: null })])
    setsOfPayloads.set(payload, set)
  }
  return set
}

const othersOfSets = new WeakMap<readonly AppBinding[], Map<string, readonly AppBinding[]>>()
const setsOfPayloads = new WeakMap<StickyPayload, readonly AppBinding[]>()

/** Most lb-cookie groups one `AWSALB` value carries (the least recently used go first); fewer when they would not fit in one cookie. */
export const MAX_LB_BINDINGS = 32

/** One target's `AWSALB` value of one second, and its lines without and with `Secure`, built when first asked. */
interface SealedLines {
  readonly value: string
  plain: readonly [string, string] | null
  secure: readonly [string, string] | null
}

/** What an lb-cookie source needs of the gateway. */
export interface LbCookieContext {
  readonly codec: CookieCodec
  /** `AWSALB` + `AWSALBCORS` (with the cookie prefix). */
  readonly lbWriter: LbCookieWriter
  /** Seals `AWSALB` values that carry several lb-cookie groups' bindings. */
  readonly lbSetSealer: LbSetSealer
  readonly clockSkewSeconds: number
}

/**
 * ALB's duration-based stickiness (`AWSALB` + `AWSALBCORS`) on one route: a cookie that holds
 * keeps the client; every response carries fresh cookies, whose window starts again. One value
 * carries a binding per lb-cookie group the client uses (see `decideLbAffinity`).
 */
export class LbCookieSource implements PinSource<readonly AppBinding[]> {
  readonly type = 'lb_cookie'
  readonly pinNames: readonly string[]
  readonly cookiesAtResponse = false
  readonly #group: TargetGroup
  readonly #stickiness: ResolvedStickiness
  readonly #durationSeconds: number
  readonly #codec: CookieCodec
  readonly #writer: LbCookieWriter
  readonly #setSealer: LbSetSealer
  readonly #skewSeconds: number
  /** `AWSALB` values sealed this second for clients of this group alone, by target id: such a value depends on nothing else. */
  readonly #sealed = new Map<string, SealedLines>()
  /** Values sealed this second for clients of several groups: by the carried bindings (shared arrays, see `decideLbAffinity`), then target id. */
  #sealedSets = new WeakMap<readonly AppBinding[], Map<string, SealedLines>>()
  #sealedSecond = -1

  constructor (group: TargetGroup, stickiness: ResolvedStickiness, context: LbCookieContext) {
    this.#group = group
    this.#stickiness = stickiness
    this.#durationSeconds = stickiness.durationSeconds
    this.#codec = context.codec
    this.#writer = context.lbWriter
    this.#setSealer = context.lbSetSealer
    this.#skewSeconds = context.clockSkewSeconds
    this.pinNames = Object.freeze([context.lbWriter.name, context.lbWriter.corsName])
  }

  decide (request: RequestView, nowMs: number, place: Place): LbAffinity {
    return decideLbAffinity({
      group: this.#group,
      stickiness: this.#stickiness,
      cookies: readLbCookies(request.headers.cookie, this.#writer.name),
      codec: this.#codec,
      nowSeconds: Math.floor(nowMs / 1000),
      skewSeconds: this.#skewSeconds,
      place
    })
  }

  /** The other lb-cookie groups' bindings the request's `AWSALB` carries. */
  stateOf (request: RequestView): readonly AppBinding[] {
    return carriedBindings(this.#codec, readLbCookies(request.headers.cookie, this.#writer.name), this.#group.name)
  }

  /**
   * Fresh `AWSALB` + `AWSALBCORS` lines pinning the client to the target `targetId`, with the window
   * starting now (ALB resets it on every request), and keeping the `carried` bindings of other
   * groups; `secure` adds `Secure`; without `cors`, `AWSALB` alone. A new array each call (Fastify
   * appends to the one it is given).
   */
  pinLines (carried: readonly AppBinding[], targetId: string, nowMs: number, secure: boolean, cors: boolean): string[] {
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
          sealed = { value: this.#setSealer.seal(bindings, nowSeconds), plain: null, secure: null }
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
      const value = this.#codec.seal(COOKIE_PURPOSE_LB, {
        group: this.#group.name,
        targetId,
        stickyUntilSeconds: nowSeconds + this.#durationSeconds,
        issuedAtSeconds: nowSeconds
      })
      sealed = { value, plain: null, secure: null }
      this.#sealed.set(targetId, sealed)
    }
    let lines = secure ? sealed.secure : sealed.plain
    if (lines === null) {
      lines = this.#writer.setCookies(sealed.value, nowMs, secure)
      if (secure) sealed.secure = lines
      else sealed.plain = lines
    }
    return cors ? [lines[0], lines[1]] : [lines[0]]
  }

  /** This group's fresh binding first, then the carried ones no window can have ended or that are not from the future; null when none is left. */
  /** This group's fresh binding first, then the carried ones no window can have ended or that are not from the future; null when none is left. */
  #withCarried (targetId: string, carried: readonly AppBinding[], nowSeconds: number): AppBinding[] | null {
    const latest = nowSeconds + this.#skewSeconds
    let bindings: AppBinding[] | null = null
    for (const binding of carried) {
      if (binding.issuedAtSeconds + MAX_COOKIE_DURATION_SECONDS < nowSeconds || binding.issuedAtSeconds > latest) continue
      bindings ??= [{ group: this.#group.name, targetId, issuedAtSeconds: nowSeconds, valueHash: null }]
      bindings.push(binding)
      if (bindings.length === MAX_LB_BINDINGS) break
    }
    return bindings
  }
}

/** The `AWSALB` value of a client of several lb-cookie groups: it fits in one cookie named `corsName` (the longer of the pair). */
export class LbSetSealer extends BindingSealer {
  constructor (codec: CookieCodec, corsName: string) {
    super(codec, COOKIE_PURPOSE_LB_SET, MAX_COOKIE_BYTES - corsName.length - 1)
  }
}
