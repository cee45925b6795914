import { execFile } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import { test } from 'tap'

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
