/**
 * Consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam, 2016; HAProxy's
 * `hash-balance-factor`, Envoy's `hash_balance_factor`): with `totalLoad` requests in flight over
 * the routable targets, a target of `weight` out of `totalWeight` may hold at most
 * ⌈factor · (totalLoad + 1) · weight / totalWeight⌉ of them, and at least 1. A new assignment
 * skips a target at its capacity.
 */
export function boundedCapacity (factor: number, totalLoad: number, weight: number, totalWeight: number): number {
  return Math.max(1, Math.ceil((factor * (totalLoad + 1) * weight) / totalWeight))
}
