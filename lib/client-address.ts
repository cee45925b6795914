import proxyAddr from '@fastify/proxy-addr'
import type { IncomingMessage } from 'node:http'

/** A connection's socket, as far as the trust rule reads it. */
interface Peer { readonly remoteAddress?: string }

/**
 * `trustedProxies` applied to connections: whether a peer is a trusted proxy is judged once per
 * connection, by its address; the client's address is the peer's own unless the peer is
 * trusted, then the nearest untrusted address of its X-Forwarded-For (proxy-addr's walk).
 */
export class PeerTrust {
  readonly #trust: ((address: string, hop: number) => boolean) | null
  /** Connections whose peer is a trusted proxy (true) or not (false), judged at their first request. */
  readonly #trusted = new WeakMap<object, boolean>()

  constructor (trust: ((address: string, hop: number) => boolean) | null) {
    this.#trust = trust
  }

  /** Whether the peer at the other end of `socket` is one of trustedProxies. */
  trusts (socket: Peer | null | undefined): boolean {
    const trust = this.#trust
    if (trust === null || socket == null) return false
    let trusted = this.#trusted.get(socket)
    if (trusted === undefined) {
      const address = socket.remoteAddress
      trusted = address !== undefined && Boolean(trust(address, 0))
      this.#trusted.set(socket, trusted)
    }
    return trusted
  }

  /** The client's address: never one a peer that is not trusted wrote in a header. */
  clientAddress (raw: { readonly socket: Peer | null, readonly headers: IncomingMessage['headers'] }): string | undefined {
    const socket = raw.socket
    if (!this.trusts(socket)) return socket?.remoteAddress
    return proxyAddr(raw as IncomingMessage, this.#trust as (address: string, hop: number) => boolean)
  }
}
