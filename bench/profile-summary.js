// Where a gateway's CPU time goes, from the profiles `npm run bench -- --profile` writes:
//   node bench/profile-summary.js bench/results/profiles/bare-….cpuprofile bench/results/profiles/sticky-….cpuprofile
//   [--top 25] [--us-per-request 63.1,82.4] (the run's CPU µs/req, one per profile: adds µs per request by layer)
//
// Every busy sample goes to a layer by the file of its function: Fastify (with its dependencies),
// the plugin (dist/, split into its proxy and its affinity code), the bare proxy
// (bench/bare-proxy.js), undici (its llhttp is WebAssembly), Node's HTTP, its sockets and
// streams, its events and tick queue, the rest of Node, its socket writes (system calls), GC.
// Any other native function (toString, …) counts for the layer that called it. Idle samples,
// and start-up before the first idle stretch, are left out. A second table charges Node's own
// work to the code that asked for it: each sample goes to the nearest frame of Fastify, the
// plugin, the bare proxy or undici on its stack (res.writeHead called by Fastify's reply counts
// for Fastify), else stays Node's.
import { readFileSync } from 'node:fs'
import { basename } from 'node:path'
import { fileURLToPath } from 'node:url'

/** Layers in the order they are printed. */
const LAYERS = ['fastify', 'plugin: proxy', 'plugin: affinity', 'bare proxy', 'undici', 'node: http', 'node: net, streams', 'node: events, ticks', 'node: other', 'socket writes (syscalls)', 'gc', 'v8 / native (program)', 'other']
/**
 * Node's native socket writes, which make the write(v) system call at once: their samples are
 * mostly kernel time, and a sample delayed while the process waited for its CPU (preempted in the
 * call) lands there too. Compare the system time of the processes rather than these between profiles.
 */
const SOCKET_WRITES = new Set(['writev', 'writeBuffer', 'writeLatin1String', 'writeUtf8String', 'writeAsciiString', 'writeUcs2String'])
/** The plugin's files that carry the request to the target and back; the rest of dist/ decides affinity and writes cookies. */
const PROXY_FILES = new Set(['proxy.js', 'sticky-proxy.js', 'target.js', 'tunnel.js', 'frames.js', 'upgrade.js'])
/** Layers that ask Node for work, for the second table. */
const CALLERS = new Set(['fastify', 'plugin: proxy', 'plugin: affinity', 'bare proxy', 'undici'])
/** Consecutive idle samples that mark the end of start-up (module loading, listen). */
const STARTUP_IDLE_SAMPLES = 100

if (process.argv[1] === fileURLToPath(import.meta.url)) main(process.argv.slice(2))

function main (argv) {
  const files = []
  let top = 25
  let usPerRequest = null
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--top') top = Number(argv[++i])
    else if (argv[i] === '--us-per-request') usPerRequest = argv[++i].split(',').map(Number)
    else files.push(argv[i])
  }
  if (files.length === 0) throw new Error('usage: node bench/profile-summary.js <file.cpuprofile>… [--top 25] [--us-per-request a,b,…]')
  const summaries = files.map((file) => summarize(JSON.parse(readFileSync(file, 'utf8'))))
  printLayers('self time by layer', 'byLayer', files, summaries, usPerRequest)
  printLayers('with Node\'s work charged to its caller', 'byCaller', files, summaries, usPerRequest)
  if (top > 0) files.forEach((file, i) => printTop(file, summaries[i], top))
}

/** Busy samples of one profile by layer, by function (self) and by file. */
export function summarize (profile) {
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]))
  const parents = new Map()
  for (const node of profile.nodes) for (const child of node.children ?? []) parents.set(child, node.id)
  const layerOf = new Map()
  const layer = (id) => {
    if (!layerOf.has(id)) layerOf.set(id, classify(nodes.get(id), parents.get(id) === undefined ? null : layer(parents.get(id))))
    return layerOf.get(id)
  }
  // The nearest frame, this one included, whose layer asks Node for work; null when none.
  const callerOf = new Map()
  const caller = (id) => {
    if (!callerOf.has(id)) callerOf.set(id, CALLERS.has(layer(id)) ? layer(id) : parents.get(id) === undefined ? null : caller(parents.get(id)))
    return callerOf.get(id)
  }
  const byLayer = Object.fromEntries(LAYERS.map((name) => [name, 0]))
  const byCaller = Object.fromEntries(LAYERS.map((name) => [name, 0]))
  const byFunction = new Map()
  let busy = 0
  for (const id of busySamples(profile, nodes)) {
    const node = nodes.get(id)
    const name = layer(id)
    byLayer[name]++
    byCaller[caller(id) ?? name]++
    busy++
    const key = `${node.callFrame.functionName || '(anonymous)'}  ${shortUrl(node.callFrame.url)}:${node.callFrame.lineNumber + 1}  [${name}]`
    byFunction.set(key, (byFunction.get(key) ?? 0) + 1)
  }
  return { busy, byLayer, byCaller, byFunction }
}

/** The sample ids, idle ones and those of start-up left out. */
function busySamples (profile, nodes) {
  const idle = (id) => nodes.get(id).callFrame.functionName === '(idle)'
  const samples = profile.samples
  let start = 0
  for (let i = 0, run = 0; i < samples.length; i++) {
    run = idle(samples[i]) ? run + 1 : 0
    if (run === STARTUP_IDLE_SAMPLES) { start = i; break }
  }
  return samples.slice(start).filter((id) => !idle(id) && nodes.get(id).callFrame.functionName !== '(root)')
}

/** The layer of one frame; native frames (no file) take their caller's. */
function classify (node, parentLayer) {
  const { url, functionName } = node.callFrame
  if (functionName === '(garbage collector)') return 'gc'
  if (functionName === '(program)') return 'v8 / native (program)'
  if (url === '' && SOCKET_WRITES.has(functionName)) return 'socket writes (syscalls)'
  if (url === '') return parentLayer ?? 'other'
  // Only undici brings WebAssembly into these processes (its HTTP parser).
  if (url.includes('/node_modules/undici/') || url.startsWith('wasm://')) return 'undici'
  if (url.includes('/node_modules/')) return 'fastify'
  if (url.includes('/dist/')) return PROXY_FILES.has(basename(url)) ? 'plugin: proxy' : 'plugin: affinity'
  if (url.endsWith('/bench/bare-proxy.js')) return 'bare proxy'
  if (/^node:(_http_|http$|internal\/http)/.test(url)) return 'node: http'
  if (/^node:(net$|stream$|internal\/(streams|stream_base_commons|net))/.test(url)) return 'node: net, streams'
  if (/^node:(events$|async_hooks$|internal\/(process\/task_queues|timers|async_hooks))/.test(url)) return 'node: events, ticks'
  if (url.startsWith('node:')) return 'node: other'
  return 'other'
}

function shortUrl (url) {
  const at = url.lastIndexOf('/node_modules/')
  if (at !== -1) return url.slice(at + '/node_modules/'.length)
  const dist = url.lastIndexOf('/dist/')
  if (dist !== -1) return url.slice(dist + 1)
  return url.startsWith('file://') ? basename(url) : url
}

function printLayers (title, table, files, summaries, usPerRequest) {
  const names = files.map((file) => basename(file).replace(/-\d{4}-\d\d-\d\dT[\d-]+\.cpuprofile$|\.cpuprofile$/, ''))
  const cell = (s, i, layer) => {
    const share = s[table][layer] / s.busy
    const us = usPerRequest?.[i]
    return `${(share * 100).toFixed(1).padStart(5)} %${us === undefined ? '' : `  ${(share * us).toFixed(1).padStart(5)} µs`}`
  }
  const width = Math.max(...summaries.map((s, i) => cell(s, i, LAYERS[0]).length), ...names.map((n) => n.length))
  log(`\n${title}${usPerRequest === null ? '' : ' (µs: share × the CPU µs per request given)'}`)
  log(`${'share of busy samples'.padEnd(24)}${names.map((n) => n.padStart(width + 2)).join('')}`)
  for (const layer of LAYERS) {
    if (summaries.every((s) => s[table][layer] === 0)) continue
    log(`${layer.padEnd(24)}${summaries.map((s, i) => cell(s, i, layer).padStart(width + 2)).join('')}`)
  }
  log(`${'busy samples'.padEnd(24)}${summaries.map((s) => String(s.busy).padStart(width + 2)).join('')}`)
}

function printTop (file, summary, top) {
  log(`\n${basename(file)}: top ${top} functions by self time (share of busy samples)`)
  const sorted = [...summary.byFunction].sort((a, b) => b[1] - a[1]).slice(0, top)
  for (const [key, count] of sorted) log(`  ${((count / summary.busy) * 100).toFixed(1).padStart(5)} %  ${key}`)
}

function log (line) {
  process.stdout.write(line + '\n')
}
