import type { Target } from '../target.js'
import type { Algorithm } from '../types.js'
import { LeastOutstandingBalancer } from './least-outstanding.js'
import { LeastSessionsBalancer } from './least-sessions.js'
import { RoundRobinBalancer } from './round-robin.js'
import { WeightedRandomBalancer } from './weighted-random.js'

/**
 * Picks a target for a client that is not pinned. `targets` is the group's routable list; the
 * group replaces the array (never mutates it) when targets change, so a balancer may cache
 * whatever it derives from one array until it sees another.
 */
export interface Balancer {
  /** `nowMs`: the plugin's clock, for balancers that read time-based estimates. */
  pick (targets: readonly Target[], nowMs: number): Target | undefined
}

/** Makes the balancer of a target group's algorithm. */
export function createBalancer (algorithm: Algorithm): Balancer {
  switch (algorithm) {
    case 'least_outstanding_requests': return new LeastOutstandingBalancer()
    case 'weighted_random': return new WeightedRandomBalancer()
    case 'least_sessions': return new LeastSessionsBalancer()
    default: return new RoundRobinBalancer()
  }
}
