// The `ws-bare` row of the benchmark: the least a Node.js process does to relay a WebSocket, as
// the ceiling of a Node gateway for that row. No HTTP parsing, no stickiness, no cookies: each
// client connection is piped, bytes as they come, to a new connection to the next target in turn
// (the handshake passes through as bytes too), Nagle off on both, as lib/websocket/tunnel.ts does.
import { connect, createServer } from 'node:net'

/** A net.Server relaying every connection to `origins` in turn, and a `close()` that ends it. */
export function createBareRelay (origins) {
  const targets = origins.map((origin) => new URL(origin))
  const sockets = new Set()
  let next = 0
  const server = createServer((client) => {
    const { hostname, port } = targets[next]
    next = (next + 1) % targets.length
    const target = connect(Number(port), hostname)
    for (const socket of [client, target]) {
      socket.setNoDelay(true)
      socket.on('error', () => { client.destroy(); target.destroy() })
      sockets.add(socket)
      socket.once('close', () => sockets.delete(socket))
    }
    client.pipe(target)
    target.pipe(client)
  })
  const close = async () => {
    for (const socket of sockets) socket.destroy()
    await new Promise((resolve) => server.close(resolve))
  }
  return { server, close }
}
