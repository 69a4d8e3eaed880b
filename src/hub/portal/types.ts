/** What a page handler gets and answers (src/hub/portal/pages.ts; the server builds and sends them). */
import type { HubAdmin } from '../admin.js'
import type { HubAuth, SessionInfo } from '../auth.js'
import type { Html } from './html.js'
import type { LiveInfo } from './live.js'

export type Flash = { kind: 'ok' | 'error'; text: string }

export interface PageRequest {
  method: 'GET' | 'POST'
  path: string
  query: URLSearchParams
  /** The POST body (empty for GET). */
  form: URLSearchParams
  session: SessionInfo
  admin: HubAdmin
  auth: HubAuth
  live: LiveInfo
  hub: { url: string; publicKey: string }
  flash?: Flash
}

/** A page, a redirect after a change (with its one-line message), or null for 404. */
export type PageResult = { html: Html; status?: number } | { redirect: string; flash?: Flash } | null
