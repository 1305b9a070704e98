#!/usr/bin/python3
"""Regenerate Remora's xDS .proto subset (xds/proto/**/subset.proto).

Input: a FileDescriptorSet compiled by `protoc --include_imports` from the
official Envoy API protos (the ones @grpc/grpc-js-xds ships; see
tests/xds/protos.sh).  Output: one .proto per package holding the messages
reachable from ROOTS, minus EXCLUDE, with Envoy's package and message names
and field numbers.  A field whose message type is excluded is left out, so
on the wire it is an unknown field (an error naming the field path).
Comments and options are not carried over.  Run by hand when the supported
surface grows:  make xds-proto-subset
"""
import os
import sys
from google.protobuf import descriptor_pb2 as d

ROOTS = [
    "envoy.service.discovery.v3.DiscoveryRequest",
    "envoy.service.discovery.v3.DiscoveryResponse",
    "envoy.service.discovery.v3.DeltaDiscoveryRequest",
    "envoy.service.discovery.v3.DeltaDiscoveryResponse",
    "envoy.service.discovery.v3.Resource",
    "envoy.config.listener.v3.Listener",
    "envoy.config.cluster.v3.Cluster",
    "envoy.config.endpoint.v3.ClusterLoadAssignment",
    "envoy.config.route.v3.RouteConfiguration",
    "envoy.config.route.v3.FilterConfig",
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
    "envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit",
    "envoy.extensions.filters.http.router.v3.Router",
    "envoy.extensions.filters.http.fault.v3.HTTPFault",
    "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
    "envoy.extensions.filters.listener.original_dst.v3.OriginalDst",
    "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig",
    "envoy.extensions.transport_sockets.tls.v3.Secret",
    "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
    "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
    "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer",
    "envoy.extensions.filters.http.rbac.v3.RBAC",
    "envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
    "envoy.extensions.filters.network.rbac.v3.RBAC",
]

# Not supported by Remora (yet): never part of the subset.
EXCLUDE_PREFIXES = [
    "xds.", "udpa.", "validate.", "google.protobuf.FileDescriptor",
    "envoy.config.accesslog.", "envoy.config.trace.", "envoy.config.common.matcher.",
    # TLS: the transport socket and SDS secrets are supported; not these parts
    "envoy.extensions.transport_sockets.tls.v3.TlsKeyLog",
    "envoy.extensions.transport_sockets.tls.v3.PrivateKeyProvider",
    "envoy.extensions.transport_sockets.tls.v3.CertificateProviderPluginInstance",
    "envoy.extensions.transport_sockets.tls.v3.GenericSecret",
    "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.CertificateProvider",
    "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.CertificateProviderInstance",
    "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.CustomHandshaker",
    "envoy.config.core.v3.WatchedDirectory",
    "envoy.config.listener.v3.UdpListenerConfig", "envoy.config.listener.v3.QuicProtocolOptions",
    "envoy.config.listener.v3.ApiListener", "envoy.config.listener.v3.ListenerCollection",
    "envoy.config.core.v3.QuicProtocolOptions", "envoy.config.core.v3.Http3ProtocolOptions",
    "envoy.config.core.v3.GrpcService.GoogleGrpc", "envoy.config.core.v3.SocketOption",
    "envoy.config.core.v3.SocketOptionsOverride", "envoy.config.core.v3.TypedExtensionConfig",
    "envoy.config.core.v3.EnvoyInternalAddress", "envoy.config.core.v3.Pipe",
    "envoy.config.core.v3.BindConfig", "envoy.config.core.v3.ProxyProtocolConfig",
    "envoy.config.core.v3.EventServiceConfig", "envoy.config.core.v3.PathConfigSource",
    "envoy.config.core.v3.SubstitutionFormatString", "envoy.config.core.v3.KeyValueStoreConfig",
    "envoy.config.core.v3.HealthCheck.CustomHealthCheck", "envoy.config.core.v3.HealthCheck.GrpcHealthCheck",
    "envoy.config.core.v3.HealthCheck.TlsOptions", "envoy.config.core.v3.DnsResolutionConfig",
    "envoy.config.core.v3.JsonFormatOptions", "envoy.config.core.v3.HttpService",
    "envoy.config.cluster.v3.Cluster.LbSubsetConfig", "envoy.config.cluster.v3.Cluster.CustomClusterType",
    "envoy.config.cluster.v3.Cluster.TransportSocketMatch", "envoy.config.cluster.v3.Filter",
    "envoy.config.cluster.v3.UpstreamConnectionOptions", "envoy.config.cluster.v3.LoadBalancingPolicy.Policy.",
    "envoy.config.cluster.v3.TrackClusterStats", "envoy.config.cluster.v3.ClusterCollection",
    "envoy.config.endpoint.v3.LedsClusterLocalityConfig", "envoy.config.endpoint.v3.Endpoint.AdditionalAddress",
    "envoy.config.route.v3.Vhds", "envoy.config.route.v3.ClusterSpecifierPlugin",
    "envoy.config.route.v3.RouteAction.RequestMirrorPolicy", "envoy.config.route.v3.RouteAction.UpgradeConfig.ConnectConfig",
    "envoy.config.route.v3.InternalRedirectPolicy", "envoy.config.route.v3.Tracing",
    "envoy.config.route.v3.FilterAction", "envoy.config.route.v3.NonForwardingAction",
    "envoy.config.route.v3.RateLimit.Override", "envoy.config.route.v3.RouteList",
    "envoy.extensions.filters.network.http_connection_manager.v3.ScopedRds",
    "envoy.extensions.filters.network.http_connection_manager.v3.ScopedRoutes",
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.Tracing",
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.InternalAddressConfig",
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.ProxyStatusConfig",
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.HcmAccessLogOptions",
    "envoy.extensions.filters.network.http_connection_manager.v3.ResponseMapper",
    "envoy.extensions.filters.network.http_connection_manager.v3.LocalReplyConfig",
    "envoy.extensions.filters.network.http_connection_manager.v3.RequestIDExtension",
    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.TunnelingConfig",
    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.OnDemand",
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.AutoHttpConfig",
    "envoy.config.core.v3.AlternateProtocolsCacheOptions",
    "envoy.service.discovery.v3.DynamicParameterConstraints",
    "envoy.config.core.v3.ControlPlane.",
    # RBAC: what filters/common/rbac evaluates (docs/tls.md); not CEL
    # conditions, metadata / filter-state matchers, custom matchers, audit
    # logging or the xds matcher tree (matcher / shadow_matcher); metadata
    # matchers stay in the subset (routes use them) and the RBAC parser
    # rejects them by name.
    "google.api.expr.",
    "envoy.type.matcher.v3.FilterStateMatcher", "envoy.config.rbac.v3.RBAC.AuditLoggingOptions",
    "envoy.config.rbac.v3.SourcedMetadata",
]

TYPES = {1: "double", 2: "float", 3: "int64", 4: "uint64", 5: "int32", 6: "fixed64", 7: "fixed32",
         8: "bool", 9: "string", 12: "bytes", 13: "uint32", 15: "sfixed32", 16: "sfixed64",
         17: "sint32", 18: "sint64"}
WKT = ("google.protobuf.", )


def main(pb, outdir):
    fds = d.FileDescriptorSet()
    fds.ParseFromString(open(pb, "rb").read())
    msgs, enums, pkg_of = {}, {}, {}

    def walk(pkg, prefix, mlist, elist):
        for e in elist:
            enums[prefix + e.name] = e
            pkg_of[prefix + e.name] = pkg
        for m in mlist:
            full = prefix + m.name
            msgs[full] = m
            pkg_of[full] = pkg
            walk(pkg, full + ".", m.nested_type, m.enum_type)
    for f in fds.file:
        walk(f.package, f.package + ".", f.message_type, f.enum_type)

    def excluded(name):
        return any(name == p.rstrip(".") or name.startswith(p) for p in EXCLUDE_PREFIXES)

    keep, keep_enums = set(), set()
    todo = list(ROOTS)
    while todo:
        n = todo.pop()
        if n in keep or excluded(n) or n.startswith(WKT):
            continue
        keep.add(n)
        parts = n.split(".")
        for i in range(len(parts) - 1, 0, -1):      # parents of nested messages
            p = ".".join(parts[:i])
            if p in msgs and p not in keep:
                todo.append(p)
        for fl in msgs[n].field:
            t = fl.type_name.lstrip(".")
            if fl.type == 11 and not excluded(t):
                todo.append(t)
            elif fl.type == 14:
                keep_enums.add(t)

    def field_ok(fl):
        t = fl.type_name.lstrip(".")
        if fl.type == 11:
            if t in msgs and msgs[t].options.map_entry:
                return field_ok(msgs[t].field[1])
            return t.startswith(WKT) or (t in keep)
        return True

    def tname(fl, pkg):
        if fl.type in TYPES:
            return TYPES[fl.type]
        return "." + fl.type_name.lstrip(".")

    imports = {}
    def emit_msg(full, ind, pkg, out):
        m = msgs[full]
        out.append("%smessage %s {" % (ind, m.name))
        for e in m.enum_type:
            en = full + "." + e.name
            if en in keep_enums:
                emit_enum(e, ind + "  ", out)
        for nm in m.nested_type:
            nf = full + "." + nm.name
            if nf in keep and not nm.options.map_entry:
                emit_msg(nf, ind + "  ", pkg, out)
        oneofs = {}
        for fl in m.field:
            if fl.HasField("oneof_index") and not fl.proto3_optional and field_ok(fl):
                oneofs.setdefault(fl.oneof_index, []).append(fl)
        done_oneof = set()
        for fl in m.field:
            if not field_ok(fl):
                continue
            note_import(fl, pkg)
            if fl.HasField("oneof_index") and not fl.proto3_optional:
                oi = fl.oneof_index
                if oi in done_oneof:
                    continue
                done_oneof.add(oi)
                out.append("%s  oneof %s {" % (ind, m.oneof_decl[oi].name))
                for of in oneofs[oi]:
                    out.append("%s    %s %s = %d;" % (ind, tname(of, pkg), of.name, of.number))
                out.append("%s  }" % ind)
                continue
            lab = "repeated " if fl.label == 3 else ""
            t = fl.type_name.lstrip(".")
            if fl.type == 11 and t in msgs and msgs[t].options.map_entry:
                kv = msgs[t].field
                out.append("%s  map<%s, %s> %s = %d;" % (ind, tname(kv[0], pkg), tname(kv[1], pkg),
                                                         fl.name, fl.number))
                note_import(kv[1], pkg)
                continue
            out.append("%s  %s%s %s = %d;" % (ind, lab, tname(fl, pkg), fl.name, fl.number))
        out.append("%s}" % ind)

    def note_import(fl, pkg):
        t = fl.type_name.lstrip(".")
        if fl.type not in (11, 14):
            return
        if t.startswith(WKT):
            imports.setdefault(pkg, set()).add("google/protobuf/%s.proto" % {
                "Any": "any", "Duration": "duration", "Struct": "struct", "Value": "struct",
                "ListValue": "struct", "NullValue": "struct", "Empty": "empty",
                "Timestamp": "timestamp"}.get(t.split(".")[2], "wrappers"))
        elif pkg_of[t] != pkg:
            imports.setdefault(pkg, set()).add(pkg_of[t].replace(".", "/") + "/subset.proto")

    def emit_enum(e, ind, out):
        out.append("%senum %s {" % (ind, e.name))
        if any(v.number == v2.number and v is not v2 for v in e.value for v2 in e.value):
            out.append("%s  option allow_alias = true;" % ind)
        for v in e.value:
            out.append("%s  %s = %d;" % (ind, v.name, v.number))
        out.append("%s}" % ind)

    # The fields left out of kept messages, so errors can name them.
    dropped = []
    for n in sorted(keep):
        for fl in msgs[n].field:
            if not field_ok(fl):
                dropped.append((n, fl.number, fl.name))
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "dropped_fields.def"), "w") as f:
        f.write("/* Generated by xds/proto/gen_subset.py: fields of the subset's messages that\n"
                " * Remora does not support (left out of the .proto, unknown on the wire).\n"
                " * X(message full name, field number, field name) */\n")
        for n, num, name in dropped:
            f.write('X("%s", %d, "%s")\n' % (n, num, name))

    bypkg = {}
    for n in sorted(keep):
        top = n[len(pkg_of[n]) + 1:]
        if "." not in top:
            bypkg.setdefault(pkg_of[n], []).append(n)
    top_enums = {}
    for e in sorted(keep_enums):
        if e in enums and not e.startswith(WKT) and "." not in e[len(pkg_of[e]) + 1:]:
            top_enums.setdefault(pkg_of[e], []).append(e)
    bodies = {}
    for pkg in sorted(set(bypkg) | set(top_enums)):
        out = []
        for e in top_enums.get(pkg, []):
            emit_enum(enums[e], "", out)
        for n in bypkg.get(pkg, []):
            emit_msg(n, "", pkg, out)
        bodies[pkg] = out
    for pkg, out in bodies.items():
        path = os.path.join(outdir, pkg.replace(".", "/"), "subset.proto")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write("// Generated by xds/proto/gen_subset.py from the Envoy v3 API: the messages\n"
                    "// and fields Remora supports, with Envoy's names and field numbers.\n")
            f.write('syntax = "proto3";\n\npackage %s;\n\n' % pkg)
            for i in sorted(imports.get(pkg, set())):
                if i != pkg.replace(".", "/") + "/subset.proto":
                    f.write('import "%s";\n' % i)
            f.write("\n" + "\n".join(out) + "\n")
        print(path, len(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
