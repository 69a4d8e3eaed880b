/**
 * Enrolment keys: the list with Revoke, the create form, and the one page that shows a new key (and
 * the command that enrols a system with it): the hub keeps only its hash.
 */
import { type KeyInfo, notFound, parseDuration, parseTags, usage } from '../../admin.js'
import { html } from '../html.js'
import type { PageResult } from '../types.js'
import { type Ctx, form, page, tags, when } from './common.js'

function approval(k: KeyInfo): string {
  return k.ephemeral ? 'ephemeral' : k.autoApprove ? 'auto' : 'manual'
}

export async function keysPage(c: Ctx): Promise<PageResult> {
  const keys = await c.r.admin.listKeys()
  const rows = keys.map(
    (k) =>
      html`<tr><td class="mono">${k.keyId}</td><td>${k.description}</td><td>${tags(k.tags)}</td><td>${approval(k)}</td><td>${k.usedCount} used, ${
        k.usesRemaining === null ? 'unlimited' : `${k.usesRemaining} left`
      }</td><td>${when(k.expiresAt, c.now)}</td><td><span class="key-${k.state}">${k.state}</span></td><td>${when(k.createdAt, c.now)}</td>${
        c.canChange
          ? html`<td>${
              k.state === 'revoked'
                ? ''
                : form(
                    c,
                    `/keys/${encodeURIComponent(k.keyId)}/revoke`,
                    html`<button type="submit" class="danger" aria-label="Revoke key ${k.keyId}">Revoke</button>`,
                  )
            }</td>`
          : ''
      }</tr>`,
  )
  const table = keys.length
    ? html`<table><thead><tr><th>Key ID</th><th>Description</th><th>Tags</th><th>Approval</th><th>Uses</th><th>Expires</th><th>State</th><th>Created</th>${
        c.canChange ? html`<th>Actions</th>` : ''
      }</tr></thead><tbody>${rows}</tbody></table>`
    : html`<p class="muted">No enrolment keys.</p>`
  const create = c.canChange
    ? html`<h2>Create a key</h2>${form(
        c,
        '/keys',
        html`<label for="description">Description</label><input type="text" id="description" name="description" required placeholder="office laptops">
<label for="tags">Tags</label><input type="text" id="tags" name="tags" placeholder="laptop, office">
<label for="uses">Uses</label><input type="number" id="uses" name="uses" min="1" placeholder="unlimited">
<label for="for">Valid for</label><input type="text" id="for" name="for" placeholder="7d (empty: no expiry)">
<label for="approval">Approval</label><select id="approval" name="approval"><option value="manual">manual (an admin approves each system)</option><option value="auto">auto (approved on enrolment)</option><option value="ephemeral">ephemeral (auto, removed when it leaves)</option></select>
<span></span><span><button type="submit" class="primary">Create key</button></span>`,
        'card grid',
      )}`
    : ''
  return page(c, 'Enrolment keys', '/keys', html`${table}${create}`)
}

export async function keysPost(c: Ctx): Promise<PageResult> {
  const f = c.r.form
  const approvalIn = f.get('approval') ?? 'manual'
  if (!['manual', 'auto', 'ephemeral'].includes(approvalIn)) throw usage('approval: choose manual, auto or ephemeral')
  const usesIn = (f.get('uses') ?? '').trim()
  if (usesIn && !/^\d{1,9}$/.test(usesIn)) throw usage('--uses must be 1 or more')
  const forIn = (f.get('for') ?? '').trim()
  const k = await c.r.admin.createKey((f.get('description') ?? '').trim(), {
    autoApprove: approvalIn === 'auto',
    ephemeral: approvalIn === 'ephemeral',
    uses: usesIn ? Number(usesIn) : undefined,
    tags: parseTags(f.get('tags') ?? ''),
    forMs: forIn ? parseDuration(forIn) : undefined,
  })
  const cmd = `sudo enclave enrol ${k.key} --hub ${c.r.hub.url} --hub-key ${c.r.hub.publicKey}`
  return page(
    c,
    'Enrolment key created',
    '/keys',
    html`<div class="card">
<p><strong>Shown once:</strong> copy the key now. The hub keeps only its hash; a lost key is revoked and replaced.</p>
<p>Key <span class="mono">${k.keyId}</span> (${k.description}): <code id="new-key">${k.key}</code></p>
<p>On the system to enrol, run:</p>
<pre id="join-command">${cmd}</pre>
<p class="muted">Approval: ${approval(k)}; tags: ${k.tags.length ? k.tags.join(', ') : 'none'}; uses: ${
      k.usesRemaining === null ? 'unlimited' : k.usesRemaining
    }; expires: ${when(k.expiresAt, c.now)}.</p>
</div>
<p><a href="/keys">Back to the enrolment keys</a></p>`,
    { flash: { kind: 'ok', text: `Enrolment key ${k.keyId} created` } },
  )
}

export async function revokePost(c: Ctx, keyId: string): Promise<PageResult> {
  const keys = await c.r.admin.listKeys()
  const k = keys.find((x) => x.keyId === keyId)
  if (!k) throw notFound(`no enrolment key ${keyId}`)
  // revokeKey matches a description before a key id: refuse when another key's description is this id.
  if (keys.some((x) => x !== k && x.description === keyId))
    throw usage(`another key is described as "${keyId}": revoke it with \`enclave hub key revoke\` on the hub host`)
  const out = await c.r.admin.revokeKey(keyId)
  return { redirect: '/keys', flash: { kind: 'ok', text: `Enrolment key ${out.keyId} (${out.description}) revoked` } }
}
