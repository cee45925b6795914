import { hkdfSync } from 'node:crypto'
import { createRequire } from 'node:module'

interface SipHashResult { readonly h: number, readonly l: number }
interface SipHash13 { hash (key: Uint32Array, message: Uint8Array): SipHashResult }

// SipHash-1-3 (Rust's HashMap default): a keyed pseudo-random function built for short keys
// chosen by clients. The package is CommonJS and ships no types.
const sipHash13 = createRequire(import.meta.url)('siphash/lib/siphash13.js') as SipHash13

/** Longest key (in UTF-16 code units) that is remembered with its hash; longer ones are hashed each time. */
const MEMO_KEY_LENGTH = 128
/** Keys remembered per generation; two generations are kept (the older one is dropped when the newer fills). */
const MEMO_ENTRIES = 8192

/** A key's 64-bit SipHash in two 32-bit halves. */
export interface KeyDigest {
  /** Bits 32–63. */
  readonly high: number
  /** Bits 0–31: what consistent hashing uses. */
  readonly low: number
  /** The 64 bits as 16 hex characters, made when first asked. */
  hex: string | null
}

/**
 * Hashes the keys clients send (an address, a header, a session id) with a secret derived from
 * the key ring, so nobody can compute which target a key lands on, or collide keys on purpose,
 * without the ring. Each gateway sharing the ring hashes alike. Recent short keys are remembered
 * (in two bounded generations), so a returning client costs a map lookup; a new key costs about
 * a microsecond.
 */
export class KeyHasher {
  readonly #key: Uint32Array
  #memo = new Map<string, KeyDigest>()
  #previous = new Map<string, KeyDigest>()

  constructor (secret: Buffer) {
    const derived = Buffer.from(hkdfSync('sha256', secret, Buffer.alloc(0), 'fastify-sticky key hash', 16))
    this.#key = new Uint32Array([derived.readUInt32LE(0), derived.readUInt32LE(4), derived.readUInt32LE(8), derived.readUInt32LE(12)])
  }

  /** The key's 64-bit digest (a lone surrogate is read as U+FFFD, as UTF-8 encoding does). */
  digest (key: string): KeyDigest {
    let digest = this.#memo.get(key)
    if (digest !== undefined) return digest
    digest = this.#previous.get(key)
    if (digest === undefined) {
      const result = sipHash13.hash(this.#key, Buffer.from(key, 'utf8'))
      digest = { high: result.h >>> 0, low: result.l >>> 0, hex: null }
    }
    if (key.length <= MEMO_KEY_LENGTH) {
      if (this.#memo.size >= MEMO_ENTRIES) {
        this.#previous = this.#memo
        this.#memo = new Map()
      }
      this.#memo.set(key, digest)
    }
    return digest
  }

  /** The key's 32-bit hash, for consistent hashing. */
  hash (key: string): number {
    return this.digest(key).low
  }

  /** The key's digest as 16 hex characters: what a store keeps instead of the key itself. */
  hex (key: string): string {
    const digest = this.digest(key)
    digest.hex ??= digest.high.toString(16).padStart(8, '0') + digest.low.toString(16).padStart(8, '0')
    return digest.hex
  }
}
