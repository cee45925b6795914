/**
 * The admin dashboard: one self-contained page (no CDN, no external file). It takes the token
 * from the URL's fragment (`#token=…`, which browsers never send, so it lands in no log), keeps it
 * in sessionStorage, exchanges it for a cookie that opens the event stream, and sends it as a
 * bearer header with every change. Data is written with textContent only.
 */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fastify-sticky · targets</title>
<style>
  :root { color-scheme: light dark; --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700; --muted: #6e7781; --line: #d0d7de }
  * { box-sizing: border-box }
  body { font: 15px/1.4 system-ui, sans-serif; margin: 0; padding: 12px; max-width: 1100px; margin-inline: auto }
  header { display: flex; flex-wrap: wrap; gap: 8px; align-items: baseline; justify-content: space-between }
  h1 { font-size: 1.2rem; margin: 0 }
  #status { color: var(--muted); font-size: .9rem }
  #error { color: var(--bad); min-height: 1.2em; margin: 6px 0 }
  section.group { border-top: 2px solid var(--line); margin-top: 14px; padding-top: 8px }
  section.group h2 { font-size: 1.05rem; margin: 0 0 6px; display: flex; flex-wrap: wrap; gap: 6px; align-items: center }
  .badge { display: inline-block; border-radius: 10px; padding: 0 8px; font-size: .8rem; border: 1px solid currentColor }
  .targets { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 10px }
  article.target { border: 1px solid var(--line); border-radius: 8px; padding: 8px 10px; min-width: 0 }
  article.target h3 { font-size: 1rem; margin: 0; display: flex; justify-content: space-between; gap: 6px; flex-wrap: wrap }
  .origin { color: var(--muted); font-size: .85rem; overflow-wrap: anywhere }
  .state-healthy { color: var(--ok) } .state-unhealthy { color: var(--bad) } .state-draining, .state-initial { color: var(--warn) } .state-unused { color: var(--muted) }
  .out { color: var(--bad) }
  dl { display: grid; grid-template-columns: auto 1fr; gap: 2px 10px; margin: 6px 0; font-size: .9rem }
  dt { color: var(--muted) } dd { margin: 0; font-variant-numeric: tabular-nums }
  .actions { display: flex; flex-wrap: wrap; gap: 6px; align-items: center }
  button, input { font: inherit; padding: 6px 10px; border-radius: 6px; border: 1px solid var(--line); min-height: 36px }
  button { cursor: pointer } input { width: 5.5em }
  #login { display: none; gap: 6px; flex-wrap: wrap; margin: 8px 0 } #login input { width: 16em }
</style>
</head>
<body>
<header><h1>fastify-sticky targets</h1><span id="status">connecting…</span></header>
<form id="login"><input id="token-input" type="password" autocomplete="off" placeholder="admin token" aria-label="admin token"><button type="submit">Open</button></form>
<div id="error" role="alert"></div>
<main id="groups"></main>
<script>
(() => {
  'use strict'
  const base = location.pathname.replace(/\\/?$/, '/')
  const KEY = 'fastify-sticky-admin-token'
  const fragment = new URLSearchParams(location.hash.slice(1))
  if (fragment.has('token')) {
    sessionStorage.setItem(KEY, fragment.get('token'))
    history.replaceState(null, '', location.pathname + location.search)
  }
  const token = () => sessionStorage.getItem(KEY)
  const $ = (id) => document.getElementById(id)
  const el = (tag, className, text) => {
    const node = document.createElement(tag)
    if (className) node.className = className
    if (text !== undefined) node.textContent = text
    return node
  }
  const showError = (message) => { $('error').textContent = message }
  const headers = (json) => {
    const result = json ? { 'content-type': 'application/json' } : {}
    if (token()) result.authorization = 'Bearer ' + token()
    return result
  }

  async function change (method, path, body) {
    showError('')
    const response = await fetch(base + path, { method, headers: headers(body !== undefined), body: body === undefined ? undefined : JSON.stringify(body), credentials: 'same-origin' })
    if (!response.ok) {
      const answer = await response.json().catch(() => ({}))
      showError((answer.code || response.status) + ': ' + (answer.message || response.statusText))
    }
  }

  const duration = (ms) => {
    const s = Math.max(0, Math.floor(ms / 1000))
    if (s < 60) return s + ' s'
    if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s'
    return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min'
  }
  const rate = (value) => value === null ? '–' : value.toFixed(1) + '/s'
  const share = (value) => value === null ? '–' : (value * 100).toFixed(1) + ' %'

  const cards = new Map()
  const sections = new Map()

  function groupSection (group) {
    let entry = sections.get(group.name)
    if (!entry) {
      const section = el('section', 'group')
      section.dataset.group = group.name
      const title = el('h2')
      const name = el('span', 'name', group.name)
      const algorithm = el('span', 'badge', '')
      const degraded = el('span', 'badge degraded', '')
      title.append(name, algorithm, degraded)
      const list = el('div', 'targets')
      section.append(title, list)
      $('groups').append(section)
      entry = { section, algorithm, degraded, list }
      sections.set(group.name, entry)
    }
    entry.algorithm.textContent = group.algorithm
    entry.degraded.textContent = group.degraded ? (group.failOpen ? 'degraded: failing open' : 'degraded: no routable target') : 'ok'
    entry.degraded.className = 'badge degraded ' + (group.degraded ? 'out' : 'state-healthy')
    return entry
  }

  function targetCard (group, list, target) {
    const key = group.name + '\\u0000' + target.id
    let card = cards.get(key)
    if (!card) {
      const article = el('article', 'target')
      article.dataset.target = target.id
      const title = el('h3')
      const id = el('span', 'id', target.id)
      const state = el('span', 'state')
      title.append(id, state)
      const origin = el('div', 'origin', target.origin)
      const dl = el('dl')
      const fields = {}
      for (const [name, label] of [['reason', 'reason'], ['since', 'in state'], ['service', 'service'], ['inFlight', 'in flight'], ['sessions', 'bound sessions'], ['rps', 'requests'], ['errors', 'errors (5xx)'], ['weight', 'weight']]) {
        dl.append(el('dt', '', label))
        fields[name] = el('dd', name)
        dl.append(fields[name])
      }
      const actions = el('div', 'actions')
      const toggle = el('button', 'toggle')
      toggle.type = 'button'
      const weight = el('input', 'weight-input')
      weight.type = 'number'; weight.min = '1'; weight.max = '1000'; weight.setAttribute('aria-label', 'weight of ' + target.id)
      const setWeight = el('button', 'set-weight', 'Set weight')
      setWeight.type = 'button'
      actions.append(toggle, weight, setWeight)
      article.append(title, origin, dl, actions)
      const path = 'target-groups/' + encodeURIComponent(group.name) + '/targets/' + encodeURIComponent(target.id)
      toggle.addEventListener('click', () => change('PUT', path + '/in-service', { inService: toggle.dataset.next === 'true' }))
      setWeight.addEventListener('click', () => {
        const value = Number(weight.value)
        if (Number.isInteger(value) && value >= 1 && value <= 1000) change('PUT', path + '/weight', { weight: value })
        else showError('A weight is an integer from 1 to 1000')
      })
      card = { article, state, fields, toggle, weight }
      cards.set(key, card)
    }
    if (card.article.parentNode !== list) list.append(card.article)
    return card
  }

  function render (snapshot) {
    const live = new Set()
    for (const group of snapshot.targetGroups) {
      const { list } = groupSection(group)
      for (const target of group.targets) {
        live.add(group.name + '\\u0000' + target.id)
        const card = targetCard(group, list, target)
        card.state.textContent = target.state
        card.state.className = 'state badge state-' + target.state
        card.fields.reason.textContent = target.reason || '–'
        card.fields.since.textContent = duration(snapshot.atMs - target.sinceMs)
        card.fields.service.textContent = target.inService ? 'in service' : 'out of service'
        card.fields.service.className = 'service' + (target.inService ? '' : ' out')
        card.fields.inFlight.textContent = String(target.inFlight)
        card.fields.sessions.textContent = String(target.boundSessions)
        card.fields.rps.textContent = rate(target.requestsPerSecond)
        card.fields.errors.textContent = share(target.errorRate)
        card.fields.weight.textContent = String(target.weight)
        if (document.activeElement !== card.weight && card.weight.value === '') card.weight.placeholder = String(target.weight)
        const registered = target.state !== 'draining' && target.state !== 'unused'
        card.toggle.textContent = target.inService ? 'Drain' : 'Undrain'
        card.toggle.dataset.next = String(!target.inService)
        card.toggle.title = target.inService ? 'take out of service: no new session' : 'put back in service'
        card.toggle.disabled = !registered
        card.weight.disabled = !registered
      }
    }
    for (const [key, card] of cards) if (!live.has(key)) { card.article.remove(); cards.delete(key) }
    $('status').textContent = 'live · ' + new Date(snapshot.atMs).toLocaleTimeString()
  }

  let source = null
  async function connect () {
    if (source) source.close()
    if (token()) {
      const response = await fetch(base + 'login', { method: 'POST', headers: headers(false), credentials: 'same-origin' })
      if (response.status === 401) {
        sessionStorage.removeItem(KEY)
        showError('The token was refused')
      }
    }
    if (!token() && $('login')) $('login').style.display = 'flex'
    source = new EventSource(base + 'events')
    source.addEventListener('snapshot', (event) => { $('login').style.display = 'none'; render(JSON.parse(event.data)) })
    source.addEventListener('error', () => {
      $('status').textContent = 'disconnected, retrying…'
      // A refused stream is closed for good: log in again, then reconnect.
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 2000)
    })
  }
  $('login').addEventListener('submit', (event) => {
    event.preventDefault()
    sessionStorage.setItem(KEY, $('token-input').value)
    $('token-input').value = ''
    connect()
  })
  // The stream's cookie lasts 15 minutes: renewed every 5.
  setInterval(() => { if (token()) fetch(base + 'login', { method: 'POST', headers: headers(false), credentials: 'same-origin' }) }, 300000)
  connect()
})()
</script>
</body>
</html>
`
