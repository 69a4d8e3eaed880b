/**
 * Shared behaviour of every enclave command: the --config-dir flag (also ENCLAVE_CONFIG_DIR) on
 * commands that read the profile, --run-dir on commands that use the control socket, and errors
 * printed as one clear message with a documented exit code; a stack only with DEBUG set.
 *
 * With --json, an error is the object {"error": {"code", "message", "problems": [...]}} on stdout,
 * with the same exit code as without it.
 */
import path from 'node:path'
import { Command, Flags, Errors } from '@oclif/core'
import type { Input, ParserOutput } from '@oclif/core/interfaces'

// oclif's own constraints on parse() (not exported by @oclif/core/interfaces).
// biome-ignore lint/suspicious/noExplicitAny: mirrors oclif's FlagOutput
type FlagOutput = { [name: string]: any }
// biome-ignore lint/suspicious/noExplicitAny: mirrors oclif's ArgOutput
type ArgOutput = { [name: string]: any }
import { EnclaveError, ProfileError } from './errors.js'
import { configDir, profilePath } from './config/profile.js'
import { type Applied, describeApplied } from './api/apply.js'

/** Exit codes, documented in the README and in `enclave --help`. */
/** The version of every --json document's shape (status has carried it since the first). */
export const JSON_VERSION = 1

export const EXIT = { ok: 0, failure: 1, usage: 2, profile: 2, notRunning: 3, permission: 4 } as const

export const EXIT_CODES_HELP = 'Exit codes: 0 success, 1 failure, 2 bad flag, argument or profile, 3 agent not running, 4 permission denied'

export const configDirFlag = {
  'config-dir': Flags.string({
    description: 'configuration directory (default /etc/enclave, or $ENCLAVE_CONFIG_DIR)',
    helpGroup: 'GLOBAL',
  }),
}

export const runDirFlag = {
  'run-dir': Flags.string({
    description: 'directory of the control socket (default /run/enclave, or $ENCLAVE_RUN_DIR)',
    helpGroup: 'GLOBAL',
  }),
}

export interface ErrorJson {
  code: string
  message: string
  problems: Array<{ file?: string; path: string; reason: string }>
}

/** One error in the shape that --json prints, and the exit code it leaves. */
export function describeError(err: Error & { exitCode?: number; code?: unknown; oclif?: { exit?: number } }): {
  json: ErrorJson
  exitCode: number
} {
  if (err instanceof ProfileError)
    return {
      json: { code: err.code, message: err.message, problems: err.problems.map((p) => ({ file: err.file, ...p })) },
      exitCode: err.exitCode,
    }
  if (err instanceof EnclaveError) {
    const denied = (err.code === 'EPERM' || err.code === 'EACCES') && err.exitCode === EXIT.failure
    return { json: { code: err.code, message: err.message, problems: [] }, exitCode: denied ? EXIT.permission : err.exitCode }
  }
  if (err instanceof Errors.CLIError || err.oclif) {
    // oclif's parse errors: one line (their message can hold the whole usage or config).
    const first = String(err.message ?? '')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !/^See more help with/.test(l))
    const exitCode = err.oclif?.exit ?? EXIT.usage
    return { json: { code: 'EUSAGE', message: first.slice(0, 3).join(' ') || 'invalid usage', problems: [] }, exitCode }
  }
  const code = typeof err.code === 'string' ? err.code : 'EFAIL'
  const exitCode = code === 'EACCES' || code === 'EPERM' ? EXIT.permission : EXIT.failure
  return { json: { code, message: err.message, problems: [] }, exitCode }
}

export abstract class BaseCommand extends Command {
  static override baseFlags = {}

  protected configDirectory(flags: { 'config-dir'?: string }): string {
    return configDir(flags['config-dir'])
  }

  protected profileFile(flags: { 'config-dir'?: string }): string {
    return profilePath(this.configDirectory(flags))
  }

  /**
   * Prints what a running agent did with an edit (each route installed or why not, restarts needed,
   * exit-node warnings) and exits 1 when something the edit asked for did not take. Returns the JSON result.
   */
  protected reportApplied<T extends object>(data: T, applied: Applied, routes?: Array<{ route: string; via?: string }>) {
    const { lines, failed } = describeApplied(applied, routes)
    for (const l of lines) this.log(l)
    if (failed) process.exitCode = EXIT.failure
    return {
      ...data,
      applied: applied.applied,
      ...(applied.reason ? { reason: applied.reason } : {}),
      ...(applied.report ? { agent: applied.report } : {}),
    }
  }

  /** Applies --run-dir for this process (the control-socket client and the daemon read ENCLAVE_RUN_DIR). */
  protected useRunDir(flags: { 'run-dir'?: string }): void {
    if (flags['run-dir']) process.env.ENCLAVE_RUN_DIR = path.resolve(flags['run-dir'])
  }

  protected override async parse<F extends FlagOutput, B extends FlagOutput, A extends ArgOutput>(
    options?: Input<F, B, A>,
    argv?: string[],
  ): Promise<ParserOutput<F, B, A>> {
    const out = await super.parse(options, argv)
    this.useRunDir(out.flags as { 'run-dir'?: string })
    return out
  }

  /** Every JSON document carries the version of its shape (the README documents the shapes). */
  protected override toSuccessJson(result: unknown): unknown {
    if (result === undefined || result === null) return { version: JSON_VERSION }
    if (typeof result !== 'object' || Array.isArray(result)) return { version: JSON_VERSION, result }
    return { version: JSON_VERSION, ...(result as object) }
  }

  /** The one line a bad flag or argument gets: what is wrong, and where to read more. */
  private usageLine(message: string): string {
    // oclif says "Parsing --port\n\tExpected an integer but received: abc": make it "--port: expected …".
    const m = /^Parsing (--?[\w-]+)\s+(.*)$/s.exec(message)
    const what = m ? `${m[1]}: ${m[2].charAt(0).toLowerCase()}${m[2].slice(1)}` : message
    const cmd = this.id ? `${this.config.bin} ${this.id.replace(/:/g, ' ')}` : this.config.bin
    return `${what.replace(/\s+/g, ' ').trim()}; see \`${cmd} --help\``
  }

  protected override async catch(thrown: Error & { exitCode?: number; oclif?: { exit?: number } }): Promise<unknown> {
    if (thrown instanceof Errors.ExitError) throw thrown
    // An error before parsing finished is a bad flag or argument (e.g. a value out of range): exit 2.
    const err =
      !this.parsed && !(thrown instanceof EnclaveError) && !thrown.oclif
        ? new Errors.CLIError(thrown.message, { exit: EXIT.usage })
        : thrown
    const { json, exitCode } = describeError(err)
    const usage = !(err instanceof EnclaveError) && (err instanceof Errors.CLIError || err.oclif !== undefined)
    if (usage) json.message = this.usageLine(json.message)
    if (this.jsonEnabled()) {
      this.logJson({ version: JSON_VERSION, error: json })
      this.exit(exitCode)
    }
    if (process.env.DEBUG) this.logToStderr(err.stack ?? String(err))
    this.logToStderr(`Error: ${json.message}`)
    this.exit(exitCode)
  }
}
