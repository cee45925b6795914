import { execFile, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import { test } from 'tap'
import { startTargets, waitFor } from './setup.js'

const run = promisify(execFile)
const root = fileURLToPath(new URL('..', import.meta.url))

/** The first fenced block of `lang` in README's "Add it to your gateway". */
function snippet (lang: string): string {
  const readme = readFileSync(join(root, 'README.md'), 'utf8')
  const start = readme.indexOf('\n## Add it to your gateway')
  const section = readme.slice(start, readme.indexOf('\n## ', start + 1))
  const match = section.match(new RegExp('^```' + lang + '\\n([\\s\\S]*?)^```$', 'm'))
  if (match === null) throw new Error(`README's "Add it to your gateway" has no ${lang} block`)
  return match[1]
}

/** A directory inside the package, so `import 'fastify-sticky'` resolves to the built package by its own name. */
function scratch (): string {
  mkdirSync(join(root, 'tmp'), { recursive: true })
  return mkdtempSync(join(root, 'tmp', 'readme-'))
}

test('README’s TypeScript and JavaScript gateways type-check in strict mode against the built package', { timeout: 180_000 }, async (t) => {
  const dir = scratch()
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'gateway.ts'), snippet('ts'))
  writeFileSync(join(dir, 'gateway.js'), snippet('js'))
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')
  const args = [tsc, '--noEmit', '--strict', '--target', 'es2022', '--module', 'nodenext', '--moduleResolution', 'nodenext',
    '--skipLibCheck', '--types', 'node', '--allowJs', '--checkJs', join(dir, 'gateway.ts'), join(dir, 'gateway.js')]
  const result = await run(process.execPath, args, { cwd: root }).then(() => ({ code: 0, stdout: '' }), (err: { code: number, stdout: string }) => err)
  t.equal(result.code, 0, `tsc --strict found no error, printed:\n${result.stdout}`)
})

test('README’s JavaScript gateway parses as an ES module', async (t) => {
  const dir = scratch()
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'gateway.mjs')
  writeFileSync(file, snippet('js'))
  const result = await run(process.execPath, ['--check', file]).then(() => ({ code: 0, stderr: '' }), (err: { code: number, stderr: string }) => err)
  t.equal(result.code, 0, `node --check passed, printed:\n${result.stderr}`)
})

test('README’s JavaScript gateway runs: pointed at loopback targets, it proxies and pins with AWSALB', async (t) => {
  const targets = await startTargets(t, 3)
  const dir = scratch()
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  let program = snippet('js').replace('await app.listen({ port: 3000 })', "await app.listen({ port: 0, host: '127.0.0.1' })")
  const addresses = [...program.matchAll(/http:\/\/10\.0\.1\.\d+:8080/g)].map((match) => match[0])
  t.equal(addresses.length, 3, `the snippet names three targets: ${addresses.join(', ')}`)
  addresses.forEach((address, i) => { program = program.replace(address, targets[i].url) })
  const file = join(dir, 'gateway.mjs')
  writeFileSync(file, program)
  const env: NodeJS.ProcessEnv = { ...process.env }
  delete env.NODE_OPTIONS
  delete env.STICKY_KEY
  const child = spawn(process.execPath, [file], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  const exited = once(child, 'exit')
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk })
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
  const listening = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/
  await waitFor(() => listening.test(stdout) || child.exitCode !== null, 15_000, 'the gateway to listen').catch((err: Error) => {
    throw new Error(`${err.message}; stdout: ${stdout}; stderr: ${stderr}`)
  })
  const base = listening.exec(stdout)?.[1]
  if (base === undefined) throw new Error(`the snippet exited with ${child.exitCode}; stdout: ${stdout}; stderr: ${stderr}`)

  const first = await fetch(`${base}/cart/items`)
  const servedBy = first.headers.get('x-served-by')
  t.equal(first.status, 200, `GET /cart/items: ${first.status} ${await first.text()}`)
  t.match(servedBy, /^t[0-2]$/, `a target answered: ${servedBy}`)
  const cookie = first.headers.getSetCookie().find((line) => line.startsWith('AWSALB='))?.split(';')[0]
  t.ok(cookie, `the gateway pinned the client: ${first.headers.getSetCookie().join(' | ')}`)
  for (let i = 0; i < 3; i++) {
    const again = await fetch(`${base}/cart/items`, { headers: { cookie: cookie ?? '' } })
    await again.arrayBuffer()
    t.equal(again.headers.get('x-served-by'), servedBy, `request ${i + 2} stays on ${servedBy}`)
  }
  const api = await fetch(`${base}/api/health`)
  await api.arrayBuffer()
  t.equal(api.status, 200, 'stickyProxy serves /api/*')
  child.kill('SIGTERM')
  await exited
})
