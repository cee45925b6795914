import { test } from 'tap'
import { APP_COOKIE_PREFIX, AppCookieWriter, isChromium80OrLater, maxShardLength, readAppShards } from '../lib/stickiness/app-cookie.js'
import { parseCookieDate, readAppCookieChange, readCookieValue } from '../lib/stickiness/cookie-text.js'

const NOW = Date.UTC(2026, 10, 21, 12, 0, 0)
const LIMIT = maxShardLength()

/** ALB's four lines for `value` at NOW, from a fresh writer. */
function appShardCookies (value: string | null, nowMs: number, sameSiteNone: boolean): string[] | null {
  return new AppCookieWriter().setCookies(value, nowMs, sameSiteNone)
}

/** The Cookie header a browser sends back for these Set-Cookie lines. */
function cookieHeader (lines: string[]): string {
  return lines.map((line) => line.split(';')[0]).join('; ')
}

function valueOf (length: number): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
  let value = ''
  for (let i = 0; i < length; i++) value += alphabet[(i * 7) % alphabet.length]
  return value
}

test('a shard is a cookie of at most 4096 bytes, name included', async (t) => {
  t.equal(LIMIT, 4096 - 'AWSALBAPP-0='.length)
})

test('values at the shard boundaries round-trip through 1, 2, 3 and 4 shards; all four names are always written', async (t) => {
  for (const [length, shards] of [[1, 1], [LIMIT, 1], [LIMIT + 1, 2], [2 * LIMIT, 2], [2 * LIMIT + 1, 3], [3 * LIMIT + 1, 4], [4 * LIMIT, 4]] as const) {
    const value = valueOf(length)
    const lines = appShardCookies(value, NOW, false) as string[]
    t.equal(lines.length, 4, `${length} characters: four lines`)
    t.same(lines.map((line) => line.split('=')[0]), ['AWSALBAPP-0', 'AWSALBAPP-1', 'AWSALBAPP-2', 'AWSALBAPP-3'])
    t.equal(lines.filter((line) => !line.includes('=_remove_;')).length, shards, `${length} characters: ${shards} shard(s), the rest _remove_`)
    t.ok(lines.every((line) => Buffer.byteLength(line.split(';')[0]) <= 4096), 'every cookie within 4096 bytes')
    t.equal(readAppShards(cookieHeader(lines)), value, `${length} characters read back`)
  }
  t.equal(appShardCookies(valueOf(4 * LIMIT + 1), NOW, false), null, 'past 16 KB: does not fit')
})

test('ALB’s wire format: Expires now + 7 days, Path=/, SameSite=None; Secure only when asked', async (t) => {
  const [first, second] = appShardCookies('abc', NOW, false) as string[]
  t.equal(first, 'AWSALBAPP-0=abc; Expires=Sat, 28 Nov 2026 12:00:00 GMT; Path=/')
  t.equal(second, 'AWSALBAPP-1=_remove_; Expires=Sat, 28 Nov 2026 12:00:00 GMT; Path=/')
  t.equal((appShardCookies('abc', NOW, true) as string[])[0], 'AWSALBAPP-0=abc; Expires=Sat, 28 Nov 2026 12:00:00 GMT; Path=/; SameSite=None; Secure')
  t.same(appShardCookies(null, NOW, false)?.map((line) => line.split(';')[0]), ['AWSALBAPP-0=_remove_', 'AWSALBAPP-1=_remove_', 'AWSALBAPP-2=_remove_', 'AWSALBAPP-3=_remove_'], 'nothing bound: four _remove_')
})

test('reading: no shards, _remove_, gaps, oversized or foreign characters', async (t) => {
  t.equal(readAppShards(undefined), null)
  t.equal(readAppShards('JSESSIONID=1; AWSALB=x'), null, 'no shard names')
  t.equal(readAppShards('AWSALBAPP-0=_remove_; AWSALBAPP-1=_remove_; AWSALBAPP-2=_remove_; AWSALBAPP-3=_remove_'), null, 'four _remove_: no shards')
  t.equal(readAppShards('AWSALBAPP-1=abc; AWSALBAPP-0=xyz'), 'xyzabc', 'joined in shard order, whatever the header order')
  t.equal(readAppShards('AWSALBAPP-0=abc; AWSALBAPP-1=_remove_; AWSALBAPP-2=def'), 'invalid', 'a gap: invalid')
  t.equal(readAppShards('AWSALBAPP-1=abc'), 'invalid', 'shard 1 without shard 0: invalid')
  t.equal(readAppShards(`AWSALBAPP-0=${valueOf(LIMIT + 1)}`), 'invalid', 'a shard longer than a cookie can be: invalid')
  t.equal(readAppShards('AWSALBAPP-0=ab+c/='), 'invalid', 'not base64url: invalid')
  t.equal(readAppShards('AWSALBAPP-0=first; AWSALBAPP-0=second'), 'invalid', 'a name repeated with another value: invalid, never the first')
  t.equal(readAppShards('AWSALBAPP-0=abc; AWSALBAPP-1=def; AWSALBAPP-1=xyz'), 'invalid', 'a later shard repeated with another value: invalid')
  t.equal(readAppShards('AWSALBAPP-0=same; AWSALBAPP-0=same'), 'same', 'a name repeated with the same value is one shard')
  t.equal(readAppShards('AWSALBAPP-0=abc; AWSALBAPP-1=_remove_; AWSALBAPP-1=def'), 'invalid', '_remove_ beside a value of the same name: invalid')
  t.equal(readAppShards('AWSALBAPP-4=abc; AWSALBAPP-00=x'), null, 'names past the four shards are not ours')
  t.equal(readAppShards('X-AWSALBAPP-0=abc', 'X-AWSALBAPP-'), 'abc', 'another prefix')
  t.equal(readAppShards('AWSALBAPP-0=abc', 'X-AWSALBAPP-'), null, 'and only that prefix')
  t.equal(APP_COOKIE_PREFIX, 'AWSALBAPP-')
})

test('SameSite=None only for Chromium 80 and later, as ALB sniffs it', async (t) => {
  t.equal(isChromium80OrLater('Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/142.0.0.0 Safari/537.36'), true)
  t.equal(isChromium80OrLater('Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36 Edg/120.0'), true, 'Edge')
  t.equal(isChromium80OrLater('Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/79.0.3945 Safari/537.36'), false, 'Chrome 79')
  t.equal(isChromium80OrLater('Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0'), false, 'Firefox')
  t.equal(isChromium80OrLater('curl/8.5.0'), false)
  t.equal(isChromium80OrLater(undefined), false)
})

test('cookie dates are read as browsers read them (RFC 6265 §5.1.1): what they ignore is no date', async (t) => {
  const cases: Array<[string, number | null]> = [
    ['Thu, 01 Jan 1970 00:00:00 GMT', 0],
    ['Sat, 28 Nov 2026 23:33:54 GMT', Date.UTC(2026, 10, 28, 23, 33, 54)],
    ['Sunday, 06-Nov-94 08:49:37 GMT', Date.UTC(1994, 10, 6, 8, 49, 37)],
    ['Sun Nov  6 08:49:37 1994', Date.UTC(1994, 10, 6, 8, 49, 37)],
    ['Wed, 21 Oct 15 07:28:00 GMT', Date.UTC(2015, 9, 21, 7, 28, 0)],
    ['0', null],
    ['-1', null],
    ['yesterday', null],
    ['Thu, 01 Jan 1600 00:00:00 GMT', null],
    ['Thu, 31 Apr 2026 00:00:00 GMT', null],
    ['Thu, 01 Jan 2026 24:00:00 GMT', null],
    ['', null]
  ]
  for (const [text, expected] of cases) t.equal(parseCookieDate(text), expected, JSON.stringify(text))
})

test('a response deletes the app cookie with Max-Age <= 0 or a past Expires; an Expires browsers ignore does not', async (t) => {
  const now = Date.UTC(2026, 10, 21)
  const cases: Array<[string | string[], unknown]> = [
    ['sid=abc; Path=/; HttpOnly', { value: 'abc' }],
    ['sid=; Max-Age=0; Path=/', 'deleted'],
    ['sid=; max-age=-5', 'deleted'],
    ['sid=x; Expires=Thu, 01 Jan 1970 00:00:00 GMT', 'deleted'],
    ['sid=x; Max-Age=60; Expires=Thu, 01 Jan 1970 00:00:00 GMT', { value: 'x' }],
    ['sid=x; Expires=0', { value: 'x' }],
    ['sid=x; EXPIRES=Wed, 21 Oct 2015 07:28:00 GMT', 'deleted'],
    [['sid=; Max-Age=0', 'sid=new; Path=/'], { value: 'new' }],
    [['sid2=a', 'xsid=b', 'other=c'], null],
    [' sid=abc', { value: 'abc' }],
    ['sid =abc; Path=/', { value: 'abc' }],
    ['\tsid\t=abc', { value: 'abc' }],
    ['sid=x; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Expires=not a date', 'deleted'],
    ['x=sid=abc', null]
  ]
  for (const [lines, expected] of cases) t.same(readAppCookieChange(lines, 'sid', now), expected, JSON.stringify(lines))
})

test('the app cookie is read from whole cookie-pairs only', async (t) => {
  t.equal(readCookieValue('sid=a; b=c', 'sid'), 'a')
  t.equal(readCookieValue('b=c;sid=a', 'sid'), 'a')
  t.equal(readCookieValue('b=c;  \tsid=a', 'sid'), 'a')
  t.equal(readCookieValue('note=a sid=x', 'sid'), undefined, 'inside another value')
  t.equal(readCookieValue('xsid=a; sid2=b', 'sid'), undefined, 'other names that contain it')
  t.equal(readCookieValue('xsid=a; sid=b; sid=c', 'sid'), 'b', 'the first of its name')
  t.equal(readCookieValue(undefined, 'sid'), undefined)
})
