import { test } from 'tap'
import { APP_COOKIE_PREFIX, appShardCookies, isChromium80OrLater, maxShardLength, readAppShards } from '../lib/stickiness/app-cookie.js'

const NOW = Date.UTC(2026, 10, 21, 12, 0, 0)
const LIMIT = maxShardLength()

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
  t.equal(readAppShards('AWSALBAPP-0=first; AWSALBAPP-0=second'), 'first', 'the first of a repeated name counts')
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
