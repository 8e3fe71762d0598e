// A fleet under configuration pushes: a constant arrival rate spread over three nodes that
// follow one etcd document, while loadtest/fleet.sh pushes a new revision every few
// seconds. Not one request may fail.
//
//   loadtest/fleet.sh                     # starts etcd, an upstream and three nodes
//   NODES=http://127.0.0.1:P1,http://127.0.0.1:P2,http://127.0.0.1:P3 k6 run loadtest/fleet.js
//
// RATE (requests/s over all nodes, default 300), DURATION (default 15s).
import { getOk, constantRate, requiredEnv, SUMMARY_TREND_STATS } from './lib.js';

const NODES = requiredEnv('NODES').split(',').map((url) => url.replace(/\/+$/, ''));
const RATE = parseInt(__ENV.RATE || '300', 10);
const DURATION = __ENV.DURATION || '15s';

export const options = {
  summaryTrendStats: SUMMARY_TREND_STATS,
  scenarios: {
    traffic: constantRate(RATE, DURATION, 30, 150, { exec: 'traffic' }),
  },
  thresholds: {
    'http_req_failed{scenario:traffic}': ['rate==0'],
    'checks{kind:traffic}': ['rate==1'],
  },
};

export function traffic() {
  // Every node, in turn: half proxied to the upstream, half answered by the route each
  // push changes.
  const node = NODES[__ITER % NODES.length];
  const path = __ITER % 2 === 0 ? '/api/fleet' : '/generation';
  getOk(`${node}${path}`, { kind: 'traffic' });
}
