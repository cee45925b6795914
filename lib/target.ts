import { Pool } from 'undici'
import type { TargetHealth } from './health/target-state.js'
import type { ResolvedTarget } from './options.js'
import { BoundSessions } from './stickiness/bound-sessions.js'
import type { ReassignReason, TargetRef } from './types.js'

/** Larger response headers are a malformed response (502), as at ALB. */
export const MAX_RESPONSE_HEADER_BYTES = 32_768

/** How the plugin's undici pools are built; the same for every target. */
export interface PoolSettings {
  readonly connections: number
  readonly connectTimeoutMs: number
  readonly idleTimeoutMs: number
}

/**
 * One upstream origin of a target group, with the undici Pool the plugin owns for it. Only
 * `id` and `origin` show when a target is logged or serialized: the pool stays private.
 */
export class Target implements TargetRef {
  readonly id: string
  readonly origin: string
  readonly weight: number
  /** What handlers see of this target (`request.affinity.target`): its id and origin, frozen. */
  readonly ref: TargetRef
  readonly #pool: Pool
  #outstanding = 0
  #health: TargetHealth
  /** Consecutive failed requests of live traffic (passive checks). */
  #errors = 0
  /**
   * True while the group gives it new sessions: healthy and not ejected, or the group fails
   * open. Set by the group on every change, read on every request.
   * @internal
   */
  routable = true
  /**
   * Why a client pinned to it moves to another target now; null while it keeps its pinned
   * clients (routable, or draining / ejected with sessions kept). Set by the group.
   * @internal
   */
  unpinReason: ReassignReason | null = null
  /** Estimate of the sticky sessions pinned to it. @internal */
  readonly sessions = new BoundSessions()
  /** Ejected by passive checks until this time; 0 when not. @internal */
  ejectedUntilMs = 0
  /** Registered with the group's first targets: no slow start until it has once been unhealthy (ALB). @internal */
  slowStartExempt = false
  /** In slow start from `slowStartFromMs` until this time; 0 when not. @internal */
  slowStartEndsMs = 0
  slowStartFromMs = 0
  /** While draining, when the deregistration delay ends; 0 otherwise. @internal */
  drainDeadlineMs = 0
  /** Passive checks: consecutive failures that call `onErrors` (Infinity when off). @internal */
  errorLimit = Infinity
  /** @internal */
  onErrors: ((target: Target) => void) | null = null
  /** Called when a request ends while the target drains. @internal */
  onSettled: (() => void) | null = null

  constructor (resolved: ResolvedTarget, settings: PoolSettings, health: TargetHealth) {
    this.#health = health
    this.id = resolved.id
    this.origin = resolved.origin
    this.weight = resolved.weight
    this.ref = Object.freeze({ id: resolved.id, origin: resolved.origin })
    this.#pool = new Pool(resolved.origin, {
      connections: settings.connections,
      pipelining: 1,
      connectTimeout: settings.connectTimeoutMs,
      // ALB's idle timeout: no response byte for this long, before or between body chunks → 504 / abort.
      headersTimeout: settings.idleTimeoutMs,
      bodyTimeout: settings.idleTimeoutMs,
      // ALB answers 502 past 32 KB of response headers.
      maxHeaderSize: MAX_RESPONSE_HEADER_BYTES
    })
  }

  /** The target's health: state, ALB's reason code, consecutive check results. */
  get health (): TargetHealth {
    return this.#health
  }

  /** @internal */
  setHealth (health: TargetHealth): void {
    this.#health = health
  }

  /** The target's own undici Pool. */
  get pool (): Pool {
    return this.#pool
  }

  /** Requests sent to this target whose response has not ended yet. */
  get outstanding (): number {
    return this.#outstanding
  }

  /** Counts a request as sent; call `settle()` once when its response ends or fails. */
  begin (): void {
    this.#outstanding++
  }

  settle (): void {
    this.#outstanding--
    if (this.onSettled !== null) this.onSettled()
  }

  /** A live request's outcome for passive checks: a 5xx response or a failed connection counts against it. */
  recordOutcome (failed: boolean): void {
    if (!failed) {
      this.#errors = 0
    } else if (++this.#errors >= this.errorLimit) {
      this.#errors = 0
      this.onErrors?.(this)
    }
  }

  /** Lets in-flight requests finish, then closes every connection. */
  async close (): Promise<void> {
    if (!this.#pool.closed && !this.#pool.destroyed) await this.#pool.close()
  }

  /** Ends every request still running with `err` and closes every connection. */
  async destroy (err: Error): Promise<void> {
    if (!this.#pool.destroyed) await this.#pool.destroy(err)
  }

  toJSON (): TargetRef {
    return this.ref
  }
}
