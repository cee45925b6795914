/** ALB's duration-stickiness cookie. */
export const LB_COOKIE = 'AWSALB'
/** Its twin for cross-site requests, with `SameSite=None; Secure`; same value. */
export const LB_CORS_COOKIE = 'AWSALBCORS'
/** ALB gives its cookies a fixed 7-day `Expires`; the stickiness window lives inside the value. */
export const LB_COOKIE_LIFETIME_SECONDS = 7 * 86_400
/** Most distinct values read from one request; more are ignored (a forged header may repeat a name). */
export const MAX_LB_COOKIE_CANDIDATES = 4

const NO_VALUES: readonly string[] = Object.freeze([])

/**
 * The values of `AWSALB`, then of `AWSALBCORS`, in the order the header lists them, without
 * repeats (ALB: read `AWSALB` first, then `AWSALBCORS`). Browsers send both with the same
 * value, and several of one name when cookies of other paths or domains exist; the caller
 * tries them in this order, so the outcome does not depend on anything but the header.
 */
export function readLbCookies (header: string | undefined): readonly string[] {
  if (header === undefined) return NO_VALUES
  let at = header.indexOf(LB_COOKIE)
  if (at === -1) return NO_VALUES
  const lb: string[] = []
  const cors: string[] = []
  while (at !== -1) {
    let valueAt = -1
    let list = lb
    const before = at === 0 ? ';' : header[at - 1]
    if (before === ';' || before === ' ' || before === '\t') {
      const next = at + LB_COOKIE.length
      if (header.charCodeAt(next) === 61 /* = */) {
        valueAt = next + 1
      } else if (header.startsWith('CORS=', next)) {
        valueAt = next + 5
        list = cors
      }
    }
    if (valueAt === -1) {
      at = header.indexOf(LB_COOKIE, at + 1)
      continue
    }
    let end = header.indexOf(';', valueAt)
    if (end === -1) end = header.length
    const value = unquote(header.slice(valueAt, end).trim())
    if (value !== '' && !list.includes(value) && list.length < MAX_LB_COOKIE_CANDIDATES) list.push(value)
    at = header.indexOf(LB_COOKIE, end)
  }
  for (const value of cors) if (!lb.includes(value)) lb.push(value)
  return lb.length > MAX_LB_COOKIE_CANDIDATES ? lb.slice(0, MAX_LB_COOKIE_CANDIDATES) : lb
}

function unquote (value: string): string {
  // RFC 6265 §4.1.1: a cookie-value may be wrapped in DQUOTEs.
  return value.length >= 2 && value[0] === '"' && value[value.length - 1] === '"' ? value.slice(1, -1) : value
}

/**
 * Builds the two `Set-Cookie` lines in ALB's wire format:
 * `AWSALB=<v>; Expires=<now + 7 d>; Path=/` and `AWSALBCORS=<v>; Expires=<same>; Path=/; SameSite=None; Secure`.
 * The attribute suffix is rebuilt once per second, not per response.
 */
export class LbCookieWriter {
  #second = -1
  #suffix = ''
  #corsSuffix = ''

  setCookies (value: string, nowMs: number): [string, string] {
    const second = Math.floor(nowMs / 1000)
    if (second !== this.#second) {
      this.#second = second
      const expires = new Date((second + LB_COOKIE_LIFETIME_SECONDS) * 1000).toUTCString()
      this.#suffix = `; Expires=${expires}; Path=/`
      this.#corsSuffix = `${this.#suffix}; SameSite=None; Secure`
    }
    return [`${LB_COOKIE}=${value}${this.#suffix}`, `${LB_CORS_COOKIE}=${value}${this.#corsSuffix}`]
  }
}
