/** Reading cookies in request and response headers, as browsers do; shared by every cookie source. */

/** A browser keeps a cookie of up to 4096 bytes, name and value together. */
export const MAX_COOKIE_BYTES = 4096
/** ALB gives its cookies a fixed 7-day `Expires`; the stickiness window lives inside the value. */
export const GATEWAY_COOKIE_LIFETIME_SECONDS = 7 * 86_400

const SPACE = 32
const TAB = 9

/** True when position `at` of a Cookie header starts a cookie-pair: only blanks between it and the previous `;` (or the start). */
export function startsPair (header: string, at: number): boolean {
  let i = at - 1
  while (i >= 0 && (header.charCodeAt(i) === SPACE || header.charCodeAt(i) === TAB)) i--
  return i < 0 || header.charCodeAt(i) === 59 /* ; */
}

/**
 * The first value of cookie `name` in a Cookie header (RFC 6265 §5.4 order), or undefined. A name
 * counts only at the start of a cookie-pair: at the header's start or after `;` and blanks, not
 * after a blank inside another cookie's value (`note=a sid=x` holds no `sid`).
 */
export function readCookieValue (header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined
  let at = header.indexOf(name)
  while (at !== -1) {
    const end = at + name.length
    if (startsPair(header, at) && header.charCodeAt(end) === 61 /* = */) {
      const stop = header.indexOf(';', end + 1)
      return header.slice(end + 1, stop === -1 ? header.length : stop).trim()
    }
    at = header.indexOf(name, end)
  }
  return undefined
}

/** What a response did with the app's cookie: set it (with this value), deleted it, or left it alone (null). */
export type AppCookieChange = { readonly value: string } | 'deleted' | null

/**
 * Reads the response's Set-Cookie lines for cookie `name` (blanks around a line's name ignored, as
 * browsers read it): the last line of that name counts.
 * A line with `Max-Age` ≤ 0, or without `Max-Age` and an `Expires` not after `nowMs`, deletes
 * it (RFC 6265 §5.2.1–5.2.2: Max-Age wins over Expires).
 */
export function readAppCookieChange (setCookie: unknown, name: string, nowMs: number): AppCookieChange {
  if (setCookie === undefined) return null
  const lines = Array.isArray(setCookie) ? setCookie as unknown[] : [setCookie]
  let change: AppCookieChange = null
  for (const raw of lines) {
    const line = String(raw)
    if (!line.includes(name)) continue
    const parts = line.split(';')
    // The name is what comes before the first `=`, blanks around it removed (RFC 6265 §5.2).
    const equals = parts[0].indexOf('=')
    if (equals === -1 || parts[0].slice(0, equals).trim() !== name) continue
    let maxAge: number | null = null
    let expires: number | null = null
    for (let i = 1; i < parts.length; i++) {
      const part = parts[i]
      const equals = part.indexOf('=')
      if (equals === -1) continue
      const attribute = part.slice(0, equals).trim().toLowerCase()
      const value = part.slice(equals + 1).trim()
      if (attribute === 'max-age' && /^-?\d+$/.test(value)) maxAge = Number(value)
      // An Expires that is no date is ignored (RFC 6265 §5.2.1): an earlier valid one stands.
      else if (attribute === 'expires') expires = parseCookieDate(value) ?? expires
    }
    const deleted = maxAge !== null ? maxAge <= 0 : expires !== null && expires <= nowMs
    change = deleted ? 'deleted' : { value: parts[0].slice(equals + 1).trim() }
  }
  return change
}

const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec']
const DATE_DELIMITER = /[\x09\x20-\x2F\x3B-\x40\x5B-\x60\x7B-\x7E]+/

/**
 * A cookie's `Expires` as browsers read it (RFC 6265 §5.1.1): time, day, month and year tokens in
 * any order; anything else, or an impossible date, is null — the attribute is then ignored and
 * the cookie lives for the session, so it must not count as a deletion.
 */
export function parseCookieDate (text: string): number | null {
  let time: number[] | null = null
  let day: number | null = null
  let month: number | null = null
  let year: number | null = null
  for (const token of text.split(DATE_DELIMITER)) {
    if (token === '') continue
    const clock: RegExpExecArray | null = time === null ? /^(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\D|$)/.exec(token) : null
    if (clock !== null) {
      time = [Number(clock[1]), Number(clock[2]), Number(clock[3])]
      continue
    }
    const dayMatch: RegExpExecArray | null = day === null ? /^(\d{1,2})(?:\D|$)/.exec(token) : null
    if (dayMatch !== null) {
      day = Number(dayMatch[1])
      continue
    }
    const monthAt: number = month === null ? MONTHS.indexOf(token.slice(0, 3).toLowerCase()) : -1
    if (monthAt !== -1) {
      month = monthAt
      continue
    }
    const yearMatch: RegExpExecArray | null = year === null ? /^(\d{2,4})(?:\D|$)/.exec(token) : null
    if (yearMatch !== null) year = Number(yearMatch[1])
  }
  if (time === null || day === null || month === null || year === null) return null
  if (year >= 70 && year <= 99) year += 1900
  else if (year <= 69) year += 2000
  if (day < 1 || day > 31 || year < 1601 || time[0] > 23 || time[1] > 59 || time[2] > 59) return null
  const ms = Date.UTC(year, month, day, time[0], time[1], time[2])
  // 31 April and the like roll over: browsers refuse them.
  return new Date(ms).getUTCDate() === day ? ms : null
}
