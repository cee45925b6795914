import { randomFillSync } from 'node:crypto'

/** WebSocket opcode of a Close frame (RFC 6455 §5.5.1). */
const OPCODE_CLOSE = 0x8
/** The longest frame header: 2 bytes, an 8-byte length, a 4-byte mask (RFC 6455 §5.2). */
const MAX_HEADER_BYTES = 14

/** Close code 1001, Going Away (RFC 6455 §7.4.1): the gateway or the target is leaving. */
export const CLOSE_GOING_AWAY = 1001

/**
 * Follows the frames of one direction of a WebSocket connection without copying or unmasking
 * them: it reads each frame header (opcode, 7/16/64-bit length, mask) and skips the payload,
 * so it knows where a frame ends. The gateway relays raw bytes and writes a frame of its own
 * (a Close) only at such a boundary: written inside a frame, it would be read as payload.
 */
export class FrameTracker {
  /** Payload bytes of the current frame still to come. */
  #remaining = 0
  /** Bytes of a header split across chunks. */
  readonly #partial = Buffer.allocUnsafe(MAX_HEADER_BYTES)
  #partialLength = 0
  /** A Close frame has started in this direction: the close handshake is under way. */
  closeSeen = false

  /** True between two frames. */
  get atBoundary (): boolean {
    return this.#remaining === 0 && this.#partialLength === 0
  }

  /**
   * Reads `chunk`. With `stopAtBoundary`, stops at the first frame boundary (its start when the
   * tracker is between frames) and returns its offset; -1 when the chunk ends inside a frame.
   * Without, reads all of it and returns its length.
   */
  feed (chunk: Buffer, stopAtBoundary: boolean): number {
    const length = chunk.length
    let i = 0
    for (;;) {
      if (this.#remaining > 0) {
        const left = length - i
        if (this.#remaining > left) {
          this.#remaining -= left
          return stopAtBoundary ? -1 : length
        }
        i += this.#remaining
        this.#remaining = 0
      }
      const partial = this.#partialLength
      if (partial === 0 && (stopAtBoundary || i === length)) return stopAtBoundary ? i : length
      const have = partial + length - i
      if (have < 2) {
        this.#keep(chunk, i)
        return stopAtBoundary ? -1 : length
      }
      const b0 = partial > 0 ? this.#partial[0] : chunk[i]
      const b1 = partial > 1 ? this.#partial[1] : chunk[i + 1 - partial]
      const len7 = b1 & 0x7f
      const size = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + ((b1 & 0x80) !== 0 ? 4 : 0)
      if (have < size) {
        this.#keep(chunk, i)
        return stopAtBoundary ? -1 : length
      }
      let payload = len7
      if (len7 >= 126) {
        payload = 0
        const end = len7 === 126 ? 4 : 10
        for (let k = 2; k < end; k++) payload = payload * 256 + (k < partial ? this.#partial[k] : chunk[i + k - partial])
      }
      i += size - partial
      this.#partialLength = 0
      if ((b0 & 0x0f) === OPCODE_CLOSE) this.closeSeen = true
      this.#remaining = payload
    }
  }

  /** Keeps the start of a header that the next chunk completes. */
  #keep (chunk: Buffer, from: number): void {
    chunk.copy(this.#partial, this.#partialLength, from)
    this.#partialLength += chunk.length - from
  }
}

/**
 * A Close frame with `code` and no reason (RFC 6455 §5.5.1): unmasked from the gateway as a
 * server (to the client), masked with a random key from the gateway as a client (to the target).
 */
export function closeFrame (code: number, masked: boolean): Buffer {
  if (!masked) return Buffer.from([0x88, 0x02, code >> 8, code & 0xff])
  const frame = Buffer.allocUnsafe(8)
  frame[0] = 0x88
  frame[1] = 0x82
  randomFillSync(frame, 2, 4)
  frame[6] = (code >> 8) ^ frame[2]
  frame[7] = (code & 0xff) ^ frame[3]
  return frame
}
