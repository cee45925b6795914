import { createHash } from 'node:crypto'
import type { FastifyReply } from 'fastify'
import { COOKIE_PURPOSE_TG } from './cookie-codec.js'
import { GroupForward, writesCorsTwins, type ForwardContext } from './group-forward.js'
import type { ResolvedForward, ResolvedListener } from './options.js'
import type { RuleConditions, RuleRequest } from './rules/conditions.js'
import { readLbCookies, type LbCookieWriter } from './stickiness/lb-cookie.js'
import type { GroupReassignReason, RuleMatch } from './types.js'

/** A listener's share of the plugin's context: its forwards', plus the `AWSALBTG` writer. */
export interface ListenerContext extends ForwardContext {
  readonly tgWriter: LbCookieWriter
}

/** How a listener routed one request: the forward to decide on, and what to say in `request.affinity.rule`. */
export interface Routed {
  readonly forward: GroupForward
  readonly match: RuleMatch
}

/**
 * ALB's weighted forward: up to five target groups. A client whose `AWSALBTG` cookie (group
 * stickiness) names one of them, within its window, stays there, whatever its weight now (a
 * cookie of another forward: only in a group of weight above 0 here); any
 * other client goes to a group by smooth weighted round robin (nginx's), so the split is exact
 * over every run of `sum(weights)` new clients.
 */
export class WeightedForward {
  readonly forwards: readonly GroupForward[]
  readonly #weights: readonly number[]
  readonly #total: number
  readonly #current: number[]
  readonly #byName: ReadonlyMap<string, number>
  readonly #stickinessSeconds: number | null
  /** Sealed into its `AWSALBTG` values: which forward placed the client. */
  readonly #id: string
  readonly #context: ListenerContext
  /** Per group: the `AWSALBTG` value sealed this second. */
  readonly #sealed: Array<string | undefined>
  #sealedSecond = -1
  /** `RuleMatch` objects by outcome, made once. */
  readonly #matches: { hit: RuleMatch, new: RuleMatch, reassigned: Record<GroupReassignReason, RuleMatch> }

  constructor (resolved: ResolvedForward, context: ListenerContext, listener: string, priority: number | 'default') {
    this.#context = context
    this.forwards = resolved.targetGroups.map(({ name }) => forwardTo(name, context))
    this.#weights = resolved.targetGroups.map(({ weight }) => weight)
    this.#total = this.#weights.reduce((sum, weight) => sum + weight, 0)
    this.#current = this.#weights.map(() => 0)
    this.#byName = new Map(resolved.targetGroups.map(({ name }, i) => [name, i]))
    this.#stickinessSeconds = resolved.stickinessSeconds
    // Short and fixed-size, whatever the listener's name: it rides in every AWSALBTG value.
    this.#id = createHash('sha256').update(`${listener}\0${priority}`).digest('base64url').slice(0, 12)
    this.#sealed = this.forwards.map(() => undefined)
    const match = (groupOutcome: RuleMatch['groupOutcome'], groupReason?: GroupReassignReason): RuleMatch =>
      Object.freeze(groupReason === undefined ? { listener, priority, groupOutcome } : { listener, priority, groupOutcome, groupReason })
    this.#matches = {
      hit: match('hit'),
      new: match('new'),
      reassigned: { undecodable: match('reassigned', 'undecodable'), expired: match('reassigned', 'expired'), 'issued-in-future': match('reassigned', 'issued-in-future'), 'group-mismatch': match('reassigned', 'group-mismatch') }
    }
  }

  /** Chooses the group for a request and, with group stickiness, writes `AWSALBTG` (`secure`: with `Secure`) and, with `cors`, `AWSALBTGCORS` for it. */
  route (cookieHeader: string | undefined, reply: FastifyReply, nowMs: number, secure = false, cors = true): Routed {
    const nowSeconds = Math.floor(nowMs / 1000)
    const seconds = this.#stickinessSeconds
    let reason: GroupReassignReason | null = null
    let index = -1
    if (seconds !== null) {
      for (const value of readLbCookies(cookieHeader, this.#context.tgWriter.name)) {
        const opened = this.#context.codec.open(COOKIE_PURPOSE_TG, value)
        const at = opened === null ? undefined : this.#byName.get(opened.payload.group)
        if (opened === null) reason ??= 'undecodable'
        // Another forward's cookie keeps a client in a group this one shares, so a canary holds
        // across rules; but never in a group this forward gives weight 0.
        else if (at === undefined || (this.#weights[at] === 0 && opened.payload.targetId !== this.#id)) reason ??= 'group-mismatch'
        else if (opened.payload.issuedAtSeconds > nowSeconds + this.#context.clockSkewSeconds) reason ??= 'issued-in-future'
        else if (opened.payload.issuedAtSeconds + seconds < nowSeconds) reason ??= 'expired'
        else {
          index = at
          break
        }
      }
    }
    const hit = index !== -1
    if (!hit) index = this.#next()
    if (seconds !== null) {
      const lines = this.#groupCookies(index, seconds, nowMs, secure)
      reply.header('set-cookie', cors ? lines : [lines[0]])
    }
    const match = hit ? this.#matches.hit : reason === null ? this.#matches.new : this.#matches.reassigned[reason]
    return { forward: this.forwards[index], match }
  }

  /** Smooth weighted round robin: raise each by its weight, take the highest, lower it by the total. */
  #next (): number {
    const current = this.#current
    let best = 0
    for (let i = 0; i < current.length; i++) {
      current[i] += this.#weights[i]
      if (current[i] > current[best]) best = i
    }
    current[best] -= this.#total
    return best
  }

  #groupCookies (index: number, seconds: number, nowMs: number, secure: boolean): string[] {
    const nowSeconds = Math.floor(nowMs / 1000)
    if (nowSeconds !== this.#sealedSecond) {
      this.#sealedSecond = nowSeconds
      this.#sealed.fill(undefined)
    }
    let value = this.#sealed[index]
    if (value === undefined) {
      value = this.#context.codec.seal(COOKIE_PURPOSE_TG, {
        group: this.forwards[index].group.name,
        targetId: this.#id,
        stickyUntilSeconds: nowSeconds + seconds,
        issuedAtSeconds: nowSeconds
      })
      this.#sealed[index] = value
    }
    return this.#context.tgWriter.setCookies(value, nowMs, secure)
  }
}

interface CompiledRule {
  readonly conditions: RuleConditions | null
  /** A one-group forward and its fixed match, or a weighted forward. */
  readonly single: Routed | null
  readonly weighted: WeightedForward | null
}

/**
 * A named set of listener rules: the first rule by priority whose conditions all match routes
 * the request; none matching, the default does. Built once at registration.
 */
export class Listener {
  readonly name: string
  readonly #rules: readonly CompiledRule[]
  readonly #context: ListenerContext

  constructor (resolved: ResolvedListener, context: ListenerContext) {
    this.name = resolved.name
    this.#context = context
    const compile = (forward: ResolvedForward, conditions: RuleConditions | null, priority: number | 'default'): CompiledRule => {
      if (forward.targetGroups.length === 1) {
        const match: RuleMatch = Object.freeze({ listener: resolved.name, priority, groupOutcome: 'single' })
        return { conditions, single: { forward: forwardTo(forward.targetGroups[0].name, context), match }, weighted: null }
      }
      return { conditions, single: null, weighted: new WeightedForward(forward, context, resolved.name, priority) }
    }
    this.#rules = [
      ...resolved.rules.map((rule) => compile(rule.forward, rule.conditions, rule.priority)),
      compile(resolved.default, null, 'default')
    ]
  }

  /** Every forward a request can reach through this listener. */
  get forwards (): GroupForward[] {
    return this.#rules.flatMap((rule) => rule.single !== null ? [rule.single.forward] : [...(rule.weighted as WeightedForward).forwards])
  }

  now (): number {
    return this.#context.now()
  }

  #secureFor (request: { readonly protocol: string }): boolean {
    const secure = this.#context.secureCookies
    return secure === 'auto' ? request.protocol === 'https' : secure
  }

  /** The forward of the first matching rule (or the default) for this request (its protocol is read for `cookieSecure: 'auto'` and `corsCookies: 'auto'`). */
  route (request: RuleRequest & { readonly protocol: string }, reply: FastifyReply, nowMs: number): Routed {
    const rules = this.#rules
    for (let i = 0; i < rules.length; i++) {
      const rule = rules[i]
      if (rule.conditions !== null && !rule.conditions.matches(request)) continue
      if (rule.single !== null) return rule.single
      return (rule.weighted as WeightedForward).route(request.headers.cookie, reply, nowMs, this.#secureFor(request), writesCorsTwins(this.#context, request))
    }
    // The default rule has no conditions: never reached.
    throw new Error('unreachable')
  }
}

/** A forward to the group `name` with the group's own stickiness. */
function forwardTo (name: string, context: ForwardContext): GroupForward {
  const group = context.groups.get(name)
  if (group === undefined) throw new Error(`unknown target group ${name}`)
  return new GroupForward(group, group.stickiness, context)
}
