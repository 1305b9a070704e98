/* pb_fast.h - the common shapes of Cluster and ClusterLoadAssignment read
 * straight from the protobuf, without the proto3 JSON and the config
 * walker (xds/pb_json.c + cluster_parse): at 10,000 clusters that path is
 * three quarters of the main thread's work.
 *
 * Each function accepts only a narrow, fully understood shape and answers
 * false for anything else, and the caller then takes the general path
 * (pb_json, cluster_parse / cluster_eds_update), which produces the same
 * result for these shapes and every error message for the others.  So
 * validation and errors live in one place; tests/unit/xds/pb_fast_test.c
 * checks both paths agree.
 *
 * Cluster: name, type EDS, lb_policy ROUND_ROBIN / LEAST_REQUEST / RANDOM,
 *   connect_timeout, eds_cluster_config {eds_config {ads {},
 *   resource_api_version AUTO/V3, initial_fetch_timeout}, service_name}.
 * ClusterLoadAssignment: cluster_name, endpoints[] {locality, lb_endpoints[]
 *   {endpoint {address {socket_address {address (an IP), port_value,
 *   protocol TCP, ipv4_compat}}}, load_balancing_weight, health_status}}.
 * No unknown fields anywhere (those take the general path, which applies
 * --allow-unknown-fields). */
#ifndef REMORA_XDS_PB_FAST_H
#define REMORA_XDS_PB_FAST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct build_ctx;
struct cluster;
struct endpoint_cfg;

/* The compiled cluster (refcount 1) in *out, or false (not this shape, or
 * not a well-formed message: take the general path). */
bool pb_fast_cluster(const uint8_t *data, size_t len, struct build_ctx *b, struct cluster **out);

/* The endpoints (an owned array of *n in *eps, as cluster_eds_set takes
 * them), or false. */
bool pb_fast_cla(const uint8_t *data, size_t len, struct endpoint_cfg **eps, size_t *n);

#endif
