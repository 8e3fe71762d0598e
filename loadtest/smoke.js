// Smoke test of a running gateway: a proxied route, the /ping respond route and an unknown path.
//
//   loadtest/run.sh smoke                           # starts upstreams + gateway (conf/smoke.yaml)
//   BASE_URL=http://127.0.0.1:8080 VUS=10 DURATION=30s k6 run loadtest/smoke.js  # 5 VUs, 10s by default
//
// PROXIED_PATH (default /api/smoke) must be routed to an upstream that answers 200.
import http from 'k6/http';
import { check } from 'k6';
import { envUrl, jsonField } from './lib.js';

const BASE_URL = envUrl('BASE_URL');
const PROXIED_PATH = __ENV.PROXIED_PATH || '/api/smoke';

export const options = {
  vus: parseInt(__ENV.VUS || '5', 10),
  duration: __ENV.DURATION || '10s',
  thresholds: {
    // Every check of every kind must pass; a smoke test tolerates no failure.
    'checks{kind:proxied}': ['rate==1'],
    'checks{kind:ping}': ['rate==1'],
    'checks{kind:not_found}': ['rate==1'],
    // The 404 is expected (see responseCallback below), so any failure here is real.
    http_req_failed: ['rate==0'],
    // Loopback, tiny bodies: generous bounds that still catch a stalled gateway.
    'http_req_duration{kind:proxied}': ['p(95)<100', 'p(99)<250'],
    'http_req_duration{kind:ping}': ['p(95)<50', 'p(99)<150'],
    'http_req_duration{kind:not_found}': ['p(95)<50', 'p(99)<150'],
  },
};

export default function () {
  const proxied = http.get(`${BASE_URL}${PROXIED_PATH}`, { tags: { kind: 'proxied' } });
  check(
    proxied,
    {
      'proxied: status 200': (r) => r.status === 200,
      'proxied: X-Request-Id header': (r) => (r.headers['X-Request-Id'] || '').length > 0,
    },
    { kind: 'proxied' },
  );

  const ping = http.get(`${BASE_URL}/ping`, { tags: { kind: 'ping' } });
  check(
    ping,
    {
      'ping: status 200': (r) => r.status === 200,
      'ping: body pong': (r) => typeof r.body === 'string' && r.body.trim() === 'pong',
    },
    { kind: 'ping' },
  );

  const unknown = http.get(`${BASE_URL}/no-such-route-${__VU}-${__ITER}`, {
    tags: { kind: 'not_found', name: 'unknown path' },
    responseCallback: http.expectedStatuses(404),
  });
  check(
    unknown,
    {
      'unknown: status 404': (r) => r.status === 404,
      'unknown: JSON content type': (r) => (r.headers['Content-Type'] || '').startsWith('application/json'),
      'unknown: error.code ROUTE_NOT_FOUND': (r) => jsonField(r, 'error.code') === 'ROUTE_NOT_FOUND',
    },
    { kind: 'not_found' },
  );
}
