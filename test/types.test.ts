import { test } from 'tap'
import Fastify from 'fastify'
import * as promClient from 'prom-client'
import fastifySticky, { stickyAdmin, stickyProxy, type AffinityDecision, type FastifyStickyOptions, type TargetRef } from '../lib/index.js'

// Compile-time checks: `npm test` type-checks this file (tsc --noEmit) before tap runs it.
function narrowing (affinity: AffinityDecision): string {
  switch (affinity.outcome) {
    case 'hit': return affinity.target.id + affinity.decidedBy
    case 'new': return affinity.target.origin + affinity.decidedBy
    case 'reassigned': return affinity.reason + affinity.target.id
    case 'unavailable': {
      const none: null = affinity.target
      // @ts-expect-error only `reassigned` carries a reason
      return String(none) + affinity.reason
    }
  }
}

const options: FastifyStickyOptions = {
  keys: ['a1'.repeat(32)],
  targetGroups: [{
    name: 'shop',
    targets: [{ id: 'a', url: 'http://127.0.0.1:1', weight: 2 }],
    algorithm: 'least_outstanding_requests',
    stickiness: { type: 'lb_cookie', durationSeconds: 60 }
  }]
}

export const withHeaders: FastifyStickyOptions = { targetGroups: [{ name: 'x' }], exposeDecision: 'x-route', handoffHeaders: { previousTarget: 'x-from' } }
// @ts-expect-error exposeDecision is true, false or a header name
export const badDecision: FastifyStickyOptions = { targetGroups: [{ name: 'x' }], exposeDecision: 1 }

/** Where a re-pinned client was: only `reassigned` may say. */
export function previousOf (affinity: AffinityDecision): string | undefined {
  // @ts-expect-error only `reassigned` carries previousTargetId
  if (affinity.outcome === 'hit') return affinity.previousTargetId
  return affinity.outcome === 'reassigned' ? affinity.previousTargetId : undefined
}

// @ts-expect-error targetGroups is required
export const missing: FastifyStickyOptions = { keys: [] }
// @ts-expect-error algorithms are ALB's names
export const wrong: FastifyStickyOptions = { targetGroups: [{ name: 'x', algorithm: 'random' }] }
// @ts-expect-error app_cookie stickiness needs the app's cookie name
export const noCookieName: FastifyStickyOptions = { targetGroups: [{ name: 'x', stickiness: { type: 'app_cookie' } }] }
export const discovered: FastifyStickyOptions = { targetGroups: [{ name: 'carts', discovery: { hostname: 'carts.default.svc.cluster.local', port: 8080, family: 0, servers: ['127.0.0.1:5353'] } }] }
// @ts-expect-error the address family is 4, 6 or 0 (both)
export const badFamily: FastifyStickyOptions = { targetGroups: [{ name: 'carts', discovery: { hostname: 'carts.test', port: 80, family: 5 } }] }

export const withListeners: FastifyStickyOptions = {
  cookiePrefix: 'IN-',
  targetGroups: [{ name: 'a', stickiness: { type: 'app_cookie', cookieName: 'JSESSIONID', bindToCookieValue: true } }, { name: 'b' }, { name: 'c' }],
  listeners: [{
    name: 'web',
    rules: [{ priority: 1, conditions: { pathPattern: ['/a/*'], sourceIp: ['10.0.0.0/8'], httpHeader: [{ name: 'x', values: ['1'] }] }, forward: 'a' }],
    default: { targetGroups: [{ name: 'b', weight: 90 }, { name: 'c', weight: 10 }], stickiness: { durationSeconds: 3600 } }
  }]
}

export const forwardingCookies: FastifyStickyOptions = { targetGroups: [{ name: 'a' }], forwardStickyCookies: true }
export const trusted: FastifyStickyOptions[] = [
  { targetGroups: [{ name: 'a' }], trustedProxies: '10.0.0.0/8, loopback' },
  { targetGroups: [{ name: 'a' }], trustedProxies: ['fd00::/8'] },
  { targetGroups: [{ name: 'a' }], trustedProxies: (address: string, hop: number) => hop === 0 && address.startsWith('10.') }
]
// @ts-expect-error a hop count says nothing about who the peer is
export const hopCount: FastifyStickyOptions = { targetGroups: [{ name: 'a' }], trustedProxies: 1 }

export const cookieAttributes: FastifyStickyOptions[] = [
  { targetGroups: [{ name: 'a' }], cookieSecure: 'auto', cookieHttpOnly: true, cookieClockSkewSeconds: 0 },
  { targetGroups: [{ name: 'a' }], cookiePrefix: '__Host-', cookieSecure: true }
]
// @ts-expect-error Secure is on, off or 'auto'
export const secureAlways: FastifyStickyOptions = { targetGroups: [{ name: 'a' }], cookieSecure: 'always' }
export const corsTwins: FastifyStickyOptions[] = [
  { targetGroups: [{ name: 'a' }], corsCookies: 'auto' },
  { targetGroups: [{ name: 'a' }], corsCookies: 'always' }
]
// @ts-expect-error the CORS twins are written where clients keep them, or always
export const corsNever: FastifyStickyOptions = { targetGroups: [{ name: 'a' }], corsCookies: false }

export const metricsOn: FastifyStickyOptions[] = [
  { targetGroups: [{ name: 'a' }], metrics: true },
  { targetGroups: [{ name: 'a' }], metrics: { registry: new promClient.Registry(), client: promClient, prefix: 'edge_', buckets: [0.1, 1] } }
]
// @ts-expect-error buckets are numbers of seconds
export const bucketsAsText: FastifyStickyOptions = { targetGroups: [{ name: 'a' }], metrics: { buckets: ['1s'] } }
/** A scrape handler's view: the registry, when metrics are on. */
export async function scrape (app: ReturnType<typeof Fastify>): Promise<string> {
  const metrics = app.stickyMetrics
  return metrics === null ? '' : await metrics.registry.metrics()
}

/** A handler that tells a cross-site request (the app cookie withheld) from a lost binding. */
export function isWithheld (affinity: AffinityDecision): boolean {
  return affinity.outcome === 'reassigned' && affinity.reason === 'app-cookie-withheld'
}

/** A handler narrowing the reasons, the new one included. */
export function isFromTheFuture (affinity: AffinityDecision): boolean {
  return (affinity.outcome === 'reassigned' && affinity.reason === 'issued-in-future') || affinity.rule?.groupReason === 'issued-in-future'
}

/** A handler's view of the listener rule that routed a request. */
export function ruleOf (affinity: AffinityDecision): string {
  const rule = affinity.rule
  if (rule === undefined) return 'none'
  return `${rule.listener}:${rule.priority}:${rule.groupOutcome}:${rule.groupReason ?? ''}`
}

test('the Fastify augmentation types request.affinity, reply.forward, app.targetGroups and route config', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifySticky, options)
  await app.register(stickyProxy, { prefix: '/p', targetGroup: 'shop', stickiness: false, rewritePrefix: '/q' })
  await app.register(stickyAdmin, { prefix: '/admin', token: 'a-token-of-16-chars', allow: ['loopback'] })
  // Type-checked, never run: the registration needs one authentication choice.
  const refused = (other: typeof app): void => {
    // @ts-expect-error an authentication choice is required
    void other.register(stickyAdmin, { prefix: '/ops' })
    // @ts-expect-error one authentication choice, not both
    void other.register(stickyAdmin, { prefix: '/ops', token: 'a-token-of-16-chars', authentication: 'custom' })
    void other.register(stickyAdmin, { prefix: '/ops', authentication: 'custom' })
  }
  t.type(refused, 'function')
  app.get('/x', { config: { targetGroup: 'shop', stickiness: { durationSeconds: 10 } } }, async (request, reply) => {
    const affinity: AffinityDecision | null = request.affinity
    if (affinity !== null && affinity.outcome !== 'unavailable') {
      const target: TargetRef = affinity.target
      reply.header('x-target', target.id)
    }
    return reply.forward('/y')
  })
  const targets: readonly TargetRef[] = app.targetGroups.get('shop')!.targets
  t.same(targets.map((target) => target.id), ['a'])
  t.equal(narrowing({ outcome: 'reassigned', reason: 'expired', targetGroup: 'shop', target: targets[0], stickiness: 'lb_cookie', decidedBy: 'round_robin' }), 'expireda')
  t.equal(narrowing({ outcome: 'hit', targetGroup: 'shop', target: targets[0], stickiness: 'lb_cookie', decidedBy: 'lb_cookie' }), 'alb_cookie')
  t.equal(narrowing({ outcome: 'hit', targetGroup: 'shop', target: targets[0], stickiness: 'app_cookie', decidedBy: 'app_cookie' }), 'aapp_cookie')
  t.equal(ruleOf({ outcome: 'new', targetGroup: 'b', target: targets[0], stickiness: 'none', decidedBy: 'round_robin', rule: { listener: 'web', priority: 'default', groupOutcome: 'reassigned', groupReason: 'expired' } }), 'web:default:reassigned:expired')
})
