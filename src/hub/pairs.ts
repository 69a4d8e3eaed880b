/** Prints what a change opens and closes, for --dry-run and after a change. */
export function printPairs(log: (l: string) => void, d: { opened: string[]; closed: string[] }): void {
  if (!d.opened.length && !d.closed.length) {
    log('Reachability: no sender -> receiver pair changes')
    return
  }
  log(`Reachability: +${d.opened.length} pairs, -${d.closed.length}`)
  for (const p of d.opened) log(`  + ${p}`)
  for (const p of d.closed) log(`  - ${p}`)
}
