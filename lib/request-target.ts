/** The request target a gateway forwards: origin-form only, byte for byte, no dot segment. */

/** Characters a request line cannot carry as they are (undici refuses all but 0x21–0xFF; above 0x7E a JavaScript string holds Unicode). */
const NOT_VISIBLE_ASCII = /[^\x21-\x7e]/
const NOT_VISIBLE_ASCII_RUNS = /[^\x21-\x7e]+/g

/** Percent-encodes what a path given to reply.forward() cannot carry as it is (spaces, controls, non-ASCII as UTF-8); null for a broken string (a lone surrogate). */
export function encodeRequestTarget (path: string): string | null {
  if (!NOT_VISIBLE_ASCII.test(path)) return path
  try {
    return path.replace(NOT_VISIBLE_ASCII_RUNS, encodeURIComponent)
  } catch {
    return null
  }
}

/** Cheap test for what may start a dot segment: `/.`, `%2e`, or a separator a target may decode (`%2f`, `%5c`, `\\`). */
const DOT_SEGMENT_HINT = /\/\.|%2e|%2f|%5c|\\/i

/**
 * True when the path (before `?`) has a `.` or `..` segment once `%2e`, `%2f`, `%5c` and `\\`
 * are read as a lenient target would; a `;` ends a segment's name (`..;jsessionid`).
 */
export function hasDotSegment (target: string): boolean {
  const query = target.indexOf('?')
  const path = query === -1 ? target : target.slice(0, query)
  if (!DOT_SEGMENT_HINT.test(path)) return false
  const plain = path.replace(/%2e/gi, '.').replace(/%2f|%5c|\\/gi, '/')
  for (const segment of plain.split('/')) {
    const name = segment.split(';')[0]
    if (name === '.' || name === '..') return true
  }
  return false
}

/**
 * True for a path the gateway refuses to send: a dot segment (see `hasDotSegment`), or a raw `\`
 * in the path, which no browser sends (they turn it into `/`) and RFC 3986 does not allow, but
 * which a lenient target reads as `/`: the route matched `/admin\x` as a path of its own, the
 * target would serve `/admin/x`.
 */
export function refusesPath (target: string): boolean {
  const query = target.indexOf('?')
  const path = query === -1 ? target : target.slice(0, query)
  if (!DOT_SEGMENT_HINT.test(path)) return false
  return path.includes('\\') || hasDotSegment(path)
}

/** `http://` or `https://` in any case, and the authority up to the path or the query. */
const ABSOLUTE_FORM = /^https?:\/\/[^/?]*/i

/**
 * The request target in origin-form, byte for byte: absolute-form (`GET http://other/x`) keeps
 * only its path and query, so it can never pick the origin, and nothing is resolved or encoded,
 * so the dot-segment check sees what was sent (`http://gw/cart/../admin` is `/cart/../admin`).
 * An empty path is `/` (RFC 9112 §3.2.2). Null for anything else: asterisk-form (`*`),
 * authority-form, other schemes, a relative path, an empty authority, userinfo (RFC 9110 §4.2.4)
 * or a fragment, none of which may become a path.
 */
export function originFormOf (url: string): string | null {
  if (url.charCodeAt(0) === 47 /* / */) return url
  const authority = ABSOLUTE_FORM.exec(url)?.[0]
  if (authority === undefined || authority.endsWith('//') || authority.includes('@') || url.includes('#')) return null
  const rest = url.slice(authority.length)
  return rest.charCodeAt(0) === 47 /* / */ ? rest : `/${rest}`
}
