import { COOKIE_PURPOSE_LB, COOKIE_PURPOSE_LB_SET, type CookieCodec, type StickyPayload } from '../cookie-codec.js'
import { pinsClients, type ResolvedAppCookieStickiness, type ResolvedStickiness } from '../options.js'
import type { Target } from '../target.js'
import type { TargetGroup } from '../target-group.js'
import type { AffinityDecision, KeyStickinessType, ReassignReason } from '../types.js'
import { decodeBindings, type AppBinding } from './app-bindings.js'
import { MAX_COOKIE_BYTES } from './app-cookie.js'

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
  readonly place?: (reason: ReassignReason | null) => AffinityDecision
}

/** What an lb-cookie decision read from the cookies: the decision, and the bindings of other groups the client's value carried. */
export interface LbAffinity {
  readonly decision: AffinityDecision
  /** Bindings of other lb-cookie groups in the value the decision read (the first that opened), to write back beside this group's. */
  readonly carried: readonly AppBinding[]
}

const NO_BINDINGS: readonly AppBinding[] = Object.freeze([])

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
  const place = input.place ?? ((reason: ReassignReason | null) => choose(group, stickiness, reason, nowMs))
  if (stickiness === null || input.cookies.length === 0) return { decision: place(null), carried: NO_BINDINGS }

  const name = group.name
  let reason: ReassignReason | null = null
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
      return { decision: { outcome: 'hit', targetGroup: name, target: verdict.ref, stickiness: stickiness.type, decidedBy: stickiness.type }, carried: carried ?? NO_BINDINGS }
    }
    reason ??= verdict
  }
  return { decision: place(reason), carried: carried ?? NO_BINDINGS }
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
 * remember what it sealed for it (see `GroupForward#setCookies`).
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

/**
 * A new pick by the group's algorithm: `new`, or `reassigned` with `reason`; `unavailable` when
 * no target is routable. On a sticky route the client's session now counts on the target.
 */
export function choose (group: TargetGroup, stickiness: ResolvedStickiness | null, reason: ReassignReason | null, nowMs: number, except?: Target): AffinityDecision {
  const target = group.pick(nowMs, except)
  const type = stickiness === null ? 'none' : stickiness.type
  if (target === undefined) return { outcome: 'unavailable', targetGroup: group.name, target: null, stickiness: type }
  if (pinsClients(stickiness)) target.sessions.start(stickiness.durationSeconds, Math.floor(nowMs / 1000))
  if (reason === null) return { outcome: 'new', targetGroup: group.name, target: target.ref, stickiness: type, decidedBy: group.algorithm }
  return { outcome: 'reassigned', reason, targetGroup: group.name, target: target.ref, stickiness: type, decidedBy: group.algorithm }
}

/** A binding's target if it is inside its window and keeps its clients; else why not. */
function judgeTarget (group: TargetGroup, durationSeconds: number, targetId: string, issuedAtSeconds: number, nowSeconds: number, skewSeconds: number): Target | ReassignReason {
  // A value from the future was not sealed by a gateway with a sane clock: its window would
  // start later and outlast the route's duration.
  if (issuedAtSeconds > nowSeconds + skewSeconds) return 'issued-in-future'
  // Each route holds a client for its own window since the last response (which sealed
  // issuedAt), whichever route wrote the cookie: /cart for an hour, /api for a day.
  if (issuedAtSeconds + durationSeconds < nowSeconds) return 'expired'
  const target = group.get(targetId)
  if (target === undefined) return group.wasDeregistered(targetId) ? 'target-deregistered' : 'target-unknown'
  const reason = target.unpinReason
  if (reason !== null) return reason
  target.sessions.refresh(durationSeconds, issuedAtSeconds, nowSeconds)
  return target
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
  readonly place?: (reason: ReassignReason | null) => AffinityDecision
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
  const place = input.place ?? ((reason: ReassignReason | null) => choose(group, stickiness, reason, nowMs))
  if (bindings === null) return place(null)
  if (bindings === 'invalid') return place('undecodable')
  let binding: AppBinding | undefined
  for (const candidate of bindings) {
    if (candidate.group === group.name) {
      binding = candidate
      break
    }
  }
  if (binding === undefined) return place(null)
  // ALB: "clients have to send back both cookies"; an app cookie that expired ends stickiness.
  if (input.appValue === undefined) return place('app-cookie-missing')
  if (stickiness.bindToCookieValue && binding.valueHash !== input.appHash) return place('app-cookie-mismatch')
  const verdict = judgeTarget(group, stickiness.durationSeconds, binding.targetId, binding.issuedAtSeconds, input.nowSeconds, input.skewSeconds)
  if (typeof verdict === 'string') return place(verdict)
  return { outcome: 'hit', targetGroup: group.name, target: verdict.ref, stickiness: 'app_cookie', decidedBy: 'app_cookie' }
}

/**
 * The decision of a key's hash (a `source_ip`, `header`, `query` or `path` source): its first
 * choice is a `hit`, a walk past it `reassigned` with why (see `TargetGroup#pickByHash`).
 * `keep`: the key is the client's only affinity; else the client is being pinned (by a cookie or
 * the learn store) and its session counts on the target.
 */
export function decideByKey (group: TargetGroup, stickiness: ResolvedStickiness, type: KeyStickinessType, hash: number, keep: boolean, nowMs: number): AffinityDecision {
  const { target, reason } = group.pickByHash(hash, keep)
  if (target === undefined) return { outcome: 'unavailable', targetGroup: group.name, target: null, stickiness: stickiness.type }
  if (!keep) target.sessions.start(stickiness.durationSeconds, Math.floor(nowMs / 1000))
  if (reason === null) return { outcome: 'hit', targetGroup: group.name, target: target.ref, stickiness: stickiness.type, decidedBy: type }
  return { outcome: 'reassigned', reason, targetGroup: group.name, target: target.ref, stickiness: stickiness.type, decidedBy: type }
}

/**
 * The decision of a learn-store lookup that named `targetId`: a `hit` when that target keeps its
 * clients, else why not (the caller places the client).
 */
export function judgeLearned (group: TargetGroup, stickiness: ResolvedStickiness, targetId: string, nowMs: number): AffinityDecision | ReassignReason {
  const target = group.get(targetId)
  if (target === undefined) return group.wasDeregistered(targetId) ? 'target-deregistered' : 'target-unknown'
  if (target.unpinReason !== null) return target.unpinReason
  const nowSeconds = Math.floor(nowMs / 1000)
  target.sessions.refresh(stickiness.durationSeconds, nowSeconds, nowSeconds)
  return { outcome: 'hit', targetGroup: group.name, target: target.ref, stickiness: stickiness.type, decidedBy: 'learn' }
}
