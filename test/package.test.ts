import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { test } from 'tap'

const run = promisify(execFile)

// The built package (dist/, made by `npm run build` before `npm test`) as users load it, by name.
const program = `
  const Fastify = require('fastify')
  const app = Fastify()
  app.register(sticky, { keys: ['${'c3'.repeat(32)}'], targetGroups: [{ name: 'g', targets: [] }] })
  app.get('/', { config: { targetGroup: 'g' } }, (req, reply) => reply.forward())
  app.inject({ url: '/' }).then((res) => { console.log(JSON.stringify({ status: res.statusCode, code: res.json().code, proxy: typeof stickyProxy })); return app.close() })
`

test('usable with require() from CommonJS', async (t) => {
  const { stdout } = await run(process.execPath, ['-e', `const sticky = require('fastify-sticky'); const { stickyProxy } = sticky; ${program}`], { cwd: process.cwd() })
  t.same(JSON.parse(stdout), { status: 503, code: 'FST_STICKY_TARGET_GROUP_UNAVAILABLE', proxy: 'function' })
})

test('usable with import from ES modules', async (t) => {
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', `import { createRequire } from 'node:module'; const require = createRequire(process.cwd() + '/'); import sticky, { stickyProxy } from 'fastify-sticky'; ${program}`], { cwd: process.cwd() })
  t.same(JSON.parse(stdout), { status: 503, code: 'FST_STICKY_TARGET_GROUP_UNAVAILABLE', proxy: 'function' })
})

test('ships type declarations for TypeScript users', async (t) => {
  const { stdout } = await run(process.execPath, ['-e', "const p = require('./package.json'); const fs = require('fs'); console.log(fs.existsSync(p.exports['.'].types))"])
  t.equal(stdout.trim(), 'true', 'dist/index.d.ts exists')
})
