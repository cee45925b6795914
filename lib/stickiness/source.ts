import type { IncomingHttpHeaders } from 'node:http'
import type { ResolvedAppCookieStickiness, ResolvedLbCookieStickiness, ResolvedLearnStickiness, ResolvedStickiness } from '../options.js'
import type { AffinityDecision, KeyStickinessType, ReassignReason } from '../types.js'

/** What a stickiness source may read of a request (a FastifyRequest is one). */
export interface RequestView {
  readonly headers: IncomingHttpHeaders
  /** The request target as it came: path and query. */
  readonly url: string
  readonly raw: { readonly socket: { readonly remoteAddress?: string } | null, readonly headers: IncomingHttpHeaders }
}

/** A key the group's consistent hash maps to a target; at most this many characters, longer is no key. */
export const MAX_KEY_LENGTH = 1024

/**
 * A source that reads a key of the request (an address, a header, a parameter): the group's
 * consistent hash maps the key to a target, so the same key reaches the same target while it
 * lives, with no cookie and no state. Built once per route from its resolved options.
 */
export interface KeySource {
  readonly type: KeyStickinessType
  /** The request's key, or null when it has none (or one longer than MAX_KEY_LENGTH): the next source of the chain tries. */
  key (request: RequestView): string | null
}

/** What a stateful source's lookup found: a target id, nothing, or why what it found cannot be used. */
export type SourceLookup =
  | { readonly targetId: string }
  | null
  | { readonly reason: ReassignReason }

/** A key source's checked options. */
export interface ResolvedSourceIp { readonly type: 'source_ip', readonly ipv4PrefixLength: number, readonly ipv6PrefixLength: number }
export interface ResolvedHeaderKey { readonly type: 'header', readonly name: string }
export interface ResolvedQueryKey { readonly type: 'query', readonly name: string }
export interface ResolvedPathKey { readonly type: 'path', readonly name: string | null, readonly pattern: RegExp | null }
export type ResolvedKeySource = ResolvedSourceIp | ResolvedHeaderKey | ResolvedQueryKey | ResolvedPathKey

/** `learn`'s checked options: where the app's session id travels. */
export interface ResolvedLearnSource { readonly type: 'learn', readonly cookieName: string | null, readonly headerName: string | null }

/** One link of a resolved stickiness chain, in the order sources are tried. */
export type ResolvedLink = { readonly type: 'lb_cookie' } | { readonly type: 'app_cookie' } | ResolvedLearnSource | ResolvedKeySource

/** Returns the value or null when it is absent, empty or too long to be a key. */
export function asKey (value: string | undefined): string | null {
  if (value === undefined || value.length === 0 || value.length > MAX_KEY_LENGTH) return null
  return value
}

/** How a source hands on a client it does not keep: `reason` says why (null: the request had nothing of it), `previousTargetId` the target its binding named. */
export type Place = (reason: ReassignReason | null, nowMs: number, previousTargetId?: string) => AffinityDecision

/** A decision, and what the deciding forward keeps of the request for its response. */
export interface Pinned<S> {
  readonly decision: AffinityDecision
  readonly state: S
}

/** A response, as far as a source reads it. */
export interface ResponseView {
  getHeader (name: string): unknown
}

/** The request of a response, as far as a source reads it. */
export interface ResponseRequest extends RequestView {
  readonly protocol: string
}

/**
 * A source that pins clients (`lb_cookie`, `app_cookie`, `learn`): it finds in the request the
 * binding it made before, and binds the client to the target the request went to. Built once per
 * route; `S` is what it keeps of one request for that request's response.
 */
export interface PinSource<S = unknown> {
  readonly type: 'lb_cookie' | 'app_cookie' | 'learn'
  /** The request's binding holds (`hit`), or `place(reason)` decides. A promise only while a shared store is asked. */
  decide (request: RequestView, nowMs: number, place: Place): Pinned<S> | Promise<Pinned<S>>
  /** What the request carries for its response when another source decided (a key ahead of this one). */
  stateOf (request: RequestView, nowMs: number): S
  /** `Set-Cookie` lines that bind the client to `targetId` at once; null when it binds at the response (or never writes). `cors`: with a `CORS` twin, where the source writes one. */
  pinLines (state: S, targetId: string, nowMs: number, secure: boolean, cors: boolean): string[] | null
  /** The names of the cookies `pinLines` writes, replaced when a redispatch binds the client elsewhere. */
  readonly pinNames: readonly string[]
  /** Once the response's headers are known (the target's `Set-Cookie` among them): lines to add, or null. Absent when the source has nothing to do there. */
  atResponse? (state: S, targetId: string | null, response: ResponseView, request: ResponseRequest, nowMs: number, secure: boolean): string[] | null
  /** True when `atResponse` writes gateway cookies: shared caches must not keep such a response. */
  readonly cookiesAtResponse: boolean
}

/** True when the stickiness pins clients (a cookie or the learn store), so sessions are counted. */
export function pinsClients (stickiness: ResolvedStickiness | null): stickiness is ResolvedLbCookieStickiness | ResolvedAppCookieStickiness | ResolvedLearnStickiness {
  return stickiness !== null && (stickiness.type === 'lb_cookie' || stickiness.type === 'app_cookie' || stickiness.type === 'learn')
}
