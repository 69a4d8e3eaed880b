import { z } from 'zod'

/**
 * Free text (descriptions): no control characters. A newline in a Description would otherwise end a line
 * of `export wireguard` and start a `[Peer]` of the writer's choosing, which `wg setconf` accepts.
 */
export function freeText(max: number) {
  return z
    .string()
    .max(max)
    .refine((s) => !/[\u0000-\u001f\u007f]/.test(s), 'must not contain control characters (newlines, tabs, escapes)')
}
