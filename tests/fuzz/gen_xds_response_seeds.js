#!/usr/bin/env node
// Seeds for tests/fuzz/xds_response_fuzz.c, encoded from the official Envoy
// protos (shipped by @grpc/grpc-js-xds in tests/xds/node_modules, `make
// xds-npm`) with @grpc/proto-loader, the way the test control plane
// (tests/xds/control_plane.js) encodes what it sends.  Run once:
//   node tests/fuzz/gen_xds_response_seeds.js tests/fuzz/corpus/xds_response
// Each file is one byte (0 SotW DiscoveryResponse, 1 DeltaDiscoveryResponse,
// 2 REST JSON; +3 allow_unknown_fields) followed by the message.  The TLS
// secrets carry a throwaway self-signed certificate made here by openssl.
'use strict';
const fs = require('fs');
const path = require('path');
const os = require('os');
const { execFileSync } = require('child_process');

const xds = path.join(__dirname, '..', 'xds', 'node_modules');
const protoLoader = require(path.join(xds, '@grpc', 'proto-loader'));
const deps = path.join(xds, '@grpc', 'grpc-js-xds', 'deps');
const out = process.argv[2] || path.join(__dirname, 'corpus', 'xds_response');

const pkg = protoLoader.loadSync([
  'envoy/service/discovery/v3/ads.proto',
  'envoy/config/listener/v3/listener.proto',
  'envoy/config/route/v3/route.proto',
  'envoy/config/cluster/v3/cluster.proto',
  'envoy/config/endpoint/v3/endpoint.proto',
  'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
  'envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto',
  'envoy/extensions/filters/http/router/v3/router.proto',
  'envoy/extensions/upstreams/http/v3/http_protocol_options.proto',
  'envoy/extensions/transport_sockets/tls/v3/secret.proto',
  'envoy/extensions/transport_sockets/tls/v3/tls.proto',
], {
  keepCase: true, longs: String, enums: String, defaults: false, oneofs: true, json: true,
  includeDirs: [path.join(deps, 'envoy-api'), path.join(deps, 'xds'), path.join(deps, 'googleapis'),
                path.join(deps, 'protoc-gen-validate')],
});
const ads = pkg['envoy.service.discovery.v3.AggregatedDiscoveryService'];
const sotwEnc = ads.StreamAggregatedResources.responseSerialize;
const deltaEnc = ads.DeltaAggregatedResources.responseSerialize;

const T = {
  cds: 'type.googleapis.com/envoy.config.cluster.v3.Cluster',
  eds: 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment',
  lds: 'type.googleapis.com/envoy.config.listener.v3.Listener',
  rds: 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration',
  sds: 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret',
};
const RESOURCE = 'type.googleapis.com/envoy.service.discovery.v3.Resource';
const HCM = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
const ROUTER = 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router';
const TCP = 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy';
const UTLS = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext';
const DTLS = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext';
const HPO = 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions';
const ADS = { ads: {}, resource_api_version: 'V3' };

// ---- PEM material (throwaway) ----
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xds-seeds-'));
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
  '-nodes', '-subj', '/CN=fuzz', '-days', '3650', '-keyout', path.join(tmp, 'k.pem'),
  '-out', path.join(tmp, 'c.pem')], { stdio: 'ignore' });
const certPem = fs.readFileSync(path.join(tmp, 'c.pem'), 'utf8');
const keyPem = fs.readFileSync(path.join(tmp, 'k.pem'), 'utf8');
fs.rmSync(tmp, { recursive: true });

// ---- resources (proto-loader object form) ----
const sa = (port) => ({ socket_address: { address: '127.0.0.1', port_value: port } });
const cla = (name, ports, extra) => Object.assign({
  cluster_name: name,
  endpoints: [{ locality: { zone: 'z1' }, load_balancing_weight: { value: 3 },
                lb_endpoints: ports.map((p, i) => ({
                  endpoint: { address: sa(p) }, load_balancing_weight: { value: i + 1 },
                  health_status: i === 1 ? 'DRAINING' : 'HEALTHY' })) },
              { locality: { zone: 'z2' }, lb_endpoints: [{ endpoint: { address: sa(9100) } }] }],
}, extra || {});
// priority > 0 (rejected by Remora: only priority 0 is supported)
const claPriorities = (name) => Object.assign(cla(name, [9200]), {
  endpoints: [{ lb_endpoints: [{ endpoint: { address: sa(9201) } }] },
              { priority: 1, lb_endpoints: [{ endpoint: { address: sa(9202) } }] }] });
// the shapes xds/pb_fast.c compiles straight from the protobuf (the fuzz
// target checks the general path agrees)
const simpleCla = (name) => ({
  cluster_name: name,
  endpoints: [{ locality: { region: 'r1', zone: 'z1' },
                lb_endpoints: [{ endpoint: { address: sa(9300) } },
                               { endpoint: { address: { socket_address: { address: '::1', port_value: 9301 } } },
                                 load_balancing_weight: { value: 5 }, health_status: 'DEGRADED' },
                               { endpoint: { address: sa(9302) }, health_status: 'UNHEALTHY' }] },
              { lb_endpoints: [{ endpoint: { address: { socket_address: { address: '10.1.2.3' } } } }] }],
});
const simpleClusters = [
  { name: 'svc-eds', type: 'EDS', connect_timeout: { seconds: 1, nanos: 500000000 },
    eds_cluster_config: { eds_config: ADS, service_name: 'svc' } },
  { name: 'eds-lr', type: 'EDS', lb_policy: 'LEAST_REQUEST',
    eds_cluster_config: { eds_config: Object.assign({ initial_fetch_timeout: { seconds: 30 } }, ADS) } },
];
const staticCluster = {
  name: 'backend', type: 'STATIC', connect_timeout: { seconds: 1 }, lb_policy: 'LEAST_REQUEST',
  load_assignment: cla('backend', [9001, 9002]),
  circuit_breakers: { thresholds: [{ max_connections: { value: 100 }, max_retries: { value: 3 } }] },
  common_lb_config: { healthy_panic_threshold: { value: 40 } },
};
const edsCluster = {
  name: 'svc-eds', type: 'EDS', connect_timeout: { seconds: 0, nanos: 250000000 },
  eds_cluster_config: { eds_config: ADS, service_name: 'svc' }, lb_policy: 'RING_HASH',
  ring_hash_lb_config: { minimum_ring_size: { value: 64 } },
  outlier_detection: { consecutive_5xx: { value: 3 }, interval: { seconds: 5 } },
};
const tlsCluster = {
  name: 'secure', type: 'STRICT_DNS', connect_timeout: { seconds: 2 },
  dns_lookup_family: 'V4_ONLY', load_assignment: cla('secure', [443]),
  transport_socket: { name: 'envoy.transport_sockets.tls', typed_config: {
    '@type': UTLS, sni: 'backend.local',
    common_tls_context: {
      alpn_protocols: ['h2', 'http/1.1'],
      tls_certificate_sds_secret_configs: [{ name: 'fuzz-cert', sds_config: ADS }],
      validation_context_sds_secret_config: { name: 'fuzz-ca', sds_config: ADS } } } },
  typed_extension_protocol_options: { 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
    '@type': HPO, explicit_http_config: { http2_protocol_options: {} } } },
  health_checks: [{ timeout: { seconds: 1 }, interval: { seconds: 5 },
                    unhealthy_threshold: { value: 2 }, healthy_threshold: { value: 1 },
                    http_health_check: { path: '/healthz' } }],
};
const routes = (name) => ({
  name, virtual_hosts: [
    { name: 'api', domains: ['api.example.com', '*.api.example.com'], routes: [
      { match: { prefix: '/v1/', headers: [{ name: 'x-canary', exact_match: 'yes' }] },
        route: { weighted_clusters: { clusters: [{ name: 'backend', weight: { value: 80 } },
                                                  { name: 'svc-eds', weight: { value: 20 } }] },
                 timeout: { seconds: 3 },
                 retry_policy: { retry_on: '5xx,reset', num_retries: { value: 2 } } } },
      { match: { safe_regex: { regex: '^/items/[0-9]+$' } },
        route: { cluster: 'backend', prefix_rewrite: '/i/' } },
      { match: { path: '/old' }, redirect: { path_redirect: '/new', response_code: 'FOUND' } },
      { match: { prefix: '/' }, direct_response: { status: 404, body: { inline_string: 'no' } } }] },
    { name: 'all', domains: ['*'], routes: [
      { match: { prefix: '/' }, route: { cluster: 'backend', hash_policy: [{ header: { header_name: 'x-user' } }] },
        request_headers_to_add: [{ header: { key: 'x-via', value: 'remora' } }] }] }],
});
const rdsListener = (name, port, route) => ({
  name, address: sa(port),
  filter_chains: [{ filters: [{ name: 'envoy.filters.network.http_connection_manager',
    typed_config: { '@type': HCM, stat_prefix: name,
      rds: { route_config_name: route, config_source: ADS },
      http_filters: [{ name: 'envoy.filters.http.router', typed_config: { '@type': ROUTER } }] } }] }],
});
const mixedListener = {
  name: 'mixed', address: sa(10443),
  filter_chains: [
    { filter_chain_match: { server_names: ['a.example.com'] },
      transport_socket: { name: 'envoy.transport_sockets.tls', typed_config: { '@type': DTLS,
        common_tls_context: { tls_certificate_sds_secret_configs: [{ name: 'fuzz-cert', sds_config: ADS }] } } },
      filters: [{ name: 'envoy.filters.network.http_connection_manager', typed_config: {
        '@type': HCM, stat_prefix: 'inline', codec_type: 'AUTO',
        route_config: routes('inline'),
        http_filters: [{ name: 'envoy.filters.http.router', typed_config: { '@type': ROUTER } }] } }] },
    { filter_chain_match: { destination_port: { value: 10443 } },
      filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: {
        '@type': TCP, stat_prefix: 'tcp', cluster: 'backend' } }] }],
};
const certSecret = { name: 'fuzz-cert', tls_certificate: {
  certificate_chain: { inline_string: certPem }, private_key: { inline_string: keyPem } } };
const caSecret = { name: 'fuzz-ca', validation_context: {
  trusted_ca: { inline_string: certPem },
  match_typed_subject_alt_names: [{ san_type: 'DNS', matcher: { exact: 'backend.local' } }] } };
const badSecret = { name: 'fuzz-cert', tls_certificate: {
  certificate_chain: { inline_string: '-----BEGIN CERTIFICATE-----\ngarbage\n' },
  private_key: { inline_string: keyPem } } };

// ---- encoders ----
const any = (type, r) => Object.assign({ '@type': T[type] }, r);
const wrapped = (type, r, ttl) => ({ '@type': RESOURCE, name: r[type === 'eds' ? 'cluster_name' : 'name'],
  ttl: { seconds: ttl }, resource: any(type, r) });
const sotw = (type, list, v) => sotwEnc({ version_info: v || '1', type_url: T[type], nonce: 'n1',
  resources: list });
const delta = (type, list, removed) => deltaEnc({ system_version_info: 'd1', type_url: T[type],
  nonce: 'n2', resources: list.map((r, i) => ({ name: r[type === 'eds' ? 'cluster_name' : 'name'],
    version: 'h' + i, resource: any(type, r) })), removed_resources: removed || [] });
// proto3 JSON as a REST control plane writes it: Durations as "1.5s",
// wrappers as bare values (the object form has {seconds, nanos}, {value}).
// (envoy.type.v3.Percent is a message of its own: it stays {"value": N}.)
const PERCENT = new Set(['healthy_panic_threshold']);
function canon(v, key) {
  if (Array.isArray(v)) return v.map((x) => canon(x));
  if (!v || typeof v !== 'object') return v;
  const k = Object.keys(v);
  if (k.length && k.every((x) => x === 'seconds' || x === 'nanos'))
    return `${Number(v.seconds || 0) + (v.nanos || 0) / 1e9}s`;
  if (k.length === 1 && k[0] === 'value' && !PERCENT.has(key)) return canon(v.value);
  return Object.fromEntries(k.map((x) => [x, canon(v[x], x)]));
}
const rest = (type, list) => Buffer.from(JSON.stringify(canon({ version_info: '1', type_url: T[type],
  resources: list })));

const seeds = {
  sotw_cds: [0, sotw('cds', [any('cds', staticCluster), any('cds', edsCluster), any('cds', tlsCluster)])],
  sotw_cds_resource_ttl: [0, sotw('cds', [wrapped('cds', staticCluster, 30)])],
  sotw_cds_lax: [3, sotw('cds', [any('cds', edsCluster)])],
  sotw_eds: [0, sotw('eds', [any('eds', cla('svc', [9001, 9002, 9003],
    { policy: { overprovisioning_factor: { value: 140 } } })), any('eds', cla('other', [9004]))])],
  sotw_eds_resource_ttl: [0, sotw('eds', [wrapped('eds', cla('svc', [9005]), 5)])],
  sotw_lds: [0, sotw('lds', [any('lds', rdsListener('http', 10080, 'local_routes')), any('lds', mixedListener)])],
  sotw_lds_lax: [3, sotw('lds', [any('lds', rdsListener('http2', 10081, 'r2'))])],
  sotw_rds: [0, sotw('rds', [any('rds', routes('local_routes'))])],
  sotw_rds_resource_ttl: [0, sotw('rds', [wrapped('rds', routes('r2'), 60)])],
  sotw_sds_cert: [0, sotw('sds', [any('sds', certSecret)])],
  sotw_sds_ca: [0, sotw('sds', [any('sds', caSecret)])],
  sotw_sds_bad: [0, sotw('sds', [any('sds', badSecret)])],
  sotw_type_mismatch: [0, sotw('cds', [any('lds', mixedListener), any('cds', staticCluster)])],
  sotw_empty: [0, sotw('lds', [])],
  delta_cds: [1, delta('cds', [staticCluster, tlsCluster], ['gone'])],
  delta_eds: [1, delta('eds', [cla('svc', [9010, 9011])], ['svc', 'old'])],
  sotw_eds_priorities: [0, sotw('eds', [any('eds', claPriorities('svc'))])],
  delta_lds: [1, delta('lds', [mixedListener, rdsListener('http', 10080, 'local_routes')])],
  delta_rds: [1, delta('rds', [routes('local_routes')], ['r2'])],
  delta_sds: [1, delta('sds', [certSecret, caSecret])],
  rest_cds: [2, rest('cds', [any('cds', staticCluster), any('cds', edsCluster)])],
  rest_eds: [2, rest('eds', [any('eds', cla('svc', [9020]))])],
  rest_lds: [2, rest('lds', [any('lds', mixedListener)])],
  rest_rds_resource: [2, rest('rds', [wrapped('rds', routes('local_routes'), 10)])],
  rest_sds_lax: [5, rest('sds', [any('sds', caSecret)])],
  sotw_cds_simple: [0, sotw('cds', simpleClusters.map((c) => any('cds', c)))],
  sotw_eds_simple: [0, sotw('eds', [any('eds', simpleCla('svc')), any('eds', simpleCla('other'))])],
  delta_eds_simple: [1, delta('eds', [simpleCla('svc')], [])],
};

fs.mkdirSync(out, { recursive: true });
for (const [name, [mode, bytes]] of Object.entries(seeds))
  fs.writeFileSync(path.join(out, name), Buffer.concat([Buffer.from([mode]), bytes]));
console.log(`${Object.keys(seeds).length} seeds in ${out}`);
