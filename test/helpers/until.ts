/**
 * Polls `ok` every `everyMs` until it holds or `ms` have passed; returns its last value. The deadline is on
 * the monotonic clock, so a test may step the wall clock (Date.now) meanwhile.
 */
export async function until(ok: () => boolean, ms: number, everyMs = 20): Promise<boolean> {
  for (const end = performance.now() + ms; !ok() && performance.now() < end; ) await new Promise((r) => setTimeout(r, everyMs))
  return ok()
}
