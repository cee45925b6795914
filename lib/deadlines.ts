import { performance } from 'node:perf_hooks'

/** Something with a deadline, linked into a DeadlineList by fields of its own (no allocation per item). */
export interface Timed {
  /** When it is due, on `performance.now()`'s clock; Infinity when it has no deadline. */
  deadlineAtMs: number
  prevTimed: Timed | null
  nextTimed: Timed | null
  /** True while it is in a list. */
  timed: boolean
  /** Called once when its deadline has passed while it was still in the list. */
  expire (): void
}

/**
 * Deadlines of many items on one timer: items are kept in deadline order (they arrive almost
 * always in that order, so adding is O(1)), removing one is O(1), and the one timer is armed
 * for the earliest. A timer per request would cost an allocation and a timer-list insertion on
 * every proxied request; this costs two pointer writes. Expiries come within a millisecond.
 */
export class DeadlineList {
  #head: Timed | null = null
  #tail: Timed | null = null
  #timer: NodeJS.Timeout | null = null
  /** When the armed timer fires; Infinity when none is armed. */
  #timerAtMs = Infinity

  /** Adds `item`, due `inMs` from now. */
  add (item: Timed, inMs: number): void {
    const atMs = performance.now() + inMs
    item.deadlineAtMs = atMs
    let before = this.#tail
    while (before !== null && before.deadlineAtMs > atMs) before = before.prevTimed
    item.prevTimed = before
    item.nextTimed = before === null ? this.#head : before.nextTimed
    if (item.nextTimed === null) this.#tail = item
    else item.nextTimed.prevTimed = item
    if (before === null) this.#head = item
    else before.nextTimed = item
    item.timed = true
    if (atMs < this.#timerAtMs) this.#arm(atMs)
  }

  /** Takes `item` out (answered in time, or gone); safe to call when it is not in the list. */
  remove (item: Timed): void {
    if (!item.timed) return
    item.timed = false
    const { prevTimed, nextTimed } = item
    if (prevTimed === null) this.#head = nextTimed
    else prevTimed.nextTimed = nextTimed
    if (nextTimed === null) this.#tail = prevTimed
    else nextTimed.prevTimed = prevTimed
    item.prevTimed = null
    item.nextTimed = null
    // The timer stays armed: when it fires with nothing due, it is armed for the new earliest.
  }

  #arm (atMs: number): void {
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timerAtMs = atMs
    this.#timer = setTimeout(this.#fire, Math.max(0, atMs - performance.now()))
    // Pending requests keep their sockets open, and with them the process: the timer need not.
    this.#timer.unref()
  }

  readonly #fire = (): void => {
    this.#timer = null
    this.#timerAtMs = Infinity
    // setTimeout may fire up to a millisecond early against performance.now().
    const now = performance.now() + 1
    let item = this.#head
    while (item !== null && item.deadlineAtMs <= now) {
      this.remove(item)
      item.expire()
      item = this.#head
    }
    if (item !== null) this.#arm(item.deadlineAtMs)
  }
}
