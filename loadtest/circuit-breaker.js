// Circuit breaking under load: one of three targets starts failing (the test upstream's
// failure switch, /_chaos/fail on FAIL_ADDR) after WARMUP; outlier detection ejects it
// after a few 5xx, so the error rate clients see stays under MAX_ERROR_RATE, and the
// ejection shows in portcullis_upstream_ejections_total. The switch is turned off at the end.
//
//   loadtest/run.sh circuit-breaker               # loadtest/conf/circuit-breaker.yaml
//   BASE_URL=http://127.0.0.1:PORT ADMIN_URL=http://127.0.0.1:PORT FAIL_ADDR=127.0.0.1:PORT \
//     k6 run loadtest/circuit-breaker.js
import http from 'k6/http';
import { sleep } from 'k6';
import { Counter } from 'k6/metrics';
import { constantRate, envUrl, getOk, sampleValue, target } from './lib.js';

const BASE_URL = envUrl('BASE_URL');
const ADMIN_URL = envUrl('ADMIN_URL');
// The failing target is the config's second upstream port.
const FAIL_ADDR = target(1, 'FAIL_ADDR');
const WARMUP_S = parseInt(__ENV.WARMUP_S || '3', 10);
const MAX_ERROR_RATE = parseFloat(__ENV.MAX_ERROR_RATE || '0.01');
const ejections = new Counter('target_ejections');

export const options = {
  scenarios: {
    traffic: constantRate(parseInt(__ENV.RATE || '300', 10), __ENV.DURATION || '20s', 20, 100, {
      exec: 'traffic',
    }),
    chaos: { executor: 'per-vu-iterations', vus: 1, iterations: 1, exec: 'chaos' },
  },
  thresholds: {
    'http_req_failed{scenario:traffic}': [`rate<${MAX_ERROR_RATE}`],
    target_ejections: ['count>=1'],
  },
};

export function traffic() {
  getOk(`${BASE_URL}/api/cb`);
}

export function chaos() {
  sleep(WARMUP_S);
  http.get(`http://${FAIL_ADDR}/_chaos/fail`);
  sleep(3);
  const metrics = http.get(`${ADMIN_URL}/metrics`).body;
  ejections.add(sampleValue(metrics, 'portcullis_upstream_ejections_total', FAIL_ADDR) || 0);
}

export function teardown() {
  http.get(`http://${FAIL_ADDR}/_chaos/recover`);
}
