import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction, onRequestHookHandler } from 'fastify'
import fp from 'fastify-plugin'
import { CookieCodec } from './cookie-codec.js'
import { resolveListenerRule, type ListenerRule, type RuleContext } from './listener-rule.js'
import { resolveOptions } from './options.js'
import { Proxy } from './proxy.js'
import { LbCookieWriter } from './stickiness/lb-cookie.js'
import { TargetGroup } from './target-group.js'
import type { FastifyStickyOptions } from './types.js'

/** Where a request keeps its route's listener rule, for `reply.forward()`. */
const kListenerRule = Symbol('fastify-sticky.listenerRule')

type RequestWithRule = FastifyRequest & { [kListenerRule]: ListenerRule | null }

async function fastifySticky (fastify: FastifyInstance, raw: FastifyStickyOptions): Promise<void> {
  const options = resolveOptions(raw)
  if (options.keysGenerated) {
    fastify.log.warn('fastify-sticky: no keys given, so cookies are sealed with a random key of this process: they will not survive a restart or be shared between gateway instances')
  }

  const poolSettings = {
    connections: options.connectionsPerTarget,
    connectTimeoutMs: options.connectTimeoutMs,
    idleTimeoutMs: options.idleTimeoutMs,
    now: options.now
  }
  const groups = new Map<string, TargetGroup>()
  for (const group of options.targetGroups) groups.set(group.name, new TargetGroup(group, poolSettings))
  const context: RuleContext = { groups, codec: new CookieCodec(options.keys), writer: new LbCookieWriter(), now: options.now }
  const proxy = new Proxy(options)

  fastify.decorate('targetGroups', groups as ReadonlyMap<string, TargetGroup>)
  fastify.decorateRequest('affinity', null)
  fastify.decorateRequest(kListenerRule, null)
  // Routes added before this plugin finished registering (a missing `await`) were not seen by
  // onRoute: bind them on their first forward, so they work, and say how to bind them earlier.
  const lateRules = new WeakMap<object, ListenerRule | null>()
  function bindLate (request: FastifyRequest, reply: FastifyReply): ListenerRule | null {
    const config = request.routeOptions.config
    let rule = lateRules.get(config)
    if (rule === undefined) {
      const route = `${request.method} ${request.routeOptions.url ?? ''}`
      rule = resolveListenerRule(config, route, context)
      lateRules.set(config, rule)
      if (rule !== null) {
        request.log.warn(`fastify-sticky: route ${route} was added before the plugin finished registering, so request.affinity is only set when reply.forward() runs; await app.register(fastifySticky, …) before adding routes`)
      }
    }
    if (rule !== null) applyAffinity(rule, request, reply)
    return rule
  }

  fastify.decorateReply('forward', function forward (this: FastifyReply, path?: string) {
    const request = this.request as RequestWithRule
    return proxy.forward(this, request[kListenerRule] ?? bindLate(request, this), path)
  })

  // Listener rules are resolved once per route, here; the request path only runs the hook.
  fastify.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method.join(',') : route.method
    const rule = resolveListenerRule(route.config, `${methods} ${route.url}`, context)
    if (rule === null) return
    const decide = createAffinityHook(rule)
    const existing = route.onRequest
    route.onRequest = existing === undefined ? [decide] : [decide, ...(Array.isArray(existing) ? existing : [existing])]
  })

  fastify.addHook('onClose', async () => {
    await Promise.all([...groups.values()].map((group) => group.close()))
  })
}

/** The route-level onRequest hook that decides `request.affinity` and writes fresh cookies. */
function createAffinityHook (rule: ListenerRule): onRequestHookHandler {
  return function decideAffinity (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction) {
    applyAffinity(rule, request, reply)
    done()
  }
}

/** Decides the request's affinity and writes the cookies that pin the client to its target. */
function applyAffinity (rule: ListenerRule, request: FastifyRequest, reply: FastifyReply): void {
  const nowMs = rule.now()
  const affinity = rule.decide(request.headers.cookie, nowMs)
  request.affinity = affinity
  ;(request as RequestWithRule)[kListenerRule] = rule
  if (affinity.target !== null) {
    const cookies = rule.setCookies(affinity.target.id, nowMs)
    if (cookies !== null) reply.header('set-cookie', cookies)
  }
}

/**
 * The fastify-sticky plugin: target groups, ALB-compatible stickiness on routes whose
 * `config.targetGroup` names a group, and `reply.forward()` through pools the plugin owns.
 */
const plugin = fp(fastifySticky, { name: 'fastify-sticky', fastify: '5.x' })
export default plugin
export { plugin as fastifySticky }
export { stickyProxy, type StickyProxyOptions } from './sticky-proxy.js'
export { CookieCodec, COOKIE_PURPOSE_LB, type StickyPayload, type OpenedCookie } from './cookie-codec.js'
export { TargetGroup, TARGET_HEALTH_CHANNEL } from './target-group.js'
export * from './errors.js'
export * from './types.js'
