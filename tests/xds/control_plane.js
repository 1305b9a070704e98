#!/usr/bin/env node
// A scripted ADS (state of the world and delta) control plane for Remora's
// integration tests, on @grpc/grpc-js and @grpc/proto-loader with the official Envoy
// protos shipped by @grpc/grpc-js-xds: every message Remora decodes was
// encoded from the real schemas.
//
//   node control_plane.js [--port N] [--rest-port N]
//                         [--rest-tls CERT,KEY[,CLIENT_CA]] [--rest-tls-port N]
//                         [--grpc-tls CERT,KEY[,CLIENT_CA]]
// prints one JSON line {"grpc_port": N, "http_port": M, "rest_port": R
// [, "rest_tls_port": T]} when ready, and exits when stdin closes.
//
// gRPC services: ADS (StreamAggregatedResources, DeltaAggregatedResources)
// and the per-type services (ClusterDiscoveryService StreamClusters /
// DeltaClusters, EndpointDiscoveryService StreamEndpoints / DeltaEndpoints,
// ListenerDiscoveryService StreamListeners / DeltaListeners,
// RouteDiscoveryService StreamRoutes / DeltaRoutes, SecretDiscoveryService
// StreamSecrets / DeltaSecrets), all from the same scripted state; a per-type
// stream answers only its own type (a request for another is logged and
// ignored).  Each request in /requests names its "service" (the RPC).
// --rest-tls: the REST server is also served over HTTPS on rest_tls_port with
// that certificate and key; with CLIENT_CA, clients must present a
// certificate signed by it (mTLS), whose subject CN is logged as
// "client_cn".  --grpc-tls: the gRPC port speaks TLS instead (mTLS with
// CLIENT_CA).  The tests drive it over HTTP (JSON):
//   POST /set      {"type": "cds"|"eds"|"lds"|"rds", "version": "v1", "resources": [...],
//                   "resend_on_nack": false}
//                  resources in proto-loader object form (snake_case, Durations
//                  as {seconds, nanos}, wrappers as {value}, Anys as {"@type": url, ...});
//                  pushed at once to every stream subscribed to that type; with
//                  resend_on_nack every NACK is answered by resending the same
//                  version at once (go-control-plane's behaviour)
//                  Delta streams get the difference from what each was sent:
//                  the resources whose content changed (Resource.version = a
//                  hash of the resource) and removed_resources
//   POST /delta    {"type", "version", "resources": [...], "removed": [names]}
//                  changes only these resources of the type's state and pushes
//                  only them to delta streams (SotW streams get the full state)
//   GET  /requests the Discovery/DeltaDiscoveryRequests received so far (type_url,
//                  version_info, response_nonce, resource_names, error_detail,
//                  has_node, stream, delta, subscribe, unsubscribe,
//                  initial_resource_versions, t_ms: arrival time, ms since the epoch)
//   GET  /responses the responses sent (stream, type, nonce, version, n, removed, t_ms)
//   GET  /now      {"t_ms": ...} the control plane's clock
//   GET  /streams  {"open": N, "total": M, "by_service": {rpc name: open streams}}
//   GET  /stream_log every gRPC stream opened: {stream, service, metadata: {header: value}
//                  (the request headers / initial metadata, grpc-js's view), t_ms}
//   POST /close_streams ends every open gRPC stream (trailers with grpc-status 0;
//                  the server stays up): {"closed": N}
//   POST /rest_script {"type": "cds", "status": 500, "delay_ms": 0}
//                  REST answers for that type: a status to fail with (null: serve),
//                  delay_ms before answering (a timeout test)
//
// REST-JSON (xDS over HTTP/1.1, on its own port "rest_port"): POST
// /v3/discovery:<clusters|endpoints|listeners|routes|secrets> with a
// DiscoveryRequest in JSON; answers 200 with the DiscoveryResponse in canonical
// proto3 JSON (lowerCamelCase, Durations "1.5s", Anys {"@type", ...}) from the
// same scripted state, or 304 when the client already has the state's version
// for the same resource names.  Requests are logged in /requests with rest: true.
'use strict';
const path = require('path');
const http = require('http');
const crypto = require('crypto');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const deps = path.join(__dirname, 'node_modules', '@grpc', 'grpc-js-xds', 'deps');
const TYPES = {
  cds: 'type.googleapis.com/envoy.config.cluster.v3.Cluster',
  eds: 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment',
  lds: 'type.googleapis.com/envoy.config.listener.v3.Listener',
  rds: 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration',
  sds: 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret',
};
const NAME_FIELD = { cds: 'name', eds: 'cluster_name', lds: 'name', rds: 'name', sds: 'name' };

const protoFiles = [
  'envoy/service/discovery/v3/ads.proto',
  'envoy/service/cluster/v3/cds.proto',
  'envoy/service/endpoint/v3/eds.proto',
  'envoy/service/listener/v3/lds.proto',
  'envoy/service/route/v3/rds.proto',
  'envoy/service/secret/v3/sds.proto',
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
];
const protoOpts = {
  keepCase: true, longs: String, enums: String, defaults: false, oneofs: true, json: true,
  includeDirs: [path.join(deps, 'envoy-api'), path.join(deps, 'xds'), path.join(deps, 'googleapis'),
                path.join(deps, 'protoc-gen-validate')],
};
const pkgDef = protoLoader.loadSync(protoFiles, protoOpts);
const loaded = grpc.loadPackageDefinition(pkgDef);
// the same protos as a protobufjs root, for the REST JSON form
const plUtil = require('@grpc/proto-loader/build/src/util');
plUtil.addCommonProtos();
const root = plUtil.loadProtosWithOptionsSync(protoFiles, protoOpts);
const ADS = loaded.envoy.service.discovery.v3.AggregatedDiscoveryService;

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : dflt;
}
const port = parseInt(arg('--port', '0'), 10);
const restPort = parseInt(arg('--rest-port', '0'), 10);
const restTls = arg('--rest-tls', null);
const restTlsPort = parseInt(arg('--rest-tls-port', '0'), 10);
const grpcTls = arg('--grpc-tls', null);

const state = {};          // type -> {version, resources: Map name -> {r, v}, resend_on_nack}
const requests = [];
const responses = [];
const streams = new Set();
const streamLog = [];
let streamSeq = 0, nonceSeq = 0;

function typeOf(url) {
  for (const k of Object.keys(TYPES)) if (TYPES[k] === url) return k;
  return null;
}

function resourceVersion(r) {
  return crypto.createHash('sha1').update(JSON.stringify(r)).digest('hex').slice(0, 12);
}

function setState(type, version, resources, resendOnNack) {
  const m = new Map();
  for (const r of resources) m.set(r[NAME_FIELD[type]], { r, v: resourceVersion(r) });
  state[type] = { version: String(version), resources: m, resend_on_nack: !!resendOnNack };
}

function respond(st, type) {
  const s = state[type];
  if (!s) return;
  const sub = st.subs[type];
  let res = [...s.resources.values()].map((e) => e.r);
  if ((type === 'eds' || type === 'rds' || type === 'sds') && sub.names.length)
    res = res.filter((r) => sub.names.includes(r[NAME_FIELD[type]]));
  const nonce = String(++nonceSeq);
  sub.sentVersion = s.version;
  st.call.write({
    version_info: s.version,
    type_url: TYPES[type],
    nonce,
    resources: res.map((r) => Object.assign({ '@type': TYPES[type] }, r)),
  });
  responses.push({ stream: st.id, type, nonce, version: s.version, n: res.length, removed: 0,
                   t_ms: Date.now() });
}

// Delta: send what changed for this stream's subscription (only the names in
// `only` if given); force: answer even when nothing changed (a first request).
function respondDelta(st, type, only, force) {
  const s = state[type];
  const sub = st.subs[type];
  if (!s || !sub) return;
  const inSub = (n) => sub.wildcard || sub.names.has(n);
  const changed = [], removed = [];
  const names = only || new Set([...s.resources.keys(), ...sub.known.keys()]);
  for (const n of names) {
    if (!inSub(n)) continue;
    const e = s.resources.get(n);
    if (e && sub.known.get(n) !== e.v) {
      changed.push({ name: n, version: e.v,
                     resource: Object.assign({ '@type': TYPES[type] }, e.r) });
      sub.known.set(n, e.v);
    } else if (!e && sub.known.has(n)) {
      removed.push(n);
      sub.known.delete(n);
    }
  }
  if (!changed.length && !removed.length && !force) return;
  const nonce = String(++nonceSeq);
  st.call.write({ system_version_info: s.version, type_url: TYPES[type], nonce,
                  resources: changed, removed_resources: removed });
  responses.push({ stream: st.id, type, nonce, version: s.version, n: changed.length,
                   removed: removed.length, t_ms: Date.now() });
}

function onDeltaRequest(st, req) {
  const type = typeOf(req.type_url);
  const subscribe = req.resource_names_subscribe || [];
  const unsubscribe = req.resource_names_unsubscribe || [];
  const initial = req.initial_resource_versions || {};
  requests.push({
    stream: st.id, service: st.service, delta: true, type, type_url: req.type_url,
    response_nonce: req.response_nonce || '', subscribe, unsubscribe,
    initial_resource_versions: initial,
    error_detail: req.error_detail ? { code: req.error_detail.code, message: req.error_detail.message } : null,
    has_node: !!(req.node && req.node.id), node_id: req.node ? req.node.id : '',
    node_cluster: req.node ? req.node.cluster : '', t_ms: Date.now(),
  });
  if (!type || (st.only && type !== st.only)) return;
  let sub = st.subs[type];
  let first = false;
  if (!sub) {
    // the first request of a type: an empty subscription is the legacy
    // wildcard; the versions the client holds are not resent
    first = true;
    sub = st.subs[type] = { wildcard: subscribe.length === 0, names: new Set(),
                            known: new Map(Object.entries(initial)) };
  }
  for (const n of subscribe) {
    if (n === '*') sub.wildcard = true; else sub.names.add(n);
  }
  for (const n of unsubscribe) {
    if (n === '*') sub.wildcard = false;
    else { sub.names.delete(n); sub.known.delete(n); }
  }
  if (req.response_nonce && !subscribe.length && !unsubscribe.length) return;   // an ACK/NACK
  respondDelta(st, type, null, first);
}

function onRequest(st, req) {
  const type = typeOf(req.type_url);
  requests.push({
    stream: st.id, service: st.service, delta: false, type, type_url: req.type_url,
    version_info: req.version_info || '',
    response_nonce: req.response_nonce || '', resource_names: req.resource_names || [],
    error_detail: req.error_detail ? { code: req.error_detail.code, message: req.error_detail.message } : null,
    has_node: !!(req.node && req.node.id), node_id: req.node ? req.node.id : '',
    node_cluster: req.node ? req.node.cluster : '', t_ms: Date.now(),
  });
  if (!type || (st.only && type !== st.only)) return;
  const names = (req.resource_names || []).slice().sort();
  const sub = st.subs[type];
  if (!sub) {
    st.subs[type] = { names, sentVersion: null };
    respond(st, type);
    return;
  }
  const changed = JSON.stringify(names) !== JSON.stringify(sub.names);
  sub.names = names;
  if (changed || (req.error_detail && state[type] && state[type].resend_on_nack)) respond(st, type);
}

// ---- canonical proto3 JSON (what a REST control plane sends) ----
const camel = (n) => n.replace(/_([a-z0-9])/g, (m, c) => c.toUpperCase());
const WRAPPERS = new Set(['DoubleValue', 'FloatValue', 'Int64Value', 'UInt64Value', 'Int32Value',
                          'UInt32Value', 'BoolValue', 'StringValue', 'BytesValue']);

function scalarJson(f, v) {
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return Buffer.from(v).toString('base64');
  if (['int64', 'uint64', 'sint64', 'fixed64', 'sfixed64'].includes(f.type)) return String(v);
  return v;
}

function valueJson(v) {   // google.protobuf.Value
  if (v.struct_value) return structJson(v.struct_value);
  if (v.list_value) return (v.list_value.values || []).map(valueJson);
  if ('string_value' in v) return v.string_value;
  if ('number_value' in v) return v.number_value;
  if ('bool_value' in v) return v.bool_value;
  return null;
}
function structJson(s) {
  const o = {};
  for (const [k, v] of Object.entries(s.fields || {})) o[k] = valueJson(v);
  return o;
}

function toJson(type, m) {
  const full = type.fullName.slice(1);
  if (full.startsWith('google.protobuf.')) {
    const n = full.slice(16);
    if (n === 'Duration' || n === 'Timestamp') {
      const secs = Number(m.seconds || 0), nanos = m.nanos || 0;
      if (n === 'Timestamp') return new Date(secs * 1000 + nanos / 1e6).toISOString();
      return `${nanos ? (secs + nanos / 1e9).toFixed(9).replace(/0+$/, '') : secs}s`;
    }
    if (WRAPPERS.has(n)) return scalarJson(type.fields.value, m.value);
    if (n === 'Struct') return structJson(m);
    if (n === 'Value') return valueJson(m);
    if (n === 'Empty') return {};
    if (n === 'Any') {
      const inner = root.lookupType(m.type_url.slice(m.type_url.lastIndexOf('/') + 1));
      const j = toJson(inner, inner.decode(m.value));
      if (inner.fullName.startsWith('.google.protobuf.')) return { '@type': m.type_url, value: j };
      return Object.assign({ '@type': m.type_url }, j);
    }
  }
  const out = {};
  for (const f of type.fieldsArray) {
    if (!Object.prototype.hasOwnProperty.call(m, f.name)) continue;
    const v = m[f.name];
    if (v === null || v === undefined) continue;
    const one = (x) => (f.resolvedType instanceof protobufjs.Type ? toJson(f.resolvedType, x)
      : f.resolvedType instanceof protobufjs.Enum ? (f.resolvedType.valuesById[x] ?? x)
        : scalarJson(f, x));
    if (f.map) {
      if (!Object.keys(v).length) continue;
      const o = {};
      for (const [k, x] of Object.entries(v)) o[k] = one(x);
      out[camel(f.name)] = o;
    } else if (f.repeated) {
      if (!v.length) continue;
      out[camel(f.name)] = v.map(one);
    } else {
      out[camel(f.name)] = one(v);
    }
  }
  return out;
}
const protobufjs = require('protobufjs');
const DiscoveryResponse = root.lookupType('envoy.service.discovery.v3.DiscoveryResponse');

const REST_PATHS = { clusters: 'cds', endpoints: 'eds', listeners: 'lds', routes: 'rds', secrets: 'sds' };
const restScript = {};     // type -> {status, delay_ms}
const restSent = {};       // type -> JSON of the resource names last answered with 200
let restNonce = 0;

async function onRest(req, res) {
  const m = /^\/v3\/discovery:([a-z]+)$/.exec(req.url);
  const type = m && REST_PATHS[m[1]];
  const reply = (code, obj) => {
    res.writeHead(code, obj ? { 'content-type': 'application/json' } : {});
    res.end(obj ? JSON.stringify(obj) : undefined);
  };
  if (req.method !== 'POST' || !type) return reply(404, { error: 'no such endpoint' });
  let r;
  try { r = JSON.parse(await body(req)); } catch (e) { return reply(400, { error: String(e) }); }
  const pick = (c, s) => (r[c] !== undefined ? r[c] : r[s]);
  const names = (pick('resourceNames', 'resource_names') || []).slice().sort();
  const err = pick('errorDetail', 'error_detail');
  const node = r.node || {};
  const version = pick('versionInfo', 'version_info') || '';
  requests.push({
    stream: 0, rest: true, tls: !!req.socket.encrypted, client_cn: clientCn(req), delta: false,
    type, type_url: pick('typeUrl', 'type_url') || '',
    version_info: version, response_nonce: pick('responseNonce', 'response_nonce') || '',
    resource_names: names, error_detail: err ? { code: err.code, message: err.message } : null,
    has_node: !!node.id, node_id: node.id || '', node_cluster: node.cluster || '', t_ms: Date.now(),
  });
  const sc = restScript[type] || {};
  if (sc.delay_ms) await new Promise((ok) => setTimeout(ok, sc.delay_ms));
  if (sc.status) return reply(sc.status, { error: 'scripted failure' });
  const s = state[type];
  if (!s || (version === s.version && restSent[type] === JSON.stringify(names))) {
    responses.push({ stream: 0, rest: true, type, status: 304, t_ms: Date.now() });
    return reply(304);
  }
  let list = [...s.resources.values()].map((e) => e.r);
  if ((type === 'eds' || type === 'rds' || type === 'sds') && names.length)
    list = list.filter((x) => names.includes(x[NAME_FIELD[type]]));
  const nonce = `rest-${++restNonce}`;
  const msg = DiscoveryResponse.fromObject({
    version_info: s.version, type_url: TYPES[type], nonce,
    resources: list.map((x) => Object.assign({ '@type': TYPES[type] }, x)),
  });
  restSent[type] = JSON.stringify(names);
  responses.push({ stream: 0, rest: true, type, status: 200, nonce, version: s.version,
                   n: list.length, t_ms: Date.now() });
  return reply(200, toJson(DiscoveryResponse, msg));
}
function clientCn(req) {
  if (!req.socket.encrypted || !req.socket.getPeerCertificate) return null;
  const c = req.socket.getPeerCertificate();
  return c && c.subject ? c.subject.CN || null : null;
}
function restHandler(req, res) {
  onRest(req, res).catch((e) => {
    res.writeHead(500, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: String(e && e.stack || e) }));
  });
}
const rest = http.createServer(restHandler);
let restTlsServer = null;
if (restTls) {
  const fs = require('fs');
  const [cert, key, ca] = restTls.split(',');
  const opts = { cert: fs.readFileSync(cert), key: fs.readFileSync(key) };
  if (ca) Object.assign(opts, { ca: fs.readFileSync(ca), requestCert: true, rejectUnauthorized: true });
  restTlsServer = require('https').createServer(opts, restHandler);
}

// one stream: service is the RPC's name, only the type a per-type service serves
function serve(service, delta, only) {
  return (call) => {
    const st = { id: ++streamSeq, call, subs: {}, delta, service, only };
    streams.add(st);
    const md = {};
    for (const [k, v] of Object.entries(call.metadata.getMap())) md[k] = String(v);
    streamLog.push({ stream: st.id, service, metadata: md, t_ms: Date.now() });
    call.on('data', (req) => (delta ? onDeltaRequest(st, req) : onRequest(st, req)));
    call.on('end', () => { streams.delete(st); call.end(); });
    call.on('error', () => streams.delete(st));
    call.on('cancelled', () => streams.delete(st));
  };
}
const server = new grpc.Server();
server.addService(ADS.service, {
  StreamAggregatedResources: serve('StreamAggregatedResources', false, null),
  DeltaAggregatedResources: serve('DeltaAggregatedResources', true, null),
});
const SVC = loaded.envoy.service;
for (const [type, svc, noun] of [
  ['cds', SVC.cluster.v3.ClusterDiscoveryService, 'Clusters'],
  ['eds', SVC.endpoint.v3.EndpointDiscoveryService, 'Endpoints'],
  ['lds', SVC.listener.v3.ListenerDiscoveryService, 'Listeners'],
  ['rds', SVC.route.v3.RouteDiscoveryService, 'Routes'],
  ['sds', SVC.secret.v3.SecretDiscoveryService, 'Secrets']]) {
  const impl = {};
  impl[`Stream${noun}`] = serve(`Stream${noun}`, false, type);
  impl[`Delta${noun}`] = serve(`Delta${noun}`, true, type);
  impl[`Fetch${noun}`] = (call, cb) => cb({ code: grpc.status.UNIMPLEMENTED });
  server.addService(svc.service, impl);
}

function body(req) {
  return new Promise((resolve) => {
    let b = '';
    req.on('data', (d) => { b += d; });
    req.on('end', () => resolve(b));
  });
}

const api = http.createServer(async (req, res) => {
  const send = (code, obj) => {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(obj));
  };
  try {
    if (req.method === 'POST' && req.url === '/set') {
      const b = JSON.parse(await body(req));
      if (!TYPES[b.type]) return send(400, { error: 'unknown type' });
      setState(b.type, b.version, b.resources || [], b.resend_on_nack);
      let pushed = 0;
      for (const st of streams) {
        if (!st.subs[b.type]) continue;
        if (st.delta) respondDelta(st, b.type, null, false); else respond(st, b.type);
        pushed++;
      }
      return send(200, { pushed });
    }
    if (req.method === 'POST' && req.url === '/delta') {
      const b = JSON.parse(await body(req));
      if (!TYPES[b.type]) return send(400, { error: 'unknown type' });
      if (!state[b.type]) setState(b.type, b.version, [], false);
      const s = state[b.type];
      s.version = String(b.version);
      const names = new Set();
      for (const r of b.resources || []) {
        const n = r[NAME_FIELD[b.type]];
        s.resources.set(n, { r, v: resourceVersion(r) });
        names.add(n);
      }
      for (const n of b.removed || []) { s.resources.delete(n); names.add(n); }
      let pushed = 0;
      for (const st of streams) {
        if (!st.subs[b.type]) continue;
        if (st.delta) respondDelta(st, b.type, names, false); else respond(st, b.type);
        pushed++;
      }
      return send(200, { pushed });
    }
    if (req.method === 'POST' && req.url === '/rest_script') {
      const b = JSON.parse(await body(req));
      if (!TYPES[b.type]) return send(400, { error: 'unknown type' });
      restScript[b.type] = { status: b.status || null, delay_ms: b.delay_ms || 0 };
      return send(200, {});
    }
    if (req.method === 'GET' && req.url === '/responses') return send(200, responses);
    if (req.method === 'GET' && req.url === '/requests') return send(200, requests);
    if (req.method === 'GET' && req.url === '/now') return send(200, { t_ms: Date.now() });
    if (req.method === 'GET' && req.url === '/stream_log') return send(200, streamLog);
    if (req.method === 'POST' && req.url === '/close_streams') {
      let closed = 0;
      for (const st of Array.from(streams)) {
        streams.delete(st);
        st.call.end();   // grpc-status 0: the client sees the stream end
        closed++;
      }
      return send(200, { closed });
    }
    if (req.method === 'GET' && req.url === '/streams') {
      const open = {};
      for (const st of streams) open[st.service] = (open[st.service] || 0) + 1;
      return send(200, { open: streams.size, total: streamSeq, by_service: open });
    }
    send(404, { error: 'no such endpoint' });
  } catch (e) {
    send(500, { error: String(e && e.stack || e) });
  }
});

function grpcCreds() {
  if (!grpcTls) return grpc.ServerCredentials.createInsecure();
  const fs = require('fs');
  const [cert, key, ca] = grpcTls.split(',');
  return grpc.ServerCredentials.createSsl(ca ? fs.readFileSync(ca) : null,
    [{ cert_chain: fs.readFileSync(cert), private_key: fs.readFileSync(key) }], !!ca);
}
server.bindAsync(`127.0.0.1:${port}`, grpcCreds(), (err, gport) => {
  if (err) {
    process.stderr.write(`bind: ${err}\n`);
    process.exit(1);
  }
  api.listen(0, '127.0.0.1', () => {
    rest.listen(restPort, '127.0.0.1', () => {
      const info = { grpc_port: gport, http_port: api.address().port,
                     rest_port: rest.address().port };
      if (!restTlsServer) {
        process.stdout.write(JSON.stringify(info) + '\n');
        return;
      }
      restTlsServer.listen(restTlsPort, '127.0.0.1', () => {
        info.rest_tls_port = restTlsServer.address().port;
        process.stdout.write(JSON.stringify(info) + '\n');
      });
    });
  });
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
