// A real OpenID provider (panva/oidc-provider, certified) shaped like a Keycloak realm, for the
// integration tests: Keycloak's URL layout (/realms/<realm>/protocol/openid-connect/...), JWT
// access tokens carrying realm_access.roles and a tenant claim. No Keycloak server can be
// installed on the test machines, so this stands in for one; the platform talks to it with
// python-keycloak exactly as it would to Keycloak.
//
//   node server.mjs --port 18080
//
// Two realms share one signing key: "citybrain" (the platform's) and "elsewhere" (whose tokens
// must be refused for their issuer alone). Test users are confidential clients using the
// client_credentials grant; each carries the roles and tenant of a portal user.
//
// The portal signs users in with the authorization code flow and PKCE (required) as the
// confidential client "citybrain-portal": a login page at Keycloak's login-actions path takes
// a test user's name (a key of USERS) and the test password; like a Keycloak client with
// consent off, no consent screen follows. Its redirect URIs come from --redirect-uri
// (repeatable; default http://127.0.0.1:8000/auth/callback, the demo's).
import { createServer } from 'node:http';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import Provider from 'oidc-provider';
import * as jose from 'jose';

const args = process.argv.slice(2);
const port = Number(args[args.indexOf('--port') + 1] || process.env.PORT || 18080);
const host = '127.0.0.1';
const base = `http://${host}:${port}`;
const redirectUris = args.flatMap((a, i) => (a === '--redirect-uri' ? [args[i + 1]] : []));
if (redirectUris.length === 0) redirectUris.push('http://127.0.0.1:8000/auth/callback');
const PORTAL = 'citybrain-portal';
const API_RESOURCE = 'urn:citybrain:api';

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), use: 'sig', alg: 'RS256' };
const publicJwk = Object.fromEntries(Object.entries(jwk).filter(([k]) => !['d', 'p', 'q', 'dp', 'dq', 'qi'].includes(k)));
const verifyKey = await jose.importJWK(publicJwk, 'RS256');

// client id -> the portal user it stands for.
const USERS = {
  'operator-admin': { roles: ['operator'], tenant: 'data-bureau' },
  'parkeasy-admin': { roles: ['tenant-admin'], tenant: 'parkeasy' },
  'parkeasy-member': { roles: ['member'], tenant: 'parkeasy' },
  'traffic-member': { roles: ['member'], tenant: 'traffic-police' },
  'city-management-admin': { roles: ['tenant-admin'], tenant: 'city-management' },
  'parkeasy-claims-operator': { roles: ['operator'], tenant: 'parkeasy' },
  'no-roles': { roles: [], tenant: 'parkeasy' },
  'unknown-tenant': { roles: ['member'], tenant: 'no-such-tenant' },
  'short-lived': { roles: ['member'], tenant: 'parkeasy', ttl: 4 },
  'wrong-audience': { roles: ['member'], tenant: 'parkeasy', audience: 'another-app' },
};
const SECRET = 'test-secret';

function realmProvider(realm) {
  const issuer = `${base}/realms/${realm}`;
  const provider = new Provider(issuer, {
    clients: [
      ...Object.keys(USERS).map((id) => ({
        client_id: id,
        client_secret: SECRET,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_post',
      })),
      {
        client_id: PORTAL,
        client_secret: SECRET,
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        redirect_uris: redirectUris,
        token_endpoint_auth_method: 'client_secret_post',
      },
    ],
    pkce: { required: () => true },
    // Keycloak issues refresh tokens to code-flow clients without offline_access.
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    interactions: { url: (ctx, interaction) => `/realms/${realm}/login-actions/${interaction.uid}` },
    // First-party client, consent off (as a Keycloak client): its grant is made at login.
    loadExistingGrant: async (ctx) => {
      const grantId = ctx.oidc.result?.consent?.grantId
        || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) return ctx.oidc.provider.Grant.find(grantId);
      if (ctx.oidc.client.clientId !== PORTAL || !ctx.oidc.session.accountId) return undefined;
      const grant = new ctx.oidc.provider.Grant({
        clientId: PORTAL,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope('openid profile');
      grant.addResourceScope(API_RESOURCE, 'openid profile');
      await grant.save();
      return grant;
    },
    findAccount: async (ctx, id) => (USERS[id]
      ? { accountId: id, claims: async () => ({ sub: id, preferred_username: id }) }
      : undefined),
    jwks: { keys: [jwk] },
    features: {
      clientCredentials: { enabled: true },
      devInteractions: { enabled: false },
      introspection: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => API_RESOURCE,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource, client) => {
          const user = USERS[client.clientId] || USERS[ctx.oidc.account?.accountId] || {};
          return {
            scope: 'openid profile',
            audience: user.audience || 'account',
            accessTokenTTL: user.ttl || 300,
            accessTokenFormat: 'jwt',
          };
        },
      },
    },
    extraTokenClaims: (ctx, token) => {
      // A code-flow token is the signed-in user's; a client-credentials one, its client's.
      const name = token.accountId || token.clientId;
      const user = USERS[name];
      if (!user) return undefined;
      return {
        realm_access: { roles: user.roles },
        tenant: user.tenant,
        preferred_username: name,
        azp: token.clientId,
      };
    },
    routes: {
      authorization: '/protocol/openid-connect/auth',
      token: '/protocol/openid-connect/token',
      jwks: '/protocol/openid-connect/certs',
      userinfo: '/protocol/openid-connect/userinfo',
      end_session: '/protocol/openid-connect/logout',
      introspection: '/protocol/openid-connect/token/introspect',
    },
  });
  provider.proxy = false;
  return { provider, callback: provider.callback(), issuer };
}

const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function loginPage(res, action, error) {
  res.writeHead(error ? 401 : 200, { 'content-type': 'text/html; charset=utf-8' });
  res.end(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign in to citybrain</title></head>
<body><main><h1>Sign in to citybrain</h1>${error ? `<p role="alert" id="input-error">${escapeHtml(error)}</p>` : ''}
<form method="post" action="${escapeHtml(action)}">
<label for="username">Username</label> <input id="username" name="username" autocomplete="username" autofocus>
<label for="password">Password</label> <input id="password" name="password" type="password" autocomplete="current-password">
<button id="kc-login" type="submit">Sign In</button></form></main></body></html>`);
}

// The realm's login page for the code flow (Keycloak's login-actions): user and password.
async function login(realm, req, res, path) {
  try {
    await realm.provider.interactionDetails(req, res);
  } catch {
    return json(res, 400, { error: 'invalid_request', error_description: 'no sign-in in progress' });
  }
  if (req.method !== 'POST') return loginPage(res, path);
  const form = new URLSearchParams(await readBody(req));
  const username = form.get('username') || '';
  if (!USERS[username] || form.get('password') !== SECRET) {
    return loginPage(res, path, 'Invalid username or password.');
  }
  return realm.provider.interactionFinished(req, res, { login: { accountId: username } }, { mergeWithLastSubmission: false });
}

const realms = { citybrain: realmProvider('citybrain'), elsewhere: realmProvider('elsewhere') };

function readBody(req) {
  return new Promise((resolve) => {
    let data = '';
    req.on('data', (c) => { data += c; });
    req.on('end', () => resolve(data));
  });
}

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

const server = createServer(async (req, res) => {
  const m = req.url.match(/^\/realms\/([^/?]+)(.*)$/);
  const realm = m && realms[m[1]];
  if (!realm) return json(res, 404, { error: 'realm not found' });
  const rest = m[2] || '';
  if (rest === '' || rest === '/') {
    // Keycloak's realm description; python-keycloak's public_key() reads it.
    const spki = privateKey.export({ format: 'der', type: 'spki' }).toString('base64');
    return json(res, 200, { realm: m[1], public_key: spki });
  }
  if (rest.startsWith('/protocol/openid-connect/token/introspect') && req.method === 'POST') {
    // oidc-provider will not introspect its JWT access tokens: answer here, as Keycloak does.
    const params = new URLSearchParams(await readBody(req));
    try {
      const { payload } = await jose.jwtVerify(params.get('token') || '', verifyKey, { issuer: realm.issuer });
      return json(res, 200, { active: true, ...payload });
    } catch {
      return json(res, 200, { active: false });
    }
  }
  if (rest.startsWith('/login-actions/')) return login(realm, req, res, req.url.split('?')[0]);
  // Mount the realm's provider under /realms/<realm>, as an Express mount would.
  req.originalUrl = req.url;
  req.url = rest;
  return realm.callback(req, res);
});

server.listen(port, host, () => {
  process.stdout.write(`READY ${base}\n`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
