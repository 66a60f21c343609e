// A throw-away OpenID Connect provider for auth-sidecar's tests: panva's oidc-provider, configured
// entirely from a JSON file that tests/testbed/oidc.py writes.
//
//   node provider.mjs CONFIG.json
//
// CONFIG.json:
//   port              listen on 127.0.0.1:port; the issuer is http://127.0.0.1:port
//   clients           client metadata, passed as is (oidc.py fills in the defaults)
//   keys              private JWKs, each with kid and alg; all are published in the JWKS
//   signing_alg       alg of the first key: the resource servers' JWT access tokens use it
//   accounts          {accountId: claims}; findAccount serves them (an unknown login gets {sub} only)
//   claims, scopes    the scope -> claims mapping and the scopes offered
//   resource_servers  {indicator: {scope, audience?}}: access tokens for these are JWTs
//   access_token_claims  account claims copied into JWT access tokens issued for an account
//   ttl               {AccessToken, IdToken, ClientCredentials, RefreshToken, ...} in seconds
//   refresh_tokens    "always" or "offline_access" (see issueRefreshToken below)
//   cookie_keys       keys signing the provider's own cookies
//
// Every request is logged to stdout as "METHOD /path STATUS MSms"; errors as "! event: error".

import { readFileSync } from 'node:fs';
import process from 'node:process';

import Provider, { errors } from 'oidc-provider';

const configFile = process.argv[2];
if (!configFile) {
  console.error('usage: node provider.mjs CONFIG.json');
  process.exit(2);
}
const config = JSON.parse(readFileSync(configFile, 'utf8'));
const issuer = config.issuer ?? `http://127.0.0.1:${config.port}`;
const accounts = config.accounts ?? {};
const resourceServers = config.resource_servers ?? {};
const accessTokenClaims = config.access_token_claims ?? [];
const ttl = config.ttl ?? {};
const refreshTokens = config.refresh_tokens ?? 'offline_access';

async function findAccount(ctx, id) {
  const claims = { sub: id, ...(accounts[id] ?? {}) };
  return {
    accountId: id,
    async claims(use, scope, requested, rejected) {
      return claims;
    },
  };
}

const provider = new Provider(issuer, {
  clients: config.clients,
  jwks: { keys: config.keys },
  cookies: { keys: config.cookie_keys },
  findAccount,
  claims: config.claims,
  scopes: config.scopes,
  conformIdTokenClaims: false,
  // refresh_tokens "offline_access": the library's rule, a refresh token only when offline_access
  // was granted, and oidc-provider drops offline_access from an authorization request whose prompt
  // lacks "consent" (OpenID Connect Core 11). "always" (Keycloak-like): on every code exchange.
  // Either way only for clients allowed the refresh_token grant. Without offline_access a refresh
  // token dies with the provider session (RP-initiated logout ends it).
  issueRefreshToken: async (ctx, client, code) => client.grantTypeAllowed('refresh_token')
    && (refreshTokens === 'always' || code.scopes.has('offline_access')),
  // Account claims in JWT access tokens issued for an account (none for client_credentials).
  extraTokenClaims: async (ctx, token) => {
    if (!token.accountId || !accessTokenClaims.length) return undefined;
    const claims = { sub: token.accountId, ...(accounts[token.accountId] ?? {}) };
    return Object.fromEntries(accessTokenClaims.filter((name) => name in claims).map((name) => [name, claims[name]]));
  },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (ctx, client, oneOf) => oneOf,
      useGrantedResource: async () => false,
      getResourceServerInfo: async (ctx, indicator, client) => {
        const server = resourceServers[indicator];
        if (!server) throw new errors.InvalidTarget(`unknown resource ${indicator}`);
        return {
          scope: server.scope ?? '',
          audience: server.audience ?? indicator,
          accessTokenFormat: 'jwt',
          accessTokenTTL: server.access_token_ttl ?? ttl.AccessToken ?? 60,
          jwt: { sign: { alg: config.signing_alg ?? 'RS256' } },
        };
      },
    },
  },
  ttl: {
    AccessToken: ttl.AccessToken ?? 60,
    ClientCredentials: ttl.ClientCredentials ?? ttl.AccessToken ?? 60,
    IdToken: ttl.IdToken ?? 60,
    AuthorizationCode: ttl.AuthorizationCode ?? 60,
    RefreshToken: ttl.RefreshToken ?? 24 * 60 * 60,
    Interaction: ttl.Interaction ?? 60 * 60,
    Session: ttl.Session ?? 24 * 60 * 60,
    Grant: ttl.Grant ?? 24 * 60 * 60,
  },
});

// Compact request log, and no Google Fonts @import in the built-in pages (loopback only: a browser
// would otherwise try to fetch them).
provider.use(async (ctx, next) => {
  const started = process.hrtime.bigint();
  try {
    await next();
  } finally {
    if (typeof ctx.body === 'string' && ctx.body.includes('@import url(https://fonts.googleapis.com')) {
      ctx.body = ctx.body.replace(/@import url\(https:\/\/fonts\.googleapis\.com[^)]*\);?/g, '');
    }
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    console.log(`${ctx.method} ${ctx.path} ${ctx.status} ${ms.toFixed(1)}ms`);
  }
});

for (const event of [
  'server_error', 'authorization.error', 'grant.error', 'end_session.error', 'userinfo.error',
  'introspection.error', 'revocation.error', 'jwks.error', 'discovery.error', 'interaction.error',
]) {
  provider.on(event, (ctx, error) => {
    const detail = error.error_description ? `${error.message}: ${error.error_description}` : error.message;
    console.log(`! ${event}: ${detail}`);
    if (event === 'server_error') console.log(error.stack);
  });
}

const server = provider.listen(config.port, '127.0.0.1', () => {
  console.log(`oidc-provider ${issuer} ready (pid ${process.pid})`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections?.();
    process.exit(0);
  });
}
