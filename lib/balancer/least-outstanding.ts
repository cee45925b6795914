import type { Target } from '../target.js'
import type { Balancer } from './balancer.js'
import { RoundRobinBalancer } from './round-robin.js'

/** Most turns of the weighted order walked to find a least-loaded target before taking the first one. */
const MAX_WALK = 1024

/**
 * ALB's `least_outstanding_requests`: a target with the fewest requests in flight relative to
 * its weight. Ties (idle targets, above all) are broken by the weighted round-robin order, so
 * idle targets share new clients by weight instead of the first one taking them all.
 */
export class LeastOutstandingBalancer implements Balancer {
  readonly #order = new RoundRobinBalancer()

  pick (targets: readonly Target[]): Target | undefined {
    if (targets.length === 0) return undefined
    let least = Infinity
    for (const target of targets) {
      const load = target.outstanding / target.weight
      if (load < least) least = load
    }
    for (let turn = 0; turn < MAX_WALK; turn++) {
      const target = this.#order.pick(targets) as Target
      if (target.outstanding / target.weight === least) return target
    }
    return targets.find((target) => target.outstanding / target.weight === least)
  }
}
