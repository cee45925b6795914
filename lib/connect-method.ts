import type { EventEmitter } from 'node:events'
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import { FST_STICKY_METHOD_NOT_ALLOWED } from './errors.js'

/**
 * Answers CONNECT on `server` with 405, `Allow` (the `methods()` but CONNECT) and the JSON body
 * of a Fastify error, then closes the connection: without a 'connect' listener, Node destroys an
 * HTTP/1 CONNECT request's connection and the client gets no answer at all. An app's own
 * 'connect' listener (a forward proxy), added before or after, takes the request instead.
 * Returns the function that removes the listener.
 */
export function refuseConnect (server: EventEmitter, methods: () => readonly string[]): () => void {
  const onConnect = (request: IncomingMessage, socket: Duplex | ServerResponse): void => {
    if (server.listenerCount('connect') > 1) return
    const err = new FST_STICKY_METHOD_NOT_ALLOWED(request.method ?? 'CONNECT')
    const body = JSON.stringify({ statusCode: 405, code: err.code, error: STATUS_CODES[405], message: err.message })
    const allow = methods().filter((method) => method !== 'CONNECT').join(', ')
    // HTTP/2 hands over a stream's response, not a connection.
    if ('writeHead' in socket) {
      socket.writeHead(405, { allow, 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) })
      socket.end(body)
      return
    }
    // Node took its own listeners off the socket: one that resets must not throw.
    socket.on('error', noop)
    socket.end(`HTTP/1.1 405 ${STATUS_CODES[405] ?? ''}\r\nAllow: ${allow}\r\nContent-Type: application/json; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`, () => socket.destroy())
  }
  server.on('connect', onConnect)
  return () => { server.off('connect', onConnect) }
}

function noop (): void {}
