import type { Socket } from 'node:net'
import { CLOSE_GOING_AWAY, closeFrame, FrameTracker } from './frames.js'

/** How long the peers have to finish the close handshake the gateway started, before both sockets are destroyed. */
export const CLOSE_GRACE_MS = 1000

/** What a tunnel reports to: the target it counts against (in flight until it ends). */
export interface TunnelOwner {
  readonly tunnels: Set<{ goAway (): void }>
  settle (): void
}

const OPEN = 0
/** A Close is to be written at the next frame boundary. */
const CLOSING = 1
/** The gateway wrote its Close: what follows in this direction is read (to see the peer's Close) but not relayed. */
const CLOSED = 2

/** One direction of a tunnel: the bytes `from` sends, relayed to `to` as they are. */
class Direction {
  readonly tracker = new FrameTracker()
  state = OPEN

  constructor (readonly from: Socket, readonly to: Socket, readonly masked: boolean) {}

  /** Relays a chunk; a pending Close goes in at the first frame boundary, and nothing after it. */
  relay (chunk: Buffer): void {
    if (this.state === OPEN) {
      this.tracker.feed(chunk, false)
      if (!this.to.write(chunk)) this.from.pause()
      return
    }
    if (this.state === CLOSED) {
      this.tracker.feed(chunk, false)
      return
    }
    const at = this.tracker.feed(chunk, true)
    if (at === -1) {
      if (!this.to.write(chunk)) this.from.pause()
      return
    }
    if (at > 0) this.to.write(chunk.subarray(0, at))
    this.#writeClose()
    if (at < chunk.length) this.tracker.feed(chunk.subarray(at), false)
  }

  /** Asks for a Close at the next boundary: now if between frames. Nothing when the peers already began closing. */
  close (): void {
    if (this.state !== OPEN || this.tracker.closeSeen) return
    this.state = CLOSING
    if (this.tracker.atBoundary) this.#writeClose()
  }

  #writeClose (): void {
    this.state = CLOSED
    if (!this.to.writable) return
    this.to.write(closeFrame(CLOSE_GOING_AWAY, this.masked))
    // What `from` sends now is only read: it must not wait for `to` to drain.
    this.from.resume()
  }
}

/**
 * An upgraded connection: the client's socket and the target's, piped both ways without
 * re-framing (extensions such as permessage-deflate pass end to end). It counts as one request
 * in flight on its target until both sockets have closed. `goAway()` (draining, shutdown, an
 * idle timeout) closes it the WebSocket way: a Close 1001 to each peer at a frame boundary,
 * the client's socket ended once the client answers, both destroyed after CLOSE_GRACE_MS.
 */
export class Tunnel {
  readonly #toTarget: Direction
  readonly #toClient: Direction
  readonly #owner: TunnelOwner
  #open = 2
  #grace: NodeJS.Timeout | null = null

  constructor (readonly client: Socket, readonly target: Socket, owner: TunnelOwner, idleTimeoutMs: number) {
    this.#owner = owner
    this.#toTarget = new Direction(client, target, true)
    this.#toClient = new Direction(target, client, false)
    owner.tunnels.add(this)
    for (const socket of [client, target]) {
      socket.setNoDelay(true)
      socket.setTimeout(0)
    }
    client.on('data', (chunk: Buffer) => this.#fromClient(chunk))
    target.on('data', (chunk: Buffer) => this.#fromTarget(chunk))
    client.on('drain', () => { if (this.#toClient.state !== CLOSED) target.resume() })
    target.on('drain', () => { if (this.#toTarget.state !== CLOSED) client.resume() })
    // One side gone (ended, reset, failed: 'close' follows an error) ends the other.
    client.on('end', () => this.#gone(this.#toTarget))
    target.on('end', () => this.#gone(this.#toClient))
    client.on('error', noop)
    target.on('error', noop)
    client.on('close', () => this.#closed(this.#toTarget))
    target.on('close', () => this.#closed(this.#toClient))
    if (idleTimeoutMs > 0) {
      // The client's socket sees every byte of the tunnel (read from it, or written to it).
      client.setTimeout(idleTimeoutMs)
      client.on('timeout', () => this.goAway())
    }
  }

  /** Bytes from the client (those that came with its upgrade request, say) for the target. */
  fromClient (chunk: Buffer): void {
    if (chunk.length > 0) this.#fromClient(chunk)
  }

  #fromClient (chunk: Buffer): void {
    const direction = this.#toTarget
    direction.relay(chunk)
    // The client answered the gateway's Close: as the server of that connection, the gateway ends it.
    if (direction.state === CLOSED && direction.tracker.closeSeen && this.#toClient.state === CLOSED) this.client.end()
  }

  #fromTarget (chunk: Buffer): void {
    this.#toClient.relay(chunk)
  }

  /** Closes the connection with 1001 (Going Away) to both peers, then ends it; safe to call more than once. */
  goAway (): void {
    if (this.#grace !== null) return
    this.#toClient.close()
    this.#toTarget.close()
    this.#grace = setTimeout(() => this.#destroy(), CLOSE_GRACE_MS)
    this.#grace.unref()
  }

  #destroy (): void {
    this.client.destroy()
    this.target.destroy()
  }

  /**
   * `direction.from` ended or closed: the other peer is told. When the two were not closing
   * already, it gets a Close 1001 (Going Away) first — a target that died or restarted, a client
   * that vanished, never just a dropped connection — unless a frame was cut off mid-way.
   */
  #gone (direction: Direction): void {
    if (direction.to.destroyed) return
    direction.close()
    direction.to.end()
    if (this.#grace === null) {
      this.#grace = setTimeout(() => this.#destroy(), CLOSE_GRACE_MS)
      this.#grace.unref()
    }
  }

  #closed (direction: Direction): void {
    this.#gone(direction)
    if (--this.#open > 0) return
    if (this.#grace !== null) clearTimeout(this.#grace)
    this.#owner.tunnels.delete(this)
    this.#owner.settle()
  }
}

function noop (): void {}
