// Rate limiting under load: CLIENTS clients (X-Client header) each send SEND_RATE
// requests/s against a per-client token bucket of LIMIT per second (burst LIMIT). Over
// DURATION each client may get at most LIMIT × seconds + burst answers 200 (+2% slack);
// every other answer must be a 429 with Retry-After, and every answer carries the
// RateLimit / RateLimit-Policy / X-RateLimit-* headers of SPEC §5 with consistent values.
//
//   loadtest/run.sh rate-limit                      # loadtest/conf/rate-limit.yaml
//   BASE_URL=http://127.0.0.1:PORT k6 run loadtest/rate-limit.js
import http from 'k6/http';
import { check } from 'k6';
import { Counter, Rate } from 'k6/metrics';
import exec from 'k6/execution';
import { constantRate, envUrl, jsonField } from './lib.js';

const BASE_URL = envUrl('BASE_URL');
const CLIENTS = parseInt(__ENV.CLIENTS || '5', 10);
const SEND_RATE = parseInt(__ENV.SEND_RATE || '50', 10);
const LIMIT = parseInt(__ENV.LIMIT || '20', 10);
const DURATION_S = parseInt(__ENV.DURATION_S || '15', 10);

const passed = new Counter('rl_passed');
const refused = new Counter('rl_refused');
const headersOk = new Rate('rl_headers_ok');
const refusalsOk = new Rate('rl_refusals_ok');
const unexpected = new Counter('rl_unexpected_status');

// Each client may pass at most burst + rate × duration; 2% slack for timing at the edges.
const MAX_PASSED = Math.ceil(CLIENTS * (LIMIT + LIMIT * DURATION_S) * 1.02);
// ...and at least 90% of that, or the limiter refuses too much.
const MIN_PASSED = Math.floor(CLIENTS * LIMIT * DURATION_S * 0.9);

export const options = {
  scenarios: {
    clients: constantRate(CLIENTS * SEND_RATE, `${DURATION_S}s`, 20, 100),
  },
  thresholds: {
    rl_passed: [`count<=${MAX_PASSED}`, `count>=${MIN_PASSED}`],
    rl_refused: ['count>0'],
    rl_headers_ok: ['rate==1'],
    rl_refusals_ok: ['rate==1'],
    rl_unexpected_status: ['count==0'],
  },
};

function int(value) {
  return value === undefined ? NaN : parseInt(value, 10);
}

export default function () {
  const client = `client-${exec.scenario.iterationInTest % CLIENTS}`;
  const res = http.get(`${BASE_URL}/api/limited`, {
    headers: { 'X-Client': client },
    responseCallback: http.expectedStatuses(200, 429),
  });
  const limit = int(res.headers['X-Ratelimit-Limit']);
  const remaining = int(res.headers['X-Ratelimit-Remaining']);
  headersOk.add(
    limit === LIMIT &&
      remaining >= 0 &&
      /"per-client";q=\d+;w=\d+/.test(res.headers['Ratelimit-Policy'] || '') &&
      /"per-client";r=\d+;t=\d+/.test(res.headers['Ratelimit'] || ''),
  );
  if (res.status === 200) {
    passed.add(1);
  } else if (res.status === 429) {
    refused.add(1);
    const code = jsonField(res, 'error.code');
    refusalsOk.add(code === 'RATE_LIMITED' && int(res.headers['Retry-After']) >= 1 && remaining === 0);
  } else {
    unexpected.add(1);
  }
  check(res, { '200 or 429': (r) => r.status === 200 || r.status === 429 });
}
