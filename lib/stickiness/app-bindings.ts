import { createHash } from 'node:crypto'

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
