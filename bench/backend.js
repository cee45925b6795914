// Targets of the benchmark when nginx is not installed: one node:http server per port given,
// answering every request with the same ~100-byte body, keep-alive on. Prints "ready".
import { createServer } from 'node:http'
import { fileURLToPath } from 'node:url'

/** The body every benchmark target answers with (nginx or this server). */
export const BACKEND_BODY = '{"ok":true,"service":"cart","items":[],"note":"a fastify-sticky benchmark target"}'.padEnd(100, ' ')

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const ports = process.argv.slice(2).map(Number)
  let listening = 0
  ports.forEach((port, i) => {
    const id = String.fromCharCode(97 + i)
    const server = createServer((request, response) => {
      request.resume()
      response.writeHead(200, { 'content-type': 'text/plain', 'content-length': BACKEND_BODY.length, 'x-target': id })
      response.end(BACKEND_BODY)
    })
    server.keepAliveTimeout = 300_000
    server.listen(port, '127.0.0.1', () => {
      if (++listening === ports.length) process.stdout.write('ready\n')
    })
  })
}
