import { z } from 'zod'

/**
 * Free text (descriptions): no control characters. A newline in a Description would otherwise end a line
 * of `export wireguard` and start a `[Peer]` of the writer's choosing, which `wg setconf` accepts.
 */
export function freeText(max: number) {
  return z
    .string()
    .max(max)
    .refine((s) => !hasControlCharacter(s), 'must not contain control characters (newlines, tabs, escapes)')
}

/** Whether `s` holds a C0 control character or DEL. */
export function hasControlCharacter(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x20 || c === 0x7f) return true
  }
  return false
}
