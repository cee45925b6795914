'use strict'
// Loaded with --require into each file of @fastify/http-proxy's own test suite: its
// `require('../')` (and the helper's `require('../../')`) resolve to fastify-sticky's
// compatibility entry instead of @fastify/http-proxy. Nothing else is changed.
const Module = require('node:module')
const path = require('node:path')

const suite = path.dirname(require.resolve('@fastify/http-proxy/package.json')) + path.sep + 'test'
const entry = path.resolve(__dirname, '../../dist/http-proxy.js')
const plugin = new Set(['..', '../', '../index', '../index.js'])
const fromHelper = new Set(['../..', '../../', '../../index', '../../index.js'])

const resolve = Module._resolveFilename
Module._resolveFilename = function (request, parent, ...rest) {
  const from = parent?.filename
  if (from !== undefined && from.startsWith(suite + path.sep)) {
    const inHelper = path.dirname(from) !== suite
    if ((inHelper ? fromHelper : plugin).has(request)) return entry
  }
  return resolve.call(this, request, parent, ...rest)
}

// A test of the suite that hangs (a WebSocket message it waits for never comes) fails after
// 10 s instead of holding the whole run: node:test's `test()` gets that timeout unless the test
// gives its own.
const TEST_TIMEOUT_MS = 10_000
const nodeTest = require('node:test')
function withTimeout (fn) {
  return function (name, options, body) {
    if (typeof name === 'function') return fn.call(this, { timeout: TEST_TIMEOUT_MS }, name)
    if (typeof options === 'function') return fn.call(this, name, { timeout: TEST_TIMEOUT_MS }, options)
    if (options !== null && typeof options === 'object' && options.timeout === undefined) options = { ...options, timeout: TEST_TIMEOUT_MS }
    return fn.call(this, name, options, body)
  }
}
const timedTest = Object.assign(withTimeout(nodeTest), nodeTest, { test: withTimeout(nodeTest.test), it: withTimeout(nodeTest.it) })
const load = Module._load
Module._load = function (request, ...rest) {
  if (request === 'node:test' || request === 'test') return timedTest
  return load.call(this, request, ...rest)
}
