import type { Target } from '../target.js'
import type { Balancer } from './balancer.js'

/** Most entries a weighted schedule may have; beyond it weights are scaled down. */
const MAX_SCHEDULE = 65_536

/**
 * ALB's `round_robin`, with per-target weights: targets take turns in a smooth weighted order
 * (nginx's), computed once per target list, so each pick is one array read.
 */
export class RoundRobinBalancer implements Balancer {
  #targets: readonly Target[] | null = null
  #schedule: readonly Target[] = []
  #next = 0

  pick (targets: readonly Target[]): Target | undefined {
    if (targets !== this.#targets) {
      this.#targets = targets
      this.#schedule = buildSchedule(targets)
    }
    const schedule = this.#schedule
    if (schedule.length === 0) return undefined
    if (this.#next >= schedule.length) this.#next = 0
    return schedule[this.#next++]
  }
}

/** Smooth weighted round robin: each target appears `weight` times, spread evenly. */
export function buildSchedule (targets: readonly Target[]): Target[] {
  if (targets.length === 0) return []
  let weights = targets.map((target) => target.weight)
  const divisor = weights.reduce(gcd)
  weights = weights.map((weight) => weight / divisor)
  let total = weights.reduce((a, b) => a + b, 0)
  if (total > MAX_SCHEDULE) {
    const scale = MAX_SCHEDULE / total
    weights = weights.map((weight) => Math.max(1, Math.round(weight * scale)))
    total = weights.reduce((a, b) => a + b, 0)
  }
  if (weights.every((weight) => weight === 1)) return [...targets]
  const current = new Array<number>(targets.length).fill(0)
  const schedule: Target[] = []
  for (let n = 0; n < total; n++) {
    let best = 0
    for (let i = 0; i < targets.length; i++) {
      current[i] += weights[i]
      if (current[i] > current[best]) best = i
    }
    current[best] -= total
    schedule.push(targets[best])
  }
  return schedule
}

function gcd (a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b]
  return a
}
