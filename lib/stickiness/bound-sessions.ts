/** Buckets per stickiness window: the estimate's resolution is 1/60 of the window. */
const BUCKETS_PER_WINDOW = 60
/** Ring slots: a window spans up to BUCKETS_PER_WINDOW + 1 buckets. */
const SLOTS = 64

/**
 * Sessions of one stickiness window length, counted by the bucket of their last request: a
 * session is bound while its window, counted from its last request, is open.
 */
class Window {
  readonly durationSeconds: number
  readonly width: number
  readonly counts = new Int32Array(SLOTS)
  /** The bucket number each slot counts now; -1 when unused. */
  readonly buckets = new Float64Array(SLOTS).fill(-1)
  /** When a client pinned to the target last came back; -Infinity before any did. */
  lastReturnSeconds = -Infinity

  constructor (durationSeconds: number) {
    this.durationSeconds = durationSeconds
    this.width = Math.max(1, Math.ceil(durationSeconds / BUCKETS_PER_WINDOW))
  }

  add (bucket: number, delta: 1 | -1): void {
    const slot = bucket % SLOTS
    if (this.buckets[slot] !== bucket) {
      // A session's old bucket already recycled (or never counted here): nothing to take back.
      if (delta < 0) return
      this.buckets[slot] = bucket
      this.counts[slot] = 0
    }
    if (delta > 0 || this.counts[slot] > 0) this.counts[slot] += delta
  }

  estimate (nowSeconds: number): number {
    // A client came back inside its window: at least its session is bound, counted here or not.
    const returned = this.lastReturnSeconds + this.durationSeconds >= nowSeconds ? 1 : 0
    const first = Math.floor((nowSeconds - this.durationSeconds) / this.width)
    const last = Math.floor(nowSeconds / this.width)
    let sum = 0
    for (let slot = 0; slot < SLOTS; slot++) {
      const bucket = this.buckets[slot]
      if (bucket >= first && bucket <= last) sum += this.counts[slot]
    }
    return Math.max(sum, returned)
  }
}

/**
 * An estimate of the sticky sessions pinned to one target, in fixed memory. A session counts
 * from the request that pinned the client here (`start`); each later request moves it to the
 * bucket of that request (`refresh`, from the time its cookie was sealed); it stops counting
 * when its window runs out. Clients that never come back count until their window ends; clients
 * that moved elsewhere too (over-counting is the safe side: the estimate decides when a draining
 * target may end early). While any pinned client came back within its window the estimate is at
 * least 1, so sessions pinned by another gateway instance, or before a restart, keep a draining
 * target from ending early.
 */
export class BoundSessions {
  readonly #windows = new Map<number, Window>()

  /** A client was pinned here now (a new session, or one re-pinned from another target). */
  start (durationSeconds: number, nowSeconds: number): void {
    const window = this.#window(durationSeconds)
    window.add(Math.floor(nowSeconds / window.width), 1)
  }

  /** A pinned client came back: its session, last refreshed at `issuedAtSeconds`, is refreshed now. */
  refresh (durationSeconds: number, issuedAtSeconds: number, nowSeconds: number): void {
    const window = this.#window(durationSeconds)
    if (nowSeconds > window.lastReturnSeconds) window.lastReturnSeconds = nowSeconds
    const from = Math.floor(issuedAtSeconds / window.width)
    const to = Math.floor(nowSeconds / window.width)
    if (from === to) return
    window.add(from, -1)
    window.add(to, 1)
  }

  /** Takes back a `start` of this second: the request that pinned the client here went elsewhere. */
  cancel (durationSeconds: number, nowSeconds: number): void {
    const window = this.#window(durationSeconds)
    window.add(Math.floor(nowSeconds / window.width), -1)
  }

  /** Sessions whose window is still open at `nowSeconds`. */
  estimate (nowSeconds: number): number {
    let sum = 0
    for (const window of this.#windows.values()) sum += window.estimate(nowSeconds)
    return sum
  }

  #window (durationSeconds: number): Window {
    let window = this.#windows.get(durationSeconds)
    if (window === undefined) {
      window = new Window(durationSeconds)
      this.#windows.set(durationSeconds, window)
    }
    return window
  }
}
