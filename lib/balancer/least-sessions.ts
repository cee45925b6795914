import type { Target } from '../target.js'
import type { Balancer } from './balancer.js'

/**
 * `least_sessions`: a new session goes to the target with the fewest bound sessions relative to
 * its weight (the bound-session estimate, see `BoundSessions`), so a target added by scale-out
 * takes new sessions until it holds its share. Estimates are read once per second (or when the
 * targets change); each pick counts its session at once, so a burst within one second spreads.
 * Ties go in turn.
 */
export class LeastSessionsBalancer implements Balancer {
  #targets: readonly Target[] | null = null
  #counts = new Float64Array(0)
  #second = -1
  #next = 0

  pick (targets: readonly Target[], nowMs = Date.now()): Target | undefined {
    const length = targets.length
    if (length === 0) return undefined
    const second = Math.floor(nowMs / 1000)
    if (targets !== this.#targets || second !== this.#second) {
      this.#targets = targets
      this.#second = second
      if (this.#counts.length !== length) this.#counts = new Float64Array(length)
      for (let i = 0; i < length; i++) this.#counts[i] = targets[i].sessions.estimate(second)
    }
    const counts = this.#counts
    let best = -1
    let least = Infinity
    for (let turn = 0; turn < length; turn++) {
      const i = (this.#next + turn) % length
      const load = counts[i] / targets[i].weight
      if (load < least) {
        least = load
        best = i
      }
    }
    counts[best]++
    this.#next = (best + 1) % length
    return targets[best]
  }
}
