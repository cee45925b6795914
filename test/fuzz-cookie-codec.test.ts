import fc from 'fast-check'
import { isDeepStrictEqual } from 'node:util'
import { test } from 'tap'
import { COOKIE_PURPOSE_APP, COOKIE_PURPOSE_LB, COOKIE_PURPOSE_TG, CookieCodec, type StickyPayload } from '../lib/cookie-codec.js'
import { decodeBindings, encodeBindings, MAX_APP_BINDINGS, type AppBinding } from '../lib/stickiness/app-bindings.js'
import { APP_COOKIE_PREFIX, APP_COOKIE_SHARDS, AppCookieSealer, maxShardLength } from '../lib/stickiness/app-cookie.js'
import { anyString, checkProperty } from './fuzz.js'

// A stickiness cookie comes back from the client: anything may stand in its place. Only a value
// this ring sealed, for this purpose, may ever open; everything else must be refused without
// throwing, whatever its length or alphabet.

const KEY = Buffer.alloc(32, 0x5e)
const OTHER_KEY = Buffer.alloc(32, 0x7a)
const PURPOSES = [COOKIE_PURPOSE_LB, COOKIE_PURPOSE_TG, COOKIE_PURPOSE_APP]

/** Group and target names as the options allow them. */
const nameChar = fc.constantFrom(...'ABCXYZabcxyz0189._:-')
const name = fc.oneof(fc.string({ unit: nameChar, minLength: 1, maxLength: 64 }), fc.string({ unit: nameChar, minLength: 1, maxLength: 64, size: 'max' }))
const seconds = fc.integer({ min: 0, max: 0xffffffff })
const payload: fc.Arbitrary<StickyPayload> = fc.record({ group: name, targetId: name, stickyUntilSeconds: seconds, issuedAtSeconds: seconds }, { noNullPrototype: true })
const base64urlChar = fc.constantFrom(...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_')

/** The ways a client can change a sealed value: a character replaced, added or dropped, cut, extended, another spelling of the same bytes, or another value glued on. */
function mutated (value: string): fc.Arbitrary<string> {
  return fc.oneof(
    fc.tuple(fc.nat(), base64urlChar).map(([at, c]) => { const i = at % value.length; return value.slice(0, i) + c + value.slice(i + 1) }),
    fc.tuple(fc.nat(), base64urlChar).map(([at, c]) => { const i = at % (value.length + 1); return value.slice(0, i) + c + value.slice(i) }),
    fc.nat().map((at) => { const i = at % value.length; return value.slice(0, i) + value.slice(i + 1) }),
    fc.nat().map((at) => value.slice(0, at % value.length)),
    fc.string({ unit: base64urlChar, minLength: 1, maxLength: 8 }).map((tail) => value + tail),
    // The spare low bits of the last character: the same bytes, spelt otherwise.
    fc.integer({ min: 1, max: 3 }).map((bits) => {
      const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
      const last = alphabet.indexOf(value[value.length - 1])
      return value.slice(0, -1) + alphabet[last ^ bits]
    }),
    fc.constantFrom(`${value}=`, `${value}==`, ` ${value}`, `"${value}"`, value.replace(/-/g, '+').replace(/_/g, '/'), value + value),
    anyString(4).map((noise) => value + noise)
  )
}

test('CookieCodec opens only what its ring sealed, for the purpose it was sealed for', async (t) => {
  const codec = new CookieCodec([KEY])
  const sealed = new Map<string, number>()
  for (const purpose of PURPOSES) {
    for (let i = 0; i < 4; i++) sealed.set(codec.seal(purpose, { group: 'g', targetId: `t${i}`, stickyUntilSeconds: 2_000_000_000, issuedAtSeconds: 1_900_000_000 + i }), purpose)
  }
  const foreign = new CookieCodec([OTHER_KEY]).seal(COOKIE_PURPOSE_LB, { group: 'g', targetId: 't0', stickyUntilSeconds: 2_000_000_000, issuedAtSeconds: 1_900_000_000 })
  const candidate = fc.oneof(
    anyString(200),
    fc.string({ unit: base64urlChar, maxLength: 200 }),
    fc.constantFrom(...sealed.keys(), foreign),
    fc.constantFrom(...sealed.keys(), foreign).chain(mutated)
  )

  await checkProperty(t, 'open and openWith never throw, and open nothing but a value sealed for that purpose', fc.property(
    candidate, fc.constantFrom(...PURPOSES, 0, 4, 255), fc.integer({ min: 0, max: 20_000 }),
    (value, purpose, maxChars) => {
      const expected = sealed.get(value) === purpose
      const opened = codec.open(purpose, value)
      if ((opened !== null) !== expected) throw new Error(`open(${purpose}) gave ${JSON.stringify(opened)}`)
      let parsed = 0
      const raw = codec.openWith(purpose, value, maxChars, (plain) => { parsed++; return plain }, false)
      if (parsed > 0 && !expected) throw new Error(`openWith(${purpose}) handed a plaintext to parse`)
      return (raw !== null) === (expected && value.length <= maxChars)
    }))
})

test('a sealed payload opens to itself, only with its purpose and a ring holding its key', async (t) => {
  const codec = new CookieCodec([KEY])
  const rotatedRing = new CookieCodec([OTHER_KEY, KEY])
  const otherRing = new CookieCodec([OTHER_KEY])
  await checkProperty(t, 'seal then open is the identity; another purpose or ring opens nothing', fc.property(
    payload, fc.constantFrom(...PURPOSES), fc.constantFrom(...PURPOSES),
    (sealedPayload, purpose, otherPurpose) => {
      const value = codec.seal(purpose, sealedPayload)
      if (!/^[A-Za-z0-9_-]+$/.test(value)) return false
      const opened = codec.open(purpose, value)
      if (!isDeepStrictEqual(opened, { payload: sealedPayload, rotated: false })) throw new Error(`opened ${JSON.stringify(opened)}`)
      // Opened values are remembered: the second open comes from the cache.
      if (!isDeepStrictEqual(codec.open(purpose, value), opened)) return false
      if (otherPurpose !== purpose && codec.open(otherPurpose, value) !== null) return false
      if (!isDeepStrictEqual(rotatedRing.open(purpose, value), { payload: sealedPayload, rotated: true })) return false
      return otherRing.open(purpose, value) === null
    }))

  await checkProperty(t, 'any byte of a sealed value flipped: it never opens', fc.property(
    fc.uint8Array({ maxLength: 300 }), fc.constantFrom(...PURPOSES), fc.nat(), fc.integer({ min: 1, max: 255 }),
    (plain, purpose, at, mask) => {
      const value = codec.sealBytes(purpose, Buffer.from(plain))
      const identity = (bytes: Buffer): Buffer => bytes
      const opened = codec.openWith(purpose, value, Infinity, identity, false)
      if (opened === null || !opened.equals(plain)) throw new Error(`the untouched value opened to ${String(opened?.toString('hex'))}`)
      const bytes = Buffer.from(value, 'base64url')
      bytes[at % bytes.length] ^= mask
      const flipped = bytes.toString('base64url')
      return PURPOSES.every((p) => codec.openWith(p, flipped, Infinity, identity, false) === null && codec.open(p, flipped) === null)
    }))
})

const binding: fc.Arbitrary<AppBinding> = fc.record({
  group: name,
  targetId: name,
  issuedAtSeconds: seconds,
  valueHash: fc.option(fc.uint8Array({ minLength: 8, maxLength: 8 }).map((bytes) => Buffer.from(bytes).toString('hex')), { nil: null })
}, { noNullPrototype: true })

/** Any bytes, the bytes encodeBindings writes, and those changed: a byte flipped, cut short, extended. */
const bindingBytes = (() => {
  const encoded = fc.array(binding, { maxLength: 12 }).map((bindings) => encodeBindings(bindings))
  return fc.oneof(
    fc.uint8Array({ maxLength: 400 }).map((array) => Buffer.from(array)),
    fc.uint8Array({ maxLength: 400 }).map((array) => Buffer.concat([Buffer.from([1]), Buffer.from(array)])),
    fc.tuple(encoded, fc.nat(), fc.integer({ min: 1, max: 255 })).map(([buffer, at, mask]) => {
      if (buffer.length === 0) return buffer
      const copy = Buffer.from(buffer)
      copy[at % copy.length] ^= mask
      return copy
    }),
    fc.tuple(encoded, fc.nat()).map(([buffer, at]) => buffer.subarray(0, at % (buffer.length + 1))),
    fc.tuple(encoded, fc.uint8Array({ minLength: 1, maxLength: 8 })).map(([buffer, tail]) => Buffer.concat([buffer, Buffer.from(tail)]))
  )
})()

test('decodeBindings never throws, whatever the bytes', async (t) => {
  await checkProperty(t, 'decodeBindings returns bindings or null for any bytes', fc.property(bindingBytes, (plain) => {
    const decoded = decodeBindings(plain)
    return decoded === null || Array.isArray(decoded)
  }))
})

test('app bindings: what decodes is what encodes, and what encodes decodes to itself', async (t) => {
  await checkProperty(t, 'what decodeBindings decodes is what encodeBindings writes back, unless a name was not UTF-8', fc.property(
    bindingBytes,
    (plain) => {
      let decoded: readonly AppBinding[] | null
      try {
        decoded = decodeBindings(plain)
      } catch {
        // The property above: skipped here, so this one guards the rest.
        fc.pre(false)
        return false
      }
      if (decoded === null) return true
      if (decoded.length !== plain[1]) return false
      for (const b of decoded) {
        if (!Number.isInteger(b.issuedAtSeconds) || b.issuedAtSeconds < 0 || b.issuedAtSeconds > 0xffffffff) return false
        if (b.valueHash !== null && !/^[0-9a-f]{16}$/.test(b.valueHash)) return false
      }
      const again = encodeBindings(decoded)
      return again.equals(plain) || decoded.some((b) => `${b.group}${b.targetId}`.includes('\uFFFD'))
    }))

  await checkProperty(t, 'encodeBindings then decodeBindings is the identity', fc.property(
    fc.array(binding, { maxLength: 40 }),
    (bindings) => isDeepStrictEqual(decodeBindings(encodeBindings(bindings)), bindings)))

  const codec = new CookieCodec([KEY])
  const sealer = new AppCookieSealer(codec, APP_COOKIE_PREFIX)
  const maxChars = maxShardLength() * APP_COOKIE_SHARDS
  await checkProperty(t, 'the sealed AWSALBAPP value fits four shards and opens to the most recent bindings', fc.property(
    fc.oneof(fc.array(binding, { minLength: 1, maxLength: 8 }), fc.array(binding, { minLength: 1, maxLength: MAX_APP_BINDINGS, size: 'max' })), fc.integer({ min: 0, max: 0xffffffff }),
    (bindings, nowSeconds) => {
      const value = sealer.seal(bindings, nowSeconds)
      if (value.length > maxChars) return false
      const opened = sealer.open(value)
      if (opened === null || opened.length === 0) return false
      return isDeepStrictEqual(opened, bindings.slice(0, opened.length))
    }), 100)
})
