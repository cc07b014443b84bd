// The Express gateway of seed 004 (Express 4, http-proxy-middleware, jsonwebtoken,
// express-rate-limit with its Redis store, helmet, cors, morgan), written for Portier's bench:
// the peer a user would pick instead of Portier, doing the same job on the same routes.
//
// Started by bench/run.py (bench/peers.py), pinned to core 0 like the gateway:
//   BENCH_ROUTES='[...]' UPSTREAM=http://127.0.0.1:8080 JWT_SECRET=s REDIS_URL=redis://... \
//   PORT=3000 [KEEPALIVE=1] node bench/express/gateway.js
//
// As the seed writes it: helmet, morgan('combined') (here to /dev/null), express.json and
// urlencoded on every request; per protected route jsonwebtoken's verify, a role check, the
// Redis-backed rate limit, then http-proxy-middleware with changeOrigin, a path rewrite and the
// caller's identity as X-User-* headers. Without an agent, http-proxy opens a new upstream
// connection per request (`Connection: close`); KEEPALIVE=1 gives it a keep-alive http.Agent.
// Each route of BENCH_ROUTES mirrors one Portier route of bench/scenarios.py.
'use strict';

const fs = require('fs');
const http = require('http');
const express = require('express');
const cors = require('cors');
const helmet = require('helmet');
const morgan = require('morgan');
const jwt = require('jsonwebtoken');
const { rateLimit } = require('express-rate-limit');
const { RedisStore } = require('rate-limit-redis');
const { createClient } = require('redis');
const { createProxyMiddleware } = require('http-proxy-middleware');

const PORT = Number(process.env.PORT || 3000);
const UPSTREAM = process.env.UPSTREAM || 'http://127.0.0.1:8080';
const JWT_SECRET = process.env.JWT_SECRET || '';
const REDIS_URL = process.env.REDIS_URL || '';
const RL_PREFIX = process.env.RL_PREFIX || 'rl:bench:';
const KEEPALIVE = process.env.KEEPALIVE === '1';
// [{path, upstreamPath, policy, ratePerMinute, cors, setHeaders, addHeaders}]
const ROUTES = JSON.parse(process.env.BENCH_ROUTES || '[]');

// The seed's auth.middleware.js, reading the claims the bench's tokens carry (Portier's).
function authenticate(req, res, next) {
  const authHeader = req.headers.authorization;
  if (!authHeader || !authHeader.startsWith('Bearer ')) {
    return res.status(401).json({ success: false, error: 'No token provided' });
  }
  try {
    const decoded = jwt.verify(authHeader.substring(7), JWT_SECRET, { algorithms: ['HS256'] });
    if (decoded.token_type !== 'access' || !Array.isArray(decoded.roles)) {
      throw new Error('not an access token');
    }
    req.user = { userId: String(decoded.user_id), email: decoded.email || '', roles: decoded.roles };
    return next();
  } catch (jwtError) {
    return res.status(401).json({ success: false, error: 'Invalid or expired token' });
  }
}

// Portier's RolePolicy kinds the bench routes use: any valid token, or the admin role.
function authorize(policy) {
  return (req, res, next) => {
    if (policy === 'admin_only' && !req.user.roles.includes('admin')) {
      return res.status(403).json({ success: false, error: 'Insufficient permissions' });
    }
    return next();
  };
}

function limiter(route, redisClient) {
  const options = {
    windowMs: 60 * 1000,
    limit: route.ratePerMinute,
    standardHeaders: true,
    legacyHeaders: false,
    keyGenerator: (req) => req.user.userId, // Portier's tier key "user"
    message: { success: false, error: 'Too many requests, please try again later' },
  };
  if (redisClient) {
    options.store = new RedisStore({
      sendCommand: (...args) => redisClient.sendCommand(args),
      prefix: `${RL_PREFIX}${route.path}:`,
    });
  }
  return rateLimit(options);
}

function proxy(route, agent) {
  const set = { ...(route.setHeaders || {}), ...(route.addHeaders || {}) };
  return createProxyMiddleware({
    target: UPSTREAM,
    changeOrigin: true,
    pathRewrite: { [`^${route.path}`]: route.upstreamPath },
    ...(agent ? { agent } : {}),
    logLevel: 'warn',
    onProxyReq: (proxyReq, req) => {
      // http-proxy calls this on the request's 'socket' event; with a keep-alive agent, a
      // request queued for a socket (after an upstream reset one) has sent its headers by
      // then, and setHeader would throw ERR_HTTP_HEADERS_SENT and end the process (seen in
      // the bench at 200 connections). Such a request goes without the identity headers.
      if (proxyReq.headersSent) return;
      if (req.user) {
        proxyReq.setHeader('X-User-Id', req.user.userId);
        proxyReq.setHeader('X-User-Role', req.user.roles.join(','));
        proxyReq.setHeader('X-User-Email', req.user.email);
      }
      for (const [name, value] of Object.entries(set)) {
        proxyReq.setHeader(name, value === '$user_id' ? (req.user ? req.user.userId : '') : value);
      }
    },
    onError: (err, req, res) => {
      console.error('Proxy Error:', err.message);
      if (!res.headersSent) {
        res.status(502).json({ success: false, error: 'Service temporarily unavailable' });
      } else {
        res.end();
      }
    },
  });
}

async function main() {
  let redisClient = null;
  if (REDIS_URL) {
    redisClient = createClient({ url: REDIS_URL });
    redisClient.on('error', (err) => console.error('Redis Error:', err.message));
    await redisClient.connect();
  }
  const agent = KEEPALIVE ? new http.Agent({ keepAlive: true, maxSockets: 512 }) : null;

  const app = express();
  app.use(helmet());
  app.use(morgan('combined', { stream: fs.createWriteStream('/dev/null') }));
  app.use(express.json());
  app.use(express.urlencoded({ extended: true }));

  for (const route of ROUTES) {
    const chain = [];
    if (route.cors) {
      chain.push(
        cors({
          origin: route.cors.origins,
          credentials: route.cors.credentials,
          maxAge: route.cors.maxAge,
        })
      );
    }
    if (route.policy) chain.push(authenticate, authorize(route.policy));
    if (route.ratePerMinute) chain.push(limiter(route, redisClient));
    chain.push(proxy(route, agent));
    app.use(route.path, ...chain);
  }

  // The seed's error.middleware.js.
  app.use((err, req, res, next) => {
    console.error('Gateway Error:', err.message);
    res.status(err.statusCode || 500).json({ success: false, error: 'Internal server error' });
  });

  app.listen(PORT, '127.0.0.1', () => {
    const mode = KEEPALIVE ? 'upstream keep-alive' : 'a new upstream connection per request';
    console.log(`express gateway on ${PORT}, ${ROUTES.length} routes, ${mode}`);
  });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
