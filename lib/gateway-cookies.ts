import { APP_COOKIE_PREFIX, APP_COOKIE_SHARDS } from './stickiness/app-cookie.js'
import { CORS_SUFFIX, LB_COOKIE, TG_COOKIE } from './stickiness/lb-cookie.js'

const SPACE = 0x20
const TAB = 0x09

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
