// A real OpenID provider for Portcullis's end-to-end tests: one or more
// `oidc-provider` instances on loopback, from a JSON description given as
// the first argument:
//   {"providers": [{"port": 4001, "fd": 3, "clients": [...], "accounts": {"alice": {...claims}}}]}
// `fd` is a listening socket passed by the test (bound to `port`), which
// the provider serves on; without it the provider binds `port` itself.
// Logins go through oidc-provider's own development interaction pages
// (a login form that accepts any password, then a consent form).
// Prints "ready <port> <port>..." once every provider listens.
import Provider, { interactionPolicy } from 'oidc-provider';

// Step-up, as IdPs with levels of assurance do it: a sign-in is `pwd`,
// or `mfa` when the password typed is "mfa"; a request whose acr_values
// the current sign-in does not meet asks for a new one.
const { Check, base } = interactionPolicy;
function policy() {
  const prompts = base();
  prompts.get('login').checks.add(new Check('acr_values_unmet', 'a stronger sign-in is requested', (ctx) => {
    const wanted = ctx.oidc.params.acr_values;
    if (!wanted || !ctx.oidc.session.accountId) return Check.NO_NEED_TO_PROMPT;
    return wanted.split(' ').includes(ctx.oidc.session.acr) ? Check.NO_NEED_TO_PROMPT : Check.REQUEST_PROMPT;
  }));
  return prompts;
}

const spec = JSON.parse(process.argv[2]);
const ports = [];

for (const p of spec.providers) {
  const issuer = `http://localhost:${p.port}`;
  const accounts = p.accounts;
  const provider = new Provider(issuer, {
    clients: p.clients,
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups'],
      department: ['department'],
    },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups', 'department'],
    // Every claim of the granted scopes goes into the ID token too.
    conformIdTokenClaims: false,
    features: {
      devInteractions: { enabled: true },
      backchannelLogout: { enabled: true },
      rpInitiatedLogout: { enabled: true },
    },
    pkce: { required: () => true },
    acrValues: ['pwd', 'mfa'],
    interactions: { policy: policy() },
    // Refresh tokens for every client allowed the grant, as Keycloak gives
    // them (oidc-provider alone would want `offline_access` with
    // `prompt=consent`).
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    // Everything here is on loopback, which oidc-provider's SSRF guard
    // refuses by default; the back-channel logout call must reach the
    // gateway on 127.0.0.1.
    fetch: (url, options) => {
      delete options.dispatcher;
      return globalThis.fetch(url, options);
    },
    async findAccount(ctx, id) {
      const claims = accounts[id];
      if (!claims) return undefined;
      return {
        accountId: id,
        async claims() {
          return { sub: id, ...claims };
        },
      };
    },
    // Quiet in tests; keys are generated at start (one RS256 key).
    cookies: { keys: ['portcullis-test-idp-cookie-key'] },
    ttl: { AccessToken: 600, IdToken: 600, Session: 3600, Grant: 3600, Interaction: 600 },
  });
  // Test controls, as an IdP's admin console would act: change an
  // account's claims, remove an account, revoke an account's grants.
  //   PUT    /__test/accounts/<id>   body: the new claims (JSON)
  //   DELETE /__test/accounts/<id>
  //   POST   /__test/accounts/<id>/revoke
  const grants = {};
  provider.on('grant.saved', (grant) => {
    (grants[grant.accountId] ||= new Set()).add(grant.jti);
  });
  // The development login form, with the acr the password gives.
  provider.use(async (ctx, next) => {
    if (ctx.method !== 'POST' || !/^\/interaction\/[^/]+$/.test(ctx.path)) return next();
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    if (details.prompt.name !== 'login') return next();
    let raw = '';
    for await (const chunk of ctx.req) raw += chunk;
    const form = new URLSearchParams(raw);
    await provider.interactionFinished(ctx.req, ctx.res, {
      login: { accountId: form.get('login'), acr: form.get('password') === 'mfa' ? 'mfa' : 'pwd' },
    }, { mergeWithLastSubmission: false });
  });
  provider.use(async (ctx, next) => {
    const m = ctx.path.match(/^\/__test\/accounts\/([^/]+)(\/revoke)?$/);
    if (!m) return next();
    const id = decodeURIComponent(m[1]);
    if (ctx.method === 'PUT' && !m[2]) {
      let raw = '';
      for await (const chunk of ctx.req) raw += chunk;
      accounts[id] = JSON.parse(raw);
    } else if (ctx.method === 'DELETE' && !m[2]) {
      delete accounts[id];
    } else if (ctx.method === 'POST' && m[2]) {
      for (const jti of grants[id] || []) {
        const grant = await provider.Grant.find(jti);
        if (grant) await grant.destroy();
      }
      delete grants[id];
    } else {
      ctx.status = 405;
      return;
    }
    ctx.status = 204;
  });
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  provider.on('backchannel.error', (ctx, err) => console.error('backchannel.error', err && err.message, err && err.cause && err.cause.message));
  await new Promise((resolve) => {
    const server = p.fd !== undefined
      ? provider.listen({ fd: p.fd }, resolve)
      : provider.listen(p.port, '127.0.0.1', resolve);
    server.on('error', (e) => { console.error(e); process.exit(1); });
  });
  ports.push(p.port);
}
console.log(`ready ${ports.join(' ')}`);
