/**
 * Secrets for `enclave hub …` (an account's password, an API token with --token-stdin) come from stdin,
 * never from a flag: the first line of a pipe (`echo 'pw' | enclave hub admin add alice`), or typed on a
 * terminal without echo.
 */
import { EnclaveError } from '../errors.js'

const MAX_LINE = 4096

/** The first line of a stream (without its line ending), or null when it ends before any character. */
export function readFirstLine(stream: NodeJS.ReadStream = process.stdin): Promise<string | null> {
  return new Promise((resolve, reject) => {
    let buf = ''
    const finish = (err: Error | null, v: string | null = null) => {
      stream.off('data', onData)
      stream.off('end', onEnd)
      stream.off('error', onError)
      stream.pause()
      if (err) reject(err)
      else resolve(v)
    }
    const onData = (c: Buffer | string) => {
      buf += typeof c === 'string' ? c : c.toString('utf8')
      const i = buf.indexOf('\n')
      if (i >= 0) finish(null, buf.slice(0, i).replace(/\r$/, ''))
      else if (buf.length > MAX_LINE) finish(new EnclaveError('EUSAGE', `the first line of stdin is longer than ${MAX_LINE} characters`, 2))
    }
    const onEnd = () => finish(null, buf.length ? buf.replace(/\r$/, '') : null)
    const onError = (e: Error) => finish(new EnclaveError('EIO', `cannot read stdin: ${e.message}`))
    stream.on('data', onData)
    stream.once('end', onEnd)
    stream.once('error', onError)
    stream.resume()
  })
}

/** One line typed on the terminal without echo (Ctrl-C cancels). */
export function readHidden(prompt: string, stream: NodeJS.ReadStream = process.stdin): Promise<string> {
  return new Promise((resolve, reject) => {
    process.stderr.write(prompt)
    let s = ''
    const wasRaw = stream.isRaw
    stream.setRawMode(true)
    const finish = (err: Error | null) => {
      stream.off('data', onData)
      stream.setRawMode(wasRaw)
      stream.pause()
      process.stderr.write('\n')
      if (err) reject(err)
      else resolve(s)
    }
    const onData = (c: Buffer) => {
      for (const ch of c.toString('utf8')) {
        if (ch === '\r' || ch === '\n' || ch === '\u0004') return finish(null)
        if (ch === '\u0003') return finish(new EnclaveError('ECANCELED', 'cancelled', 1))
        if (ch === '\u007f' || ch === '\b') s = s.slice(0, -1)
        else if (ch >= ' ') s += ch
        if (s.length > MAX_LINE) return finish(new EnclaveError('EUSAGE', `longer than ${MAX_LINE} characters`, 2))
      }
    }
    stream.on('data', onData)
    stream.resume()
  })
}

/** A secret line: typed without echo on a terminal, else the first line of stdin ('' when stdin is empty). */
export async function readSecretLine(prompt: string): Promise<string> {
  if (process.stdin.isTTY) return readHidden(prompt)
  return (await readFirstLine()) ?? ''
}

/** A new password: typed twice without echo on a terminal, else the first line of stdin. */
export async function readNewPassword(user: string): Promise<string> {
  if (process.stdin.isTTY) {
    const a = await readHidden(`New password for ${user}: `)
    const b = await readHidden('Type it again: ')
    if (a !== b) throw new EnclaveError('EUSAGE', 'the two passwords differ; nothing changed', 2)
    return a
  }
  const line = await readFirstLine()
  if (line === null || line === '')
    throw new EnclaveError(
      'EUSAGE',
      `no password: pipe it as the first line of stdin (echo '…' | enclave hub admin …) or run on a terminal`,
      2,
    )
  return line
}
