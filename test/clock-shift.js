// Moves this process's calendar by FASTIFY_STICKY_CLOCK_SHIFT_DAYS days (negative: into the past):
// `Date.now()`, `new Date()` and `Date()` read the shifted time; every other use of Date, timers and
// performance.now() are untouched, so durations measured by the suite stay true. `.ci/run` loads it
// with `--import` for whole runs of the suite: a test that depends on today's date fails there.
const days = Number(process.env.FASTIFY_STICKY_CLOCK_SHIFT_DAYS ?? '0')
if (!Number.isFinite(days)) throw new TypeError(`FASTIFY_STICKY_CLOCK_SHIFT_DAYS must be a number of days, received ${process.env.FASTIFY_STICKY_CLOCK_SHIFT_DAYS}`)
const offsetMs = Math.round(days * 86_400_000)

if (offsetMs !== 0) {
  const RealDate = Date
  const realNow = RealDate.now
  const now = () => realNow() + offsetMs
  globalThis.Date = new Proxy(RealDate, {
    construct (target, args, newTarget) {
      return Reflect.construct(target, args.length === 0 ? [now()] : args, newTarget)
    },
    apply () {
      return new RealDate(now()).toString()
    },
    get (target, property, receiver) {
      return property === 'now' ? now : Reflect.get(target, property, receiver)
    }
  })
}
