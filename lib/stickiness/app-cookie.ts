import { LB_COOKIE_LIFETIME_SECONDS } from './lb-cookie.js'

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
 * Reads `<prefix>0` … `<prefix>3` from a Cookie header and joins them in shard order. Only the
 * first value of each name counts; `_remove_` is no shard. Shards must run from 0 without a gap,
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
    if (index < 0 || index >= APP_COOKIE_SHARDS || shards[index] !== undefined) continue
    shards[index] = pair.slice(equals + 1).trim()
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

/**
 * Builds ALB's four `Set-Cookie` lines for a value: `<prefix>0=<first part>; Expires=<now + 7 d>;
 * Path=/`, and so on, every name always written, the unused ones as `_remove_`. `SameSite=None;
 * Secure` is added for Chromium 80 and later only, as ALB does. `value` null writes four
 * `_remove_`. Returns null when the value does not fit in four shards.
 */
export function appShardCookies (value: string | null, nowMs: number, sameSiteNone: boolean, prefix = APP_COOKIE_PREFIX): string[] | null {
  const limit = maxShardLength(prefix)
  if (value !== null && value.length > limit * APP_COOKIE_SHARDS) return null
  const expires = new Date((Math.floor(nowMs / 1000) + LB_COOKIE_LIFETIME_SECONDS) * 1000).toUTCString()
  const suffix = `; Expires=${expires}; Path=/${sameSiteNone ? '; SameSite=None; Secure' : ''}`
  const lines: string[] = []
  for (let i = 0; i < APP_COOKIE_SHARDS; i++) {
    const part = value === null ? '' : value.slice(i * limit, (i + 1) * limit)
    lines.push(`${prefix}${i}=${part === '' ? REMOVED_SHARD : part}${suffix}`)
  }
  return lines
}

const CHROMIUM = /(?:Chrome|Chromium)\/(\d+)/

/** True for Chromium 80 and later (Chrome, Edge, Opera, …): ALB's test for `SameSite=None` on app cookies. */
export function isChromium80OrLater (userAgent: string | undefined): boolean {
  if (userAgent === undefined) return false
  const match = CHROMIUM.exec(userAgent)
  return match !== null && Number(match[1]) >= 80
}
