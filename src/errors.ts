/**
 * Typed errors for control and CLI code. The data plane never throws: it counts.
 * An EnclaveError's message is meant for a person and is printed without a stack.
 */
export class EnclaveError extends Error {
  readonly code: string
  readonly exitCode: number
  constructor(code: string, message: string, exitCode = 1) {
    super(message)
    this.name = 'EnclaveError'
    this.code = code
    this.exitCode = exitCode
  }
}

/** One problem in a profile file: where (JSON path) and why. */
export interface ProfileProblem {
  path: string
  reason: string
}

export class ProfileError extends EnclaveError {
  readonly file: string
  readonly problems: ProfileProblem[]
  constructor(file: string, problems: ProfileProblem[], exitCode = 2) {
    super('EPROFILE', problems.map((p) => `${file}: ${p.path ? p.path + ': ' : ''}${p.reason}`).join('\n'), exitCode)
    this.name = 'ProfileError'
    this.file = file
    this.problems = problems
  }
}
