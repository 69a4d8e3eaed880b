/**
 * The portal's pages (server-rendered, no JavaScript): GET renders, POST changes and redirects.
 * The server (src/hub/portal/server.ts) has already checked the session, the CSRF token and the role;
 * every change goes through HubAdmin (one transaction, a revision, an audit row as `<user>@portal`).
 * Every value from the database or the request goes through the `html` template, which escapes it.
 */
import { csrfField, type Html, html, layout } from './html.js'
import { context, segment } from './pages/common.js'
import { keysPage, keysPost, revokePost } from './pages/keys.js'
import { deletePolicyPost, editPolicyPage, newPolicyPage, policiesPage, policyPost } from './pages/policies.js'
import { pendingPage, pendingPost, routesPost, statePost, systemPage, systemsPage, tagsPost } from './pages/systems.js'
import { auditPage, tagsPage } from './pages/tags-audit.js'
import type { PageRequest, PageResult } from './types.js'

export function loginPage(o: { csrf: string; next: string; error?: string; username?: string }): Html {
  return layout(
    { title: 'Log in', flash: o.error ? { kind: 'error', text: o.error } : undefined },
    html`<form method="post" action="/login" class="card grid">
${csrfField(o.csrf)}<input type="hidden" name="next" value="${o.next}">
<label for="username">User name</label><input type="text" id="username" name="username" autocomplete="username" required value="${o.username ?? ''}">
<label for="password">Password</label><input type="password" id="password" name="password" autocomplete="current-password" required>
<span></span><button type="submit" class="primary">Log in</button>
</form>`,
  )
}

export async function renderPage(r: PageRequest): Promise<PageResult> {
  const c = await context(r)
  const p = r.path
  if (r.method === 'GET') {
    if (p === '/') return { redirect: c.pending ? '/systems/pending' : '/systems', flash: r.flash }
    if (p === '/systems/pending') return pendingPage(c)
    if (p === '/systems') return systemsPage(c)
    if (p === '/keys') return keysPage(c)
    if (p === '/tags') return tagsPage(c)
    if (p === '/policies') return policiesPage(c)
    if (p === '/policies/new') return newPolicyPage(c)
    if (p === '/audit') return auditPage(c)
    let m = /^\/systems\/([^/]+)$/.exec(p)
    if (m) {
      const id = segment(m[1])
      return id === null ? null : systemPage(c, id)
    }
    m = /^\/policies\/(\d{1,9})\/edit$/.exec(p)
    if (m) return editPolicyPage(c, m[1])
    return null
  }
  if (p === '/systems/pending') return pendingPost(c)
  if (p === '/keys') return keysPost(c)
  if (p === '/policies') return policyPost(c)
  let m = /^\/systems\/([^/]+)\/(tags|state|routes)$/.exec(p)
  if (m) {
    const id = segment(m[1])
    if (id === null) return null
    return m[2] === 'tags' ? tagsPost(c, id) : m[2] === 'state' ? statePost(c, id) : routesPost(c, id)
  }
  m = /^\/keys\/([^/]+)\/revoke$/.exec(p)
  if (m) {
    const id = segment(m[1])
    return id === null ? null : revokePost(c, id)
  }
  m = /^\/policies\/(\d{1,9})\/delete$/.exec(p)
  if (m) return deletePolicyPost(c, m[1])
  return null
}
