import { LB_COOKIE_LIFETIME_SECONDS, startsPair } from './lb-cookie.js'

/** ALB's application-stickiness cookies: `AWSALBAPP-0` to `AWSALBAPP-3`, one value split over them. */
export const APP_COOKIE_PREFIX = 'AWSALBAPP-'
/** ALB writes at most 16 KB: four shards. */
export const APP_COOKIE_SHARDS = 4
/** A browser keeps a cookie of up to 4096 bytes, name and value together. */
export const MAX_COOKIE_BYTES = 4096
/** What an unused shard carries (ALB's sentinel); read as "no shard". */
export const REMOVED_SHARD = '_remove_'

const SHARD_VALUE = /^[A-Za-z0-9_-]+$/

/** The shards of one request: the value they make up, `null` when none came, or `'invalid'` for a broken set. */
export type ShardRead = string | null | 'invalid'

/** Most characters of one shard's value under `prefix`: name, `=` and value in 4096 bytes. */
export function maxShardLength (prefix = APP_COOKIE_PREFIX): number {
  return MAX_COOKIE_BYTES - (prefix.length + 1 + 1)
}

/**
 * Reads `<prefix>0` … `<prefix>3` from a Cookie header and joins them in shard order. A name
 * repeated with another value makes the set `'invalid'` (a repeat of the same value is one
 * shard); `_remove_` is no shard. Shards must run from 0 without a gap,
 * be of base64url characters and each fit in a cookie: anything else is `'invalid'` (the caller
 * reassigns). A reordered or mixed set joins into a value that does not open: the AEAD seal
 * catches it, not this function.
 */
export function readAppShards (header: string | undefined, prefix = APP_COOKIE_PREFIX): ShardRead {
  if (header === undefined || !header.includes(prefix)) return null
  const shards: Array<string | undefined> = new Array(APP_COOKIE_SHARDS)
  for (const pair of header.split(';')) {
    const equals = pair.indexOf('=')
    if (equals === -1) continue
    const name = pair.slice(0, equals).trim()
    if (name.length !== prefix.length + 1 || !name.startsWith(prefix)) continue
    const index = name.charCodeAt(prefix.length) - 48
    if (index < 0 || index >= APP_COOKIE_SHARDS) continue
    const shard = pair.slice(equals + 1).trim()
    const seen = shards[index]
    // Two different values of one shard name: no way to tell which the client meant.
    if (seen !== undefined && seen !== shard) return 'invalid'
    shards[index] = shard
  }
  const limit = maxShardLength(prefix)
  let value = ''
  let ended = false
  for (const shard of shards) {
    const present = shard !== undefined && shard !== REMOVED_SHARD && shard !== ''
    if (!present) {
      ended = true
      continue
    }
    if (ended || shard.length > limit || !SHARD_VALUE.test(shard)) return 'invalid'
    value += shard
  }
  return value === '' ? null : value
}

/** Past `Expires` of the lines that delete the shards. */
const EPOCH = new Date(0).toUTCString()

/**
 * Writes ALB's four `Set-Cookie` lines for a value: `<prefix>0=<first part>; Expires=<now + 7 d>;
 * Path=/`, and so on, every name always written, the unused ones as `_remove_`; `SameSite=None;
 * Secure` when asked (the caller decides: Chromium 80 and later, as ALB), else `; Secure` when
 * asked; `; HttpOnly` on every line with `httpOnly`. The attribute suffixes are rebuilt once per
 * second, not per response.
 */
export class AppCookieWriter {
  readonly prefix: string
  readonly #limit: number
  readonly #httpOnly: string
  #second = -1
  /** This second's suffixes: plain, `Secure`, `SameSite=None; Secure`. */
  #suffixes: [string, string, string] = ['', '', '']
  /** The four `_remove_` lines of this second, with each suffix. */
  #removed: [string[], string[], string[]] = [[], [], []]

  constructor (prefix = APP_COOKIE_PREFIX, httpOnly = false) {
    this.prefix = prefix
    this.#limit = maxShardLength(prefix)
    this.#httpOnly = httpOnly ? '; HttpOnly' : ''
  }

  /** Four lines carrying `value` (null: four `_remove_`), kept 7 days; null when it needs more than four shards. */
  setCookies (value: string | null, nowMs: number, sameSiteNone: boolean, secure = false): string[] | null {
    const limit = this.#limit
    if (value !== null && value.length > limit * APP_COOKIE_SHARDS) return null
    const second = Math.floor(nowMs / 1000)
    if (second !== this.#second) {
      this.#second = second
      const base = `; Expires=${new Date((second + LB_COOKIE_LIFETIME_SECONDS) * 1000).toUTCString()}; Path=/`
      this.#suffixes = [base + this.#httpOnly, `${base}; Secure${this.#httpOnly}`, `${base}; SameSite=None; Secure${this.#httpOnly}`]
      this.#removed = [this.#lines(null, this.#suffixes[0]), this.#lines(null, this.#suffixes[1]), this.#lines(null, this.#suffixes[2])]
    }
    const variant = sameSiteNone ? 2 : secure ? 1 : 0
    // A new array each call: Fastify appends to the one it is given.
    if (value === null) return [...this.#removed[variant]]
    return this.#lines(value, this.#suffixes[variant])
  }

  #lines (value: string | null, suffix: string): string[] {
    const limit = this.#limit
    const lines: string[] = []
    for (let i = 0; i < APP_COOKIE_SHARDS; i++) {
      const part = value === null ? '' : value.slice(i * limit, (i + 1) * limit)
      lines.push(`${this.prefix}${i}=${part === '' ? REMOVED_SHARD : part}${suffix}`)
    }
    return lines
  }

  /** Four lines that make a browser drop the shards (`Expires` in the past): the app ended its session. */
  clearCookies (sameSiteNone: boolean, secure = false): string[] {
    const suffix = `; Expires=${EPOCH}; Path=/${sameSiteNone ? '; SameSite=None; Secure' : secure ? '; Secure' : ''}${this.#httpOnly}`
    const lines: string[] = []
    for (let i = 0; i < APP_COOKIE_SHARDS; i++) lines.push(`${this.prefix}${i}=${REMOVED_SHARD}${suffix}`)
    return lines
  }
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

const CHROMIUM = /(?:Chrome|Chromium)\/(\d+)/

/** True for Chromium 80 and later (Chrome, Edge, Opera, …): ALB's test for `SameSite=None` on app cookies. */
export function isChromium80OrLater (userAgent: string | undefined): boolean {
  if (userAgent === undefined) return false
  const match = CHROMIUM.exec(userAgent)
  return match !== null && Number(match[1]) >= 80
}
