import type { ResolvedStickiness } from '../options.js'
import { pinsClients } from './source.js'
import type { Target } from '../target.js'
import type { TargetGroup } from '../target-group.js'
import type { AffinityDecision, Algorithm, KeyStickinessType, ReassignReason, StickinessType, TargetRef } from '../types.js'

// What every stickiness source decides with: the algorithm's pick, a binding's verdict, a key's
// hash and a learned entry. Pure: the group's state and `now` are the only inputs.

/**
 * A new pick by the group's algorithm: `new`, or `reassigned` with `reason` (and the target the
 * client was pinned to, `previousTargetId`, when known); `unavailable` when no target is
 * routable. On a sticky route the client's session now counts on the target.
 */
export function choose (group: TargetGroup, stickiness: ResolvedStickiness | null, reason: ReassignReason | null, nowMs: number, except?: Target, previousTargetId?: string): AffinityDecision {
  const target = group.pick(nowMs, except)
  const type = stickiness === null ? 'none' : stickiness.type
  if (target === undefined) return { outcome: 'unavailable', targetGroup: group.name, target: null, stickiness: type }
  if (pinsClients(stickiness)) target.sessions.start(stickiness.durationSeconds, Math.floor(nowMs / 1000))
  if (reason === null) return { outcome: 'new', targetGroup: group.name, target: target.ref, stickiness: type, decidedBy: group.algorithm }
  return reassigned(reason, group.name, target.ref, type, group.algorithm, previousTargetId)
}

/** A `reassigned` decision, naming the previous target only when there was one and it is not the new one. */
function reassigned (reason: ReassignReason, targetGroup: string, target: TargetRef, stickiness: StickinessType, decidedBy: Algorithm | KeyStickinessType, previousTargetId: string | undefined): AffinityDecision {
  if (previousTargetId === undefined || previousTargetId === target.id) return { outcome: 'reassigned', reason, targetGroup, target, stickiness, decidedBy }
  return { outcome: 'reassigned', reason, targetGroup, target, stickiness, decidedBy, previousTargetId }
}

/** A binding's target if it is inside its window and keeps its clients; else why not. */
export function judgeTarget (group: TargetGroup, durationSeconds: number, targetId: string, issuedAtSeconds: number, nowSeconds: number, skewSeconds: number): Target | ReassignReason {
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

/**
 * The decision of a key's hash (a `source_ip`, `header`, `query` or `path` source): its first
 * choice is a `hit`, a walk past it `reassigned` with why (see `TargetGroup#pickByHash`).
 * `keep`: the key is the client's only affinity; else the client is being pinned (by a cookie or
 * the learn store) and its session counts on the target.
 */
export function decideByKey (group: TargetGroup, stickiness: ResolvedStickiness, type: KeyStickinessType, hash: number, keep: boolean, nowMs: number): AffinityDecision {
  const { target, reason, first } = group.pickByHash(hash, keep)
  if (target === undefined) return { outcome: 'unavailable', targetGroup: group.name, target: null, stickiness: stickiness.type }
  if (!keep) target.sessions.start(stickiness.durationSeconds, Math.floor(nowMs / 1000))
  if (reason === null) return { outcome: 'hit', targetGroup: group.name, target: target.ref, stickiness: stickiness.type, decidedBy: type }
  return reassigned(reason, group.name, target.ref, stickiness.type, type, first?.id)
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

/**
 * The decision header's value (see `exposeDecision`): `<outcome>;<why>;<target id>`, `why` being
 * what decided for `hit` and `new`, the reason for `reassigned`; `unavailable;;` when no target is routable.
 */
export function decisionHeaderValue (decision: AffinityDecision): string {
  switch (decision.outcome) {
    case 'reassigned': return `reassigned;${decision.reason};${decision.target.id}`
    case 'unavailable': return 'unavailable;;'
    default: return `${decision.outcome};${decision.decidedBy};${decision.target.id}`
  }
}
