import { test } from 'tap'
import { DeadlineList, type Timed } from '../lib/deadlines.js'
import { waitFor } from './setup.js'

function item (name: string, expired: string[]): Timed {
  return { deadlineAtMs: Infinity, prevTimed: null, nextTimed: null, timed: false, expire: () => { expired.push(name) } }
}

test('deadlines expire in their own order, whatever the order they came in; removed ones never', async (t) => {
  const list = new DeadlineList()
  const expired: string[] = []
  const started = performance.now()
  const items = { late: item('late', expired), early: item('early', expired), middle: item('middle', expired), gone: item('gone', expired), again: item('again', expired) }
  list.add(items.late, 150)
  list.add(items.early, 30)
  list.add(items.middle, 90)
  list.add(items.gone, 60)
  list.remove(items.gone)
  list.remove(items.gone)
  await waitFor(() => expired.length > 0, 2000, 'the first expiry')
  t.same(expired, ['early'], 'the earliest first, though added second')
  list.add(items.again, 10)
  await waitFor(() => expired.length === 4, 2000, 'every expiry')
  t.same(expired, ['early', 'again', 'middle', 'late'], 'then each at its time; the removed one never')
  t.ok(performance.now() - started >= 149, 'not before the last deadline')
  t.notOk(items.late.timed, 'expired items are out of the list')
})
