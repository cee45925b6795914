import { APP_COOKIE_PREFIX, APP_COOKIE_SHARDS } from './app-cookie.js'
import { CORS_SUFFIX, LB_COOKIE, TG_COOKIE } from './lb-cookie.js'

const SPACE = 32
const TAB = 9
/** What follows `<prefix>AWSALB` in each of the gateway's names, `=` included. */
const SUFFIXES: readonly string[] = [
  '=',
  `${CORS_SUFFIX}=`,
  `${TG_COOKIE.slice(LB_COOKIE.length)}=`,
  `${TG_COOKIE.slice(LB_COOKIE.length)}${CORS_SUFFIX}=`,
  ...Array.from({ length: APP_COOKIE_SHARDS }, (_, i) => `${APP_COOKIE_PREFIX.slice(LB_COOKIE.length)}${i}=`)
]

/**
 * The Cookie header without the gateway's own cookie-pairs (`<prefix>AWSALB`, `AWSALBCORS`,
 * `AWSALBTG`, `AWSALBTGCORS`, `AWSALBAPP-0` to `-3`), as HAProxy's `cookie … indirect` keeps its
 * cookie from the server. A name counts only at the start of a pair, as the gateway reads it
 * (`AWSALBX=1`, or `AWSALB=` inside another cookie's value, stays). Each pair goes with the `;`
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
  for (const suffix of SUFFIXES) if (header.startsWith(suffix, at)) return true
  return false
}

function isBlank (code: number): boolean {
  return code === SPACE || code === TAB
}
