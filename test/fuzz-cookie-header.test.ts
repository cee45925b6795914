import fc from 'fast-check'
import { test } from 'tap'
import { COOKIE_PURPOSE_LB } from '../lib/cookie-codec.js'
import { APP_COOKIE_PREFIX, APP_COOKIE_SHARDS, AppCookieWriter, maxShardLength, readAppShards } from '../lib/stickiness/app-cookie.js'
import { readCookieValue } from '../lib/stickiness/cookie-text.js'
import { LB_COOKIE, LbCookieWriter, MAX_LB_COOKIE_CANDIDATES, readLbCookies, TG_COOKIE } from '../lib/stickiness/lb-cookie.js'
import { startsPair } from '../lib/stickiness/cookie-text.js'
import { anyString, checkProperty, cookieHeader, cookieToken, cookieValue, gatewayCookieNames, testCodec } from './fuzz.js'

// The Cookie-header readers run on every request, on whatever a client sends: they must never
// throw, and must read exactly the cookie-pairs RFC 6265 §4.2.1 says the header holds.

const NOW_SECONDS = Math.floor(Date.UTC(2026, 10, 21, 12) / 1000)
const codec = testCodec()
const SEALED = Array.from({ length: 6 }, (_, i) => codec.seal(COOKIE_PURPOSE_LB, {
  group: 'g', targetId: `t${i % 3}`, stickyUntilSeconds: NOW_SECONDS + 60, issuedAtSeconds: NOW_SECONDS
}))
const PREFIXES = ['', 'gw-', 'AWSALB']
const NAMES = [...new Set(PREFIXES.flatMap(gatewayCookieNames)), 'sid', 'session']
const header = cookieHeader(NAMES, cookieValue(SEALED))
const pairName = fc.constantFrom(...PREFIXES).chain((prefix) => fc.constantFrom(prefix + LB_COOKIE, prefix + TG_COOKIE))

/** RFC 6265's blanks around a cookie-pair's parts: space and tab only. */
function trimBlanks (text: string): string {
  return text.replace(/^[ \t]+/, '').replace(/[ \t]+$/, '')
}

/** readLbCookies, written the plain way: split at `;`, take the pairs of `name` and its twin, in header order. */
function modelLbCookies (text: string | undefined, name: string): string[] {
  if (text === undefined) return []
  const lb: string[] = []
  const cors: string[] = []
  for (const raw of text.split(';')) {
    const pair = raw.replace(/^[ \t]+/, '')
    let list: string[]
    let value: string
    if (pair.startsWith(`${name}=`)) {
      list = lb
      value = pair.slice(name.length + 1)
    } else if (pair.startsWith(`${name}CORS=`)) {
      list = cors
      value = pair.slice(name.length + 5)
    } else {
      continue
    }
    value = trimBlanks(value)
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1)
    if (value !== '' && list.length < MAX_LB_COOKIE_CANDIDATES && !list.includes(value)) list.push(value)
  }
  const merged = [...lb]
  for (const value of cors) if (!merged.includes(value)) merged.push(value)
  return merged.slice(0, MAX_LB_COOKIE_CANDIDATES)
}

/** readCookieValue, the plain way: the first pair named `name`, its value trimmed. */
function modelCookieValue (text: string | undefined, name: string): string | undefined {
  if (text === undefined) return undefined
  for (const raw of text.split(';')) {
    const pair = raw.replace(/^[ \t]+/, '')
    if (pair.startsWith(`${name}=`)) return pair.slice(name.length + 1).trim()
  }
  return undefined
}

test('readLbCookies reads the pairs of a name and its CORS twin, in header order, at most four, for any header', async (t) => {
  await checkProperty(t, 'readLbCookies equals the plain reading and never throws', fc.property(
    fc.option(header, { nil: undefined }), pairName,
    (text, name) => {
      const read = readLbCookies(text, name)
      const expected = modelLbCookies(text, name)
      if (JSON.stringify(read) !== JSON.stringify(expected)) throw new Error(`read ${JSON.stringify(read)}, expected ${JSON.stringify(expected)}`)
      // The same header always decides the same way.
      return JSON.stringify(readLbCookies(text, name)) === JSON.stringify(read)
    }))

  await checkProperty(t, 'the value a gateway wrote is the first candidate of the header a browser sends back, whatever else it holds', fc.property(
    fc.constantFrom(...SEALED), pairName, fc.array(fc.tuple(cookieToken, cookieValue([])), { maxLength: 6 }), fc.nat(), fc.boolean(), fc.constantFrom('; ', ';', ' ; '),
    (value, name, others, at, corsFirst, separator) => {
      const [lb, cors] = new LbCookieWriter(name).setCookies(value, NOW_SECONDS * 1000).map((line) => line.split(';')[0])
      // Other cookies never carry `;`, and none has the gateway's names.
      const pairs = others.filter(([other]) => !other.startsWith(name)).map(([other, v]) => `${other}=${v.replace(/;/g, '')}`)
      pairs.splice(at % (pairs.length + 1), 0, ...(corsFirst ? [cors, lb] : [lb, cors]))
      const read = readLbCookies(pairs.join(separator), name)
      return read.length === 1 && read[0] === value
    }))
})

test('startsPair is true exactly where only blanks stand between a position and the previous `;` or the start', async (t) => {
  await checkProperty(t, 'startsPair equals the plain reading', fc.property(
    anyString(30), fc.nat(),
    (text, position) => {
      const at = position % (text.length + 1)
      const before = text.slice(0, at).replace(/[ \t]+$/, '')
      return startsPair(text, at) === (before === '' || before.endsWith(';'))
    }))
})

test('readCookieValue reads the first pair of a name, never a name inside another value', async (t) => {
  const appName = fc.oneof(cookieToken, fc.constantFrom('sid', 'session', 'JSESSIONID', 'AWSALB'))
  await checkProperty(t, 'readCookieValue equals the plain reading and never throws', fc.property(
    fc.option(cookieHeader(['sid', 'session', 'JSESSIONID', 'AWSALB', 'a'], cookieValue(SEALED)), { nil: undefined }), appName,
    (text, name) => {
      const read = readCookieValue(text, name)
      const expected = modelCookieValue(text, name)
      if (read !== expected) throw new Error(`read ${JSON.stringify(read)}, expected ${JSON.stringify(expected)}`)
      return readCookieValue(text, name) === read
    }))
})

test('readAppShards joins the shards an AppCookieWriter wrote, in any order among other cookies, and refuses broken sets', async (t) => {
  const base64url = fc.string({ unit: fc.constantFrom(...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'), minLength: 1, maxLength: 40 })
  const prefix = fc.constantFrom(APP_COOKIE_PREFIX, `gw-${APP_COOKIE_PREFIX}`, `x${APP_COOKIE_PREFIX}`)

  await checkProperty(t, 'readAppShards never throws; what it returns is null, invalid, or base64url that fits four shards', fc.property(
    fc.option(cookieHeader([...gatewayCookieNames(''), ...gatewayCookieNames('gw-')], cookieValue(SEALED)), { nil: undefined }), prefix,
    (text, name) => {
      const read = readAppShards(text, name)
      if (read !== readAppShards(text, name)) return false
      if (read === null || read === 'invalid') return true
      return /^[A-Za-z0-9_-]+$/.test(read) && read.length <= maxShardLength(name) * APP_COOKIE_SHARDS
    }))

  // Values of 1 to 4 shards: a repeated base64url piece, so long values cost no generation time.
  const value = fc.tuple(base64url, fc.integer({ min: 1, max: maxShardLength() * APP_COOKIE_SHARDS })).map(([piece, length]) => piece.repeat(Math.ceil(length / piece.length)).slice(0, length))
  await checkProperty(t, 'the four lines a writer sets come back as the value, in any order and among any other cookies', fc.property(
    value, prefix, fc.array(fc.tuple(cookieToken, cookieValue(SEALED)), { maxLength: 6 }), fc.array(fc.nat(), { minLength: 12, maxLength: 12 }), fc.constantFrom('; ', ';', ' ; '),
    (text, name, others, order, separator) => {
      const lines = new AppCookieWriter(name).setCookies(text, NOW_SECONDS * 1000, false)
      if (lines === null) return text.length > maxShardLength(name) * APP_COOKIE_SHARDS
      const pairs = others.filter(([other]) => !other.startsWith(name)).map(([other, v]) => `${other}=${v.replace(/;/g, '')}`)
      for (const [i, line] of lines.entries()) pairs.splice(order[i] % (pairs.length + 1), 0, line.split(';')[0])
      return readAppShards(pairs.join(separator), name) === text
    }))

  await checkProperty(t, 'a set with a missing shard before the last is invalid', fc.property(
    fc.integer({ min: 2, max: APP_COOKIE_SHARDS }), fc.nat(), base64url,
    (shards, dropped, piece) => {
      const limit = maxShardLength()
      const text = piece.repeat(Math.ceil((limit * (shards - 1) + 1) / piece.length)).slice(0, limit * (shards - 1) + 1)
      const lines = new AppCookieWriter().setCookies(text, NOW_SECONDS * 1000, false) as string[]
      const gap = dropped % (shards - 1)
      const pairs = lines.filter((_line, i) => i !== gap).map((line) => line.split(';')[0])
      return readAppShards(pairs.join('; ')) === 'invalid'
    }), 100)
})
