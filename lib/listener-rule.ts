import { COOKIE_PURPOSE_LB, type CookieCodec } from './cookie-codec.js'
import { FST_STICKY_TARGET_GROUP_UNKNOWN } from './errors.js'
import { invalid, resolveStickiness, type ResolvedStickiness } from './options.js'
import { decideAffinity } from './stickiness/affinity.js'
import { LbCookieWriter, readLbCookies } from './stickiness/lb-cookie.js'
import type { TargetGroup } from './target-group.js'
import type { AffinityDecision, StickyRouteConfig } from './types.js'

/** What every listener rule shares: built once per plugin instance. */
export interface RuleContext {
  readonly groups: ReadonlyMap<string, TargetGroup>
  readonly codec: CookieCodec
  readonly writer: LbCookieWriter
  readonly now: () => number
}

/**
 * A route's binding to a target group, resolved once when the route is added: the group, the
 * route's stickiness (the group's, or the route's override), and how to decide and re-pin.
 */
export class ListenerRule {
  readonly group: TargetGroup
  readonly stickiness: ResolvedStickiness | null
  readonly #context: RuleContext
  /** Set-Cookie lines sealed this second, by target id: a sealed value depends on nothing else. */
  readonly #sealed = new Map<string, readonly [string, string]>()
  #sealedSecond = -1

  constructor (group: TargetGroup, stickiness: ResolvedStickiness | null, context: RuleContext) {
    this.group = group
    this.stickiness = stickiness
    this.#context = context
  }

  /** The plugin's clock, in milliseconds: read once per request and handed to `decide` and `setCookies`. */
  now (): number {
    return this.#context.now()
  }

  /** The affinity of a request carrying this Cookie header. */
  decide (cookieHeader: string | undefined, nowMs = this.#context.now()): AffinityDecision {
    return decideAffinity({
      group: this.group,
      stickiness: this.stickiness,
      cookies: this.stickiness === null ? [] : readLbCookies(cookieHeader),
      codec: this.#context.codec,
      nowSeconds: Math.floor(nowMs / 1000)
    })
  }

  /**
   * Fresh `AWSALB` + `AWSALBCORS` lines pinning the client to the target `targetId`, with the window
   * starting now (ALB resets it on every request); null when the route is not sticky. A new array
   * each call (Fastify appends to the one it is given).
   */
  setCookies (targetId: string, nowMs = this.#context.now()): [string, string] | null {
    const stickiness = this.stickiness
    if (stickiness === null) return null
    const context = this.#context
    const nowSeconds = Math.floor(nowMs / 1000)
    // The value holds group, target, key and whole seconds only: every client pinned to this
    // target in this second gets the same one, sealed once (a fresh nonce each second).
    if (nowSeconds !== this.#sealedSecond) {
      this.#sealedSecond = nowSeconds
      this.#sealed.clear()
    }
    let lines = this.#sealed.get(targetId)
    if (lines === undefined) {
      const value = context.codec.seal(COOKIE_PURPOSE_LB, {
        group: this.group.name,
        targetId,
        stickyUntilSeconds: nowSeconds + stickiness.durationSeconds,
        issuedAtSeconds: nowSeconds
      })
      lines = context.writer.setCookies(value, nowMs)
      this.#sealed.set(targetId, lines)
    }
    return [lines[0], lines[1]]
  }
}

/** Resolves a route's `config` into its listener rule; null when the route is not bound. */
export function resolveListenerRule (config: StickyRouteConfig | undefined, route: string, context: RuleContext): ListenerRule | null {
  const name = config?.targetGroup
  if (name === undefined) return null
  const group = typeof name === 'string' ? context.groups.get(name) : undefined
  if (group === undefined) throw new FST_STICKY_TARGET_GROUP_UNKNOWN(route, String(name))
  const path = `route ${route}: config.stickiness`
  const stickiness = resolveStickiness(config?.stickiness, group.stickiness, path)
  if (stickiness !== null && group.algorithm === 'weighted_random') {
    invalid(path, `false: target group '${group.name}' uses weighted_random, which ALB does not combine with stickiness`, config?.stickiness)
  }
  return new ListenerRule(group, stickiness, context)
}
