// The load suite's verdict: classifies every session move and every target-health change against
// the fault windows, sums the counters, and formats the readable report and its JSON.

const MIB = 1024 * 1024
/** Moves, flaps and lost requests listed by name in the text report (all are in the JSON). */
const LIST_LIMIT = 12

/**
 * When a faulted target's window ends: `graceMs` after the fault was undone (checks still in
 * flight end, `healthyThreshold` passes bring it back), or, if it is not healthy by then, at its
 * next change to healthy (plus `marginMs`), at most `maxRecoveryMs` after the fault was undone;
 * and if passive checks ejected it, not before it returned (the ejection's length is the plugin's).
 */
function windowEnd (window, events, settings, monitorTo) {
  if (window.restoredAt === null) return monitorTo
  const id = window.target
  let end = window.restoredAt + settings.graceMs
  if (stateAt(events, id, end) !== 'healthy') {
    const cap = window.restoredAt + settings.maxRecoveryMs
    const back = events.find((e) => e.id === id && e.change === 'state' && e.to === 'healthy' && e.atMs > end && e.atMs <= cap)
    end = back === undefined ? cap : back.atMs + settings.marginMs
  }
  if (ejectedAt(events, id, end)) {
    const back = events.find((e) => e.id === id && e.atMs > end && endsEjection(e))
    end = back === undefined ? monitorTo : back.atMs + settings.marginMs
  }
  return end
}

/** An ejection ends when the target returns, or is deregistered (which ends it without a message). */
function endsEjection (e) {
  return e.change === 'returned' || (e.change === 'state' && (e.to === 'draining' || e.to === 'unused'))
}

/** Whether passive checks had the target ejected at `atMs`. */
function ejectedAt (events, id, atMs) {
  let ejected = false
  for (const e of events) {
    if (e.atMs > atMs) break
    if (e.id !== id) continue
    if (e.change === 'ejected') ejected = true
    else if (endsEjection(e)) ejected = false
  }
  return ejected
}

/** The target's state at `atMs`, from the health channel's messages. */
function stateAt (events, id, atMs) {
  let state = null
  for (const e of events) {
    if (e.atMs > atMs) break
    if (e.id === id && e.change === 'state') state = e.to
  }
  return state
}

function phaseAt (phases, atMs) {
  let found = phases[0]?.name ?? 'start-up'
  for (const phase of phases) if (phase.startedAt <= atMs) found = phase.name
  return found
}

function histogram (h) {
  return h.count === 0 ? { count: 0, p50: 0, p99: 0, max: 0 } : { count: h.count, p50: h.percentile(50), p99: h.percentile(99), max: h.max }
}

function countsData (c) {
  return { sent: c.sent, answered: c.answered, status: c.status, codes: c.codes, transport: c.transport, lost: c.lost, late: c.late, misrouted: c.misrouted, latencyMs: histogram(c.latency) }
}

function wsData (w) {
  return {
    handshakes: w.handshakes,
    opened: w.opened,
    refused: w.refused,
    codes: w.codes,
    transport: w.transport,
    handshakesLost: w.handshakesLost,
    sent: w.sent,
    large: w.large,
    echoed: w.echoed,
    cut: w.cut,
    lost: w.lost,
    misrouted: w.misrouted,
    closes: w.closes,
    closedByClient: w.closedByClient,
    reconnects: w.reconnects,
    echoLatencyMs: histogram(w.echoLatency)
  }
}

function tally (list) {
  const out = {}
  for (const item of list) out[item] = (out[item] ?? 0) + 1
  return out
}

/** Everything the run saw, judged. */
export function analyse (state) {
  const { settings, phases, load } = state
  const events = [...state.healthEvents].sort((a, b) => a.atMs - b.atMs)
  const monitorFrom = state.monitorFrom ?? state.runStartedAt
  const monitorTo = state.monitorTo ?? Date.now()
  const windows = state.windows.map((w) => ({ ...w, end: windowEnd(w, events, settings, monitorTo) }))
  const faultedAt = (id, from, to) => windows.some((w) => w.target === id && w.start <= to && from <= w.end)

  // State changes: a faulted target's are expected; any other target's is a flap. Passive checks'
  // ejections of targets not faulted are listed apart (their clients' moves are unexpected moves).
  // A target's first verdict after registration (initial → healthy) is no flap: its event can be
  // stamped a moment after the driver saw every target healthy and started watching.
  const changes = events.filter((e) => e.atMs >= monitorFrom && e.atMs <= monitorTo && (e.change !== 'state' || (e.from !== null && e.from !== 'initial')))
  const flaps = []
  const ejections = []
  let faultedChanges = 0
  for (const e of changes) {
    if (faultedAt(e.id, e.atMs, e.atMs)) {
      if (e.change === 'state') faultedChanges++
      continue
    }
    const entry = { target: e.id, change: e.change, from: e.from, to: e.to, reason: e.reason, atS: (e.atMs - state.runStartedAt) / 1000, phase: phaseAt(phases, e.atMs) }
    if (e.change === 'state') flaps.push(entry)
    else ejections.push(entry)
  }

  // Moves: expected when the target the session left was faulted while the request ran.
  const moves = (load?.moves ?? []).map((m) => ({
    ...m,
    expected: faultedAt(m.from, m.sentAt, m.at),
    atS: (m.at - state.runStartedAt) / 1000
  }))
  const unexpected = moves.filter((m) => !m.expected)

  // Sockets the gateway closed: expected only on a target faulted then, and always with 1001 —
  // unless the target died (kill, reset) while it echoed a large message: a frame cut off
  // mid-way cannot be followed by a Close, so the connection just closes (README, WebSockets).
  const diedAt = (id, atMs) => windows.some((w) => w.target === id && w.start <= atMs && atMs <= w.end && /^(kill|reset) /.test(w.fault))
  const wsCloses = (load?.wsCloses ?? []).map((c) => ({
    ...c,
    expected: faultedAt(c.target, c.at, c.at),
    midFrame: c.code === 1006 && c.largeInFlight && diedAt(c.target, c.at),
    atS: (c.at - state.runStartedAt) / 1000
  }))
  const unexpectedCloses = wsCloses.filter((c) => !c.expected)
  const closesNot1001 = wsCloses.filter((c) => c.code !== 1001 && !c.midFrame)
  const ws = load === null || load.settings.wsClients === 0 ? null : wsData(load.wsTotals)
  const wsEnd = state.wsShutdown ?? null

  // Sessions (the probes that find a cookie for a burst are not sessions).
  const sessions = {}
  for (const s of load?.sessions ?? []) {
    if (s.kind === 'probe' || s.responses === 0) continue
    const kind = sessions[s.kind] ??= { sessions: 0, kept: 0, moved: 0 }
    kind.sessions++
    if (s.targets.size > 1) kind.moved++
    else kind.kept++
  }

  const phaseData = phases.map((p) => {
    const window = windows.find((w) => w.fault === p.name)
    const target = p.target
    const out = {
      name: p.name,
      kind: p.kind,
      target,
      startS: (p.startedAt - state.runStartedAt) / 1000,
      seconds: ((p.endedAt ?? monitorTo) - p.startedAt) / 1000,
      counts: countsData(p.counts),
      moves: {
        expected: moves.filter((m) => m.phase === p.name && m.expected).length,
        unexpected: moves.filter((m) => m.phase === p.name && !m.expected).length
      },
      ws: p.ws === undefined ? null : wsData(p.ws),
      socketCloses: {
        expected: wsCloses.filter((c) => c.phase === p.name && c.expected).length,
        unexpected: wsCloses.filter((c) => c.phase === p.name && !c.expected).length
      },
      flaps: flaps.filter((f) => f.phase === p.name).length,
      ejectionsOfTargetsNotFaulted: ejections.filter((e) => e.phase === p.name && e.change === 'ejected').length,
      eventLoopDelayMaxMs: { gateway: p.gateway?.eventLoopDelayMs.max ?? null, driver: p.driverEventLoopMaxMs ?? null },
      notes: [...p.notes],
      gatewayLog: p.gateway?.log ?? {},
      slowest: (p.slowest ?? []).map(({ sentAt, ...rest }) => ({ ...rest, sentS: (sentAt - state.runStartedAt) / 1000 }))
    }
    if (target !== null) {
      const phaseEnd = p.endedAt ?? monitorTo
      const out1 = events.find((e) => e.id === target && e.change === 'state' && e.atMs >= p.startedAt && e.atMs <= phaseEnd && (e.to === 'unhealthy' || e.to === 'draining'))
      if (out1 !== undefined) out.notes.push(`${target} ${out1.to} (${out1.reason}) ${((out1.atMs - p.startedAt) / 1000).toFixed(1)} s after the phase began`)
      const ejected = events.find((e) => e.id === target && e.change === 'ejected' && e.atMs >= p.startedAt && e.atMs <= phaseEnd)
      if (ejected !== undefined) {
        const back = events.find((e) => e.id === target && e.atMs > ejected.atMs && endsEjection(e))
        out.notes.push(`${target} ejected by passive checks ${((ejected.atMs - p.startedAt) / 1000).toFixed(1)} s after the phase began, ${back === undefined ? 'still ejected at the end' : `back ${((back.atMs - ejected.atMs) / 1000).toFixed(1)} s later`}`)
      }
      if (window !== undefined && window.restoredAt !== null) {
        const back = events.find((e) => e.id === target && e.change === 'state' && e.to === 'healthy' && e.atMs >= window.restoredAt)
        if (back !== undefined && out1 !== undefined) out.notes.push(`healthy again ${((back.atMs - window.restoredAt) / 1000).toFixed(1)} s after the fault was undone`)
        out.window = { startS: (window.start - state.runStartedAt) / 1000, restoredS: (window.restoredAt - state.runStartedAt) / 1000, endS: (window.end - state.runStartedAt) / 1000 }
      }
    }
    return out
  })

  const totals = load === null ? null : countsData(load.totals)
  const end = state.gatewayEnd
  let gatewayEnd = null
  if (end !== null) {
    const extra = [...end.handles]
    for (const handle of end.baselineHandles) {
      const at = extra.indexOf(handle)
      if (at !== -1) extra.splice(at, 1)
    }
    gatewayEnd = {
      closeSettled: end.settled,
      closeError: end.error,
      closeMs: Math.round(end.closeMs),
      closeBoundMs: end.boundMs,
      rssMiB: +(end.rss / MIB).toFixed(1),
      heapUsedMiB: +(end.heapUsed / MIB).toFixed(1),
      handles: tally(end.handles),
      baselineHandles: tally(end.baselineHandles),
      handlesBeyondBaseline: tally(extra),
      requests: end.counts,
      exit: state.gatewayExit
    }
  }

  const deadlineS = settings.deadlineMs / 1000
  const closeBoundS = settings.closeBoundMs / 1000
  const checks = [
    {
      name: `no request or message lost silently (every request and upgrade answered, every message echoed or its socket closed, within ${deadlineS} s)`,
      ok: totals !== null && totals.lost === 0 && load.inFlight === 0 && (ws === null || (ws.lost === 0 && ws.handshakesLost === 0)),
      detail: totals === null
        ? 'no load ran'
        : `${totals.lost} requests lost${ws === null ? '' : `, ${ws.lost} messages lost, ${ws.handshakesLost} upgrades lost`}${load.inFlight > 0 ? `, ${load.inFlight} still in flight at the end` : ''}`
    },
    {
      name: 'no unexpected move or close (a session or socket leaving a target that was not faulted, a socket closed on one, or closed without 1001)',
      ok: load !== null && unexpected.length === 0 && unexpectedCloses.length === 0 && closesNot1001.length === 0,
      detail: `${unexpected.length} unexpected moves, ${moves.length - unexpected.length} expected` +
        (ws === null ? '' : `; ${wsCloses.length} sockets closed by the gateway, ${unexpectedCloses.length} on a target not faulted, ${closesNot1001.length} without 1001`)
    },
    {
      name: 'no flap of a healthy target (a state change of a target that was not faulted)',
      ok: state.monitorFrom !== null && flaps.length === 0,
      detail: `${flaps.length} flaps, ${faultedChanges} changes of faulted targets`
    },
    {
      name: `app.close() settled within ${closeBoundS} s${ws === null ? '' : ', every WebSocket still open closed with 1001'}`,
      ok: gatewayEnd !== null && gatewayEnd.closeSettled && gatewayEnd.closeError === null &&
        (ws === null || (wsEnd !== null && wsEnd.allClosed && Object.keys(wsEnd.codes).every((code) => code === '1001'))),
      detail: (gatewayEnd === null ? 'the gateway was not closed' : gatewayEnd.closeSettled ? `settled in ${gatewayEnd.closeMs} ms${gatewayEnd.closeError === null ? '' : `, rejected: ${gatewayEnd.closeError.split('\n')[0]}`}` : `still pending after ${gatewayEnd.closeMs} ms`) +
        (ws === null ? '' : wsEnd === null ? '; WebSockets at close not measured' : `; ${wsEnd.open} WebSockets open, closed with ${Object.entries(wsEnd.codes).map(([code, n]) => `${code} ×${n}`).join(', ') || 'nothing'}${wsEnd.stillOpen > 0 ? `, ${wsEnd.stillOpen} still open` : ''}`)
    },
    {
      name: 'no crash (gateway process and driver)',
      ok: state.crashes.length === 0,
      detail: state.crashes.length === 0 ? 'none' : state.crashes.map((c) => c.split('\n')[0]).join('; ')
    }
  ]
  const failed = checks.filter((c) => !c.ok).length

  return {
    suite: 'fastify-sticky fault and load suite',
    date: new Date(state.runStartedAt).toISOString(),
    node: process.version,
    profile: settings.profile,
    seconds: (Date.now() - state.runStartedAt) / 1000,
    settings: {
      clients: settings.clients,
      wsClients: settings.wsClients,
      wsIntervalMs: settings.wsIntervalMs,
      wsHttpThinkMs: settings.wsHttpThinkMs,
      wsBackoffMs: settings.wsBackoffMs,
      websocket: settings.websocket,
      targets: settings.targets,
      rounds: settings.rounds,
      faultMs: settings.faultMs,
      recoverMs: settings.recoverMs,
      sessionMs: settings.sessionMs,
      thinkMs: settings.thinkMs,
      deadlineMs: settings.deadlineMs,
      lateMs: settings.lateMs,
      slowMs: settings.slowMs,
      burstSize: settings.burstSize,
      burstHoldMs: settings.burstHoldMs,
      minBurstMs: settings.minBurstMs,
      minHangMs: settings.minHangMs,
      flapPeriodMs: settings.flapPeriodMs,
      deregistrationDelayMs: settings.deregistrationDelayMs,
      baseEjectionMs: settings.baseEjectionMs,
      graceMs: settings.graceMs,
      gateway: settings.gateway,
      healthCheck: settings.healthCheck
    },
    totals,
    byKind: load === null ? {} : Object.fromEntries(Object.entries(load.byKind).map(([kind, counts]) => [kind, countsData(counts)])),
    sessions,
    webSockets: ws === null
      ? null
      : {
          ...ws,
          moves: { expected: moves.filter((m) => m.channel === 'ws' && m.expected).length, unexpected: moves.filter((m) => m.channel === 'ws' && !m.expected).length },
          closedByGateway: wsCloses.length,
          closedMidFrame: wsCloses.filter((c) => c.midFrame).length,
          unexpectedCloses,
          closesNot1001,
          atClose: wsEnd,
          lostList: load.lostMessages
        },
    moves: {
      total: load?.movesCounted ?? 0,
      expected: moves.length - unexpected.length,
      unexpected: unexpected.length,
      byReason: {
        expected: tally(moves.filter((m) => m.expected).map((m) => m.reason)),
        unexpected: tally(unexpected.map((m) => m.reason))
      },
      unexpectedList: unexpected,
      expectedList: moves.filter((m) => m.expected)
    },
    health: {
      changes: changes.length,
      faultedChanges,
      flaps,
      ejectionsOfTargetsNotFaulted: ejections,
      events: events.map((e) => ({ ...e, atS: (e.atMs - state.runStartedAt) / 1000 }))
    },
    windows: windows.map((w) => ({ target: w.target, fault: w.fault, startS: (w.start - state.runStartedAt) / 1000, restoredS: w.restoredAt === null ? null : (w.restoredAt - state.runStartedAt) / 1000, endS: (w.end - state.runStartedAt) / 1000 })),
    lost: load?.lostRequests ?? [],
    misroutes: load?.misroutes ?? [],
    phases: phaseData,
    targets: state.targets.map((t) => ({ id: t.id, url: t.url, ...t.counts })),
    gateway: gatewayEnd,
    notes: state.notes,
    crashes: state.crashes,
    checks,
    passed: checks.length - failed,
    failed
  }
}

function wsLine (w) {
  const refused = Object.values(w.refused).reduce((a, b) => a + b, 0)
  const transport = Object.values(w.transport).reduce((a, b) => a + b, 0)
  const closes = Object.entries(w.closes).map(([code, n]) => `${code} ×${n}`).join(', ')
  return `${w.sent} messages, ${w.echoed} echoed, ${w.cut} cut, ${w.lost} lost, echo p99 ${w.echoLatencyMs.p99} ms; ${w.handshakes} upgrades, ${w.opened} opened` +
    `${refused > 0 ? `, refused ${statusLine(w.refused)}${Object.keys(w.codes).length === 0 ? '' : ` (${Object.entries(w.codes).map(([code, n]) => `${short(code)} ${n}`).join(', ')})`}` : ''}` +
    `${transport > 0 ? `, transport ${Object.entries(w.transport).map(([code, n]) => `${code} ${n}`).join(', ')}` : ''}${w.handshakesLost > 0 ? `, ${w.handshakesLost} lost` : ''}` +
    `${closes === '' ? '' : `; closed by the gateway ${closes}`}${w.reconnects > 0 ? `, ${w.reconnects} reconnects` : ''}`
}

function statusLine (status) {
  const entries = Object.entries(status)
  return entries.length === 0 ? '-' : entries.map(([code, n]) => `${code}: ${n}`).join(', ')
}

function short (code) {
  return code.replace(/^FST_STICKY_/, '')
}

function pad (value, width, right = false) {
  const text = String(value)
  return right ? text.padStart(width) : text.padEnd(width)
}

/** The readable report; its last line is `load: N passed, N failed`. */
export function formatReport (r) {
  const lines = []
  const s = r.settings
  lines.push('')
  lines.push(`${r.suite}: ${r.profile} run, ${r.seconds.toFixed(1)} s, Node ${r.node}`)
  lines.push(`  ${s.clients} sticky clients (sessions of ${s.sessionMs[0] / 1000}–${s.sessionMs[1] / 1000} s, ${s.thinkMs[0]}–${s.thinkMs[1]} ms between requests), ${s.targets} targets, ${s.rounds} round(s) of 8 phases of ${s.faultMs / 1000} s + recovery`)
  lines.push(`  gateway: idleTimeoutMs ${s.gateway.idleTimeoutMs}, connectTimeoutMs ${s.gateway.connectTimeoutMs}, connectionsPerTarget ${s.gateway.connectionsPerTarget}, deregistrationDelayMs ${s.deregistrationDelayMs};` +
    ` health checks every ${s.healthCheck.intervalMs} ms, timeout ${s.healthCheck.timeoutMs} ms, thresholds ${s.healthCheck.healthyThreshold}/${s.healthCheck.unhealthyThreshold}; passive checks eject for ${s.baseEjectionMs} ms`)
  if (s.wsClients > 0) {
    lines.push(`  ${s.wsClients} WebSocket clients (sessions of the same length: one cookie jar for a socket and GETs ${s.wsHttpThinkMs[0]}–${s.wsHttpThinkMs[1]} ms apart; a message every ${s.wsIntervalMs[0]}–${s.wsIntervalMs[1]} ms once the last was echoed;` +
      ` reconnects after ${s.wsBackoffMs[0]} ms, doubling to ${s.wsBackoffMs[1]} ms while upgrades fail), half on a bound route, half under stickyProxy; websocket.handshakeTimeoutMs ${s.websocket.handshakeTimeoutMs}`)
  }
  lines.push(`  lost = no answer within ${s.deadlineMs / 1000} s${s.wsClients > 0 ? ' (a message: no echo within it, its socket still open)' : ''}; late = answered after ${s.lateMs / 1000} s (connect + idle timeout + 1 s); slow fault +${s.slowMs} ms; bursts of ${s.burstSize} × ${s.burstHoldMs} ms`)

  const f = (ms) => `${+(ms / 1000).toFixed(1)} s`
  lines.push('')
  lines.push('phases: after a warm-up, faults one after another on t0…t3 in turn, each followed by recovery (every target healthy again, then ' + f(s.recoverMs) + ')')
  lines.push(`  kill         server.close() and closeAllConnections() (and every WebSocket dropped) for ${f(s.faultMs)}, then listening again on the same port`)
  lines.push(`  hang         requests and upgrades read and held unanswered for ${f(Math.max(s.faultMs, s.minHangMs))}, then answered; open WebSockets still echo`)
  lines.push(`  reset        the socket of every request and upgrade destroyed as it arrives, for ${f(s.faultMs)}; every open WebSocket dropped at the start`)
  lines.push(`  slow         every answer (health checks, 101s and echoes too) ${s.slowMs} ms late, for ${f(s.faultMs)}`)
  lines.push(`  flap         the health-check path answers 500 and 200 in turn, ${f(s.flapPeriodMs)} each, for ${f(s.faultMs)}; traffic answered normally`)
  lines.push(`  deregister   group.deregister(id) (deregistrationDelayMs ${s.deregistrationDelayMs}), once it resolves group.register({ id, url })`)
  lines.push(`  burst        load, not a fault: ${s.burstSize} GETs pinned to the target, each answered after ${s.burstHoldMs} ms, sent again and again for ${f(Math.max(s.faultMs, s.minBurstMs))}`)
  lines.push(`  slow-bodies  load, not a fault: ${s.burstSize} POSTs to /upload/* (stickyProxy) pinned to the target, 2 KiB bodies each trickled over ${s.burstHoldMs} ms, for ${f(Math.max(s.faultMs, s.minBurstMs))}`)
  lines.push('')
  lines.push('  `sent`: requests sent in the phase; the other columns: outcomes that came in it. errors: answers not 2xx; transp: client transport errors;')
  lines.push(`  late: answered after ${f(s.lateMs)}; moves e/u: expected/unexpected; flaps: state changes of targets not faulted; loop ms: event-loop delay max, gateway/driver`)
  lines.push(`  ${pad('phase', 20)} ${pad('kind', 6)} ${pad('s', 5, true)} ${pad('sent', 7, true)} ${pad('2xx', 7, true)} ${pad('errors', 6, true)} ${pad('transp', 6, true)} ${pad('lost', 4, true)} ${pad('late', 5, true)} ${pad('p99 ms', 7, true)} ${pad('max ms', 7, true)} ${pad('moves e/u', 10, true)} ${pad('flaps', 5, true)} ${pad('loop ms gw/drv', 15, true)}`)
  for (const p of r.phases) {
    const c = p.counts
    let ok = 0
    let bad = 0
    for (const [code, n] of Object.entries(c.status)) {
      if (Number(code) < 300) ok += n
      else bad += n
    }
    const transport = Object.values(c.transport).reduce((a, b) => a + b, 0)
    const loop = `${p.eventLoopDelayMaxMs.gateway === null ? '-' : Math.round(p.eventLoopDelayMaxMs.gateway)}/${p.eventLoopDelayMaxMs.driver === null ? '-' : Math.round(p.eventLoopDelayMaxMs.driver)}`
    lines.push(`  ${pad(p.name, 20)} ${pad(p.kind, 6)} ${pad(p.seconds.toFixed(1), 5, true)} ${pad(c.sent, 7, true)} ${pad(ok, 7, true)} ${pad(bad, 6, true)} ${pad(transport, 6, true)} ${pad(c.lost, 4, true)} ${pad(c.late, 5, true)} ${pad(c.latencyMs.p99, 7, true)} ${pad(c.latencyMs.max, 7, true)} ${pad(`${p.moves.expected}/${p.moves.unexpected}`, 10, true)} ${pad(p.flaps, 5, true)} ${pad(loop, 15, true)}`)
    const details = []
    const codes = Object.entries(c.codes)
    if (codes.length > 0) details.push(`errors ${codes.map(([code, n]) => `${short(code)} ${n}`).join(', ')}`)
    if (transport > 0) details.push(`transport ${Object.entries(c.transport).map(([code, n]) => `${code} ${n}`).join(', ')}`)
    if (c.misrouted > 0) details.push(`${c.misrouted} answered by another target than request.affinity named`)
    if (p.ejectionsOfTargetsNotFaulted > 0) details.push(`passive checks ejected a target that was not faulted (${p.ejectionsOfTargetsNotFaulted}×)`)
    const logged = Object.entries(p.gatewayLog)
    if (logged.length > 0) details.push(`gateway log lines: ${logged.map(([line, n]) => `${line.replace(/FST_STICKY_/g, '')} ×${n}`).join('; ')}`)
    if (p.ws !== null) details.push(`ws: ${wsLine(p.ws)}${p.socketCloses.expected + p.socketCloses.unexpected > 0 ? `; closed by the gateway on a faulted target ${p.socketCloses.expected}, on one not faulted ${p.socketCloses.unexpected}` : ''}`)
    const slowest = p.slowest[0]
    if (slowest !== undefined && slowest.ms > 1000) {
      details.push(`slowest steady answer ${slowest.ms} ms: ${slowest.method} ${slowest.path} → ${slowest.status}${slowest.code === null ? '' : ` ${short(slowest.code)}`}, pinned to ${slowest.pinned ?? '-'}, ${slowest.affinity ?? '-'} ${slowest.target ?? '-'}`)
    }
    for (const line of [...details, ...p.notes]) lines.push(`  ${' '.repeat(20)} ${line}`)
  }

  if (r.totals !== null) {
    const t = r.totals
    lines.push('')
    lines.push('requests')
    lines.push(`  sent ${t.sent}, answered ${t.answered}, transport errors ${Object.values(t.transport).reduce((a, b) => a + b, 0)}, lost ${t.lost}` +
      ` (sent = answered + transport errors + lost: ${t.sent === t.answered + Object.values(t.transport).reduce((a, b) => a + b, 0) + t.lost ? 'yes' : 'NO'})`)
    lines.push(`  responses by status: ${statusLine(t.status)}`)
    lines.push(`  gateway errors by code: ${Object.keys(t.codes).length === 0 ? '-' : Object.entries(t.codes).map(([code, n]) => `${code} ${n}`).join(', ')}`)
    lines.push(`  client transport errors: ${Object.keys(t.transport).length === 0 ? '-' : Object.entries(t.transport).map(([code, n]) => `${code} ${n}`).join(', ')}`)
    lines.push(`  latency: p50 ${t.latencyMs.p50} ms, p99 ${t.latencyMs.p99} ms, max ${t.latencyMs.max} ms; ${t.late} answered late (after ${s.lateMs / 1000} s)`)
    if (t.misrouted > 0) lines.push(`  ${t.misrouted} 2xx answered by another target than request.affinity named`)
    lines.push('  by kind of client:')
    for (const [kind, k] of Object.entries(r.byKind)) {
      const codes = Object.entries(k.codes).map(([code, n]) => `${short(code)} ${n}`).join(', ')
      const transport = Object.entries(k.transport).map(([code, n]) => `${code} ${n}`).join(', ')
      lines.push(`    ${pad(kind, 7)} sent ${k.sent}, ${statusLine(k.status)}${codes === '' ? '' : ` (${codes})`}${transport === '' ? '' : `, transport ${transport}`}, lost ${k.lost}, p99 ${k.latencyMs.p99} ms, max ${k.latencyMs.max} ms`)
    }
    for (const lost of r.lost.slice(0, LIST_LIMIT)) {
      lines.push(`  lost: ${lost.method} ${lost.path} (${lost.kind} session ${lost.session}, pinned to ${lost.target ?? '-'}) sent in ${lost.phase}`)
    }
  }

  const w = r.webSockets
  if (w !== null) {
    lines.push('')
    lines.push('WebSockets')
    lines.push(`  messages: sent ${w.sent} (${w.large} of 16–128 KiB), echoed ${w.echoed}, cut ${w.cut} (their socket closed before the echo), lost ${w.lost}` +
      ` (sent = echoed + cut + lost: ${w.sent === w.echoed + w.cut + w.lost ? 'yes' : 'NO'}); echo p50 ${w.echoLatencyMs.p50} ms, p99 ${w.echoLatencyMs.p99} ms, max ${w.echoLatencyMs.max} ms` +
      `${w.misrouted > 0 ? `; ${w.misrouted} echoes from another target than the 101's` : ''}`)
    lines.push(`  upgrades: ${w.handshakes} sent, ${w.opened} opened (101), refused ${statusLine(w.refused)}${Object.keys(w.codes).length === 0 ? '' : ` (${Object.entries(w.codes).map(([code, n]) => `${short(code)} ${n}`).join(', ')})`},` +
      ` transport errors ${Object.entries(w.transport).map(([code, n]) => `${code} ${n}`).join(', ') || '0'}, lost ${w.handshakesLost}; ${w.reconnects} reconnects`)
    lines.push(`  closes: by the gateway ${w.closedByGateway} (codes ${Object.entries(w.closes).map(([code, n]) => `${code} ×${n}`).join(', ') || '-'}; ${w.unexpectedCloses.length} on a target that was not faulted,` +
      ` ${w.closesNot1001.length} without 1001${w.closedMidFrame > 0 ? `, ${w.closedMidFrame} without a Close while a killed or reset target echoed a large message` : ''}), by the client at the end of its session ${w.closedByClient}`)
    if (w.atClose !== null) lines.push(`  at app.close(): ${w.atClose.open} open, closed with ${Object.entries(w.atClose.codes).map(([code, n]) => `${code} ×${n}`).join(', ') || 'nothing'}${w.atClose.stillOpen > 0 ? `, ${w.atClose.stillOpen} still open` : ''}`)
    lines.push(`  socket moves (a 101 from another target than the session's): ${w.moves.expected} expected, ${w.moves.unexpected} unexpected`)
    for (const c of w.unexpectedCloses.slice(0, LIST_LIMIT)) lines.push(`  closed on a target not faulted at ${c.atS.toFixed(1)} s (${c.phase}): session ${c.session} on ${c.target}, code ${c.code}`)
    for (const c of w.closesNot1001.slice(0, LIST_LIMIT)) lines.push(`  closed without 1001 at ${c.atS.toFixed(1)} s (${c.phase}): session ${c.session} on ${c.target}, code ${c.code}`)
    for (const lost of w.lostList.slice(0, LIST_LIMIT)) lines.push(`  lost: ${lost.kind} ${lost.path} (session ${lost.session}, on ${lost.target ?? '-'}) sent in ${lost.phase}`)
  }

  lines.push('')
  lines.push('sessions (a session is one cookie jar: kept = every response from one target)')
  for (const [kind, k] of Object.entries(r.sessions)) {
    lines.push(`  ${pad(kind, 7)} ${k.sessions} sessions: ${k.kept} kept, ${k.moved} moved`)
  }
  lines.push(`  moves: ${r.moves.total} (${r.moves.expected} expected: away from a faulted target; ${r.moves.unexpected} unexpected)`)
  const reasons = (byReason) => Object.entries(byReason).map(([reason, n]) => `${reason} ${n}`).join(', ') || '-'
  lines.push(`    expected, by x-affinity: ${reasons(r.moves.byReason.expected)}`)
  lines.push(`    unexpected, by x-affinity: ${reasons(r.moves.byReason.unexpected)}`)
  for (const m of r.moves.unexpectedList.slice(0, LIST_LIMIT)) {
    lines.push(`    unexpected at ${m.atS.toFixed(1)} s (${m.phase}): ${m.kind} session ${m.session} ${m.from} → ${m.to}, ${m.reason}, status ${m.status}${m.channel === 'ws' ? ` (a socket's 101, ${m.path})` : ''}`)
  }
  if (r.moves.unexpectedList.length > LIST_LIMIT) lines.push(`    … ${r.moves.unexpectedList.length - LIST_LIMIT} more in the JSON`)

  lines.push('')
  const ejections = r.health.ejectionsOfTargetsNotFaulted
  lines.push(`target health (TARGET_HEALTH_CHANNEL while the load ran: ${r.health.faultedChanges} state changes of faulted targets, ${r.health.flaps.length} flaps: state changes of targets not faulted;` +
    ` ${ejections.filter((e) => e.change === 'ejected').length} ejections by passive checks of targets not faulted)`)
  for (const f of r.health.flaps.slice(0, LIST_LIMIT)) {
    lines.push(`  flap at ${f.atS.toFixed(1)} s (${f.phase}): ${f.target} ${f.from} → ${f.to}${f.reason === null ? '' : ` (${f.reason})`}`)
  }
  if (r.health.flaps.length > LIST_LIMIT) lines.push(`  … ${r.health.flaps.length - LIST_LIMIT} more in the JSON`)
  for (const e of ejections.slice(0, LIST_LIMIT)) {
    lines.push(`  ${e.change} at ${e.atS.toFixed(1)} s (${e.phase}): ${e.target}, not faulted, state ${e.to}`)
  }
  if (ejections.length > LIST_LIMIT) lines.push(`  … ${ejections.length - LIST_LIMIT} more in the JSON`)

  lines.push('')
  lines.push('targets (what each target server got)')
  for (const t of r.targets) {
    lines.push(`  ${t.id}: ${t.requests} requests, ${t.answered} answered, ${t.abandoned} abandoned, ${t.resets} reset, ${t.held} held by a hang; ${t.healthChecks} health checks; ${t.connections} connections, at most ${t.peakConnections} open`)
    if (t.wsUpgrades > 0) {
      lines.push(`      ${t.wsUpgrades} upgrades: ${t.wsAccepted} accepted, ${t.wsHeld} held by a hang, ${t.wsResets} reset; ${t.wsDropped} WebSockets dropped by a fault, at most ${t.peakWebSockets} open; ${t.wsMessages} messages, ${t.wsEchoed} echoed; closes seen ${Object.entries(t.wsCloses).map(([code, n]) => `${code} ×${n}`).join(', ') || '-'}`)
    }
  }

  lines.push('')
  if (r.gateway === null) {
    lines.push('gateway after app.close(): not measured (it was not closed)')
  } else {
    const g = r.gateway
    const handles = (tallied) => Object.entries(tallied).map(([name, n]) => `${name} ${n}`).join(', ') || 'none'
    lines.push(`gateway after app.close(): ${g.closeSettled ? `settled in ${g.closeMs} ms` : `NOT settled after ${g.closeMs} ms`} (bound ${g.closeBoundMs / 1000} s); RSS ${g.rssMiB} MiB, heap used ${g.heapUsedMiB} MiB (after GC)`)
    lines.push(`  open handles: ${handles(g.handles)}; before the app existed: ${handles(g.baselineHandles)}; beyond that: ${handles(g.handlesBeyondBaseline)}`)
    lines.push(`  the gateway saw ${g.requests.received} requests, sent ${g.requests.responded} responses, ${g.requests.aborted} aborted by their client`)
    if (g.exit !== null) {
      lines.push(`  its process ${g.exit.exitedBySelf ? `ended by itself ${g.exit.afterCloseMs ?? '?'} ms after close (code ${g.exit.code})` : `had NOT ended ${g.exit.boundMs / 1000} s after close (killed)`}`)
    }
  }
  for (const note of r.notes) lines.push(`note: ${note}`)
  for (const crash of r.crashes) lines.push(`crash: ${crash}`)

  lines.push('')
  lines.push('checks')
  for (const c of r.checks) lines.push(`  ${c.ok ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}`)
  lines.push(`load: ${r.passed} passed, ${r.failed} failed`)
  return lines.join('\n')
}
