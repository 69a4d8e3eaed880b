/**
 * Finds where a JSON text first goes wrong, as line and column (1-based).
 * Node 20's JSON.parse does not always say where; this small scanner does. npm's
 * json-parse-even-better-errors was tried in its place: for Node 20's "Unexpected token" errors
 * (e.g. `"Peers": [}`) it reports position 0, so it cannot give the line and column.
 */
export interface JsonSyntaxProblem {
  line: number
  column: number
  reason: string
}

export function locateJsonError(text: string): JsonSyntaxProblem {
  let i = 0
  const fail = (reason: string): never => {
    throw Object.assign(new Error(reason), { at: i })
  }
  const ws = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i])) i++
  }
  const value = (): void => {
    ws()
    const c = text[i]
    if (c === '{') {
      i++
      ws()
      if (text[i] === '}') {
        i++
        return
      }
      for (;;) {
        ws()
        if (text[i] !== '"') fail('expected a double-quoted property name')
        str()
        ws()
        if (text[i] !== ':') fail("expected ':' after the property name")
        i++
        value()
        ws()
        if (text[i] === ',') {
          i++
          ws()
          if (text[i] === '}') fail('trailing comma before }')
          continue
        }
        if (text[i] === '}') {
          i++
          return
        }
        fail("expected ',' or '}' after a property value")
      }
    } else if (c === '[') {
      i++
      ws()
      if (text[i] === ']') {
        i++
        return
      }
      for (;;) {
        value()
        ws()
        if (text[i] === ',') {
          i++
          ws()
          if (text[i] === ']') fail('trailing comma before ]')
          continue
        }
        if (text[i] === ']') {
          i++
          return
        }
        fail("expected ',' or ']' after an array element")
      }
    } else if (c === '"') {
      str()
    } else if (c !== undefined && /[-0-9]/.test(c)) {
      const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i))
      if (!m) fail('malformed number')
      i += m![0].length
    } else {
      for (const lit of ['true', 'false', 'null']) {
        if (text.startsWith(lit, i)) {
          i += lit.length
          return
        }
      }
      fail(c === undefined ? 'unexpected end of file' : `unexpected character '${c}'`)
    }
  }
  const str = () => {
    i++
    while (i < text.length && text[i] !== '"') {
      if (text[i] === '\\') i++
      else if (text.charCodeAt(i) < 0x20) fail('control character inside a string')
      i++
    }
    if (i >= text.length) fail('unterminated string')
    i++
  }
  let reason = 'invalid JSON'
  try {
    value()
    ws()
    if (i < text.length) fail('unexpected content after the JSON value')
  } catch (e) {
    reason = (e as Error).message
  }
  const before = text.slice(0, i)
  const line = before.split('\n').length
  const column = i - before.lastIndexOf('\n')
  return { line, column, reason }
}
