import { test } from 'tap'
import { BoundSessions } from '../lib/stickiness/bound-sessions.js'

const T = 1_800_000_000

test('a session counts from its pinning request until its window, counted from its last request, ends', async (t) => {
  const sessions = new BoundSessions()
  sessions.start(600, T)
  sessions.start(600, T)
  t.equal(sessions.estimate(T), 2)
  t.equal(sessions.estimate(T + 600), 2, 'the last second of the window')
  // One client comes back after 500 s: its window starts again.
  sessions.refresh(600, T, T + 500)
  t.equal(sessions.estimate(T + 500), 2, 'a refresh moves a session, it does not add one')
  t.equal(sessions.estimate(T + 620), 1, 'the other one’s window ended (to the bucket: 10 s here)')
  t.equal(sessions.estimate(T + 1100), 1, 'the refreshed one is bound to the end of its new window')
  t.equal(sessions.estimate(T + 1110), 0, 'then it ends too')
})

test('cancel() takes back a start of this second; it never counts below zero', async (t) => {
  const sessions = new BoundSessions()
  sessions.start(60, T)
  sessions.cancel(60, T)
  t.equal(sessions.estimate(T), 0)
  sessions.cancel(60, T)
  sessions.start(60, T)
  t.equal(sessions.estimate(T), 1, 'cancelling twice took nothing from a later start')
})

test('a client that comes back keeps the estimate at 1 or more for its window, counted here or not', async (t) => {
  const sessions = new BoundSessions()
  // Pinned by another gateway instance (or before a restart), in this very bucket: never started here.
  sessions.refresh(600, T, T + 1)
  t.equal(sessions.estimate(T + 1), 1)
  t.equal(sessions.estimate(T + 601), 1, 'to the end of its window')
  t.equal(sessions.estimate(T + 602), 0)
})

test('windows of different lengths count side by side, in fixed memory', async (t) => {
  const sessions = new BoundSessions()
  sessions.start(60, T)
  sessions.start(86_400, T)
  t.equal(sessions.estimate(T + 30), 2)
  t.equal(sessions.estimate(T + 3600), 1, 'the minute-long one is over')
  for (let i = 0; i < 100_000; i++) sessions.start(86_400, T + i * 7)
  // The last day holds 12 343 of them; the estimate counts whole buckets of 1440 s: 22 more.
  t.equal(sessions.estimate(T + 99_999 * 7), 12_365, 'the last day of starts, to the bucket')
})
