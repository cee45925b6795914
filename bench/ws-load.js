// The WebSocket row's load: node bench/ws-load.js <file>, the file holding
//   { "sockets": [{ "url": "ws://…", "cookie": "AWSALB=…" | "", "expect": "a" | null, "gatewayCookie": true }, …],
//     "seconds": 5, "bytes": 100 }
// Opens every socket (each with its Cookie header, if any), checks that the 101 names the
// expected target (`X-Target`, when `expect` is set) and carries the gateway's AWSALB cookie
// (when `gatewayCookie` is set), then runs a closed loop on each socket for `seconds`: send
// one binary message of `bytes`, wait for its echo, send the next. Prints one JSON line: echoes completed
// within the time, messages per second, p50 and p99 of the round trips (ms, from every sample),
// and errors (failed handshakes, sockets on the wrong target, bad echoes, sockets that closed or
// had no echo within 10 s of the end).
import { readFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import WebSocket from 'ws'

/** How long a socket may wait for its last echo after the time is up before it counts as an error. */
const LAST_ECHO_MS = 10_000

const { sockets, seconds, bytes } = JSON.parse(readFileSync(process.argv[2], 'utf8'))
const payload = Buffer.from('x'.repeat(bytes))
let errors = 0
const failures = []
const fail = (why) => {
  errors++
  if (failures.length < 5) failures.push(why)
}

const opened = (await Promise.all(sockets.map(open))).filter((ws) => ws !== null)
const samples = createSamples()
let echoes = 0
const started = performance.now()
const end = started + seconds * 1000
await Promise.all(opened.map(loop))
const elapsedMs = Math.min(performance.now(), end) - started
await Promise.all(opened.map(close))
const sorted = samples.sorted()
process.stdout.write(JSON.stringify({
  sockets: opened.length,
  messages: echoes,
  mps: echoes / (elapsedMs / 1000),
  p50Ms: percentile(sorted, 0.5),
  p99Ms: percentile(sorted, 0.99),
  errors,
  failures
}) + '\n')

/** Opens one socket and checks its handshake; null when it failed. */
function open ({ url, cookie, expect, gatewayCookie }) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { headers: cookie ? { cookie } : {}, perMessageDeflate: false })
    ws.once('upgrade', (response) => {
      const target = response.headers['x-target']
      if (expect !== null && target !== expect) fail(`a socket whose cookie pins it to ${expect} landed on ${target}`)
      if (gatewayCookie === true && !String(response.headers['set-cookie'] ?? '').includes('AWSALB=')) fail('a 101 without the gateway\'s AWSALB cookie')
    })
    ws.once('open', () => resolve(ws))
    ws.once('error', (error) => {
      fail(`handshake: ${error.message}`)
      resolve(null)
    })
  })
}

/** Sends, waits for the echo, and again until the time is up; resolves after the last echo. */
function loop (ws) {
  return new Promise((resolve) => {
    let sentAt = 0
    const send = () => {
      sentAt = performance.now()
      ws.send(payload)
    }
    const timer = setTimeout(() => { fail('no echo within 10 s of the end'); done() }, end - performance.now() + LAST_ECHO_MS)
    const done = () => {
      clearTimeout(timer)
      ws.off('message', onMessage)
      ws.off('close', onClose)
      resolve()
    }
    const onMessage = (data) => {
      const now = performance.now()
      if (!payload.equals(data)) fail('an echo that differs from the message sent')
      if (now <= end) {
        echoes++
        samples.push(now - sentAt)
        send()
      } else {
        done()
      }
    }
    const onClose = (code) => { fail(`a socket closed during the run (${code})`); done() }
    ws.on('message', onMessage)
    ws.on('close', onClose)
    ws.on('error', () => {})
    send()
  })
}

/** Closes a socket the WebSocket way and waits for it, or destroys it after a second. */
function close (ws) {
  if (ws.readyState === WebSocket.CLOSED) return Promise.resolve()
  return new Promise((resolve) => {
    const timer = setTimeout(() => ws.terminate(), 1000)
    ws.once('close', () => { clearTimeout(timer); resolve() })
    ws.close(1000)
  })
}

function percentile (sorted, p) {
  if (sorted.length === 0) return null
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]
}

/** Round-trip times in ms, kept whole (a few hundred thousand per run) and sorted once at the end. */
function createSamples () {
  let values = new Float64Array(65_536)
  let length = 0
  return {
    push (value) {
      if (length === values.length) {
        const grown = new Float64Array(values.length * 2)
        grown.set(values)
        values = grown
      }
      values[length++] = value
    },
    sorted () {
      return values.subarray(0, length).sort()
    }
  }
}
