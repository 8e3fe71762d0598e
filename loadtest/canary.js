// Canary split: every iteration is a new user (X-User), so the share of requests the
// canary pool serves must be the configured weight (±2 points); a user asked again gets
// the same variant; the force header overrides the split. Which pool answered comes from
// the echo body's "listen" address.
//
//   loadtest/run.sh canary                      # loadtest/conf/canary.yaml
//   BASE_URL=http://127.0.0.1:PORT CANARY_ADDR=127.0.0.1:PORT WEIGHT=10 k6 run loadtest/canary.js
import http from 'k6/http';
import { check } from 'k6';
import { Rate } from 'k6/metrics';
import exec from 'k6/execution';
import { constantRate, envUrl, jsonField, target } from './lib.js';

const BASE_URL = envUrl('BASE_URL');
// The canary pool is the config's second upstream port.
const CANARY_ADDR = target(1, 'CANARY_ADDR');
const WEIGHT = parseFloat(__ENV.WEIGHT || '10') / 100;

const canaryShare = new Rate('canary_share');
const sticky = new Rate('canary_sticky');
const forced = new Rate('canary_forced');

export const options = {
  scenarios: {
    split: constantRate(parseInt(__ENV.RATE || '300', 10), __ENV.DURATION || '20s', 20, 100),
  },
  thresholds: {
    canary_share: [`rate>=${WEIGHT - 0.02}`, `rate<=${WEIGHT + 0.02}`],
    canary_sticky: ['rate==1'],
    canary_forced: ['rate==1'],
    http_req_failed: ['rate==0'],
  },
};

function servedByCanary(res) {
  const listen = jsonField(res, 'listen');
  return listen === undefined ? undefined : listen === CANARY_ADDR;
}

export default function () {
  const user = `user-${exec.scenario.iterationInTest}`;
  const first = http.get(`${BASE_URL}/api/canary?echo=1`, { headers: { 'X-User': user } });
  check(first, { 'status 200': (r) => r.status === 200 });
  const variant = servedByCanary(first);
  if (variant === undefined) return;
  canaryShare.add(variant);

  // One user in ten is asked again: same variant.
  if (exec.scenario.iterationInTest % 10 === 0) {
    const again = http.get(`${BASE_URL}/api/canary?echo=1`, { headers: { 'X-User': user } });
    sticky.add(servedByCanary(again) === variant);
  }
  // One in twenty forces the other way.
  if (exec.scenario.iterationInTest % 20 === 0) {
    const force = variant ? 'never' : 'always';
    const res = http.get(`${BASE_URL}/api/canary?echo=1`, {
      headers: { 'X-User': user, 'X-Canary': force },
    });
    forced.add(servedByCanary(res) === !variant);
  }
}
