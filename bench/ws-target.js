// The WebSocket row's targets: node bench/ws-target.js <port> <port> …, one `ws` WebSocketServer
// per port (targets a, b, c, … in order), all in this process so that they can be pinned to one
// CPU like the HTTP targets. Each echoes every message as it came (text or binary), and names
// itself in its 101 (`X-Target`), so that the load can check where each socket landed. Plain
// requests (the gateway's health checks) get 200 with the same header. Prints "ready".
import { createServer } from 'node:http'
import { WebSocketServer } from 'ws'

const ports = process.argv.slice(2).map(Number)
let listening = 0
ports.forEach((port, i) => {
  const id = String.fromCharCode(97 + i)
  const server = createServer((request, response) => {
    request.resume()
    response.writeHead(200, { 'content-type': 'text/plain', 'content-length': id.length, 'x-target': id })
    response.end(id)
  })
  server.keepAliveTimeout = 300_000
  // No compression either way: the row measures relaying frames, not deflating them.
  const wss = new WebSocketServer({ server, perMessageDeflate: false })
  wss.on('headers', (headers) => { headers.push(`X-Target: ${id}`) })
  wss.on('connection', (ws) => {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }))
    ws.on('error', () => {})
  })
  server.listen(port, '127.0.0.1', () => {
    if (++listening === ports.length) process.stdout.write('ready\n')
  })
})
