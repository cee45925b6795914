// `npm run test:compat`: runs @fastify/http-proxy's own test suite, as its npm package ships it
// (node_modules/@fastify/http-proxy/test/), against fastify-sticky's compatibility entry
// `fastify-sticky/http-proxy`. The files are not changed: resolve-hook.cjs makes their
// `require('../')` load our entry. Each file runs on its own (`node --test`; resolve-hook.cjs gives each test 10 s).
//
// docs/http-proxy-compat.md lists, with the reason, every test that cannot pass. The run fails
// when a test fails that is not listed, or when a listed test passes (the list must say what is
// true). Last line: "compat: N passed, N failed, N not applicable".
import { spawn } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const root = join(here, '..', '..')
const require = createRequire(import.meta.url)
const suite = join(dirname(require.resolve('@fastify/http-proxy/package.json')), 'test')
const version = require('@fastify/http-proxy/package.json').version

/** `| file | test | reason |` rows of the docs' table: what is listed as not applicable. */
function listed () {
  const text = readFileSync(join(root, 'docs', 'http-proxy-compat.md'), 'utf8')
  const rows = new Map()
  for (const line of text.split('\n')) {
    const match = /^\| `([^`]+\.js)` \| (.+?) \| (.+) \|$/.exec(line)
    if (match === null) continue
    const [, file, test] = match
    rows.set(`${file}: ${test.replace(/\\\|/g, '|')}`, match[3])
  }
  return rows
}

/** Runs one file; resolves with its top-level tests' results by name. */
function runFile (file) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [
      '--require', join(here, 'resolve-hook.cjs'),
      '--test', '--test-reporter=tap', join(suite, file)
    ], { cwd: dirname(suite), stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (chunk) => { out += chunk })
    child.stderr.on('data', () => {})
    child.on('close', () => {
      const results = []
      for (const line of out.split('\n')) {
        const match = /^(not ok|ok) \d+ - (.*?)(?: # .*)?$/.exec(line)
        if (match !== null) results.push({ name: match[2].replace(/\\#/g, '#'), passed: match[1] === 'ok' })
      }
      resolve(results)
    })
  })
}

// Files that test @fastify/http-proxy's internal modules (its option validator, its header
// sanitiser) by requiring them directly, not the plugin: nothing of ours to run them against.
const NOT_RUN = new Map([
  ['options.js', "requires @fastify/http-proxy's internal src/options.js (its validator of wsReconnect options), not the plugin"],
  ['utils.js', "requires @fastify/http-proxy's internal utils.js (URL and header helpers), not the plugin"]
])

const notApplicable = listed()
const seen = new Set()
let passed = 0
let failed = 0
let skipped = 0
const files = readdirSync(suite).filter((name) => name.endsWith('.js')).sort()
console.log(`@fastify/http-proxy ${version}: ${files.length} test files in ${suite}`)
for (const file of files) {
  if (NOT_RUN.has(file)) {
    console.log(`- ${file}: not run (${NOT_RUN.get(file)})`)
    continue
  }
  const results = await runFile(file)
  if (results.length === 0) {
    console.log(`not ok ${file}: no test result (the file did not load or run)`)
    failed++
    continue
  }
  for (const { name, passed: ok } of results) {
    const key = `${file}: ${name}`
    const reason = notApplicable.get(key)
    seen.add(key)
    if (reason !== undefined) {
      if (ok) {
        console.log(`not ok ${key}: passes, but docs/http-proxy-compat.md lists it as not applicable`)
        failed++
      } else {
        console.log(`- ${key}: not applicable (${reason})`)
        skipped++
      }
    } else if (ok) {
      console.log(`ok ${key}`)
      passed++
    } else {
      console.log(`not ok ${key}`)
      failed++
    }
  }
}
for (const key of notApplicable.keys()) {
  if (!seen.has(key)) {
    console.log(`not ok ${key}: listed in docs/http-proxy-compat.md, but the suite has no such test`)
    failed++
  }
}
console.log(`compat: ${passed} passed, ${failed} failed, ${skipped} not applicable`)
process.exitCode = failed === 0 ? 0 : 1
