// The Portcullis operator console: plain JavaScript over the management
// API (every read and write goes through /api/, so validation and audit are
// the API's). The admin token is kept in sessionStorage: for this tab only.
'use strict';

const $ = (id) => document.getElementById(id);
const TOKEN = 'portcullis-admin-token';
let orgs = [];
let auditPage = 1;
const AUDIT_PAGE_SIZE = 20;

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'on') for (const [ev, f] of Object.entries(v)) e.addEventListener(ev, f);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) e.append(c instanceof Node ? c : document.createTextNode(String(c ?? '')));
  return e;
}

function say(text, kind = '') {
  const s = $('status');
  s.textContent = text;
  s.className = kind;
}

// `body` is sent as JSON, or as it is with `contentType` (YAML for the plan).
async function api(method, path, body, contentType) {
  const headers = { authorization: `Bearer ${sessionStorage.getItem(TOKEN)}` };
  if (body !== undefined) headers['content-type'] = contentType || 'application/json';
  const sent = body === undefined || contentType ? body : JSON.stringify(body);
  const r = await fetch(path, { method, headers, body: sent });
  if (r.status === 401) {
    sessionStorage.removeItem(TOKEN);
    show(false);
    throw new Error('The token was refused.');
  }
  const text = await r.text();
  const data = text ? JSON.parse(text) : null;
  if (!r.ok) throw new Error((data && data.message) || `${method} ${path}: ${r.status}`);
  return { data, total: r.headers.get('total-number') };
}

async function run(what, f) {
  try {
    await f();
  } catch (e) {
    say(`${what}: ${e.message}`, 'error');
  }
}

function show(signedIn) {
  $('login').hidden = signedIn;
  $('tabs').hidden = !signedIn;
  if (!signedIn) for (const id of ['orgs', 'users', 'audit', 'explain']) $(id).hidden = true;
}

function tab(name) {
  for (const b of document.querySelectorAll('#tabs [data-tab]')) {
    const on = b.dataset.tab === name;
    b.setAttribute('aria-pressed', on ? 'true' : 'false');
    $(b.dataset.tab).hidden = !on;
  }
  ({ orgs: loadOrgs, users: loadUsers, audit: loadAudit, explain: loadIdps })[name]();
}

// ---- organizations -------------------------------------------------------

const JIT = [
  ['email-domains', 'Email domains', (e) => e.emailDomain, (v) => ({ emailDomain: v }), 'emailDomains'],
  ['sso-connectors', 'SSO connectors (IdP ids)', (e) => e.id, (v) => ({ ssoConnectorIds: [v] }), 'ssoConnectorIds'],
  ['roles', 'Default roles', (e) => e.name, (v) => ({ organizationRoleIds: [v] }), 'organizationRoleIds'],
];

async function loadOrgs() {
  await run('Organizations', async () => {
    orgs = (await api('GET', '/api/organizations')).data;
    const list = $('org-list');
    list.replaceChildren();
    for (const o of orgs) {
      const box = el('article', { 'aria-labelledby': `org-${o.id}` },
        el('h3', { id: `org-${o.id}` }, `${o.name} (${o.id})`),
        el('p', {}, 'Roles: ', o.roles.map((r) => r.name).join(', ')));
      for (const [path, label, value, body] of JIT) {
        const url = `/api/organizations/${encodeURIComponent(o.id)}/jit/${path}`;
        const entries = (await api('GET', url)).data;
        const ul = el('ul', {});
        for (const e of entries) {
          const v = value(e);
          ul.append(el('li', {}, v, ' ', el('button', {
            type: 'button', class: 'danger', 'aria-label': `Remove ${v} from ${label} of ${o.id}`,
            on: { click: () => run('Remove', async () => { await api('DELETE', `${url}/${encodeURIComponent(v)}`); say(`Removed ${v}.`, 'done'); loadOrgs(); }) },
          }, 'Remove')));
        }
        const input = el('input', { id: `add-${o.id}-${path}`, name: 'value' });
        const form = el('form', { on: { submit: (ev) => { ev.preventDefault(); run('Add', async () => { await api('POST', url, body(input.value.trim())); say(`Added ${input.value.trim()}.`, 'done'); loadOrgs(); }); } } },
          el('label', { for: input.id }, `Add to ${label}`), input, el('button', { type: 'submit' }, 'Add'));
        box.append(el('h4', {}, label), ul, form);
      }
      list.append(box);
    }
    say('');
  });
}

// ---- users ---------------------------------------------------------------

async function loadUsers() {
  await run('Users', async () => {
    const q = $('search').value.trim();
    const url = `/api/users?page=1&page_size=50${q ? `&search=${encodeURIComponent(q)}` : ''}`;
    const { data, total } = await api('GET', url);
    const rows = data.map((u) => el('tr', {},
      el('td', {}, el('button', { type: 'button', on: { click: () => loadUser(u.id) } }, u.email || u.id)),
      el('td', {}, u.name || ''),
      el('td', {}, u.memberships.map((m) => `${m.organizationId}: ${m.roles.join(', ')} (${m.source})`).join('; '))));
    $('user-list').replaceChildren(el('p', {}, `${total} user(s)`),
      el('table', {}, el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'Email'), el('th', { scope: 'col' }, 'Name'), el('th', { scope: 'col' }, 'Memberships'))), el('tbody', {}, rows)));
    say('');
  });
}

async function loadUser(id) {
  await run('User', async () => {
    if (!orgs.length) orgs = (await api('GET', '/api/organizations')).data;
    const u = (await api('GET', `/api/users/${encodeURIComponent(id)}`)).data;
    const sessions = (await api('GET', `/api/users/${encodeURIComponent(id)}/sessions`)).data;
    const box = el('article', { 'aria-labelledby': 'user-h' }, el('h3', { id: 'user-h' }, u.email || u.id),
      el('p', {}, `Id ${u.id}; identities: `, u.identities.map((i) => `${i.idp}${i.subject ? ` (${i.subject})` : ''}`).join(', ')));
    const mt = el('tbody', {});
    for (const m of u.memberships) {
      const org = orgs.find((o) => o.id === m.organizationId);
      const boxes = (org ? org.roles : []).map((r) => {
        const cid = `role-${m.organizationId}-${r.name}`;
        return el('span', {}, el('input', { type: 'checkbox', id: cid, value: r.name, checked: m.roles.includes(r.name) }), el('label', { for: cid, class: 'inline' }, ` ${r.name} `));
      });
      const save = el('button', { type: 'button', on: { click: () => run('Roles', async () => {
        const roles = boxes.map((b) => b.querySelector('input')).filter((i) => i.checked).map((i) => i.value);
        await api('PUT', `/api/organizations/${encodeURIComponent(m.organizationId)}/users/${encodeURIComponent(u.id)}`, { roles });
        say(`Roles in ${m.organizationId} saved.`, 'done');
        loadUser(u.id);
      }) } }, `Save roles in ${m.organizationId}`);
      mt.append(el('tr', {}, el('td', {}, m.organizationId), el('td', {}, el('span', { class: 'source' }, m.source)),
        el('td', {}, el('fieldset', {}, el('legend', {}, `Roles in ${m.organizationId}`), boxes), save)));
    }
    box.append(el('h4', {}, 'Memberships'), el('table', {}, el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'Organization'), el('th', { scope: 'col' }, 'Source'), el('th', { scope: 'col' }, 'Roles'))), mt));
    box.append(el('h4', {}, 'Sessions'), el('p', {}, `${sessions.length} open`),
      el('ul', {}, sessions.map((s) => el('li', {}, `${s.idp}, since ${new Date(s.createdAt * 1000).toISOString()}, last seen ${new Date(s.lastSeenAt * 1000).toISOString()}`))),
      el('button', { type: 'button', class: 'danger', on: { click: () => run('Revoke', async () => { await api('DELETE', `/api/users/${encodeURIComponent(u.id)}/sessions`); say('Sessions revoked.', 'done'); loadUser(u.id); }) } }, 'Revoke all sessions'),
      ' ',
      el('button', { type: 'button', class: 'danger', on: { click: () => run('Delete', async () => {
        if (!window.confirm(`Delete ${u.email || u.id}?`)) return;
        await api('DELETE', `/api/users/${encodeURIComponent(u.id)}`);
        say('User deleted.', 'done');
        $('user-detail').replaceChildren();
        loadUsers();
      }) } }, 'Delete user'));
    $('user-detail').replaceChildren(box);
  });
}

// ---- audit log -----------------------------------------------------------

async function loadAudit() {
  await run('Audit log', async () => {
    const params = new URLSearchParams({ page: String(auditPage), page_size: String(AUDIT_PAGE_SIZE), order: 'desc' });
    if ($('audit-user').value.trim()) params.set('userId', $('audit-user').value.trim());
    if ($('audit-org').value.trim()) params.set('organizationId', $('audit-org').value.trim());
    const { data, total } = await api('GET', `/api/audit-events?${params}`);
    const pages = Math.max(1, Math.ceil(Number(total || 0) / AUDIT_PAGE_SIZE));
    const rows = data.map((e) => el('tr', {},
      el('td', {}, new Date(e.at * 1000).toISOString()), el('td', {}, e.actor), el('td', {}, e.action),
      el('td', {}, e.userId || ''), el('td', {}, e.organizationId || ''),
      el('td', {}, el('code', {}, JSON.stringify(e.before))), el('td', {}, el('code', {}, JSON.stringify(e.after)))));
    $('audit-list').replaceChildren(el('table', {},
      el('thead', {}, el('tr', {}, ['When', 'Actor', 'Action', 'User', 'Organization', 'Before', 'After'].map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, rows)));
    $('audit-page').textContent = `Page ${auditPage} of ${pages} (${total} events, newest first)`;
    $('audit-prev').disabled = auditPage <= 1;
    $('audit-next').disabled = auditPage >= pages;
    say('');
  });
}

// ---- explainer -----------------------------------------------------------

async function loadIdps() {
  await run('Identity providers', async () => {
    const idps = (await api('GET', '/api/provisioning/identity-providers')).data;
    const sel = $('explain-idp');
    const was = sel.value;
    sel.replaceChildren(...idps.map((i) => el('option', { value: i.id }, `${i.displayName} (${i.id})`)));
    if (was) sel.value = was;
  });
}

function exprRow(label, t) {
  if (!t) return el('li', {}, `${label}: none`);
  const result = t.error ? `error: ${t.error}` : JSON.stringify(t.result);
  return el('li', {}, `${label} (${t.from}): `, el('code', {}, t.expression), ' → ', el('code', {}, result));
}

async function explain() {
  await run('Explain', async () => {
    let claims;
    try { claims = JSON.parse($('explain-claims').value); } catch (e) { throw new Error(`the claims are not JSON (${e.message})`); }
    const body = { idp: $('explain-idp').value, claims };
    if ($('explain-user').value.trim()) body.existingUserId = $('explain-user').value.trim();
    const plan = (await api('POST', '/api/provisioning/explain', body)).data;
    const out = [el('p', { class: 'decision' }, `Outcome: ${plan.outcome.outcome}${plan.outcome.reason ? ` (${plan.outcome.reason})` : ''}; identity ${plan.identity.subject}${plan.new_user ? ' (new user)' : ''}`)];
    for (const o of plan.orgs) {
      out.push(el('article', { class: 'trace' },
        el('h3', {}, `${o.org}: ${o.decision}`),
        el('ul', {},
          el('li', {}, `Policy: ${o.policy || 'none'}`),
          exprRow('org', o.org_expression),
          exprRow('roles', o.roles_expression),
          el('li', {}, `Roles from the policy: ${o.policy_roles.join(', ') || 'none'}`),
          o.jit ? el('li', {}, `Just in time by ${o.jit.by}: ${o.jit.value}`) : '',
          el('li', {}, `Before: ${o.before ? `${o.before.roles.join(', ')} (${o.before.source})` : 'not a member'}`),
          el('li', {}, `After: ${o.after ? `${o.after.roles.join(', ')} (${o.after.source})` : 'not a member'}`))));
    }
    for (const w of plan.warnings) out.push(el('p', {}, `Warning: ${w}`));
    $('explain-result').replaceChildren(...out);
    say('');
  });
}

// ---- policy plan ---------------------------------------------------------

function membershipText(m) {
  return m ? `[${m.roles.join(', ')}] (${m.source})` : 'not a member';
}

async function plan() {
  await run('Plan', async () => {
    const p = (await api('POST', '/api/provisioning/plan', $('plan-yaml').value, 'application/yaml')).data;
    const t = p.totals;
    const out = [el('p', { class: 'totals' }, `${t.users} users planned: ${t.usersChanged} would change, ${t.usersWithNotes} with notes`)];
    const orgs = Object.entries(t.organizations);
    if (orgs.length) {
      out.push(el('table', {},
        el('thead', {}, el('tr', {}, el('th', {}, 'Organization'), el('th', {}, 'Created'), el('th', {}, 'Roles changed'), el('th', {}, 'Removed'))),
        el('tbody', {}, orgs.map(([org, o]) => el('tr', {}, el('td', {}, org),
          el('td', { 'data-label': 'Created' }, o.created), el('td', { 'data-label': 'Roles changed' }, o.rolesChanged),
          el('td', { 'data-label': 'Removed' }, o.removed))))));
    }
    for (const u of p.users) {
      out.push(el('article', { class: 'trace' },
        el('h3', {}, `${u.email || 'no email'} (${u.userId})`),
        el('ul', {},
          u.changes.map((c) => el('li', {}, `${c.org}: ${c.kind.replace('_', ' ')}, ${membershipText(c.before)} → ${membershipText(c.after)} — ${c.reason}`)),
          u.notes.map((n) => el('li', { class: 'note' }, `Note: ${n}`)))));
    }
    if (p.truncated) out.push(el('p', {}, 'More users would change than are listed; the totals count them all.'));
    $('plan-result').replaceChildren(...out);
    say('');
  });
}

// ---- wiring --------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  $('token-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN, $('token').value);
    $('token').value = '';
    try {
      await api('GET', '/api/organizations');
      show(true);
      tab('orgs');
    } catch (e) {
      say(e.message, 'error');
    }
  });
  $('signout').addEventListener('click', () => { sessionStorage.removeItem(TOKEN); show(false); say('Token forgotten.'); });
  for (const b of document.querySelectorAll('#tabs [data-tab]')) b.addEventListener('click', () => tab(b.dataset.tab));
  $('user-search').addEventListener('submit', (ev) => { ev.preventDefault(); loadUsers(); });
  $('audit-filter').addEventListener('submit', (ev) => { ev.preventDefault(); auditPage = 1; loadAudit(); });
  $('audit-prev').addEventListener('click', () => { auditPage -= 1; loadAudit(); });
  $('audit-next').addEventListener('click', () => { auditPage += 1; loadAudit(); });
  $('explain-form').addEventListener('submit', (ev) => { ev.preventDefault(); explain(); });
  $('plan-form').addEventListener('submit', (ev) => { ev.preventDefault(); plan(); });
  if (sessionStorage.getItem(TOKEN)) {
    show(true);
    tab('orgs');
  } else {
    show(false);
  }
});
