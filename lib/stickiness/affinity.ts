import { COOKIE_PURPOSE_LB, type CookieCodec } from '../cookie-codec.js'
import type { ResolvedStickiness } from '../options.js'
import type { Target } from '../target.js'
import type { TargetGroup } from '../target-group.js'
import type { AffinityDecision, ReassignReason } from '../types.js'

/** Everything the decision depends on; nothing else is read. */
export interface AffinityInput {
  readonly group: TargetGroup
  /** The route's stickiness (the group's unless overridden); null when not sticky. */
  readonly stickiness: ResolvedStickiness | null
  /** Candidate cookie values in the order to try them (see `readLbCookies`). */
  readonly cookies: readonly string[]
  readonly codec: CookieCodec
  readonly nowSeconds: number
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
  // Each route holds a client for its own window since the last response (which sealed
  // issuedAt), whichever route wrote the cookie: /cart for an hour, /api for a day.
  const { durationSeconds } = input.stickiness as ResolvedStickiness
  if (payload.issuedAtSeconds + durationSeconds < input.nowSeconds) return 'expired'
  const target = input.group.get(payload.targetId)
  if (target === undefined) return input.group.wasDeregistered(payload.targetId) ? 'target-deregistered' : 'target-unknown'
  const reason = target.unpinReason
  if (reason !== null) return reason
  target.sessions.refresh(durationSeconds, payload.issuedAtSeconds, input.nowSeconds)
  return target
}
