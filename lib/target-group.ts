import diagnosticsChannel from 'node:diagnostics_channel'
import { createBalancer, type Balancer } from './balancer/balancer.js'
import { FST_STICKY_TARGET_DUPLICATE, FST_STICKY_TARGET_GROUP_CLOSED } from './errors.js'
import { HealthChecker } from './health/health-checker.js'
import { afterCheck, afterDeregistration, afterDraining, isRoutable, registeredHealth, type CheckResult, type InitialState, type TargetHealth } from './health/target-state.js'
import { resolveTarget, type MinimumHealthy, type ResolvedHealthCheck, type ResolvedStickiness, type ResolvedTargetGroup } from './options.js'
import { Target, type PoolSettings } from './target.js'
import type { Algorithm, TargetDescription, TargetGroupDescription, TargetHealthChange, TargetOptions, TargetRef } from './types.js'

/** What a group needs besides its options: how to build pools, and the plugin's clock. */
export interface GroupSettings extends PoolSettings {
  readonly now: () => number
}

/** Where every target state change is published (see `TargetHealthChange`). */
export const TARGET_HEALTH_CHANNEL = 'fastify-sticky:target-health'
const healthChannel = diagnosticsChannel.channel(TARGET_HEALTH_CHANNEL)

/** How many deregistered target ids a group remembers, to tell `target-deregistered` from `target-unknown`. */
const REMEMBERED_DEREGISTRATIONS = 1024
/** How often `pick(except)` asks the balancer before filtering `except` out. */
const REPICK_ATTEMPTS = 4

/**
 * A named set of targets sharing algorithm and stickiness. Targets can be registered and
 * deregistered while the gateway serves: a deregistered target takes no new request, its
 * in-flight requests finish, then its pool closes.
 */
export class TargetGroup {
  readonly name: string
  readonly algorithm: Algorithm
  /** The group's stickiness; routes may override it. Null when not sticky. */
  readonly stickiness: ResolvedStickiness | null
  /** The group's active health checks; null when it has none. */
  readonly healthCheck: ResolvedHealthCheck | null
  readonly #settings: GroupSettings
  readonly #minimumHealthy: MinimumHealthy
  readonly #failOpen: boolean
  readonly #checker: HealthChecker | null
  /** Fewer healthy targets than the minimum: failing open (or refusing, with failOpen false). */
  #degraded = false
  /** Whether the group ever had enough healthy targets: the hold below applies to a relapse, not to start-up. */
  #everEnough = false
  /** While degraded, when the healthy count last reached the minimum; -1 when it is below. */
  #enoughSinceMs = -1
  readonly #balancer: Balancer
  readonly #targets = new Map<string, Target>()
  readonly #deregistered = new Set<string>()
  /** Replaced, never mutated, on every change: balancers cache by its identity. */
  #routable: readonly Target[] = []
  #refs: readonly TargetRef[] = []
  #closing: Promise<void> | null = null

  constructor (resolved: ResolvedTargetGroup, settings: GroupSettings) {
    this.name = resolved.name
    this.algorithm = resolved.algorithm
    this.stickiness = resolved.stickiness
    this.healthCheck = resolved.healthCheck
    this.#minimumHealthy = resolved.minimumHealthyTargets
    this.#failOpen = resolved.failOpen
    this.#settings = settings
    this.#balancer = createBalancer(resolved.algorithm)
    this.#checker = resolved.healthCheck === null ? null : new HealthChecker(resolved.healthCheck, (target, result) => this.#recordCheck(target, result))
    for (const target of resolved.targets) this.#add(new Target(target, settings, this.#newHealth()))
    this.#update()
  }

  /** The registered targets, in registration order: their ids and origins. */
  get targets (): readonly TargetRef[] {
    return this.#refs
  }

  /**
   * The registered target with this id, if any, with its pool.
   * @internal
   */
  get (id: string): Target | undefined {
    return this.#targets.get(id)
  }

  /**
   * Targets that may take new requests.
   * @internal
   */
  get routable (): readonly Target[] {
    return this.#routable
  }

  /**
   * True when `id` named a target of this group that was deregistered.
   * @internal
   */
  wasDeregistered (id: string): boolean {
    return this.#deregistered.has(id)
  }

  /**
   * Picks a target for a new or reassigned client; `except` is left out (it just failed).
   * @internal
   */
  pick (except?: Target): Target | undefined {
    const routable = this.#routable
    if (except === undefined) return this.#balancer.pick(routable)
    // Ask the balancer again rather than hand it a new array, which would make it rebuild what
    // it caches per list; only a balancer that keeps returning `except` gets the shorter list.
    for (let attempt = 0; attempt < REPICK_ATTEMPTS; attempt++) {
      const target = this.#balancer.pick(routable)
      if (target !== except) return target
    }
    const others = routable.filter((target) => target !== except)
    return others.length === 0 ? undefined : this.#balancer.pick(others)
  }

  /**
   * Adds a target at run time; it takes new clients at once. Throws FST_STICKY_OPTION_INVALID
   * for bad options and FST_STICKY_TARGET_DUPLICATE for an id the group already has.
   */
  register (options: TargetOptions): TargetRef {
    if (this.#closing !== null) throw new FST_STICKY_TARGET_GROUP_CLOSED(this.name)
    const resolved = resolveTarget(options, `targetGroups.get('${this.name}').register(target)`)
    if (this.#targets.has(resolved.id)) throw new FST_STICKY_TARGET_DUPLICATE(this.name, resolved.id)
    const target = new Target(resolved, this.#settings, this.#newHealth())
    this.#add(target)
    this.#deregistered.delete(target.id)
    this.#update()
    return target.ref
  }

  /**
   * Takes a target out at once: no new request goes to it, and clients pinned to it are
   * reassigned with a new cookie. Resolves when its in-flight requests have finished and its
   * pool is closed; false when the group had no target with this id.
   */
  async deregister (id: string): Promise<boolean> {
    const target = this.#targets.get(id)
    if (target === undefined) return false
    this.#targets.delete(id)
    this.#checker?.unwatch(target)
    this.#deregistered.add(id)
    if (this.#deregistered.size > REMEMBERED_DEREGISTRATIONS) {
      this.#deregistered.delete(this.#deregistered.values().next().value as string)
    }
    this.#setHealth(target, afterDeregistration(target.health, this.#settings.now()))
    this.#update()
    await target.close()
    this.#setHealth(target, afterDraining(target.health, this.#settings.now()))
    return true
  }

  /** Every registered target with its state, ALB's reason code and requests in flight; and whether the group is degraded. */
  describe (): TargetGroupDescription {
    const targets: TargetDescription[] = []
    for (const target of this.#targets.values()) {
      const { state, reason, sinceMs } = target.health
      targets.push({ id: target.id, origin: target.origin, weight: target.weight, state, reason, sinceMs, routable: target.routable, inFlight: target.outstanding })
    }
    return { name: this.name, algorithm: this.algorithm, degraded: this.#degraded, failOpen: this.#failOpen, targets }
  }

  /** Closes every target's pool (the plugin calls this when the app closes). */
  close (): Promise<void> {
    this.#checker?.close()
    this.#closing ??= Promise.all([...this.#targets.values()].map((target) => target.close())).then(() => {})
    return this.#closing
  }

  /**
   * Health checks scheduled or running (0 once the group is closed and they ended).
   * @internal
   */
  get pendingChecks (): number {
    return this.#checker?.pending ?? 0
  }

  #add (target: Target): void {
    this.#targets.set(target.id, target)
    this.#publish(target, null)
    this.#checker?.watch(target)
  }

  #setHealth (target: Target, health: TargetHealth): void {
    const before = target.health
    target.setHealth(health)
    if (health.state !== before.state) this.#publish(target, before)
  }

  #publish (target: Target, before: TargetHealth | null): void {
    if (!healthChannel.hasSubscribers) return
    const { state, reason, sinceMs } = target.health
    const change: TargetHealthChange = { targetGroup: this.name, target: target.ref, from: before?.state ?? null, to: state, reason, atMs: sinceMs }
    healthChannel.publish(change)
  }

  #newHealth () {
    const initial: InitialState = this.healthCheck?.initialState ?? 'healthy'
    return registeredHealth(initial, this.#settings.now())
  }

  #recordCheck (target: Target, result: CheckResult): void {
    const check = this.healthCheck as ResolvedHealthCheck
    const before = target.health
    const after = afterCheck(before, result, check, this.#settings.now())
    this.#setHealth(target, after)
    // While degraded, every check may end the hold: look again even without a state change.
    if (after.state !== before.state || this.#degraded) this.#update()
  }

  /**
   * True while fewer targets than `minimumHealthyTargets` are healthy and the group routes to
   * every registered target (or, with `failOpen: false`, to none).
   */
  get degraded (): boolean {
    return this.#degraded
  }

  #minimumOf (registered: number): number {
    const minimum = this.#minimumHealthy
    // A count above the registered targets would keep the group degraded for good: cap it.
    return 'count' in minimum ? Math.min(minimum.count, registered) : Math.ceil((minimum.percent / 100) * registered)
  }

  #update (): void {
    const registered = [...this.#targets.values()]
    const healthy = registered.filter((target) => isRoutable(target.health))
    const enough = registered.length > 0 && healthy.length >= Math.max(1, this.#minimumOf(registered.length))
    if (!enough) {
      this.#degraded = registered.length > 0
      this.#enoughSinceMs = -1
    } else if (this.#degraded) {
      // Hysteresis: after a relapse, leave only once the minimum has held for a check interval,
      // so a flapping target does not toggle the whole group in and out of fail-open.
      const now = this.#settings.now()
      if (this.#enoughSinceMs < 0) this.#enoughSinceMs = now
      const holdMs = this.#everEnough ? (this.healthCheck?.intervalMs ?? 0) : 0
      if (now - this.#enoughSinceMs >= holdMs) this.#degraded = false
    }
    if (!this.#degraded && enough) this.#everEnough = true
    // ALB fails open: below the minimum, every registered target takes traffic.
    const routable = !this.#degraded ? healthy : this.#failOpen ? registered : []
    for (const target of registered) target.routable = routable.includes(target)
    this.#routable = Object.freeze(routable)
    this.#refs = Object.freeze(registered.map((target) => target.ref))
  }
}
