import { createHash } from 'node:crypto'
import { COOKIE_PURPOSE_APP, SEAL_OVERHEAD_BYTES, type CookieCodec } from '../cookie-codec.js'

/**
 * One app-sticky target group's binding inside the sealed `AWSALBAPP` value: the client's
 * session of that group's app cookie is pinned to `targetId` since `issuedAtSeconds`.
 */
export interface AppBinding {
  readonly group: string
  readonly targetId: string
  /** The last response that refreshed it; the group's window counts from here. */
  readonly issuedAtSeconds: number
  /** With `bindToCookieValue`: a hash of the app cookie's value it was bound with; else null. */
  readonly valueHash: string | null
}

/**
 * Most bindings one value carries (the least recently used go first); fewer when they would
 * not fit in ALB's four 4 KB shards (about 85 with names of the longest kind).
 */
export const MAX_APP_BINDINGS = 255

/** No bindings: one shared, frozen array. */
export const NO_BINDINGS: readonly AppBinding[] = Object.freeze([])

const FORMAT = 1
const HASH_BYTES = 8

/** The plaintext of a set of bindings: version, count, then per binding its time, hash, group and target. */
export function encodeBindings (bindings: readonly AppBinding[]): Buffer {
  const parts: Buffer[] = [Buffer.from([FORMAT, bindings.length])]
  for (const binding of bindings) {
    const group = Buffer.from(binding.group, 'utf8')
    const target = Buffer.from(binding.targetId, 'utf8')
    const hash = binding.valueHash === null ? null : Buffer.from(binding.valueHash, 'hex')
    const hashLength = hash === null ? 0 : HASH_BYTES
    const part = Buffer.allocUnsafe(4 + 1 + hashLength + 1 + group.length + 1 + target.length)
    part.writeUInt32BE(binding.issuedAtSeconds >>> 0, 0)
    part[4] = hashLength
    hash?.copy(part, 5)
    let at = 5 + hashLength
    part[at++] = group.length
    group.copy(part, at)
    at += group.length
    part[at++] = target.length
    target.copy(part, at)
    parts.push(part)
  }
  return Buffer.concat(parts)
}

/** The bindings of a plaintext `encodeBindings` wrote; null for anything else. */
export function decodeBindings (plain: Buffer): readonly AppBinding[] | null {
  if (plain.length < 2 || plain[0] !== FORMAT) return null
  const count = plain[1]
  const bindings: AppBinding[] = []
  let at = 2
  for (let i = 0; i < count; i++) {
    if (at + 5 > plain.length) return null
    const issuedAtSeconds = plain.readUInt32BE(at)
    const hashLength = plain[at + 4]
    if (hashLength !== 0 && hashLength !== HASH_BYTES) return null
    at += 5
    // The hash and the group's length byte must lie inside the plaintext.
    if (at + hashLength >= plain.length) return null
    const valueHash = hashLength === 0 ? null : plain.toString('hex', at, at + hashLength)
    at += hashLength
    const groupLength = plain[at++]
    if (at + groupLength >= plain.length) return null
    const group = plain.toString('utf8', at, at + groupLength)
    at += groupLength
    const targetLength = plain[at++]
    if (at + targetLength > plain.length) return null
    const targetId = plain.toString('utf8', at, at + targetLength)
    at += targetLength
    bindings.push(Object.freeze({ group, targetId, issuedAtSeconds, valueHash }))
  }
  return at === plain.length ? Object.freeze(bindings) : null
}

/** The hash of an app cookie's value that a binding keeps (sealed, so 64 bits suffice). */
export function hashCookieValue (value: string): string {
  return createHash('sha256').update(value).digest('hex').slice(0, HASH_BYTES * 2)
}

/**
 * Seals and opens a value of bindings for one purpose (`AWSALBAPP`, or `AWSALB` of several groups),
 * most recently used first, leaving out the last ones when all would not fit in `maxChars`.
 * Equal binding sets sealed in the same second share one value, sealed once; opened short values
 * are remembered by the codec.
 */
export class BindingSealer {
  readonly #codec: CookieCodec
  readonly #purpose: number
  readonly #maxChars: number
  /** The longest plaintext whose sealed base64url still fits in `maxChars`. */
  readonly #maxPlainBytes: number
  readonly #sealed = new Map<string, string>()
  #second = -1

  constructor (codec: CookieCodec, purpose: number, maxChars: number) {
    this.#codec = codec
    this.#purpose = purpose
    this.#maxChars = maxChars
    this.#maxPlainBytes = Math.floor(maxChars * 3 / 4) - SEAL_OVERHEAD_BYTES
  }

  /** Seals `bindings`, most recently used first; the last ones are left out when all would not fit. */
  seal (bindings: readonly AppBinding[], nowSeconds: number): string {
    if (nowSeconds !== this.#second || this.#sealed.size >= SEALED_PER_SECOND) {
      this.#second = nowSeconds
      this.#sealed.clear()
    }
    let plain = encodeBindings(bindings)
    for (let count = bindings.length - 1; plain.length > this.#maxPlainBytes; count--) plain = encodeBindings(bindings.slice(0, count))
    const key = plain.toString('latin1')
    let value = this.#sealed.get(key)
    if (value === undefined) {
      value = this.#codec.sealBytes(this.#purpose, plain)
      this.#sealed.set(key, value)
    }
    return value
  }

  /** The bindings of a sealed value; null when it does not open. */
  open (value: string): readonly AppBinding[] | null {
    return this.#codec.openWith(this.#purpose, value, this.#maxChars, decodeBindings, this.#purpose !== COOKIE_PURPOSE_APP)
  }
}

/** Most distinct binding sets remembered within one second. */
const SEALED_PER_SECOND = 1024
