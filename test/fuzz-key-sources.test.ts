import fc from 'fast-check'
import { test } from 'tap'
import { PeerTrust } from '../lib/client-address.js'
import { KeyHasher } from '../lib/hashing/key-hash.js'
import { HeaderSource } from '../lib/stickiness/header.js'
import { PathSource } from '../lib/stickiness/path.js'
import { QuerySource } from '../lib/stickiness/query.js'
import { MAX_KEY_LENGTH, type RequestView } from '../lib/stickiness/source.js'
import { SourceIpSource } from '../lib/stickiness/source-ip.js'
import { anyString, checkProperty } from './fuzz.js'

// Whatever a client sends, reading a key never throws, a key is never empty nor longer than
// MAX_KEY_LENGTH, and the same request always yields the same key; addresses of one network
// share a key, and nothing outside it does.

function view (url: string, headers: Record<string, string | string[]> = {}, remoteAddress?: string, xff?: string): RequestView {
  const all = xff === undefined ? headers : { ...headers, 'x-forwarded-for': xff }
  return { url, headers: all, raw: { socket: { remoteAddress }, headers: all } }
}

function validKey (key: string | null): boolean {
  return key === null || (key.length > 0 && key.length <= MAX_KEY_LENGTH)
}

const urlText = fc.oneof(anyString(60), fc.tuple(fc.constantFrom('/', '/a;jsessionid=', '/x?sid=', '/?a=1&sid='), anyString(40)).map(([a, b]) => a + b))

test('query, path and header keys: never a throw, never empty or oversized, the same for the same request', async (t) => {
  const query = new QuerySource({ type: 'query', name: 'sid' })
  const path = new PathSource({ type: 'path', name: 'jsessionid', pattern: null })
  const pattern = new PathSource({ type: 'path', name: null, pattern: /^\/s\/([^/]*)/ })
  const header = new HeaderSource({ type: 'header', name: 'x-session-id' })
  await checkProperty(t, 'every key source reads any request target', fc.property(urlText, fc.oneof(anyString(20), fc.array(anyString(10), { maxLength: 3 })), (url, value) => {
    const request = view(url, { 'x-session-id': value })
    for (const source of [query, path, pattern, header]) {
      const key = source.key(request)
      if (!validKey(key) || key !== source.key(request)) return false
    }
    return true
  }))
  await checkProperty(t, 'a key too long to be a key is none', fc.property(fc.integer({ min: MAX_KEY_LENGTH + 1, max: 3 * MAX_KEY_LENGTH }), (length) =>
    query.key(view(`/?sid=${'k'.repeat(length)}`)) === null && header.key(view('/', { 'x-session-id': 'k'.repeat(length) })) === null))
})

test('source_ip: any address text is read without a throw; a /24 and a /64 share one key, and addresses outside do not', async (t) => {
  const full = new SourceIpSource({ type: 'source_ip', ipv4PrefixLength: 32, ipv6PrefixLength: 128 }, new PeerTrust(null))
  const nets = new SourceIpSource({ type: 'source_ip', ipv4PrefixLength: 24, ipv6PrefixLength: 64 }, new PeerTrust(null))
  const trusting = new SourceIpSource({ type: 'source_ip', ipv4PrefixLength: 24, ipv6PrefixLength: 64 }, new PeerTrust(() => true))
  await checkProperty(t, 'any peer address and X-Forwarded-For', fc.property(fc.oneof(fc.ipV4(), fc.ipV6(), fc.ipV4Extended(), anyString(20)), fc.oneof(anyString(40), fc.ipV4(), fc.ipV6()), (address, xff) => {
    for (const source of [full, nets, trusting]) {
      const key = source.key(view('/', {}, address, xff))
      if (!validKey(key)) return false
    }
    return true
  }))
  const octet = fc.integer({ min: 0, max: 255 })
  await checkProperty(t, 'IPv4: same /24, same key; another /24, another key', fc.property(octet, octet, octet, octet, octet, (a, b, c, d, e) => {
    const one = nets.key(view('/', {}, `${a}.${b}.${c}.${d}`))
    const same = nets.key(view('/', {}, `::ffff:${a}.${b}.${c}.${e}`))
    const other = nets.key(view('/', {}, `${a}.${b}.${(c + 1) % 256}.${d}`))
    return one !== null && one === same && one !== other
  }))
  const group = fc.integer({ min: 0, max: 0xffff })
  await checkProperty(t, 'IPv6: same /64, same key, whatever its text form', fc.property(fc.array(group, { minLength: 8, maxLength: 8 }), group, (groups, low) => {
    const text = groups.map((value) => value.toString(16)).join(':')
    const padded = groups.map((value) => value.toString(16).padStart(4, '0')).join(':')
    const sameNet = [...groups.slice(0, 7), low].map((value) => value.toString(16)).join(':')
    const one = nets.key(view('/', {}, text))
    return one !== null && one === nets.key(view('/', {}, padded)) && one === nets.key(view('/', {}, sameNet))
  }))
})

test('the keyed hash: the same key hashes alike in every gateway sharing the key, another key ring hashes it otherwise', async (t) => {
  const one = new KeyHasher(Buffer.alloc(32, 1))
  const twin = new KeyHasher(Buffer.alloc(32, 1))
  const other = new KeyHasher(Buffer.alloc(32, 2))
  let differs = 0
  await checkProperty(t, 'deterministic per key ring, a lone surrogate included', fc.property(anyString(40), (key) => {
    const hash = one.hash(key)
    if (other.hash(key) !== hash) differs++
    return hash === twin.hash(key) && hash === one.hash(key) && one.hex(key).length === 16 && Number.isInteger(hash) && hash >= 0 && hash <= 0xffffffff
  }))
  t.ok(differs > 0, 'another key ring gives other hashes')
})
