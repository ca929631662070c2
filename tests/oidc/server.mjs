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
import { createServer } from 'node:http';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import Provider from 'oidc-provider';
import * as jose from 'jose';

const args = process.argv.slice(2);
const port = Number(args[args.indexOf('--port') + 1] || process.env.PORT || 18080);
const host = '127.0.0.1';
const base = `http://${host}:${port}`;

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
    clients: Object.keys(USERS).map((id) => ({
      client_id: id,
      client_secret: SECRET,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_post',
    })),
    jwks: { keys: [jwk] },
    features: {
      clientCredentials: { enabled: true },
      devInteractions: { enabled: false },
      introspection: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => 'urn:citybrain:api',
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource, client) => {
          const user = USERS[client.clientId] || {};
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
      const user = USERS[token.clientId];
      if (!user) return undefined;
      return {
        realm_access: { roles: user.roles },
        tenant: user.tenant,
        preferred_username: token.clientId,
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
  // Mount the realm's provider under /realms/<realm>, as an Express mount would.
  req.originalUrl = req.url;
  req.url = rest;
  return realm.callback(req, res);
});

server.listen(port, host, () => {
  process.stdout.write(`READY ${base}\n`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
