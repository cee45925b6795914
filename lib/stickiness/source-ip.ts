import { isIPv4, isIPv6 } from 'node:net'
import type { PeerTrust } from '../client-address.js'
import { optionalInteger, refuseUnknownKeys, requireObject } from '../validate.js'
import type { KeySource, RequestView, ResolvedSourceIp } from './source.js'

const KEYS = ['type', 'ipv4PrefixLength', 'ipv6PrefixLength']
const MAPPED_IPV4 = '::ffff:'

export function resolveSourceIp (raw: unknown, path: string): ResolvedSourceIp {
  const options = requireObject(raw, path)
  refuseUnknownKeys(options, KEYS, `${path}.`)
  return Object.freeze({
    type: 'source_ip',
    ipv4PrefixLength: optionalInteger(options.ipv4PrefixLength, `${path}.ipv4PrefixLength`, 1, 32, 32),
    ipv6PrefixLength: optionalInteger(options.ipv6PrefixLength, `${path}.ipv6PrefixLength`, 1, 128, 128)
  })
}

/**
 * The client's address as the key, after `trustedProxies` (from a peer that is not trusted, the
 * peer's own address, whatever X-Forwarded-For it sent), cut to its network prefix when asked:
 * with `ipv4PrefixLength: 24` every client of 192.0.2.0/24 has one key. An IPv4-mapped IPv6
 * address (`::ffff:192.0.2.7`) counts as the IPv4 address.
 */
export class SourceIpSource implements KeySource {
  readonly type = 'source_ip'
  readonly #peers: PeerTrust
  readonly #v4Bits: number
  readonly #v4Mask: number
  readonly #v6Bits: number

  constructor (resolved: ResolvedSourceIp, peers: PeerTrust) {
    this.#peers = peers
    this.#v4Bits = resolved.ipv4PrefixLength
    this.#v4Mask = resolved.ipv4PrefixLength === 32 ? -1 : ~(0xffffffff >>> resolved.ipv4PrefixLength)
    this.#v6Bits = resolved.ipv6PrefixLength
  }

  key (request: RequestView): string | null {
    let address = this.#peers.clientAddress(request.raw)
    if (address === undefined || address === '') return null
    if (address.startsWith(MAPPED_IPV4) && isIPv4(address.slice(MAPPED_IPV4.length))) address = address.slice(MAPPED_IPV4.length)
    if (isIPv4(address)) return this.#v4Bits === 32 ? address : ipv4Network(address, this.#v4Mask, this.#v4Bits)
    const zone = address.indexOf('%')
    if (zone !== -1) address = address.slice(0, zone)
    if (!isIPv6(address)) return null
    return ipv6Network(address, this.#v6Bits)
  }
}

/** The address's network of `bits` bits, as text: `192.0.2.0/24`. */
function ipv4Network (address: string, mask: number, bits: number): string {
  const parts = address.split('.')
  const value = ((Number(parts[0]) << 24) | (Number(parts[1]) << 16) | (Number(parts[2]) << 8) | Number(parts[3])) & mask
  return `${value >>> 24}.${(value >>> 16) & 255}.${(value >>> 8) & 255}.${value & 255}/${bits}`
}

/** The address's first `bits` bits as eight groups (the rest zero) and the prefix length: one text per network. */
function ipv6Network (address: string, bits: number): string {
  const groups = parseIPv6(address)
  const out: string[] = []
  for (let i = 0; i < 8; i++) {
    const keep = Math.max(0, Math.min(16, bits - i * 16))
    const value = keep === 0 ? 0 : groups[i] & (0xffff << (16 - keep))
    out.push((value & 0xffff).toString(16))
  }
  return `${out.join(':')}/${bits}`
}

/** Eight 16-bit groups of a valid IPv6 address (`::` and a trailing dotted IPv4 part allowed). */
function parseIPv6 (address: string): number[] {
  let text = address
  const tail: number[] = []
  const lastColon = text.lastIndexOf(':')
  const last = text.slice(lastColon + 1)
  if (last.includes('.')) {
    const octets = last.split('.').map(Number)
    tail.push((octets[0] << 8) | octets[1], (octets[2] << 8) | octets[3])
    text = text.slice(0, lastColon + 1) + '0'
  }
  const [head, rest] = text.includes('::') ? text.split('::') : [text, null]
  const front = head === '' ? [] : head.split(':').map((group) => parseInt(group, 16))
  const back = rest === null || rest === '' ? [] : rest.split(':').map((group) => parseInt(group, 16))
  if (tail.length > 0) back.length > 0 ? back.splice(back.length - 1, 1, ...tail) : front.splice(front.length - 1, 1, ...tail)
  const groups = rest === null ? front : [...front, ...new Array<number>(8 - front.length - back.length).fill(0), ...back]
  return groups
}
