import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { originFormOf } from './request-target.js'
import { invalid } from './validate.js'
import type { StickinessOptions } from './types.js'

/** Options of `stickyProxy`, registered with Fastify's `prefix` like @fastify/http-proxy. */
export interface StickyProxyOptions {
  /** Path prefix to mount, from Fastify's register options. */
  prefix?: string
  /** The target group that serves every path under the prefix; or give `listener`. */
  targetGroup?: string
  /** Overrides the group's stickiness under this prefix (e.g. `false` for `/static`). */
  stickiness?: StickinessOptions
  /** A listener (see the plugin's `listeners`) whose rules choose the target group per request; instead of `targetGroup`. */
  listener?: string
  /** Replaces the prefix on the way to the target, as @fastify/http-proxy does. Default `''` (the prefix is removed). */
  rewritePrefix?: string
  /** Tunnels WebSocket upgrades under the prefix to the affinity's target (see the route option `config.websocket`). Default true. */
  websocket?: boolean
}

/**
 * Mounts a whole prefix onto a target group in one call:
 * `app.register(stickyProxy, { prefix: '/cart', targetGroup: 'carts' })`. Every method and
 * path under the prefix is forwarded, bodies stream through unparsed. Register the
 * fastify-sticky plugin first.
 */
export async function stickyProxy (instance: FastifyInstance, options: StickyProxyOptions): Promise<void> {
  const rewritePrefix = options.rewritePrefix ?? ''
  if (typeof rewritePrefix !== 'string' || (rewritePrefix !== '' && !rewritePrefix.startsWith('/'))) {
    invalid('stickyProxy rewritePrefix', "'' or a path starting with /", rewritePrefix)
  }
  if (!instance.hasReplyDecorator('forward')) {
    invalid('stickyProxy', 'registered after the fastify-sticky plugin', 'no reply.forward decorator')
  }
  const groups = instance.targetGroups
  if (options.listener !== undefined) {
    if (options.targetGroup !== undefined) invalid('stickyProxy listener', 'given without targetGroup (the listener\'s rules choose the group)', options.listener)
  } else if (typeof options.targetGroup !== 'string' || !groups.has(options.targetGroup)) {
    invalid('stickyProxy targetGroup', `the name of a target group (${[...groups.keys()].join(', ')})`, options.targetGroup)
  }

  // Bodies are streamed to the target as they came, never parsed here.
  instance.removeAllContentTypeParsers()
  instance.addContentTypeParser('*', (_request, _payload, done) => done(null))

  const websocket = options.websocket ?? true
  if (typeof websocket !== 'boolean') invalid('stickyProxy websocket', 'a boolean', websocket)
  const prefix = instance.prefix
  const config = options.listener !== undefined
    ? { listener: options.listener, stickiness: options.stickiness, websocket }
    : { targetGroup: options.targetGroup, stickiness: options.stickiness, websocket }
  // As @fastify/http-proxy: the prefix is replaced by rewritePrefix ('/p/a?q' → '/a?q', '/p' → '/').
  function forwardPrefix (request: FastifyRequest, reply: FastifyReply) {
    const url = originFormOf(request.raw.url ?? '/')
    // Not a path (`*`, another scheme): reply.forward() answers the request as it came.
    if (url === null) return reply.forward()
    const path = rewritePrefix + (url.startsWith(prefix) ? url.slice(prefix.length) : url)
    return reply.forward(path === '' || path[0] === '?' ? `/${path}` : path)
  }
  instance.all('/', { config }, forwardPrefix)
  instance.all('/*', { config }, forwardPrefix)
}
