/**
 * The portal's pages (server-rendered, no JavaScript): GET renders, POST changes and redirects.
 * The server (src/hub/portal/server.ts) has already checked the session, the CSRF token and the role.
 */
import { csrfField, html, layout, type Html } from './html.js'
import type { PageRequest, PageResult } from './server.js'

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
  const user = { name: r.session.name, role: r.session.role, csrf: r.session.csrf }
  if (r.method === 'GET' && (r.path === '/' || r.path === '/systems')) {
    const systems = await r.admin.listSystems()
    return {
      html: layout(
        { title: 'Systems', user, nav: '/systems', flash: r.flash },
        html`<table><thead><tr><th>Identity</th><th>Host name</th><th>State</th></tr></thead><tbody>${systems.map(
          (s) => html`<tr><td>${s.identity}</td><td>${s.hostname}</td><td>${s.state}</td></tr>`,
        )}</tbody></table>`,
      ),
    }
  }
  return null
}
