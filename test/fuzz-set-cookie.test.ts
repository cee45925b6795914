import fc from 'fast-check'
import { test } from 'tap'
import { COOKIE_PURPOSE_LB } from '../lib/cookie-codec.js'
import { APP_COOKIE_PREFIX, AppCookieSealer, readAppShards } from '../lib/stickiness/app-cookie.js'
import { parseCookieDate, readAppCookieChange, type AppCookieChange } from '../lib/stickiness/cookie-text.js'
import { anyString, checkProperty, cookieOctets, cookieToken, gatewayCookieNames, shrinkBudget, testCodec } from './fuzz.js'
import { CASE_HEADER, fuzzGateway, SET_COOKIE_HEADER, valuesOf, type FuzzGateway, type RawResponse } from './fuzz-gateway.js'

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

  // Blanks around the name, and an Expires that is no date after one that is, included.
  await checkProperty(t, 'readAppCookieChange is what a browser does, on lines built of real attributes', fc.property(appCookieLines, readsAsBrowser))
})

// Through a real gateway: whatever Set-Cookie lines a target sends, the gateway answers without
// a 500, its own stickiness cookies stay what a browser keeps, and no line of a
// target carries one of the gateway's names.

const E2E_RUNS = 150
const codec = testCodec()

/** A response's Set-Cookie lines as a target may write them: the gateway's names (forged), the app's session cookie, others. */
function targetLines (prefix: string): fc.Arbitrary<string[]> {
  const seconds = Math.floor(Date.now() / 1000)
  const forged = [codec.seal(COOKIE_PURPOSE_LB, { group: 'g', targetId: 't1', stickyUntilSeconds: seconds + 60, issuedAtSeconds: seconds }), 'forged', '_remove_', '']
  const name = fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...gatewayCookieNames(prefix), ...gatewayCookieNames('')) }, { weight: 2, arbitrary: fc.constant('sid') }, { weight: 1, arbitrary: cookieToken })
  const value = fc.oneof(fc.constantFrom(...forged), cookieOctets)
  const line = fc.tuple(name, value, fc.array(fc.tuple(fc.constantFrom('; ', ';'), attribute), { maxLength: 3 }))
    .map(([n, v, attributes]) => `${n}=${v}${attributes.map(([separator, a]) => separator + a).join('')}`)
    // Node refuses to write controls in a header: a target cannot send them.
    .map((text) => text.replace(/[\x00-\x08\x0a-\x1f\x7f]|[^\x00-\xff]/g, ''))
  return fc.array(line, { maxLength: 6 })
}

/** The value a browser keeps for each name: the last line of that name counts. */
function browserJar (lines: readonly string[]): Map<string, string> {
  const jar = new Map<string, string>()
  for (const line of lines) {
    const pair = line.split(';')[0]
    const equals = pair.indexOf('=')
    if (equals !== -1) jar.set(pair.slice(0, equals).trim(), pair.slice(equals + 1).trim())
  }
  return jar
}

interface SetCookieCase {
  readonly path: string
  readonly lines: readonly string[]
  readonly sid: boolean
}

async function sendSetCookie (gw: FuzzGateway, request: SetCookieCase, tag: number): Promise<RawResponse> {
  const encoded = Buffer.from(JSON.stringify(request.lines), 'utf8').toString('base64')
  const cookie = request.sid ? 'Cookie: sid=abc\r\n' : ''
  const reply = await gw.send(Buffer.from(`GET ${request.path} HTTP/1.1\r\nHost: ${gw.address}\r\n${CASE_HEADER}: ${tag}\r\n${SET_COOKIE_HEADER}: ${encoded}\r\n${cookie}\r\n`), { method: 'GET', reuse: true, end: false })
  gw.take(tag)
  if (reply.kind !== 'response') throw new Error(`no response: ${reply.kind} ${JSON.stringify(reply.data.slice(0, 200))}`)
  if (reply.response.status !== 200) throw new Error(`answered ${reply.response.status} ${reply.response.body.toString('latin1').slice(0, 200)}`)
  return reply.response
}

let setCookieTags = 0

for (const prefix of ['', 'gw-']) {
  const under = prefix === '' ? '' : ` (cookiePrefix '${prefix}')`
  const setCookieCase = (): fc.Arbitrary<SetCookieCase> => fc.record({ path: fc.constantFrom('/x/a', '/p/a', '/app/a'), lines: targetLines(prefix), sid: fc.boolean() })

  test(`whatever Set-Cookie lines a target sends, the gateway's own cookies still pin the client to it${under}`, async (t) => {
    const gw = await fuzzGateway(t, { cookiePrefix: prefix })
    const sealer = new AppCookieSealer(codec, `${prefix}${APP_COOKIE_PREFIX}`)
    await checkProperty(t, 'a 200 that carries the gateway\'s cookie for the target that answered', fc.asyncProperty(setCookieCase(), shrinkBudget(async (request) => {
      const response = await sendSetCookie(gw, request, ++setCookieTags)
      const servedBy = valuesOf(response.headers, 'x-served-by')[0]
      const lines = valuesOf(response.headers, 'set-cookie')
      if (request.path !== '/app/a') {
        // The gateway's own pair is there (a target's lines of that name are dropped).
        const ours = lines.filter((line) => line.startsWith(`${prefix}AWSALB=`)).map((line) => codec.open(COOKIE_PURPOSE_LB, line.slice(prefix.length + 7).split(';')[0]))
        if (!ours.some((opened) => opened?.payload.targetId === servedBy)) throw new Error(`served by ${servedBy}, no ${prefix}AWSALB line names it: ${JSON.stringify(lines)}`)
        return true
      }
      // App-cookie stickiness: the shards a browser keeps open, and follow the app cookie the target set.
      const jar = browserJar(lines)
      const header = [0, 1, 2, 3].map((i) => `${prefix}${APP_COOKIE_PREFIX}${i}=${jar.get(`${prefix}${APP_COOKIE_PREFIX}${i}`) ?? ''}`).join('; ')
      const shards = readAppShards(header, `${prefix}${APP_COOKIE_PREFIX}`)
      const bindings = typeof shards === 'string' ? sealer.open(shards) : null
      if (shards === 'invalid' || (typeof shards === 'string' && bindings === null)) throw new Error(`the shards a browser keeps do not open: ${JSON.stringify(lines)}`)
      const change = readAppCookieChange(lines.filter((line) => !line.startsWith(prefix + 'AWSALB')), 'sid', Date.now())
      const bound = change !== null && change !== 'deleted' ? true : change === null && request.sid
      if (bound && !(bindings ?? []).some((binding) => binding.group === 'g' && binding.targetId === servedBy)) throw new Error(`the app cookie is set, yet the shards bind no target ${servedBy}: ${JSON.stringify(lines)}`)
      return true
    })), E2E_RUNS)
  })

  test(`no Set-Cookie line of a target carries one of the gateway's names${under}`, async (t) => {
    const gw = await fuzzGateway(t, { cookiePrefix: prefix })
    const own = gatewayCookieNames(prefix)
    await checkProperty(t, 'each gateway name appears once per response at most, as the gateway wrote it', fc.asyncProperty(setCookieCase(), shrinkBudget(async (request) => {
      const response = await sendSetCookie(gw, request, ++setCookieTags)
      const names = valuesOf(response.headers, 'set-cookie').map((line) => line.slice(0, line.indexOf('=')).trim())
      for (const name of own) {
        const count = names.filter((n) => n === name).length
        if (count > 1) throw new Error(`${count} lines named ${name}: ${JSON.stringify(valuesOf(response.headers, 'set-cookie'))}`)
      }
      // The gateway writes AWSALB on lb_cookie routes (no CORS twin over plain HTTP), the four AWSALBAPP on app routes: nothing else of its names.
      const expected = request.path === '/app/a' ? own.filter((name) => name.includes('APP')) : own.slice(0, 1)
      const extra = names.filter((name) => own.includes(name) && !expected.includes(name))
      if (extra.length > 0) throw new Error(`a target's ${extra.join(', ')} reached the client: ${JSON.stringify(valuesOf(response.headers, 'set-cookie'))}`)
      return true
    })), E2E_RUNS)
  })
}
