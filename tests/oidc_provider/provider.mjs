// A real OpenID provider (panva/oidc-provider) for the SSO tests.
//
// Usage: node provider.mjs CONFIG.json. The JSON names the port, the TLS
// certificate and key, the clients and the test accounts (each with a groups
// claim). It prints "ready ISSUER" on stdout once it listens on 127.0.0.1.
// Its own dev login/consent forms are the user's side: tests fill them in with
// an HTTP client, so the protocol itself is never mocked. Signing keys are
// made fresh per process, so two providers never share keys.
import { readFileSync } from 'node:fs';
import https from 'node:https';
import { randomBytes } from 'node:crypto';

import * as jose from 'jose';
import Provider from 'oidc-provider';

const conf = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const issuer = `https://127.0.0.1:${conf.port}`;

const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const jwk = { ...(await jose.exportJWK(privateKey)), kid: randomBytes(8).toString('hex'), alg: 'RS256', use: 'sig' };

const accounts = conf.accounts || {};

const provider = new Provider(issuer, {
  clients: conf.clients,
  jwks: { keys: [jwk] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  // Scope claims in the ID token too (jit-server reads only the ID token).
  conformIdTokenClaims: false,
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
  },
  pkce: { methods: ['S256'], required: () => true },
  ttl: {
    DeviceCode: conf.device_code_ttl || 600,
    IdToken: conf.id_token_ttl || 3600,
    AccessToken: 3600,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
  },
  async findAccount(ctx, id) {
    // Any login the dev form accepts is an account; only the configured ones
    // carry groups (an unconfigured name is "a person jit does not know").
    const known = accounts[id] || {};
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          preferred_username: known.preferred_username || id,
          name: id,
          email: known.email || `${id}@example.org`,
          // An account may say otherwise (IdPs send "false" as a string, too).
          email_verified: 'email_verified' in known ? known.email_verified : true,
          groups: known.groups || [],
        };
      },
    };
  },
});
// RFC 8628's optional polling interval, announced only when the config names one
// (without it clients use the RFC's 5 s): the device tests' waits are mostly polls.
if (conf.interval) {
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.oidc?.route === 'device_authorization' && ctx.status === 200 && ctx.body) {
      ctx.body.interval = conf.interval;
    }
  });
}
// Plain errors in the test's log, not only in the HTML answer.
provider.on('server_error', (ctx, err) => console.error('server_error', err));
// One line per token endpoint error (authorization_pending, slow_down...): tests
// count how many polls reached the IdP.
provider.on('grant.error', (ctx, err) => console.error('grant.error', err.error));

const server = https.createServer(
  { key: readFileSync(conf.tls_key), cert: readFileSync(conf.tls_cert) },
  provider.callback(),
);
server.listen(conf.port, '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => server.close(() => process.exit(0)));
}
