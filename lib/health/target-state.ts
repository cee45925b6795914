/**
 * A target's health state, ALB's way, as a pure function of the checks seen so far: no I/O, no
 * clock of its own (`nowMs` comes from the caller). The health checker, the outlier detector and
 * deregistration ask it what the next state is.
 */

/** ALB's target states (`TargetHealthStateEnum`). */
export type TargetStateName = 'initial' | 'healthy' | 'unhealthy' | 'draining' | 'unused'

/** Why a health check failed, with ALB's reason codes. */
export type CheckFailureReason = 'Target.Timeout' | 'Target.ResponseCodeMismatch' | 'Target.FailedHealthChecks'

/** ALB's reason codes for the state a target is in; null while `healthy`. */
export type TargetStateReason =
  | 'Elb.InitialHealthChecking'
  | CheckFailureReason
  | 'Target.DeregistrationInProgress'
  | 'Target.NotRegistered'
  | null

/** The outcome of one health check. */
export type CheckResult = { readonly ok: true } | { readonly ok: false, readonly reason: CheckFailureReason }

/** Consecutive results that move a target between `healthy` and `unhealthy` (ALB: 2 to 10 each). */
export interface HealthThresholds {
  /** Passes that bring an `unhealthy` target back (ALB default 5). */
  readonly healthyThreshold: number
  /** Failures that take an `initial` or `healthy` target out (ALB default 2). */
  readonly unhealthyThreshold: number
}

/** Where a new target starts: ALB's `initial` (no traffic until a check passes), or `healthy` until a check says otherwise. */
export type InitialState = 'initial' | 'healthy'

/** A target's health at one moment. Immutable: every transition returns a new one. */
export interface TargetHealth {
  readonly state: TargetStateName
  readonly reason: TargetStateReason
  /** Consecutive passing checks, and consecutive failing ones (one of the two is 0). */
  readonly passes: number
  readonly failures: number
  /** When the target entered this state. */
  readonly sinceMs: number
}

/** The health of a target just registered. */
export function registeredHealth (initial: InitialState, nowMs: number): TargetHealth {
  return initial === 'healthy'
    ? health('healthy', null, 0, 0, nowMs)
    : health('initial', 'Elb.InitialHealthChecking', 0, 0, nowMs)
}

/**
 * The health after one more check. One pass is enough to leave `initial` (ALB);
 * `unhealthyThreshold` failures in a row take an `initial` or `healthy` target out, and
 * `healthyThreshold` passes in a row bring an `unhealthy` one back. Draining and unused targets
 * are no longer checked: their health does not change.
 */
export function afterCheck (current: TargetHealth, result: CheckResult, thresholds: HealthThresholds, nowMs: number): TargetHealth {
  const { state } = current
  if (state === 'draining' || state === 'unused') return current
  if (result.ok) {
    const passes = current.passes + 1
    if (state === 'initial' || (state === 'unhealthy' && passes >= thresholds.healthyThreshold)) return health('healthy', null, passes, 0, nowMs)
    return health(state, current.reason, passes, 0, current.sinceMs)
  }
  const failures = current.failures + 1
  if (state !== 'unhealthy' && failures >= thresholds.unhealthyThreshold) return health('unhealthy', result.reason, 0, failures, nowMs)
  // Still unhealthy: the reason follows the latest failure, as ALB's DescribeTargetHealth does.
  return health(state, state === 'unhealthy' ? result.reason : current.reason, 0, failures, current.sinceMs)
}

/** Deregistered: `draining` until the deregistration delay ends or nothing is left to finish. */
export function afterDeregistration (current: TargetHealth, nowMs: number): TargetHealth {
  if (current.state === 'draining' || current.state === 'unused') return current
  return health('draining', 'Target.DeregistrationInProgress', 0, 0, nowMs)
}

/** Draining is over: the target is `unused` and no longer part of its group. */
export function afterDraining (current: TargetHealth, nowMs: number): TargetHealth {
  if (current.state === 'unused') return current
  return health('unused', 'Target.NotRegistered', 0, 0, nowMs)
}

/** True when the target may take new sessions (outside fail-open). */
export function isRoutable (current: TargetHealth): boolean {
  return current.state === 'healthy'
}

function health (state: TargetStateName, reason: TargetStateReason, passes: number, failures: number, sinceMs: number): TargetHealth {
  return Object.freeze({ state, reason, passes, failures, sinceMs })
}
