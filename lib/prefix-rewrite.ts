import { FST_STICKY_PATH_ESCAPES_PREFIX } from './errors.js'

/**
 * The path a request under a mounted prefix is sent to, as @fastify/http-proxy computes it: the
 * prefix as the router matched it (decoded, perhaps case-folded or with duplicate slashes
 * ignored) is found in the raw path without decoding the rest, and replaced by `rewritePrefix`,
 * whose `:name` parameters take the request's values. The query is kept.
 */

/** How the router matched the prefix: the server's router options. */
export interface PrefixMatching {
  readonly caseSensitive: boolean
  readonly ignoreDuplicateSlashes: boolean
  readonly ignoreTrailingSlash: boolean
}

/** `prefix` at the start of a raw `path`, compared as the router compares it; its length in `path`, or -1. */
export function rawPrefixLength (path: string, prefix: string, matching: PrefixMatching): number {
  if (matching.ignoreDuplicateSlashes) prefix = prefix.replace(/\/\/+/g, '/')
  if (!matching.caseSensitive) prefix = prefix.toLowerCase()
  if (prefix.length === 0) return 0
  let index = 0
  let decoded = ''
  let previousWasSlash = false
  while (index < path.length) {
    const isSlash = path[index] === '/'
    if (matching.ignoreDuplicateSlashes && isSlash && previousWasSlash) {
      index++
      continue
    }
    let length = 1
    let character: string
    if (path[index] === '%') {
      // A percent-encoded UTF-8 character takes up to four triplets.
      length = 3
      for (;;) {
        try {
          character = decodeURI(path.slice(index, index + length))
          break
        } catch (err) {
          if (length === 12 || path[index + length] !== '%') throw err
          length += 3
        }
      }
    } else {
      length = (path.codePointAt(index) ?? 0) > 0xFFFF ? 2 : 1
      character = path.slice(index, index + length)
    }
    decoded += character
    index += length
    previousWasSlash = isSlash
    const compared = matching.caseSensitive ? decoded : decoded.toLowerCase()
    if (compared === prefix) return index
    if (compared.length >= prefix.length) return -1
  }
  return -1
}

/** The rewritten path and query, and the prefix the path must stay within. */
export interface Rewritten {
  readonly url: string
  readonly within: string
}

/**
 * `url` (path and query, as the request line had it) with `prefix` replaced by `rewritePrefix`.
 * `params` are the route's parameters, for a prefix or rewritePrefix that names some.
 */
export function rewritePrefixOf (url: string, params: Record<string, string>, prefix: string, rewritePrefix: string, matching: PrefixMatching): Rewritten {
  const query = url.indexOf('?')
  const path = query === -1 ? url : url.slice(0, query)
  let dest = path
  let within = rewritePrefix
  if (prefix.includes(':')) {
    let normalizedPath = path
    let normalizedPrefix = prefix
    if (matching.ignoreDuplicateSlashes) {
      normalizedPath = normalizedPath.replace(/\/\/+/g, '/')
      normalizedPrefix = normalizedPrefix.replace(/\/\/+/g, '/')
    }
    // The prefix with its parameters as the request has them.
    const elements = normalizedPath.split('/')
    const concrete = decodeURI(normalizedPrefix.split('/').map((_, i) => elements[i]).join('/'))
    let concreteRewrite = rewritePrefix
    for (const [name, value] of Object.entries(params)) concreteRewrite = concreteRewrite.replace(`:${name}`, value)
    let length = rawPrefixLength(dest, concrete, matching)
    if (length === -1 && matching.ignoreTrailingSlash && concrete.endsWith('/')) {
      const without = rawPrefixLength(dest, concrete.slice(0, -1), matching)
      if (without === dest.length) length = without
    }
    if (length !== -1) {
      dest = concreteRewrite + dest.slice(length)
      within = concreteRewrite
    }
  } else {
    let length = rawPrefixLength(dest, prefix, matching)
    const normalizedPrefix = matching.ignoreDuplicateSlashes ? prefix.replace(/\/\/+/g, '/') : prefix
    if (length === -1 && matching.ignoreTrailingSlash && normalizedPrefix.length > 1 && normalizedPrefix.endsWith('/')) {
      const without = rawPrefixLength(dest, normalizedPrefix.slice(0, -1), matching)
      if (without === dest.length) length = without
    }
    if (length !== -1) dest = rewritePrefix + dest.slice(length)
  }
  // `/api` mounted with nothing in its place: `/api?q` is `/?q`, `/api/a` (under `/api/`) is `/a`.
  if (dest.charCodeAt(0) !== 47 /* / */) dest = `/${dest}`
  if (query !== -1) dest += url.slice(query)
  return { url: dest, within }
}

const ABSOLUTE_URL = /^[a-zA-Z][a-zA-Z\d+.-]*:/
/** A path of characters `checkDestination` need not decode: `/` first, and none of `%`, `\` or a control character. */
const PLAIN_CHARACTERS = /^\/[^%\\\x00-\x1f]*$/

/**
 * Throws (400) for a path that could leave the origin or climb out of its prefix: a scheme, `//`,
 * or a `..` segment once percent-decoded and with `\` read as `/` (as a lenient target would).
 */
export function checkDestination (path: string): void {
  // Most paths: nothing encoded, no `\`, no control character, no segment starting with a dot.
  if (PLAIN_CHARACTERS.test(path) && path.charCodeAt(1) !== 47 /* / */ && !path.includes('/.')) return
  const normalized = path.replace(/[\t\n\r\0]/g, '').trimStart().replaceAll('\\', '/')
  if (ABSOLUTE_URL.test(normalized) || normalized.startsWith('//')) throw new FST_STICKY_PATH_ESCAPES_PREFIX()
  let decoded: string
  try {
    decoded = decodeURIComponent(normalized)
  } catch {
    throw new FST_STICKY_PATH_ESCAPES_PREFIX()
  }
  if (decoded.replaceAll('\\', '/').split('/').includes('..')) throw new FST_STICKY_PATH_ESCAPES_PREFIX()
}

const BASE = 'http://fastify-sticky.invalid'

/** `checkDestination`, and the path resolved stays `within` the (rewritten) prefix. */
export function checkWithin (path: string, within: string): void {
  checkDestination(path)
  // Without dot segments (refused above), a path is within its prefix when it starts with it.
  if (within === '' || path === within || (path.startsWith(within) && (within.endsWith('/') || path.charCodeAt(within.length) === 47 /* / */))) return
  const target = new URL(path, BASE)
  const prefix = new URL(within === '' ? '/' : within, BASE)
  const boundary = prefix.pathname.endsWith('/') ? prefix.pathname : `${prefix.pathname}/`
  if (target.origin !== prefix.origin || (target.pathname !== prefix.pathname && !target.pathname.startsWith(boundary))) {
    throw new FST_STICKY_PATH_ESCAPES_PREFIX()
  }
}
