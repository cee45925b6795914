import { readFileSync } from 'node:fs'
import { test } from 'tap'
import * as errors from '../lib/errors.js'

test('docs/errors.md’s error table and lib/errors.ts list the same codes with the same statuses', async (t) => {
  const readme = readFileSync(new URL('../docs/errors.md', import.meta.url), 'utf8')
  const documented = new Map<string, number>()
  for (const match of readme.matchAll(/^\| `(FST_STICKY_[A-Z_]+)` \| (\d{3}) \|/gm)) documented.set(match[1], Number(match[2]))
  const defined = new Map<string, number>()
  for (const [name, ErrorClass] of Object.entries(errors)) {
    const error = new (ErrorClass as new (...args: unknown[]) => { code: string, statusCode: number })('x', 'y')
    t.equal(error.code, name, `the constant ${name} carries its own code`)
    defined.set(error.code, error.statusCode)
  }
  t.same([...documented.keys()].sort(), [...defined.keys()].sort(), 'the same codes')
  for (const [code, status] of defined) t.equal(documented.get(code), status, `${code}: docs/errors.md says ${documented.get(code)}, the code says ${status}`)
})
