import diagnosticsChannel from 'node:diagnostics_channel'
import { createBalancer, type Balancer } from './balancer/balancer.js'
import { boundedCapacity } from './balancer/bounded-load.js'
import { FST_STICKY_TARGET_DEREGISTERED, FST_STICKY_TARGET_DRAINING, FST_STICKY_TARGET_DUPLICATE, FST_STICKY_TARGET_GROUP_CLOSED } from './errors.js'
import { MaglevTable, maglevSize } from './hashing/maglev.js'
import { HealthChecker } from './health/health-checker.js'
import { afterCheck, afterDeregistration, afterDraining, isRoutable, registeredHealth, type CheckResult, type InitialState, type TargetHealth } from './health/target-state.js'
import { MAX_TARGET_WEIGHT, resolveTarget, type MinimumHealthy, type ResolvedHealthCheck, type ResolvedOutlierDetection, type ResolvedStickiness, type ResolvedTargetGroup, type ResolvedWebSocket } from './options.js'
import { Target, type PoolSettings } from './target.js'
import { requireHttpsTarget } from './target-tls.js'
import { optionalInteger } from './validate.js'
import type { AffinityDecision, Algorithm, ReassignReason, TargetDescription, TargetGroupDescription, TargetHealthChange, TargetOptions, TargetRef } from './types.js'

/**
 * What the plugin's metrics (lib/metrics.ts) are told by a group and the requests it serves.
 * @internal
 */
export interface GroupMetrics {
  /** An affinity decision: each request's, and a redispatch's new one. */
  decided (decision: AffinityDecision): void
  /** An error the gateway answered with (or cut a response for), outside Fastify's onError hooks. */
  gatewayError (group: string, code: string): void
  /** An active health check's result and how long it took. */
  checked (group: string, targetId: string, result: CheckResult, durationMs: number): void
  /** A deregistered target finished draining and left the group. */
  targetRemoved (group: string, targetId: string): void
  /** Responses counted so far for a target, by status class (index 1 to 5 for 1xx to 5xx); undefined before its first. */
  responseCounts (group: string, targetId: string): readonly number[] | undefined
}

/** What a group needs besides its options: how to build pools, and the plugin's clock. */
export interface GroupSettings extends PoolSettings {
  readonly now: () => number
  /** Where target state changes are logged at info (ids and states, never an address); absent: not logged. */
  readonly log?: StateChangeLog
}

/** Where every target state change is published (see `TargetHealthChange`). */
export const TARGET_HEALTH_CHANNEL = 'fastify-sticky:target-health'
const healthChannel = diagnosticsChannel.channel(TARGET_HEALTH_CHANNEL)

/** Where a group logs its targets' state changes (Fastify's logger fits). */
export interface StateChangeLog {
  info (fields: object, message: string): void
}

/** The message of each state change's log line; the fields say the rest. */
const STATE_CHANGE_MESSAGES = {
  registered: 'fastify-sticky: target registered',
  state: 'fastify-sticky: target state changed',
  ejected: 'fastify-sticky: target ejected',
  returned: 'fastify-sticky: target returned from ejection',
  'out-of-service': 'fastify-sticky: target taken out of service',
  'in-service': 'fastify-sticky: target put back in service'
} as const

/** How many deregistered target ids a group remembers, to tell `target-deregistered` from `target-unknown`. */
const REMEMBERED_DEREGISTRATIONS = 1024
/** How often `pick` asks the balancer for a target it may take before it takes what comes. */
const PICK_ATTEMPTS = 8
/** How often a draining target that keeps sessions looks whether its last session has ended. */
const DRAIN_SWEEP_MS = 1000
/** Entries of the consistent-hash table: a prime (Maglev's), the same for every group size up to 655 targets. */
const MAGLEV_SIZE = 65_537
/** How often the targets' pools are looked at for a stall. */
const POOL_WATCH_MS = 1000

/** What the consistent hash chose for a key: the target (undefined when none is routable), and why its first choice did not take it (null when it did). */
export interface HashPick {
  readonly target: Target | undefined
  readonly reason: ReassignReason | null
  /** The key's first choice, when `reason` says why it did not take the key. */
  readonly first?: Target
}

const NO_HASH_PICK: HashPick = Object.freeze({ target: undefined, reason: null })

/** A target being drained: whether it keeps its sessions, and how its draining ends. */
interface Drain {
  /** Keeps its pinned clients; cleared when the app closes (no client can come any more). */
  keep: boolean
  readonly done: Promise<boolean>
  /** Ends the draining when nothing is left on the target. */
  readonly check: () => void
  /** Ends the draining now; `deadline` when the delay ran out (requests still running get 502). */
  readonly finish: (deadline: boolean) => void
}

/** A target's passive-check history: how many ejections in a row, the last one's length, when it returned. */
interface Ejections {
  count: number
  lastMs: number
  returnedAtMs: number
  timer: NodeJS.Timeout | null
}

/**
 * A named set of targets sharing algorithm and stickiness. Targets can be registered and
 * deregistered while the gateway serves: a deregistered target drains (no new sessions, its
 * in-flight requests finish, and by default its pinned clients stay) until the deregistration
 * delay ends or nothing is left on it, then its pool closes.
 */
export class TargetGroup {
  readonly name: string
  readonly algorithm: Algorithm
  /** The group's stickiness; routes may override it. Null when not sticky. */
  readonly stickiness: ResolvedStickiness | null
  /** The group's active health checks; null when it has none. */
  readonly healthCheck: ResolvedHealthCheck | null
  /** Passive checks; null when off. */
  readonly outlierDetection: ResolvedOutlierDetection | null
  readonly deregistrationDelayMs: number
  readonly drainingKeepsSessions: boolean
  readonly slowStartMs: number
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
  /** 0 when off. */
  readonly boundedLoadFactor: number
  /** Limits of the WebSockets tunnelled to its targets. */
  readonly websocket: ResolvedWebSocket
  /** Requests in flight over every target of the group (each target adds to it). */
  readonly #load = { inFlight: 0 }
  /** The routable targets' weights, summed. */
  #routableWeight = 0
  /** Where the next bounded-load scan starts, so overflow spreads. */
  #scanFrom = 0
  /** The consistent-hash table and the targets its entries name; null until a key is hashed, and again when the targets change. */
  #table: MaglevTable | null = null
  #members: readonly Target[] = []
  /** The ids and weights the table was built over. */
  #membership = ''
  /** Registered and draining targets, in registration order. */
  readonly #targets = new Map<string, Target>()
  readonly #drains = new Map<Target, Drain>()
  readonly #ejections = new Map<Target, Ejections>()
  readonly #deregistered = new Set<string>()
  /** Replaced, never mutated, on every change: balancers cache by its identity. */
  #routable: readonly Target[] = []
  #refs: readonly TargetRef[] = []
  /** Some routable target is in slow start: picks take the slow path. */
  #slowStarting = false
  #closing: Promise<void> | null = null
  readonly #watchdog: NodeJS.Timeout
  /**
   * The plugin's metrics; null when they are off.
   * @internal
   */
  metrics: GroupMetrics | null = null

  constructor (resolved: ResolvedTargetGroup, settings: GroupSettings) {
    this.name = resolved.name
    this.algorithm = resolved.algorithm
    this.stickiness = resolved.stickiness
    this.healthCheck = resolved.healthCheck
    this.outlierDetection = resolved.outlierDetection
    this.deregistrationDelayMs = resolved.deregistrationDelayMs
    this.drainingKeepsSessions = resolved.drainingKeepsSessions
    this.slowStartMs = resolved.slowStartMs
    this.boundedLoadFactor = resolved.boundedLoadFactor
    this.websocket = resolved.websocket
    this.#minimumHealthy = resolved.minimumHealthyTargets
    this.#failOpen = resolved.failOpen
    // Every target's pool, and its health checks, speak the group's TLS.
    this.#settings = resolved.tls === null ? settings : { ...settings, tls: resolved.tls }
    this.#balancer = createBalancer(resolved.algorithm)
    this.#checker = resolved.healthCheck === null ? null : new HealthChecker(resolved.healthCheck, (target, result, durationMs) => this.#recordCheck(target, result, durationMs), resolved.tls)
    // Targets registered together into an empty group do not slow-start (ALB).
    for (const options of resolved.targets) {
      const target = new Target(options, this.#settings, this.#newHealth())
      target.slowStartExempt = true
      this.#add(target, true)
    }
    this.#update()
    this.#watchdog = setInterval(() => this.#watchPools(), POOL_WATCH_MS)
    this.#watchdog.unref()
  }

  /** Once a second: a target pool that stopped making progress is replaced (see Target.watchStall). */
  #watchPools (): void {
    for (const target of this.#targets.values()) target.watchStall()
  }

  /** The registered targets (draining ones not included), in registration order: their ids and origins. */
  get targets (): readonly TargetRef[] {
    return this.#refs
  }

  /**
   * The registered or draining target with this id, if any, with its pool.
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
   * A target in slow start is taken with a probability growing linearly over its window, as
   * if its weight grew from 0 to its own.
   * @internal
   */
  pick (nowMs: number, except?: Target): Target | undefined {
    const target = this.#pickOnce(nowMs, except)
    // Bounded load: a target at its capacity takes no new session; the next one below it does.
    if (target === undefined || this.boundedLoadFactor === 0 || !this.#overloaded(target)) return target
    return this.#leastLoaded(except) ?? target
  }

  #pickOnce (nowMs: number, except: Target | undefined): Target | undefined {
    const routable = this.#routable
    if (this.#slowStarting) return this.#pickSlowly(nowMs, except)
    if (except === undefined) return this.#balancer.pick(routable, nowMs)
    // Ask the balancer again rather than hand it a new array, which would make it rebuild what
    // it caches per list; only a balancer that keeps returning `except` gets the shorter list.
    for (let attempt = 0; attempt < PICK_ATTEMPTS; attempt++) {
      const target = this.#balancer.pick(routable, nowMs)
      if (target !== except) return target
    }
    const others = routable.filter((target) => target !== except)
    return others.length === 0 ? undefined : this.#balancer.pick(others, nowMs)
  }

  /** True when `target` holds its bounded-load capacity of requests in flight (see `boundedCapacity`). */
  #overloaded (target: Target): boolean {
    return target.outstanding >= boundedCapacity(this.boundedLoadFactor, this.#load.inFlight, target.weight, this.#routableWeight)
  }

  /** A routable target below its capacity, looked for from a turning start; else the least loaded by weight. */
  #leastLoaded (except: Target | undefined): Target | undefined {
    const routable = this.#routable
    const length = routable.length
    let least: Target | undefined
    let leastLoad = Infinity
    for (let turn = 0; turn < length; turn++) {
      const target = routable[(this.#scanFrom + turn) % length]
      if (target === except) continue
      if (!this.#overloaded(target)) {
        this.#scanFrom = (this.#scanFrom + turn + 1) % length
        return target
      }
      const load = target.outstanding / target.weight
      if (load < leastLoad) {
        leastLoad = load
        least = target
      }
    }
    return least
  }

  /**
   * The target for a key's hash, by the group's consistent hash (Maglev, over its registered and
   * draining targets): the key's first choice when it can take the key, else the next one in the
   * key's probe order that is routable (and below capacity with bounded load), with why the first
   * choice could not. `keep`: the key is the client's only affinity, so a first choice that keeps
   * its clients (draining, or ejected, with sessions kept) keeps the key; otherwise (a new
   * assignment) only a routable target takes it. A target that returns gets its keys back.
   * @internal
   */
  pickByHash (hash: number, keep: boolean): HashPick {
    if (this.#routable.length === 0) return NO_HASH_PICK
    const table = this.#table ?? this.#buildTable()
    const members = this.#members
    const bounded = this.boundedLoadFactor !== 0
    const first = members[table.lookup(hash, 0)]
    const takes = keep ? first.unpinReason === null : first.routable
    if (takes && !(bounded && first.routable && this.#overloaded(first))) return { target: first, reason: null }
    const reason: ReassignReason = first.unpinReason ?? (first.routable ? 'target-overloaded' : 'target-deregistered')
    for (let probe = 1; probe < table.size; probe++) {
      const target = members[table.lookup(hash, probe)]
      if (target.routable && !(bounded && this.#overloaded(target))) return { target, reason, first }
    }
    return { target: this.#leastLoaded(undefined), reason, first }
  }

  /**
   * Builds the consistent-hash table, once a route hashes keys over this group; it is kept up to
   * date on every membership change from then on.
   * @internal
   */
  prepareHashing (): void {
    if (this.#table === null) this.#buildTable()
  }

  /** Builds the consistent-hash table over the registered and draining targets: when one is added, removed or reweighted. */
  #buildTable (): MaglevTable {
    const members = [...this.#targets.values()]
    this.#members = members
    // One size for every membership (Envoy's default; at least 65 entries a target at ALB's
    // quota of 1000): a table of another size would map every key anew, and gateways that
    // share targets must agree on the table whatever their history.
    this.#table = new MaglevTable(members.map((target) => target.id), members.map((target) => target.weight), Math.max(MAGLEV_SIZE, maglevSize(members.length)))
    return this.#table
  }

  /**
   * While a target slow-starts: a random pick with each target as likely as its weight, a
   * slow-starting one's weight grown linearly from 0 over its window (the algorithm's own order
   * resumes when no target slow-starts any more).
   */
  #pickSlowly (nowMs: number, except: Target | undefined): Target | undefined {
    const routable = this.#routable
    const weights = new Array<number>(routable.length)
    let total = 0
    let ended = false
    for (let i = 0; i < routable.length; i++) {
      const target = routable[i]
      let weight = target === except ? 0 : target.weight
      if (weight > 0 && target.slowStartEndsMs !== 0) {
        if (nowMs >= target.slowStartEndsMs) {
          target.slowStartEndsMs = 0
          ended = true
        } else {
          weight *= Math.max(0, nowMs - target.slowStartFromMs) / this.slowStartMs
        }
      }
      weights[i] = weight
      total += weight
    }
    if (ended) this.#slowStarting = routable.some((target) => target.slowStartEndsMs !== 0)
    if (total === 0) {
      // Only targets at the very start of their slow start (or `except`): take one of them.
      const others = routable.filter((target) => target !== except)
      return others.length === 0 ? undefined : others[Math.floor(Math.random() * others.length)]
    }
    let point = Math.random() * total
    for (let i = 0; i < routable.length; i++) {
      point -= weights[i]
      if (point < 0 && weights[i] > 0) return routable[i]
    }
    for (let i = routable.length - 1; i >= 0; i--) if (weights[i] > 0) return routable[i]
    return undefined
  }

  /**
   * Adds a target at run time; it takes new clients once routable (at once without health
   * checks or with `initialState: 'healthy'`). Throws FST_STICKY_OPTION_INVALID for bad
   * options, FST_STICKY_TARGET_DUPLICATE for an id the group already has and
   * FST_STICKY_TARGET_DRAINING for one still draining.
   */
  register (options: TargetOptions): TargetRef {
    return this.#register(options, false)
  }

  /**
   * Registers targets found together (a DNS answer), each as `register` does; into a group with
   * no registered target they take traffic at full weight at once, as the targets given at
   * registration do (ALB). Each entry is the target's ref, or the error its registration threw.
   * @internal
   */
  registerTogether (list: readonly TargetOptions[]): Array<TargetRef | Error> {
    const exempt = this.#refs.length === 0
    return list.map((options) => {
      try {
        return this.#register(options, exempt)
      } catch (err) {
        return err as Error
      }
    })
  }

  #register (options: TargetOptions, slowStartExempt: boolean): TargetRef {
    if (this.#closing !== null) throw new FST_STICKY_TARGET_GROUP_CLOSED(this.name)
    const resolved = resolveTarget(options, `targetGroups.get('${this.name}').register(target)`)
    if (this.#settings.tls != null) requireHttpsTarget(resolved.origin, `targetGroups.get('${this.name}').register(target).url`)
    const existing = this.#targets.get(resolved.id)
    if (existing !== undefined) {
      if (this.#drains.has(existing)) throw new FST_STICKY_TARGET_DRAINING(this.name, resolved.id)
      throw new FST_STICKY_TARGET_DUPLICATE(this.name, resolved.id)
    }
    const target = new Target(resolved, this.#settings, this.#newHealth())
    target.slowStartExempt = slowStartExempt
    if (target.health.state === 'healthy') this.#startSlowly(target, target.health.sinceMs)
    this.#add(target)
    this.#deregistered.delete(target.id)
    this.#update()
    return target.ref
  }

  /**
   * Deregisters a target: it takes no new session at once and drains. Its in-flight requests
   * finish; clients pinned to it stay on it (`drainingKeepsSessions`, the default) or move at
   * their next request. Draining ends when the deregistration delay runs out (requests still
   * running then get 502) or earlier when nothing is in flight and (keeping sessions) no session
   * is bound to it any more; the target is then `unused` and its pool closed. Resolves true then;
   * false when the group has no registered or draining target with this id.
   */
  deregister (id: string): Promise<boolean> {
    const target = this.#targets.get(id)
    if (target === undefined || this.#closing !== null) return Promise.resolve(false)
    const draining = this.#drains.get(target)
    if (draining !== undefined) return draining.done
    this.#checker?.unwatch(target)
    this.#endEjection(target, false)
    this.#ejections.delete(target)
    target.onErrors = null
    target.slowStartEndsMs = 0
    this.#deregistered.add(id)
    if (this.#deregistered.size > REMEMBERED_DEREGISTRATIONS) {
      this.#deregistered.delete(this.#deregistered.values().next().value as string)
    }
    // Only a target that kept its clients until now keeps them while it drains.
    const keep = this.drainingKeepsSessions && this.deregistrationDelayMs > 0 && target.unpinReason === null
    const now = this.#settings.now()
    target.drainDeadlineMs = now + this.deregistrationDelayMs
    this.#setHealth(target, afterDeregistration(target.health, now))

    let finish!: (deadline: boolean) => void
    const done = new Promise<boolean>((resolve) => {
      finish = (deadline) => {
        if (this.#drains.get(target) !== drain) return
        this.#drains.delete(target)
        clearTimeout(deadlineTimer)
        if (sweep !== null) clearInterval(sweep)
        target.onSettled = null
        target.drainDeadlineMs = 0
        this.#targets.delete(id)
        this.#setHealth(target, afterDraining(target.health, this.#settings.now()))
        this.#update()
        this.metrics?.targetRemoved(this.name, id)
        // Requests still waiting for a connection were never sent: they go to another target.
        for (const request of target.takeQueued()) request.evict()
        const closed = deadline && target.outstanding > 0 ? target.destroy(new FST_STICKY_TARGET_DEREGISTERED()) : target.close()
        closed.then(() => resolve(true), () => resolve(true))
      }
    })
    const check = (): void => {
      if (target.outstanding > 0) return
      if (drain.keep && target.sessions.estimate(Math.floor(this.#settings.now() / 1000)) > 0) return
      finish(false)
    }
    const deadlineTimer = setTimeout(() => finish(true), this.deregistrationDelayMs)
    deadlineTimer.unref()
    const sweep = keep ? setInterval(check, DRAIN_SWEEP_MS) : null
    sweep?.unref()
    const drain: Drain = { keep, done, finish, check }
    this.#drains.set(target, drain)
    // Looked at once the request that ended has left undici's callbacks.
    target.onSettled = () => { if (target.outstanding === 0) queueMicrotask(check) }
    this.#update()
    check()
    return done
  }

  /**
   * Changes a registered target's weight (1 to 1000) for new sessions from now on; its pinned
   * clients stay. Returns false when the group has no registered target with this id (a draining
   * one takes no new session: its weight no longer matters). Throws FST_STICKY_OPTION_INVALID for
   * a weight out of range.
   */
  setWeight (id: string, weight: number): boolean {
    optionalInteger(weight, `targetGroups.get('${this.name}').setWeight(id, weight).weight`, 1, MAX_TARGET_WEIGHT, 1)
    const target = this.#targets.get(id)
    if (target === undefined || this.#drains.has(target) || this.#closing !== null) return false
    target.weight = weight
    this.#update()
    return true
  }

  /**
   * Takes a registered target out of service by hand (`false`), or puts it back (`true`), as
   * HAProxy's `drain` mode: out of service, it takes no new session and does not count towards
   * `minimumHealthyTargets` (so failing open never sends to it), but its health checks go on
   * and, with `drainingKeepsSessions` (the default), its pinned clients stay. Unlike
   * `deregister` nothing ends: the target waits until it is put back. Published on the target
   * health channel (`change: 'out-of-service'` / `'in-service'`). Returns false when the group
   * has no registered target with this id.
   */
  setInService (id: string, inService: boolean): boolean {
    const target = this.#targets.get(id)
    if (target === undefined || this.#drains.has(target) || this.#closing !== null) return false
    if (target.inService === inService) return true
    target.inService = inService
    this.#update()
    this.#publish(inService ? 'in-service' : 'out-of-service', target, target.health.state, this.#settings.now())
    return true
  }

  /** Every registered and draining target with its state, ALB's reason code, requests in flight and bound sessions; and whether the group is degraded. */
  describe (): TargetGroupDescription {
    const now = this.#settings.now()
    const nowSeconds = Math.floor(now / 1000)
    const targets: TargetDescription[] = []
    for (const target of this.#targets.values()) {
      const { state, reason, sinceMs } = target.health
      targets.push({
        id: target.id,
        origin: target.origin,
        weight: target.weight,
        state,
        reason,
        sinceMs,
        routable: target.routable,
        inService: target.inService,
        inFlight: target.outstanding,
        queued: target.waitingCount(),
        webSockets: target.tunnels.size,
        boundSessions: target.sessions.estimate(nowSeconds),
        keepsSessions: target.unpinReason === null,
        ejectedUntilMs: target.ejectedUntilMs === 0 ? null : target.ejectedUntilMs,
        slowStartEndsMs: target.slowStartEndsMs > now ? target.slowStartEndsMs : null,
        drainDeadlineMs: target.drainDeadlineMs === 0 ? null : target.drainDeadlineMs
      })
    }
    return { name: this.name, algorithm: this.algorithm, degraded: this.#degraded, failOpen: this.#failOpen, targets }
  }

  /** Stops checks and timers, ends draining, and closes every target's pool once its requests are done (the plugin calls this when the app closes). */
  close (): Promise<void> {
    if (this.#closing !== null) return this.#closing
    this.#checker?.close()
    clearInterval(this.#watchdog)
    for (const target of this.#ejections.keys()) this.#endEjection(target, false)
    // No client can come any more: draining targets wait for their requests in flight only, for
    // an idle timeout at most (or their deadline, if sooner), then those get 502: closing
    // always settles, whatever the targets do.
    const draining = [...this.#drains.values()]
    for (const target of this.#targets.values()) target.closeTunnels()
    const graceMs = this.#settings.idleTimeoutMs
    for (const drain of draining) {
      drain.keep = false
      drain.check()
      const timer = setTimeout(() => drain.finish(true), graceMs)
      timer.unref()
      void drain.done.then(() => clearTimeout(timer))
    }
    this.#closing = Promise.all([
      ...[...this.#targets.values()].map((target) => target.close()),
      ...draining.map((drain) => drain.done)
    ]).then(() => {})
    return this.#closing
  }

  /**
   * Timers and checks scheduled or running (0 once the group is closed and they ended).
   * @internal
   */
  get pendingTimers (): number {
    let ejections = 0
    for (const history of this.#ejections.values()) if (history.timer !== null) ejections++
    return (this.#checker?.pending ?? 0) + this.#drains.size + ejections
  }

  /**
   * True while fewer targets than `minimumHealthyTargets` are healthy and the group routes to
   * every registered target (or, with `failOpen: false`, to none).
   */
  get degraded (): boolean {
    return this.#degraded
  }

  #add (target: Target, spread = false): void {
    this.#targets.set(target.id, target)
    target.groupLoad = this.#load
    const detection = this.outlierDetection
    if (detection !== null) {
      target.errorLimit = detection.consecutiveErrors
      target.gatewayErrorLimit = detection.consecutiveGatewayErrors
      target.onErrors = (failing) => this.#eject(failing)
    }
    this.#publish('state', target, null, target.health.sinceMs)
    this.#checker?.watch(target, spread)
  }

  #setHealth (target: Target, health: TargetHealth): void {
    const before = target.health
    target.setHealth(health)
    if (health.state === before.state) return
    // Turning healthy starts a slow start; leaving healthy ends it (ALB).
    if (health.state === 'healthy') this.#startSlowly(target, health.sinceMs)
    else target.slowStartEndsMs = 0
    if (health.state === 'unhealthy') {
      target.slowStartExempt = false
      if (this.websocket.closeOnUnhealthy) target.closeTunnels()
    }
    this.#publish('state', target, before.state, health.sinceMs)
  }

  #publish (change: TargetHealthChange['change'], target: Target, from: TargetHealthChange['from'], atMs: number): void {
    const { state, reason } = target.health
    this.#settings.log?.info({ targetGroup: this.name, target: target.id, change, from, to: state, reason }, STATE_CHANGE_MESSAGES[from === null ? 'registered' : change])
    if (!healthChannel.hasSubscribers) return
    const message: TargetHealthChange = { change, targetGroup: this.name, target: target.ref, from, to: state, reason, atMs }
    healthChannel.publish(message)
  }

  #newHealth () {
    const initial: InitialState = this.healthCheck?.initialState ?? 'healthy'
    return registeredHealth(initial, this.#settings.now())
  }

  #recordCheck (target: Target, result: CheckResult, durationMs: number): void {
    this.metrics?.checked(this.name, target.id, result, durationMs)
    const check = this.healthCheck as ResolvedHealthCheck
    const before = target.health
    const after = afterCheck(before, result, check, this.#settings.now())
    this.#setHealth(target, after)
    // While degraded, every check may end the hold: look again even without a state change.
    if (after.state !== before.state || this.#degraded) this.#update()
  }

  /** Slow start for a target that just turned healthy, when another healthy target is not in slow start (ALB). */
  #startSlowly (target: Target, nowMs: number): void {
    if (this.slowStartMs === 0 || target.slowStartExempt) return
    for (const other of this.#targets.values()) {
      if (other !== target && !this.#drains.has(other) && other.health.state === 'healthy' && other.ejectedUntilMs === 0 &&
          (other.slowStartEndsMs === 0 || other.slowStartEndsMs <= nowMs)) {
        target.slowStartFromMs = nowMs
        target.slowStartEndsMs = nowMs + this.slowStartMs
        return
      }
    }
  }

  /** Passive checks: `target` failed `consecutiveErrors` requests in a row. */
  #eject (target: Target): void {
    const detection = this.outlierDetection as ResolvedOutlierDetection
    if (target.ejectedUntilMs !== 0 || this.#drains.has(target) || !this.#targets.has(target.id)) return
    let registered = 0
    let ejected = 0
    for (const other of this.#targets.values()) {
      if (this.#drains.has(other)) continue
      registered++
      if (other.ejectedUntilMs !== 0) ejected++
    }
    // Never more than the set share; of two targets or more, one may always go.
    const allowed = Math.max(registered > 1 ? 1 : 0, Math.floor((registered * detection.maxEjectedPercent) / 100))
    if (ejected >= allowed) return
    const now = this.#settings.now()
    let history = this.#ejections.get(target)
    if (history === undefined) {
      history = { count: 0, lastMs: 0, returnedAtMs: 0, timer: null }
      this.#ejections.set(target, history)
    }
    // A target that stayed out of trouble as long as its last ejection lasted starts over.
    if (history.count > 0 && now - history.returnedAtMs >= history.lastMs) history.count = 0
    history.count++
    const durationMs = Math.min(detection.baseEjectionMs * history.count, detection.maxEjectionMs)
    history.lastMs = durationMs
    history.timer = setTimeout(() => this.#endEjection(target, true), durationMs)
    history.timer.unref()
    target.ejectedUntilMs = now + durationMs
    if (this.websocket.closeOnUnhealthy) target.closeTunnels()
    this.#publish('ejected', target, target.health.state, now)
    this.#update()
  }

  /** Takes `target` back after its ejection (`returned`), or clears it without an event (deregistered, closing). */
  #endEjection (target: Target, returned: boolean): void {
    const history = this.#ejections.get(target)
    if (history?.timer == null) return
    clearTimeout(history.timer)
    history.timer = null
    const now = this.#settings.now()
    history.returnedAtMs = now
    target.ejectedUntilMs = 0
    if (!returned) return
    this.#publish('returned', target, target.health.state, now)
    this.#update()
  }

  #minimumOf (registered: number): number {
    const minimum = this.#minimumHealthy
    // A count above the registered targets would keep the group degraded for good: cap it.
    return 'count' in minimum ? Math.min(minimum.count, registered) : Math.ceil((minimum.percent / 100) * registered)
  }

  #update (): void {
    const registered: Target[] = []
    // Targets out of service by hand count as deregistered here: failing open never sends to them.
    const serving: Target[] = []
    for (const target of this.#targets.values()) {
      if (this.#drains.has(target)) continue
      registered.push(target)
      if (target.inService) serving.push(target)
    }
    // Ejected targets count as unhealthy here: passive checks may push a group into fail-open.
    const healthy = serving.filter((target) => isRoutable(target.health) && target.ejectedUntilMs === 0)
    const enough = serving.length > 0 && healthy.length >= Math.max(1, this.#minimumOf(serving.length))
    if (!enough) {
      this.#degraded = serving.length > 0
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
    const routable = !this.#degraded ? healthy : this.#failOpen ? serving : []
    const routableSet = new Set(routable)
    const keepEjected = this.outlierDetection?.keepSessions === true
    for (const target of registered) {
      target.routable = routableSet.has(target)
      target.unpinReason = target.routable
        ? null
        : target.ejectedUntilMs !== 0 && isRoutable(target.health)
          ? (keepEjected ? null : 'target-ejected')
          : !target.inService && isRoutable(target.health)
              ? (this.drainingKeepsSessions ? null : 'target-deregistered')
              : 'target-unhealthy'
    }
    for (const [target, drain] of this.#drains) {
      target.routable = false
      target.unpinReason = drain.keep ? null : 'target-deregistered'
    }
    this.#slowStarting = routable.some((target) => target.slowStartEndsMs !== 0)
    let weight = 0
    for (const target of routable) weight += target.weight
    this.#routableWeight = weight
    this.#routable = Object.freeze(routable)
    // The hash table follows membership only (health changes are probed past): rebuilt when a
    // target is added or removed, here, off the request path, for groups that hash keys.
    let membership = ''
    for (const target of this.#targets.values()) membership += `${target.id}*${target.weight} `
    if (membership !== this.#membership) {
      this.#membership = membership
      if (this.#table !== null) this.#buildTable()
    }
    this.#refs = Object.freeze(registered.map((target) => target.ref))
    // A target its clients leave (unhealthy, ejected, draining without its sessions) sends no
    // more requests: those still waiting for one of its connections go to another target.
    for (const target of this.#targets.values()) {
      if (target.unpinReason !== null && target.queued > 0) for (const request of target.takeQueued()) request.evict()
    }
  }
}
