import type { Target } from '../target.js'
import type { Balancer } from './balancer.js'

/**
 * ALB's `least_outstanding_requests`: the target with the fewest requests in flight relative
 * to its weight. Ties rotate, so idle targets share new clients instead of the first taking all.
 */
export class LeastOutstandingBalancer implements Balancer {
  #start = 0

  pick (targets: readonly Target[]): Target | undefined {
    const count = targets.length
    if (count === 0) return undefined
    if (this.#start >= count) this.#start = 0
    const start = this.#start++
    let best = targets[start]
    let bestLoad = best.outstanding / best.weight
    for (let n = 1; n < count; n++) {
      const target = targets[(start + n) % count]
      const load = target.outstanding / target.weight
      if (load < bestLoad) {
        best = target
        bestLoad = load
      }
    }
    return best
  }
}
