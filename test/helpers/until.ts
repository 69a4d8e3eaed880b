/** Polls `ok` every `everyMs` until it holds or `ms` have passed; returns its last value. */
export async function until(ok: () => boolean, ms: number, everyMs = 20): Promise<boolean> {
  for (const end = Date.now() + ms; !ok() && Date.now() < end; ) await new Promise((r) => setTimeout(r, everyMs))
  return ok()
}
