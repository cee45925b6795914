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
