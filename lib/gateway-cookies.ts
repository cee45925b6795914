import { APP_COOKIE_PREFIX, APP_COOKIE_SHARDS } from './stickiness/app-cookie.js'
import { CORS_SUFFIX, LB_COOKIE, TG_COOKIE } from './stickiness/lb-cookie.js'

const SPACE = 0x20
const TAB = 0x09
const QUOTE = 0x22
const BACKSLASH = 0x5c
const COMMA = 0x2c

/**
 * The names of the cookies a gateway with cookie prefix `prefix` writes, exactly: `AWSALB`,
 * `AWSALBCORS`, `AWSALBTG`, `AWSALBTGCORS`, `AWSALBAPP-0` to `-3`, each with the prefix. They are
 * the gateway's alone: a target's Set-Cookie line of one of them is dropped.
 */
export class GatewayCookieNames {
  /** `<prefix>AWSALB`, which every one of the names starts with. */
  readonly stem: string
  readonly names: ReadonlySet<string>

  constructor (prefix: string) {
    this.stem = prefix + LB_COOKIE
    const names = [prefix + LB_COOKIE, prefix + LB_COOKIE + CORS_SUFFIX, prefix + TG_COOKIE, prefix + TG_COOKIE + CORS_SUFFIX]
    for (let i = 0; i < APP_COOKIE_SHARDS; i++) names.push(`${prefix}${APP_COOKIE_PREFIX}${i}`)
    this.names = new Set(names)
  }

  /**
   * The gateway cookie a Set-Cookie line sets, or null. The name is read as browsers read it
   * (RFC 6265bis §5.6): the text before the first `=` of the part before the first `;`, without
   * surrounding spaces and tabs, compared case-sensitively; a line without `=` there sets a
   * cookie with an empty name. One `indexOf` for a line that does not hold the stem.
   */
  nameIn (line: string): string | null {
    const at = line.indexOf(this.stem)
    if (at === -1) return null
    const equals = line.indexOf('=')
    // The stem only in the value (`x=AWSALB`), or no name at all.
    if (equals === -1 || equals < at) return null
    const semicolon = line.indexOf(';')
    if (semicolon !== -1 && semicolon < equals) return null
    const name = trimBlanks(line, 0, equals)
    return this.names.has(name) ? name : null
  }

  /**
   * A target's Set-Cookie lines without those setting a gateway cookie, in their order, and the
   * names dropped; null (nothing allocated) when there is none to drop.
   */
  drop (lines: readonly string[]): { kept: string[], dropped: string[] } | null {
    let kept: string[] | null = null
    let dropped: string[] | null = null
    for (let i = 0; i < lines.length; i++) {
      const name = this.nameIn(lines[i])
      if (name === null) {
        kept?.push(lines[i])
      } else if (kept === null || dropped === null) {
        kept = lines.slice(0, i)
        dropped = [name]
      } else {
        dropped.push(name)
      }
    }
    return kept === null || dropped === null ? null : { kept, dropped }
  }

  /** True when one of `lines` (as a reply holds them: one, several or none) sets a gateway cookie. */
  anyIn (lines: unknown): boolean {
    if (typeof lines === 'string') return this.nameIn(lines) !== null
    if (!Array.isArray(lines)) return false
    for (const line of lines) if (typeof line === 'string' && this.nameIn(line) !== null) return true
    return false
  }
}

/** What follows `<prefix>AWSALB` in each of the gateway's names. */
const SUFFIXES: readonly string[] = [
  '',
  CORS_SUFFIX,
  TG_COOKIE.slice(LB_COOKIE.length),
  `${TG_COOKIE.slice(LB_COOKIE.length)}${CORS_SUFFIX}`,
  ...Array.from({ length: APP_COOKIE_SHARDS }, (_, i) => `${APP_COOKIE_PREFIX.slice(LB_COOKIE.length)}${i}`)
]

/**
 * The Cookie header without the gateway's own cookie-pairs (`<prefix>AWSALB`, `AWSALBCORS`,
 * `AWSALBTG`, `AWSALBTGCORS`, `AWSALBAPP-0` to `-3`), as HAProxy's `cookie … indirect` keeps its
 * cookie from the server. A name counts only at the start of a pair, blanks around it allowed as
 * a parser that trims names reads them (`AWSALB = x` goes; `AWSALBX=1`, or `AWSALB=` inside
 * another cookie's value, stays). Each pair goes with the `;`
 * before it (the one after it, for the first pair); every other byte is kept as it came. `''`
 * when nothing is left. A header without `<prefix>AWSALB` costs one `indexOf` and is returned
 * as it is.
 */
export function stripGatewayCookies (header: string, prefix = ''): string {
  const base = prefix + LB_COOKIE
  if (header.indexOf(base) === -1) return header
  const length = header.length
  let kept = ''
  let keptAny = false
  let removed = false
  let start = 0
  for (;;) {
    let end = header.indexOf(';', start)
    if (end === -1) end = length
    if (isGatewayPair(header, start, base)) {
      removed = true
    } else if (keptAny) {
      kept += header.slice(start - 1, end)
    } else {
      keptAny = true
      // The first pair kept, when pairs before it went: without the blanks that followed their `;`.
      let from = start
      if (removed) while (from < end && isBlank(header.charCodeAt(from))) from++
      kept = header.slice(from, end)
    }
    if (end === length) break
    start = end + 1
  }
  return removed ? kept : header
}

/** True when the cookie-pair starting at `start` (blanks allowed before its name) is one of the gateway's. */
function isGatewayPair (header: string, start: number, base: string): boolean {
  let at = start
  while (isBlank(header.charCodeAt(at))) at++
  if (!header.startsWith(base, at)) return false
  at += base.length
  for (const suffix of SUFFIXES) {
    if (!header.startsWith(suffix, at)) continue
    // `AWSALB = x`: browsers never send it, but an app's parser that trims names reads AWSALB.
    let equals = at + suffix.length
    while (isBlank(header.charCodeAt(equals))) equals++
    if (header.charCodeAt(equals) === 61 /* = */) return true
  }
  return false
}

/**
 * HAProxy's `cookie … nocache`: what a response that carries a gateway cookie sends as
 * Cache-Control, so that no shared cache stores it (one client's cookie would go to every client
 * of that cache, all of them pinned to one target); null when it already says so. `value` is the
 * response's Cache-Control, one line or several (combined as one list, RFC 9110 §5.3), or none.
 *
 * Already safe, left as it is: `no-store`, or an unqualified `private` without `public` or
 * `s-maxage`. Otherwise `public`, `s-maxage=…` and the qualified `private="…"` (which many caches
 * do not honour) go, the other directives stay in their order and spelling (so `max-age` still
 * lets the browser's own cache work), and an unqualified `private` leads:
 * `public, max-age=600` → `private, max-age=600`; none → `private`. Directive names compare
 * case-insensitively (RFC 9111 §5.2); commas inside quoted strings do not split.
 */
export function privateCacheControl (value: string | readonly string[] | number | undefined): string | null {
  const directives = value === undefined ? [] : typeof value === 'object' ? value.flatMap(splitDirectives) : splitDirectives(String(value))
  let privateAlone = false
  let shared = false
  for (const directive of directives) {
    const name = directiveName(directive)
    if (name === 'no-store') return null
    if (name === 'private' && !directive.includes('=')) privateAlone = true
    else if (name === 'public' || name === 's-maxage') shared = true
  }
  if (privateAlone && !shared) return null
  const kept = ['private']
  for (const directive of directives) {
    const name = directiveName(directive)
    if (name !== 'public' && name !== 's-maxage' && name !== 'private') kept.push(directive)
  }
  return kept.join(', ')
}

/** The directives of one Cache-Control line, trimmed, empty ones left out. */
function splitDirectives (line: string): string[] {
  const directives: string[] = []
  let start = 0
  let quoted = false
  for (let i = 0; i < line.length; i++) {
    const c = line.charCodeAt(i)
    if (quoted) {
      if (c === BACKSLASH) i++
      else if (c === QUOTE) quoted = false
    } else if (c === QUOTE) {
      quoted = true
    } else if (c === COMMA) {
      pushTrimmed(directives, line, start, i)
      start = i + 1
    }
  }
  pushTrimmed(directives, line, start, line.length)
  return directives
}

function pushTrimmed (into: string[], line: string, start: number, end: number): void {
  const directive = trimBlanks(line, start, end)
  if (directive !== '') into.push(directive)
}

/** A directive's name, lower-cased: the text before its `=`. */
function directiveName (directive: string): string {
  const equals = directive.indexOf('=')
  return (equals === -1 ? directive : trimBlanks(directive, 0, equals)).toLowerCase()
}

/** `text` from `start` to `end` without the spaces and tabs around it (what HTTP and RFC 6265 call whitespace, nothing more). */
function trimBlanks (text: string, start: number, end: number): string {
  while (start < end && isBlank(text.charCodeAt(start))) start++
  while (end > start && isBlank(text.charCodeAt(end - 1))) end--
  return text.slice(start, end)
}

function isBlank (c: number): boolean {
  return c === SPACE || c === TAB
}
