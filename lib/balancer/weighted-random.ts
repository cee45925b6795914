import type { Target } from '../target.js'
import type { Balancer } from './balancer.js'

/** ALB's `weighted_random`: a random target, each as likely as its weight. Not for sticky groups. */
export class WeightedRandomBalancer implements Balancer {
  #targets: readonly Target[] | null = null
  #cumulative: number[] = []

  pick (targets: readonly Target[]): Target | undefined {
    if (targets.length === 0) return undefined
    if (targets !== this.#targets) {
      this.#targets = targets
      let sum = 0
      this.#cumulative = targets.map((target) => (sum += target.weight))
    }
    const cumulative = this.#cumulative
    const point = Math.random() * cumulative[cumulative.length - 1]
    for (let i = 0; i < cumulative.length; i++) {
      if (point < cumulative[i]) return targets[i]
    }
    return targets[targets.length - 1]
  }
}
