/** Runs system tools with argument arrays (never a shell string). */
import { execFile } from 'node:child_process'

export interface ExecResult {
  code: number
  stdout: string
  stderr: string
}

export function run(cmd: string, args: string[], timeoutMs = 10_000): Promise<ExecResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as NodeJS.ErrnoException).code === 'number' ? Number((err as NodeJS.ErrnoException).code) : 1) : 0
      resolve({
        code: err && (err as NodeJS.ErrnoException).code === 'ENOENT' ? 127 : code,
        stdout: String(stdout),
        stderr: String(stderr || (err && !stderr ? err.message : '')),
      })
    })
  })
}

export async function mustRun(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args)
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr.trim() || `exit ${r.code}`}`)
  return r.stdout
}
