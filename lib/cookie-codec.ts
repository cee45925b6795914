import { createCipheriv, createDecipheriv, createHash, randomFillSync } from 'node:crypto'

/** What a sealed stickiness cookie carries. Times are whole seconds since the epoch. */
export interface StickyPayload {
  /** Name of the target group the cookie is bound to. */
  readonly group: string
  /** Stable id of the target the client is pinned to (never its address). */
  readonly targetId: string
  /** The stickiness window ends here; later the cookie is `expired`. */
  readonly stickyUntilSeconds: number
  /** When this value was sealed. */
  readonly issuedAtSeconds: number
}

/** Result of a successful `open()`. */
export interface OpenedCookie {
  readonly payload: StickyPayload
  /** True when a key other than the sealing (first) key opened it. */
  readonly rotated: boolean
}

/** What a sealed value is for; authenticated with it so one kind cannot stand in for another. */
export const COOKIE_PURPOSE_LB = 1
/** `AWSALBTG`: the target group a weighted forward chose. */
export const COOKIE_PURPOSE_TG = 2
/** `AWSALBAPP-*`: the application-cookie bindings of every app-sticky target group. */
export const COOKIE_PURPOSE_APP = 3
/** `AWSALB` carrying the bindings of several lb-cookie target groups (one group's stays `COOKIE_PURPOSE_LB`). */
export const COOKIE_PURPOSE_LB_SET = 4

const FORMAT_VERSION = 1
const HEADER_BYTES = 2 // version, key id
const NONCE_BYTES = 12
const TAG_BYTES = 16
const TIMES_BYTES = 8
const MAX_NAME_BYTES = 64
/** Sealing adds this many bytes to a plaintext. */
export const SEAL_OVERHEAD_BYTES = HEADER_BYTES + NONCE_BYTES + TAG_BYTES
const MAX_PAYLOAD_SEALED_BYTES = SEAL_OVERHEAD_BYTES + TIMES_BYTES + 2 + 2 * MAX_NAME_BYTES
const BASE64URL = /^[A-Za-z0-9_-]+$/
/** A base64url `StickyPayload` value longer than this cannot be ours: refuse it before decoding. */
const MAX_PAYLOAD_SEALED_CHARS = Math.ceil((MAX_PAYLOAD_SEALED_BYTES * 4) / 3)
/** Opened values up to this length are remembered; longer ones (app-cookie sets) are opened each time. */
const MAX_CACHED_CHARS = 256
/**
 * How many opened values are remembered. A gateway seals one value per target and second
 * (see ListenerRule), so returning clients present few distinct values: this covers minutes of
 * them for dozens of targets, in about 1 MB.
 */
export const OPENED_CACHE_SIZE = 4096

interface RingKey {
  readonly id: number
  readonly key: Buffer
}

/**
 * Seals and opens stickiness cookie values with AES-256-GCM under a key ring: the first key
 * seals, every key opens. Values are base64url (no `=`), so they are valid cookie octets and
 * are never URL-encoded. Nothing here does I/O or reads the clock.
 */
export class CookieCodec {
  readonly #ring: readonly RingKey[]
  #nonces = Buffer.alloc(0)
  #nonceOffset = 0
  /**
   * Values this ring opened, oldest first. Opening is deterministic for a fixed ring, and only
   * authenticated values get in, so a client can neither poison nor grow it past its bound.
   */
  readonly #opened = new Map<string, { readonly purpose: number, readonly opened: unknown }>()

  /** @param keys 32-byte AES-256 keys; the first one seals. */
  constructor (keys: readonly Buffer[]) {
    if (keys.length === 0) throw new RangeError('CookieCodec needs at least one key')
    this.#ring = keys.map((key) => ({ id: keyIdOf(key), key }))
  }

  /** Seals `payload` for `purpose` with the first key of the ring. */
  seal (purpose: number, payload: StickyPayload): string {
    const group = Buffer.from(payload.group, 'utf8')
    const target = Buffer.from(payload.targetId, 'utf8')
    const plain = Buffer.allocUnsafe(TIMES_BYTES + 2 + group.length + target.length)
    plain.writeUInt32BE(payload.stickyUntilSeconds >>> 0, 0)
    plain.writeUInt32BE(payload.issuedAtSeconds >>> 0, 4)
    plain[8] = group.length
    group.copy(plain, 9)
    plain[9 + group.length] = target.length
    target.copy(plain, 10 + group.length)
    return this.sealBytes(purpose, plain)
  }

  /** Seals any plaintext for `purpose` with the first key of the ring. */
  sealBytes (purpose: number, plain: Buffer): string {
    const { id, key } = this.#ring[0]
    const header = Buffer.from([FORMAT_VERSION, id])
    const nonce = this.#nextNonce()
    const cipher = createCipheriv('aes-256-gcm', key, nonce)
    cipher.setAAD(aadOf(header, purpose))
    const body = cipher.update(plain)
    cipher.final()
    return Buffer.concat([header, nonce, body, cipher.getAuthTag()]).toString('base64url')
  }

  /**
   * Opens a value sealed for `purpose`. Returns null for anything that is not a value this
   * ring sealed: wrong length, bad base64, unknown key, tampered bytes, other purpose.
   */
  open (purpose: number, value: string): OpenedCookie | null {
    return this.openWith(purpose, value, MAX_PAYLOAD_SEALED_CHARS, parseOpened)
  }

  /**
   * Opens a value sealed for `purpose` and hands the plaintext to `parse`, which returns null for
   * a plaintext it does not accept; `rotated` says whether a key other than the first opened it.
   * Values up to `maxChars` are tried; with `remember`, short ones are kept with their parsed
   * result, so a given `purpose` must always be opened with the same `parse`. Values a client
   * rarely shares with others (app-cookie sets) are better not remembered: they would push out
   * the shared `AWSALB` ones.
   */
  openWith<T> (purpose: number, value: string, maxChars: number, parse: (plain: Buffer, rotated: boolean) => T | null, remember = true): T | null {
    const cached = remember ? this.#opened.get(value) : undefined
    if (cached !== undefined) return cached.purpose === purpose ? cached.opened as T : null
    if (value.length > maxChars || !BASE64URL.test(value)) return null
    const sealed = Buffer.from(value, 'base64url')
    if (sealed.length < SEAL_OVERHEAD_BYTES) return null
    // Node's decoder skips stray characters and spare bits: only the one spelling we write opens,
    // so a value cannot be varied to fill the cache of opened values.
    if (sealed.toString('base64url') !== value) return null
    if (sealed[0] !== FORMAT_VERSION) return null
    const keyId = sealed[1]
    const header = sealed.subarray(0, HEADER_BYTES)
    const nonce = sealed.subarray(HEADER_BYTES, HEADER_BYTES + NONCE_BYTES)
    const body = sealed.subarray(HEADER_BYTES + NONCE_BYTES, sealed.length - TAG_BYTES)
    const tag = sealed.subarray(sealed.length - TAG_BYTES)
    // Key ids are one byte of the key's hash: two keys may share one, so try each that matches.
    for (let i = 0; i < this.#ring.length; i++) {
      const ringKey = this.#ring[i]
      if (ringKey.id !== keyId) continue
      const plain = decrypt(ringKey.key, nonce, aadOf(header, purpose), body, tag)
      if (plain === null) continue
      const opened = parse(plain, i !== 0)
      if (opened !== null && remember && value.length <= MAX_CACHED_CHARS) this.#remember(value, purpose, opened)
      return opened
    }
    return null
  }

  /**
   * How many opened values are remembered now.
   * @internal
   */
  get cachedCount (): number {
    return this.#opened.size
  }

  #remember (value: string, purpose: number, opened: unknown): void {
    if (this.#opened.size >= OPENED_CACHE_SIZE) this.#opened.delete(this.#opened.keys().next().value as string)
    this.#opened.set(value, { purpose, opened })
  }

  #nextNonce (): Buffer {
    // One randomFillSync per 341 seals instead of a randomBytes call per seal.
    if (this.#nonceOffset + NONCE_BYTES > this.#nonces.length) {
      this.#nonces = randomFillSync(Buffer.allocUnsafe(NONCE_BYTES * 341))
      this.#nonceOffset = 0
    }
    const nonce = this.#nonces.subarray(this.#nonceOffset, this.#nonceOffset + NONCE_BYTES)
    this.#nonceOffset += NONCE_BYTES
    return nonce
  }
}

function keyIdOf (key: Buffer): number {
  return createHash('sha256').update(key).digest()[0]
}

function aadOf (header: Buffer, purpose: number): Buffer {
  return Buffer.from([header[0], header[1], purpose])
}

function decrypt (key: Buffer, nonce: Buffer, aad: Buffer, body: Buffer, tag: Buffer): Buffer | null {
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, nonce)
    decipher.setAAD(aad)
    decipher.setAuthTag(tag)
    const plain = decipher.update(body)
    decipher.final()
    return plain
  } catch {
    return null
  }
}

function parseOpened (plain: Buffer, rotated: boolean): OpenedCookie | null {
  const payload = parsePlain(plain)
  return payload === null ? null : Object.freeze({ payload: Object.freeze(payload), rotated })
}

function parsePlain (plain: Buffer): StickyPayload | null {
  if (plain.length < TIMES_BYTES + 2) return null
  const groupLength = plain[8]
  const targetAt = 9 + groupLength
  if (targetAt >= plain.length) return null
  const targetLength = plain[targetAt]
  if (targetAt + 1 + targetLength !== plain.length) return null
  return {
    stickyUntilSeconds: plain.readUInt32BE(0),
    issuedAtSeconds: plain.readUInt32BE(4),
    group: plain.toString('utf8', 9, targetAt),
    targetId: plain.toString('utf8', targetAt + 1, targetAt + 1 + targetLength)
  }
}
