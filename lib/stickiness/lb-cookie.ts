/** ALB's duration-stickiness cookie. */
export const LB_COOKIE = 'AWSALB'
/** Its twin for cross-site requests, with `SameSite=None; Secure`; same value. */
export const LB_CORS_COOKIE = 'AWSALBCORS'
/** ALB's target-group stickiness cookie of weighted forwards, written the same way (and its `CORS` twin). */
export const TG_COOKIE = 'AWSALBTG'
/** The suffix of every twin's name. */
export const CORS_SUFFIX = 'CORS'
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
 * `name` reads another pair the same way (`AWSALBTG` and `AWSALBTGCORS`, or prefixed names).
 */
export function readLbCookies (header: string | undefined, name = LB_COOKIE): readonly string[] {
  if (header === undefined) return NO_VALUES
  let at = header.indexOf(name)
  if (at === -1) return NO_VALUES
  // Allocated only when a value is found; one slice per value (this runs on every request).
  let lb: string[] | null = null
  let cors: string[] | null = null
  while (at !== -1) {
    const next = at + name.length
    let valueAt = -1
    let isCors = false
    if (startsPair(header, at)) {
      const after = header.charCodeAt(next)
      if (after === EQUALS) {
        valueAt = next + 1
      } else if (after === C && header.startsWith('CORS=', next)) {
        valueAt = next + 5
        isCors = true
      }
    }
    if (valueAt === -1) {
      at = header.indexOf(name, at + 1)
      continue
    }
    let end = header.indexOf(';', valueAt)
    if (end === -1) end = header.length
    const value = valueBetween(header, valueAt, end)
    if (value !== '') {
      if (isCors) cors = addCandidate(cors, value)
      else lb = addCandidate(lb, value)
    }
    at = header.indexOf(name, end)
  }
  if (cors !== null) {
    if (lb === null) return cors
    for (const value of cors) if (!lb.includes(value)) lb.push(value)
    if (lb.length > MAX_LB_COOKIE_CANDIDATES) lb.length = MAX_LB_COOKIE_CANDIDATES
  }
  return lb ?? NO_VALUES
}

const SPACE = 32
const TAB = 9
const EQUALS = 61
const C = 67
const DQUOTE = 34

/** True when position `at` of a Cookie header starts a cookie-pair: only blanks between it and the previous `;` (or the start). */
export function startsPair (header: string, at: number): boolean {
  let i = at - 1
  while (i >= 0 && (header.charCodeAt(i) === SPACE || header.charCodeAt(i) === TAB)) i--
  return i < 0 || header.charCodeAt(i) === 59 /* ; */
}

function addCandidate (list: string[] | null, value: string): string[] {
  if (list === null) return [value]
  if (list.length < MAX_LB_COOKIE_CANDIDATES && !list.includes(value)) list.push(value)
  return list
}

/** The cookie-value between `from` and `to`: spaces and tabs trimmed, and DQUOTEs around it (RFC 6265 §4.1.1). */
function valueBetween (header: string, from: number, to: number): string {
  let start = from
  let end = to
  while (start < end && isBlank(header.charCodeAt(start))) start++
  while (end > start && isBlank(header.charCodeAt(end - 1))) end--
  if (end - start >= 2 && header.charCodeAt(start) === DQUOTE && header.charCodeAt(end - 1) === DQUOTE) {
    start++
    end--
  }
  return header.slice(start, end)
}

function isBlank (code: number): boolean {
  return code === SPACE || code === TAB
}

/**
 * Builds the two `Set-Cookie` lines in ALB's wire format:
 * `AWSALB=<v>; Expires=<now + 7 d>; Path=/` and `AWSALBCORS=<v>; Expires=<same>; Path=/; SameSite=None; Secure`
 * (or of another `name` and its `CORS` twin); `; Secure` on the first when asked, `; HttpOnly` on
 * both with `httpOnly`. The attribute suffixes are rebuilt once per second, not per response.
 */
export class LbCookieWriter {
  readonly name: string
  readonly corsName: string
  readonly #httpOnly: string
  #second = -1
  #suffix = ''
  #secureSuffix = ''
  #corsSuffix = ''

  constructor (name = LB_COOKIE, httpOnly = false) {
    this.name = name
    this.corsName = name + CORS_SUFFIX
    this.#httpOnly = httpOnly ? '; HttpOnly' : ''
  }

  setCookies (value: string, nowMs: number, secure = false): [string, string] {
    const second = Math.floor(nowMs / 1000)
    if (second !== this.#second) {
      this.#second = second
      const base = `; Expires=${new Date((second + LB_COOKIE_LIFETIME_SECONDS) * 1000).toUTCString()}; Path=/`
      this.#suffix = base + this.#httpOnly
      this.#secureSuffix = `${base}; Secure${this.#httpOnly}`
      this.#corsSuffix = `${base}; SameSite=None; Secure${this.#httpOnly}`
    }
    return [`${this.name}=${value}${secure ? this.#secureSuffix : this.#suffix}`, `${this.corsName}=${value}${this.#corsSuffix}`]
  }
}
