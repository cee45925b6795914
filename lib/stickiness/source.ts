import type { IncomingHttpHeaders } from 'node:http'
import type { KeyStickinessType, ReassignReason } from '../types.js'

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
