import type { FastifyInstance, FastifyReply } from 'fastify'
import fp from 'fastify-plugin'
import { checkForwardOptions, type ReplyForwardOptions } from './forward-options.js'
import { checkDestination, rewritePrefixOf, type PrefixMatching } from './prefix-rewrite.js'
import { effectiveRewritePrefix, prefixMatching, stickyProxy, type StickyProxyOptions } from './sticky-proxy.js'

/**
 * `fastify-sticky/http-proxy`: @fastify/http-proxy's plugin signature and defaults, built on
 * `stickyProxy`, for moving a gateway over without rewriting it. `upstream` mounts one target
 * with stickiness off; `targetGroup` or `listener` (with the fastify-sticky plugin registered
 * first) gives the prefix sticky sessions. Inside the prefix, `reply.from(source, options)` and
 * `reply.fromParameters(url, params, prefix)` behave as @fastify/http-proxy's.
 */

/** @fastify/http-proxy's methods. */
export const defaultHttpMethods = ['DELETE', 'GET', 'HEAD', 'PATCH', 'POST', 'PUT', 'OPTIONS']
/** @fastify/http-proxy's routes. */
export const defaultRoutes = ['/', '/*']

declare module 'fastify' {
  interface FastifyReply {
    /** In a `fastify-sticky/http-proxy` prefix: @fastify/reply-from's `reply.from()`, to the affinity's target. */
    from?: (source?: string, options?: ReplyForwardOptions) => FastifyReply
    /** In a `fastify-sticky/http-proxy` prefix: the path and reply options its handler would forward `url` with. */
    fromParameters?: (url: string, params?: Record<string, string>, prefix?: string) => { url: string, options: ReplyForwardOptions }
  }
}

const ABSOLUTE = /^[a-zA-Z][a-zA-Z\d+.-]*:/
const RELATIVE_ORIGIN = 'http://fastify-sticky.invalid'

async function fastifyHttpProxy (fastify: FastifyInstance, raw: StickyProxyOptions): Promise<void> {
  const opts: StickyProxyOptions = { ...raw }
  // A refused reply option says what to use instead, before a missing upstream does.
  if (opts.replyOptions !== undefined) checkForwardOptions(opts.replyOptions, 'stickyProxy replyOptions')
  if (opts.upstream === '') delete opts.upstream
  // As @fastify/http-proxy: a proxy of WebSockets only may name its target by wsUpstream alone.
  if (opts.upstream === undefined && typeof opts.wsUpstream === 'string' && opts.wsUpstream !== '' && opts.targetGroup === undefined && opts.listener === undefined) {
    try {
      opts.upstream = new URL(opts.wsUpstream).origin.replace(/^ws/, 'http')
    } catch {}
  }
  if (opts.upstream === undefined && opts.targetGroup === undefined && opts.listener === undefined) {
    // @fastify/http-proxy's words.
    throw new Error('upstream must be specified')
  }
  opts.websocket ??= false
  opts.httpMethods ??= defaultHttpMethods

  const prefix = fastify.prefix
  const rewritePrefix = effectiveRewritePrefix(prefix, opts)
  const matching: PrefixMatching = prefixMatching(fastify)
  const preRewrite = opts.preRewrite
  const replyOptions: ReplyForwardOptions = opts.replyOptions ?? {}
  const base = RELATIVE_ORIGIN + (opts.upstream === undefined ? '/' : new URL(opts.upstream).pathname)

  fastify.decorateReply('from', function from (this: FastifyReply, source?: string, options?: ReplyForwardOptions) {
    if (source === undefined) return this.forward(undefined, options)
    // As @fastify/reply-from: a relative source is resolved against the upstream's path.
    if (source[0] !== '/' && !ABSOLUTE.test(source)) source = new URL(source, base).href.slice(RELATIVE_ORIGIN.length)
    const query = source.indexOf('?')
    try {
      checkDestination(query === -1 ? source : source.slice(0, query))
    } catch (err) {
      return this.send(err)
    }
    // As @fastify/reply-from: a source without a query takes the request's.
    if (query === -1) {
      const url = this.request.raw.url ?? ''
      const own = url.indexOf('?')
      if (own > 0) source += url.slice(own)
    }
    return this.forward(source, options)
  })
  fastify.decorateReply('fromParameters', function fromParameters (url: string, params: Record<string, string> = {}, from = '/') {
    if (preRewrite !== undefined) url = preRewrite(url, params, from)
    const rewritten = rewritePrefixOf(url, params, from, rewritePrefix, matching).url
    const query = rewritten.indexOf('?')
    checkDestination(query === -1 ? rewritten : rewritten.slice(0, query))
    return { url: rewritten, options: replyOptions }
  })
  await stickyProxy(fastify, opts)
}

const plugin = fp(fastifyHttpProxy, { fastify: '5.x', name: '@fastify/http-proxy', encapsulate: true })
const exported = Object.assign(plugin, { default: plugin, fastifyHttpProxy: plugin, defaultHttpMethods, defaultRoutes })

export default exported
export { exported as fastifyHttpProxy, exported as 'module.exports' }
export type { StickyProxyOptions as FastifyHttpProxyOptions } from './sticky-proxy.js'
