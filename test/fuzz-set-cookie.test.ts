import fc from 'fast-check'
import { test } from 'tap'
import { parseCookieDate, readAppCookieChange, type AppCookieChange } from '../lib/stickiness/app-cookie.js'
import { anyString, awaits, checkProperty, cookieOctets, cookieToken } from './fuzz.js'

// A target's Set-Cookie lines decide whether the app's session cookie was set, kept or deleted
// (application-cookie stickiness follows it). Whatever a target sends, reading them must never
// throw, and must agree with what a browser does with the same lines (RFC 6265 §5.2).

const NOW = Date.UTC(2026, 10, 21, 12, 0, 0)
const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat']
const LONG_DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday']
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec']
const FIRST_MS = Date.UTC(1601, 0, 1)
const LAST_MS = Date.UTC(9999, 11, 31, 23, 59, 59)

const two = (n: number): string => String(n).padStart(2, '0')

/** The date formats servers send in `Expires`: IMF-fixdate, RFC 850 (two-digit year), asctime, and Netscape's. */
function formatDate (ms: number, format: number): string {
  const d = new Date(ms)
  const time = `${two(d.getUTCHours())}:${two(d.getUTCMinutes())}:${two(d.getUTCSeconds())}`
  const day = d.getUTCDate()
  const month = MONTHS[d.getUTCMonth()]
  const year = d.getUTCFullYear()
  switch (format) {
    case 0: return d.toUTCString()
    case 1: return `${LONG_DAYS[d.getUTCDay()]}, ${two(day)}-${month}-${two(year % 100)} ${time} GMT`
    case 2: return `${DAYS[d.getUTCDay()]} ${month} ${String(day).padStart(2, ' ')} ${time} ${year}`
    default: return `${DAYS[d.getUTCDay()]}, ${two(day)}-${month}-${year} ${time} GMT`
  }
}

/** Any whole second a four-digit year can name, or one an RFC 850 date can (1970 to 2069). */
const cookieDate = fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: FIRST_MS / 1000, max: LAST_MS / 1000 }), fc.integer({ min: Date.UTC(1970, 0, 1) / 1000, max: Date.UTC(2069, 11, 31, 23, 59, 59) / 1000 }))
  .map(([format, seconds, twoDigitSeconds]) => {
    const ms = (format === 1 ? twoDigitSeconds : seconds) * 1000
    return { ms, text: formatDate(ms, format) }
  })

test('parseCookieDate reads every date format servers send, and nothing that is no date', async (t) => {
  await checkProperty(t, 'parseCookieDate never throws; it returns null or a whole second from 1601 to 9999', fc.property(
    fc.oneof(anyString(60), cookieDate.chain(({ text }) => fc.tuple(fc.nat(), anyString(4)).map(([at, noise]) => {
      const cut = at % (text.length + 1)
      return text.slice(0, cut) + noise + text.slice(cut)
    }))),
    (text) => {
      const ms = parseCookieDate(text)
      if (ms !== parseCookieDate(text)) return false
      return ms === null || (Number.isInteger(ms) && ms % 1000 === 0 && ms >= FIRST_MS && ms <= LAST_MS)
    }))

  await checkProperty(t, 'a date in any of the four formats reads as its own second', fc.property(
    cookieDate,
    ({ ms, text }) => parseCookieDate(text) === ms))
})

/** One attribute of a Set-Cookie line, as a target might write it. */
const attribute = fc.oneof(
  fc.integer({ min: -100, max: 100 }).map((n) => `Max-Age=${n}`),
  fc.constantFrom('Max-Age=0', 'max-age=-1', 'MAX-AGE=1', 'Max-Age=', 'Max-Age=1.5', 'Max-Age= 5', 'Max-Age=+5', 'Max-Age=0x10', 'Max-Age=99999999999999999999', 'Max-Age'),
  fc.integer({ min: -86_400, max: 86_400 }).chain((offset) => fc.integer({ min: 0, max: 3 }).map((format) => `Expires=${formatDate(Math.floor(NOW / 1000 + offset) * 1000, format)}`)),
  fc.constantFrom('Expires=garbage', 'expires=Thu, 01 Jan 1970 00:00:00 GMT', 'Expires=', 'Expires=Mon, 31 Apr 2030 00:00:00 GMT'),
  fc.constantFrom('Path=/', 'HttpOnly', 'Secure', 'SameSite=Lax', 'Domain=example.com', ''),
  anyString(10).map((text) => text.replace(/;/g, ''))
)

/** A Set-Cookie line: one of the app's cookie (as named, or near it), or another. */
function setCookieLine (name: string): fc.Arbitrary<string> {
  const lineName = fc.oneof({ weight: 4, arbitrary: fc.constant(name) }, { weight: 1, arbitrary: fc.constantFrom(`${name}x`, ` ${name}`, name.toUpperCase(), 'other') }, { weight: 1, arbitrary: cookieToken })
  return fc.tuple(lineName, cookieOctets, fc.array(fc.tuple(fc.constantFrom('; ', ';', ' ; '), attribute), { maxLength: 4 }))
    .map(([n, value, attributes]) => `${n}=${value}${attributes.map(([separator, a]) => separator + a).join('')}`)
}

/**
 * What a browser makes of the lines for cookie `name` (RFC 6265 §5.2, §5.3): the last line of
 * that name counts, the name and value trimmed of blanks; a Max-Age whose value is not
 * `-?DIGITS` is ignored, and so is an Expires that is no cookie date; of the rest, the last of
 * each attribute counts, and Max-Age wins over Expires.
 */
function browserChange (lines: readonly string[], name: string, nowMs: number): AppCookieChange {
  let change: AppCookieChange = null
  for (const line of lines) {
    const [pair, ...attributes] = line.split(';')
    const equals = pair.indexOf('=')
    if (equals === -1 || pair.slice(0, equals).trim() !== name) continue
    let maxAge: number | null = null
    let expires: number | null = null
    for (const part of attributes) {
      const at = part.indexOf('=')
      if (at === -1) continue
      const key = part.slice(0, at).trim().toLowerCase()
      const value = part.slice(at + 1).trim()
      if (key === 'max-age' && /^-?\d+$/.test(value)) maxAge = Number(value)
      if (key === 'expires') expires = parseCookieDate(value) ?? expires
    }
    const deleted = maxAge !== null ? maxAge <= 0 : expires !== null && expires <= nowMs
    change = deleted ? 'deleted' : { value: pair.slice(equals + 1).trim() }
  }
  return change
}

/**
 * Lines on which readAppCookieChange knowingly differs from a browser: a name with blanks around
 * it (` sid=x`, `sid =x`), or an Expires that is no date after one that is (the browser keeps the
 * valid one).
 */
function knownDifference (lines: readonly string[], name: string): boolean {
  return lines.some((line) => {
    const [pair, ...attributes] = line.split(';')
    const equals = pair.indexOf('=')
    if (equals === -1 || pair.slice(0, equals).trim() !== name) return false
    if (pair.slice(0, equals) !== name) return true
    const expires = attributes.filter((part) => part.includes('=') && part.slice(0, part.indexOf('=')).trim().toLowerCase() === 'expires')
    return expires.some((part, i) => i > 0 && parseCookieDate(part.slice(part.indexOf('=') + 1).trim()) === null)
  })
}

const appCookieLines = fc.array(setCookieLine('sid'), { maxLength: 5 })

/** True when readAppCookieChange reads `lines` as a browser does; throws with both readings when not. */
function readsAsBrowser (lines: readonly string[]): boolean {
  const change = readAppCookieChange(lines, 'sid', NOW)
  const expected = browserChange(lines, 'sid', NOW)
  if (JSON.stringify(change) !== JSON.stringify(expected)) throw new Error(`read ${JSON.stringify(change)}, a browser: ${JSON.stringify(expected)}`)
  return true
}

test('readAppCookieChange follows the app cookie as a browser would', async (t) => {
  await checkProperty(t, 'readAppCookieChange never throws on any header value', fc.property(
    fc.oneof(fc.constant(undefined), anyString(60), fc.array(fc.oneof(anyString(60), setCookieLine('sid'), fc.integer()), { maxLength: 5 }), fc.integer()),
    fc.oneof(fc.constant('sid'), cookieToken),
    (setCookie, name) => {
      const change = readAppCookieChange(setCookie, name, NOW)
      return JSON.stringify(readAppCookieChange(setCookie, name, NOW)) === JSON.stringify(change)
    }))

  await checkProperty(t, 'readAppCookieChange with lines built of real attributes is what a browser does (but for the known differences)', fc.property(
    appCookieLines,
    (lines) => {
      fc.pre(!knownDifference(lines, 'sid'))
      return readsAsBrowser(lines)
    }))
})

test('readAppCookieChange reads blanks around the name and an invalid Expires after a valid one as a browser does', awaits('finding: readAppCookieChange differs from RFC 6265 §5.2 on blanks around the name and on an invalid Expires after a valid one'), async (t) => {
  await checkProperty(t, 'readAppCookieChange is what a browser does, on any lines', fc.property(appCookieLines, readsAsBrowser))
})
