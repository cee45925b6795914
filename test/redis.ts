import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { createConnection, createServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

interface Tap {
  teardown (fn: () => unknown): void
}

/** A redis-server of the test's own, on 127.0.0.1. */
export interface TestRedis {
  /** `redis://127.0.0.1:<port>`. */
  readonly url: string
  readonly port: number
  /** Stops it (SIGTERM, SIGKILL when it has not exited within 3 s; `'SIGKILL'` at once): connections drop, the port refuses. */
  stop (signal?: 'SIGTERM' | 'SIGKILL'): Promise<void>
  /** Starts it again on the same port, empty (nothing is saved), and waits until it answers PING. */
  start (): Promise<void>
  /** Freezes the process (SIGSTOP): connections stay open and new ones are accepted, but nothing is answered. */
  pause (): void
  /** Lets a paused process run again (SIGCONT). */
  resume (): void
}

const START_TIMEOUT_MS = 10_000
const STOP_TIMEOUT_MS = 3000

/**
 * Starts `redis-server` on a free loopback port, persisting nothing, and waits until it answers
 * PING; the test's teardown stops it and removes its directory. Fails the test with a clear
 * message when redis-server is not installed (CI installs the Debian package).
 */
export async function startRedis (t: Tap): Promise<TestRedis> {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-sticky-redis-'))
  const port = await freePort()
  let child: ChildProcess | null = null
  let paused = false

  const start = async (): Promise<void> => {
    if (child !== null) throw new Error('redis-server is already running')
    const started = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: ['ignore', 'pipe', 'pipe'] })
    child = started
    let output = ''
    const collect = (chunk: Buffer): void => { if (output.length < 10_000) output += chunk.toString() }
    started.stdout?.on('data', collect)
    started.stderr?.on('data', collect)
    const failed = new Promise<never>((resolve, reject) => {
      started.once('error', (err: NodeJS.ErrnoException) => {
        child = null
        reject(err.code === 'ENOENT'
          ? new Error('redis-server is not installed: these tests need it on the PATH (Debian/Ubuntu: apt-get install redis-server; .ci/run installs it)')
          : err)
      })
      started.once('exit', (code, signal) => {
        if (child === started) child = null
        reject(new Error(`redis-server exited while starting (${signal ?? `code ${String(code)}`}): ${output.trim()}`))
      })
    })
    failed.catch(() => {})
    await Promise.race([failed, waitForPong(port, START_TIMEOUT_MS, () => child === started)])
  }

  const stop = async (signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<void> => {
    const running = child
    if (running === null) return
    child = null
    if (running.exitCode !== null || running.signalCode !== null) return
    const exited = once(running, 'exit')
    // A stopped process handles SIGTERM only once it runs again.
    if (paused) running.kill('SIGCONT')
    paused = false
    running.kill(signal)
    const timer = setTimeout(() => running.kill('SIGKILL'), STOP_TIMEOUT_MS)
    await exited
    clearTimeout(timer)
  }

  t.teardown(async () => {
    await stop()
    await rm(dir, { recursive: true, force: true })
  })
  await start()

  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    stop,
    start,
    pause: () => {
      if (child === null) throw new Error('redis-server is not running')
      child.kill('SIGSTOP')
      paused = true
    },
    resume: () => {
      if (child === null) throw new Error('redis-server is not running')
      child.kill('SIGCONT')
      paused = false
    }
  }
}

/** A loopback port nothing listens on right now (the kernel's pick). */
async function freePort (): Promise<number> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

/** Polls `PING` on a fresh connection every 20 ms until `+PONG` comes back; fails after `timeoutMs`, stops when the process is gone. */
async function waitForPong (port: number, timeoutMs: number, running: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let last = 'no answer'
  while (Date.now() < deadline && running()) {
    last = await ping(port).catch((err: Error) => err.message)
    if (last.startsWith('+PONG')) return
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  throw new Error(`redis-server on port ${port} did not answer PING within ${timeoutMs} ms (last: ${last.trim()})`)
}

async function ping (port: number): Promise<string> {
  return await new Promise((resolve, reject) => {
    const socket = createConnection({ host: '127.0.0.1', port })
    socket.setTimeout(1000, () => socket.destroy(new Error('PING timed out')))
    socket.on('error', reject)
    socket.on('connect', () => socket.write('PING\r\n'))
    socket.once('data', (data: Buffer) => {
      socket.destroy()
      resolve(data.toString())
    })
  })
}
