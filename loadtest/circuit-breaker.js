// Circuit breaking under load: one of three targets starts failing (the test upstream's
// failure switch, /_chaos/fail on FAIL_ADDR) after WARMUP; outlier detection ejects it
// after a few 5xx, so the error rate clients see stays under MAX_ERROR_RATE, and the
// ejection shows in portcullis_upstream_ejections_total. The switch is turned off at the end.
//
//   BASE_URL=http://127.0.0.1:28080 ADMIN_URL=http://127.0.0.1:28990 FAIL_ADDR=127.0.0.1:28002 \
//     k6 run loadtest/circuit-breaker.js
//   loadtest/run.sh circuit-breaker               # loadtest/conf/circuit-breaker.yaml
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter } from 'k6/metrics';

const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:28080').replace(/\/+$/, '');
const ADMIN_URL = (__ENV.ADMIN_URL || 'http://127.0.0.1:28990').replace(/\/+$/, '');
const FAIL_ADDR = __ENV.FAIL_ADDR || '127.0.0.1:28002';
const WARMUP_S = parseInt(__ENV.WARMUP_S || '3', 10);
const MAX_ERROR_RATE = parseFloat(__ENV.MAX_ERROR_RATE || '0.01');
const ejections = new Counter('target_ejections');

export const options = {
  scenarios: {
    traffic: {
      executor: 'constant-arrival-rate',
      rate: parseInt(__ENV.RATE || '300', 10),
      timeUnit: '1s',
      duration: __ENV.DURATION || '20s',
      preAllocatedVUs: 20,
      maxVUs: 100,
      exec: 'traffic',
    },
    chaos: { executor: 'per-vu-iterations', vus: 1, iterations: 1, exec: 'chaos' },
  },
  thresholds: {
    'http_req_failed{scenario:traffic}': [`rate<${MAX_ERROR_RATE}`],
    target_ejections: ['count>=1'],
  },
};

export function traffic() {
  const res = http.get(`${BASE_URL}/api/cb`);
  check(res, { 'status 200': (r) => r.status === 200 });
}

export function chaos() {
  sleep(WARMUP_S);
  http.get(`http://${FAIL_ADDR}/_chaos/fail`);
  sleep(3);
  const metrics = http.get(`${ADMIN_URL}/metrics`).body || '';
  const line = metrics
    .split('\n')
    .find((l) => l.startsWith('portcullis_upstream_ejections_total') && l.includes(FAIL_ADDR));
  ejections.add(line ? parseFloat(line.split(' ').pop()) : 0);
}

export function teardown() {
  http.get(`http://${FAIL_ADDR}/_chaos/recover`);
}
