import { COOKIE_PURPOSE_LB, type CookieCodec } from '../cookie-codec.js'
import type { ResolvedAppCookieStickiness, ResolvedStickiness } from '../options.js'
import type { Target } from '../target.js'
import type { TargetGroup } from '../target-group.js'
import type { AffinityDecision, ReassignReason } from '../types.js'
import type { AppBinding } from './app-bindings.js'

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
}

/**
 * Decides which target serves a request, ALB's way: a cookie that opens, belongs to this group,
 * is inside its window and names a target that keeps its clients is a `hit`; any other cookie is
 * `reassigned` with the reason of the first one tried; no cookie is `new`. No I/O and no clock
 * of its own; it counts the session on the target it pins (see `BoundSessions`).
 */
export function decideAffinity (input: AffinityInput): AffinityDecision {
  const { group, stickiness } = input
  const nowMs = input.nowSeconds * 1000
  if (stickiness === null || input.cookies.length === 0) return choose(group, stickiness, null, nowMs)

  let reason: ReassignReason | null = null
  for (const value of input.cookies) {
    const verdict = judge(input, value)
    if (typeof verdict !== 'string') {
      return { outcome: 'hit', targetGroup: group.name, target: verdict.ref, stickiness: stickiness.type, decidedBy: stickiness.type }
    }
    reason ??= verdict
  }
  return choose(group, stickiness, reason, nowMs)
}

/**
 * A new pick by the group's algorithm: `new`, or `reassigned` with `reason`; `unavailable` when
 * no target is routable. On a sticky route the client's session now counts on the target.
 */
export function choose (group: TargetGroup, stickiness: ResolvedStickiness | null, reason: ReassignReason | null, nowMs: number, except?: Target): AffinityDecision {
  const target = group.pick(nowMs, except)
  const type = stickiness === null ? 'none' : stickiness.type
  if (target === undefined) return { outcome: 'unavailable', targetGroup: group.name, target: null, stickiness: type }
  if (stickiness !== null) target.sessions.start(stickiness.durationSeconds, Math.floor(nowMs / 1000))
  if (reason === null) return { outcome: 'new', targetGroup: group.name, target: target.ref, stickiness: type, decidedBy: group.algorithm }
  return { outcome: 'reassigned', reason, targetGroup: group.name, target: target.ref, stickiness: type, decidedBy: group.algorithm }
}

function judge (input: AffinityInput, value: string): Target | ReassignReason {
  const opened = input.codec.open(COOKIE_PURPOSE_LB, value)
  if (opened === null) return 'undecodable'
  const { payload } = opened
  if (payload.group !== input.group.name) return 'group-mismatch'
  return judgeTarget(input.group, (input.stickiness as ResolvedStickiness).durationSeconds, payload.targetId, payload.issuedAtSeconds, input.nowSeconds, input.skewSeconds)
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
  if (bindings === null) return choose(group, stickiness, null, nowMs)
  if (bindings === 'invalid') return choose(group, stickiness, 'undecodable', nowMs)
  let binding: AppBinding | undefined
  for (const candidate of bindings) {
    if (candidate.group === group.name) {
      binding = candidate
      break
    }
  }
  if (binding === undefined) return choose(group, stickiness, null, nowMs)
  // ALB: "clients have to send back both cookies"; an app cookie that expired ends stickiness.
  if (input.appValue === undefined) return choose(group, stickiness, 'app-cookie-missing', nowMs)
  if (stickiness.bindToCookieValue && binding.valueHash !== input.appHash) return choose(group, stickiness, 'app-cookie-mismatch', nowMs)
  const verdict = judgeTarget(group, stickiness.durationSeconds, binding.targetId, binding.issuedAtSeconds, input.nowSeconds, input.skewSeconds)
  if (typeof verdict === 'string') return choose(group, stickiness, verdict, nowMs)
  return { outcome: 'hit', targetGroup: group.name, target: verdict.ref, stickiness: 'app_cookie', decidedBy: 'app_cookie' }
}
