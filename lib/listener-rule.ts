import { FST_STICKY_TARGET_GROUP_UNKNOWN } from './errors.js'
import { GroupForward, type ForwardContext } from './group-forward.js'
import type { Listener } from './listener.js'
import { resolveStickiness } from './options.js'
import { invalid } from './validate.js'
import type { StickyRouteConfig } from './types.js'

/** What resolving routes needs: the forwards' context, the listeners, and the cookie prefix. */
export interface RuleContext extends ForwardContext {
  readonly listeners: ReadonlyMap<string, Listener>
  readonly cookiePrefix: string
}

/** A route's listener rule: a forward to one target group, or a listener whose rules choose per request. */
export type RouteBinding = GroupForward | Listener

/**
 * Resolves a route's `config` into its listener rule, once when the route is added; null when
 * the route is not bound. `route` names it in errors (`GET /cart`).
 */
export function resolveListenerRule (config: StickyRouteConfig | undefined, route: string, context: RuleContext): RouteBinding | null {
  const idempotent = config?.idempotent
  if (idempotent !== undefined && typeof idempotent !== 'boolean' && (config?.targetGroup !== undefined || config?.listener !== undefined)) {
    invalid(`route ${route}: config.idempotent`, 'a boolean', idempotent)
  }
  const websocket = config?.websocket
  if (websocket !== undefined && typeof websocket !== 'boolean' && (config?.targetGroup !== undefined || config?.listener !== undefined)) {
    invalid(`route ${route}: config.websocket`, 'a boolean', websocket)
  }
  const listenerName = config?.listener
  if (listenerName !== undefined) {
    if (config?.targetGroup !== undefined || config?.stickiness !== undefined) {
      invalid(`route ${route}: config.listener`, 'given without config.targetGroup and config.stickiness (the listener\'s rules choose both)', listenerName)
    }
    const listener = typeof listenerName === 'string' ? context.listeners.get(listenerName) : undefined
    if (listener === undefined) invalid(`route ${route}: config.listener`, `the name of a listener (${[...context.listeners.keys()].join(', ')})`, listenerName)
    return listener
  }
  const name = config?.targetGroup
  if (name === undefined) return null
  const group = typeof name === 'string' ? context.groups.get(name) : undefined
  if (group === undefined) throw new FST_STICKY_TARGET_GROUP_UNKNOWN(route, String(name))
  const path = `route ${route}: config.stickiness`
  const stickiness = resolveStickiness(config?.stickiness, group.stickiness, path, context.cookiePrefix)
  if (stickiness !== null && group.algorithm === 'weighted_random') {
    invalid(path, `false: target group '${group.name}' uses weighted_random, which ALB does not combine with stickiness`, config?.stickiness)
  }
  return new GroupForward(group, stickiness, context)
}
