import { test } from 'tap'
import { COOKIE_PURPOSE_LB, CookieCodec, OPENED_CACHE_SIZE, type StickyPayload } from '../lib/cookie-codec.js'

const K1 = Buffer.alloc(32, 1)
const K2 = Buffer.alloc(32, 2)
const payload: StickyPayload = { group: 'carts', targetId: 'cart-a', stickyUntilSeconds: 1_800_000_000, issuedAtSeconds: 1_799_990_000 }

test('a sealed value opens to the same payload, is cookie-safe and shows nothing in clear', async (t) => {
  const codec = new CookieCodec([K1])
  const value = codec.seal(COOKIE_PURPOSE_LB, payload)
  t.match(value, /^[A-Za-z0-9_-]+$/, `base64url only, never URL-encoded: ${value}`)
  t.ok(value.length <= 128, `at most ALB's 128 characters, got ${value.length}`)
  t.notMatch(Buffer.from(value, 'base64url').toString('latin1'), /carts|cart-a/, 'names are encrypted')
  t.same(codec.open(COOKIE_PURPOSE_LB, value), { payload, rotated: false })
  t.not(codec.seal(COOKIE_PURPOSE_LB, payload), value, 'a fresh nonce every time: two seals differ')
})

test('every tampered, truncated, extended or foreign value fails to open', async (t) => {
  const codec = new CookieCodec([K1])
  const value = codec.seal(COOKIE_PURPOSE_LB, payload)
  const bytes = Buffer.from(value, 'base64url')
  let opened = 0
  for (let i = 0; i < bytes.length; i++) {
    const tampered = Buffer.from(bytes)
    tampered[i] ^= 0x01
    if (codec.open(COOKIE_PURPOSE_LB, tampered.toString('base64url')) !== null) opened++
  }
  t.equal(opened, 0, `no single flipped bit out of ${bytes.length} bytes opens`)
  for (let cut = 1; cut < value.length; cut += 7) {
    t.equal(codec.open(COOKIE_PURPOSE_LB, value.slice(0, value.length - cut)), null, `truncated by ${cut}`)
  }
  t.equal(codec.open(COOKIE_PURPOSE_LB, value + 'AAAA'), null, 'extended')
  t.equal(codec.open(COOKIE_PURPOSE_LB, ''), null, 'empty')
  t.equal(codec.open(COOKIE_PURPOSE_LB, '%%%not base64%%%'), null, 'not base64')
  t.equal(codec.open(COOKIE_PURPOSE_LB, 'A'.repeat(5000)), null, 'oversized')
  t.equal(new CookieCodec([K2]).open(COOKIE_PURPOSE_LB, value), null, 'sealed with a key not in the ring')
  t.equal(codec.open(COOKIE_PURPOSE_LB + 1, value), null, 'sealed for another purpose')
})

test('key ring: the first key seals, every key opens, and an older key is reported as rotated', async (t) => {
  const old = new CookieCodec([K1])
  const rotated = new CookieCodec([K2, K1])
  const before = old.seal(COOKIE_PURPOSE_LB, payload)
  t.same(rotated.open(COOKIE_PURPOSE_LB, before), { payload, rotated: true }, 'a cookie of the older key still opens')
  const after = rotated.seal(COOKIE_PURPOSE_LB, payload)
  t.same(new CookieCodec([K2]).open(COOKIE_PURPOSE_LB, after), { payload, rotated: false }, 'new values are sealed with the first key')
  t.equal(old.open(COOKIE_PURPOSE_LB, after), null, 'and do not open with the older key alone')
})

test('names of 64 characters round-trip; a ring needs a key', async (t) => {
  const codec = new CookieCodec([K1])
  const long = { ...payload, group: 'g'.repeat(64), targetId: 't'.repeat(64) }
  t.same(codec.open(COOKIE_PURPOSE_LB, codec.seal(COOKIE_PURPOSE_LB, long))?.payload, long)
  t.throws(() => new CookieCodec([]), RangeError)
})

test('opened values are remembered: only authenticated ones, for their own purpose, never more than the bound', async (t) => {
  const codec = new CookieCodec([K1])
  const value = codec.seal(COOKIE_PURPOSE_LB, payload)
  const first = codec.open(COOKIE_PURPOSE_LB, value)
  t.equal(codec.cachedCount, 1, 'an opened value is remembered')
  t.equal(codec.open(COOKIE_PURPOSE_LB, value), first, 'and handed out again without decrypting')
  t.ok(Object.isFrozen(first) && Object.isFrozen(first?.payload), 'frozen: no caller can change what the next one gets')
  t.equal(codec.open(COOKIE_PURPOSE_LB + 1, value), null, 'a remembered value still opens for its own purpose only')

  const bytes = Buffer.from(value, 'base64url')
  bytes[bytes.length - 1] ^= 0x01
  for (const forged of [bytes.toString('base64url'), 'A'.repeat(62), '', value.slice(1)]) {
    t.equal(codec.open(COOKIE_PURPOSE_LB, forged), null)
  }
  t.equal(codec.cachedCount, 1, 'values that fail to open are not remembered')

  for (let i = 0; i < OPENED_CACHE_SIZE + 100; i++) {
    codec.open(COOKIE_PURPOSE_LB, codec.seal(COOKIE_PURPOSE_LB, { ...payload, issuedAtSeconds: i }))
  }
  t.equal(codec.cachedCount, OPENED_CACHE_SIZE, `never more than ${OPENED_CACHE_SIZE} values`)
  t.same(codec.open(COOKIE_PURPOSE_LB, value), { payload, rotated: false }, 'a value pushed out still opens')
})

test('the opened-value cache: aliases of one sealed value do not each take a slot', async (t) => {
  const codec = new CookieCodec([K1])
  const value = codec.seal(COOKIE_PURPOSE_LB, payload)
  t.ok(codec.open(COOKIE_PURPOSE_LB, value), 'the value opens')
  // Node's base64url decoder skips what is not base64: every junk suffix (up to the length limit) is another key.
  let opened = 0
  for (const junk of ['!', '.', '~', '=', '*', '(', ')', "'"]) {
    for (let n = 1; n <= 100; n++) if (codec.open(COOKIE_PURPOSE_LB, value + junk.repeat(n)) !== null) opened++
  }
  t.equal(opened, 0, `${opened} non-canonical spellings of one cookie open`)
  t.equal(codec.cachedCount, 1, `one client's single cookie fills ${codec.cachedCount} of the 4096 slots`)
})
