/* cluster.c - cluster config, host sets, load balancing, DNS refresh.  Outlier
 * detection is in outlier.c. */
#include "cluster.h"

#include <ctype.h>
#include <math.h>
#include <netinet/in.h>
#include <event2/buffer.h>
#include "pool.h"
#include "h2_client.h"
#include "health_check.h"
#include "original_dst.h"
#include "../snapshot.h"
#include "../worker.h"
#include "../log.h"
#include "../../tls/tls.h"
#include "../config/address.h"
#include "../../xds/xds_bootstrap.h"
#include "../../xds/xres.h"

#define CB_DESC_DEFAULT(type, name) { "circuit_breakers.default." #name, STAT_##type },
#define CB_DESC_HIGH(type, name) { "circuit_breakers.high." #name, STAT_##type },
static const struct stat_desc cluster_stat_desc[] = {
	CLUSTER_STATS(STATS_DESC) CLUSTER_SUB_STATS(STATS_DESC)
	CLUSTER_LAZY_STATS(STATS_DESC) CLUSTER_LAZY_SUB_STATS(STATS_DESC)
	CB_STATS(CB_DESC_DEFAULT) CB_STATS(CB_DESC_HIGH)
};
_Static_assert(ARRAY_SIZE(cluster_stat_desc) == CLUSTER_SCOPE_N, "cluster scope layout");

static const struct stat_desc ring_stat_desc[] = { RING_STATS(STATS_DESC) };
static const struct stat_desc maglev_stat_desc[] = { MAGLEV_STATS(STATS_DESC) };

const struct cluster_ext cluster_ext_default = {
	.lr_choice_count = 2,
	.lr_bias = 1.0,
	.ewma_decay_us = 10 * 1000 * 1000,
	.ewma_default_rtt_us = 10 * 1000,
	.hash_cfg = { .kind = LB_HASH_RING, .ring_min = LB_RING_MIN_DEFAULT,
		      .ring_max = LB_RING_MAX_DEFAULT, .maglev_size = LB_MAGLEV_SIZE_DEFAULT },
	.h2 = H2_OPTIONS_DEFAULTS,
	.dns_refresh_ms = 5000,
};

struct cluster_ext *cluster_ext_mut(struct cluster *cl)
{
	if (cl->ext == &cluster_ext_default) {
		struct cluster_ext *x = xmalloc(sizeof(*x));
		*x = cluster_ext_default;
		cl->ext = x;
	}
	return (struct cluster_ext *)cl->ext;
}

uint32_t cluster_retry_limit(const struct cluster *cl, enum cb_priority p)
{
	const struct cb_prio *b = &cl->cb[p];
	if (!b->retry_budget)
		return b->max_retries;
	/* Envoy: a share of the active and pending requests, with a floor */
	double active = (double)__atomic_load_n(&cl->cbc[p].rq, __ATOMIC_RELAXED) +
			(double)__atomic_load_n(&cl->cbc[p].pending, __ATOMIC_RELAXED);
	uint32_t budget = (uint32_t)(active * b->budget_percent / 100.0);
	return MAX(budget, b->min_retry_concurrency);
}

void cluster_update_cb_gauges(struct cluster *cl)
{
	struct stats_scope *s = cl->stats;

	if (cl->gauges_off)   /* not the version in force: its gauges are not shown */
		return;
	for (int p = 0; p < CB_PRIO_N; p++) {
		const struct cb_prio *b = &cl->cb[p];
		const struct cb_count *n = &cl->cbc[p];
		int64_t cx = __atomic_load_n(&n->cx, __ATOMIC_RELAXED);
		int64_t rq = __atomic_load_n(&n->rq, __ATOMIC_RELAXED);
		int64_t pend = __atomic_load_n(&n->pending, __ATOMIC_RELAXED);
		int64_t rt = __atomic_load_n(&n->retries, __ATOMIC_RELAXED);
		uint32_t rlim = cluster_retry_limit(cl, (enum cb_priority)p);
		stats_lazy_set(s, CLUSTER_CB(p, CB_cx_open), cx >= b->max_connections);
		stats_lazy_set(s, CLUSTER_CB(p, CB_rq_pending_open), pend >= b->max_pending);
		stats_lazy_set(s, CLUSTER_CB(p, CB_rq_open), rq >= b->max_requests);
		stats_lazy_set(s, CLUSTER_CB(p, CB_rq_retry_open), rt >= rlim);
		if (b->track_remaining) {
			stats_lazy_set(s, CLUSTER_CB(p, CB_remaining_cx),
					MAX(0, (int64_t)b->max_connections - cx));
			stats_lazy_set(s, CLUSTER_CB(p, CB_remaining_pending),
					MAX(0, (int64_t)b->max_pending - pend));
			stats_lazy_set(s, CLUSTER_CB(p, CB_remaining_rq),
					MAX(0, (int64_t)b->max_requests - rq));
			stats_lazy_set(s, CLUSTER_CB(p, CB_remaining_retries),
					MAX(0, (int64_t)rlim - rt));
		}
	}
}

void (*cluster_publish_hook)(struct cluster *cl, struct hostset *hs);

/* ---- hosts and host sets ---------------------------------------------- */

struct host *host_ref(struct host *h)
{
	__atomic_add_fetch(&h->refcnt, 1, __ATOMIC_RELAXED);
	return h;
}

void host_unref(struct host *h)
{
	if (!h || __atomic_sub_fetch(&h->refcnt, 1, __ATOMIC_ACQ_REL))
		return;
	for (unsigned s = 0; s < h->nshards; s++)
		free(h->stats[s]);
	free(h->hostname);
	free(h->od);
	free(h->ewma);
	free(h);
}

int64_t *host_stats_new(struct host *h, unsigned shard)
{
	size_t size = (HOST_STATS_N * sizeof(int64_t) + 63) & ~(size_t)63;
	void *mem;

	if (shard >= h->nshards)
		die("host %s: no stats shard %u", h->addr_str, shard);
	if (posix_memalign(&mem, 64, size))
		die("out of memory");
	memset(mem, 0, size);
	__atomic_store_n(&h->stats[shard], (int64_t *)mem, __ATOMIC_RELEASE);
	return mem;
}

int64_t host_stat(const struct host *h, int idx)
{
	int64_t v = 0;
	for (unsigned s = 0; s < h->nshards; s++) {
		const int64_t *st = __atomic_load_n(&h->stats[s], __ATOMIC_ACQUIRE);
		if (st)
			v += __atomic_load_n(&st[idx], __ATOMIC_RELAXED);
	}
	return v;
}

struct host *host_new(const struct cluster *cl, const struct sockaddr_storage *ss,
		      const char *hostname, uint32_t weight)
{
	unsigned nworkers = cl->nworkers ? cl->nworkers : 1, nshards = nworkers + 1;
	char txt[INET6_ADDRSTRLEN + 16];
	size_t off_pools = (sizeof(struct host) + 7) & ~(size_t)7, off_stats, off_str, len;
	struct host *h;

	sockaddr_format((const struct sockaddr *)ss, txt, sizeof(txt));
	len = strlen(txt) + 1;
	off_stats = off_pools + nworkers * sizeof(struct pool *);
	off_str = off_stats + nshards * sizeof(int64_t *);
	h = xcalloc(1, off_str + len);
	h->refcnt = 1;
	h->addrlen = ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	memcpy(&h->addr, ss, h->addrlen);
	h->nworkers = (uint16_t)nworkers;
	h->nshards = (uint16_t)nshards;
	h->pools = (struct pool **)((char *)h + off_pools);
	h->stats = (int64_t **)((char *)h + off_stats);
	h->addr_str = memcpy((char *)h + off_str, txt, len);
	h->hostname = hostname ? xstrdup(hostname) : NULL;
	h->weight = weight ? weight : 1;
	if (cl->ext->od.enabled)
		h->od = xcalloc(1, sizeof(*h->od));
	if (cl->lb == LB_PEAK_EWMA) {
		size_t sz = nworkers * sizeof(struct host_ewma);
		if (!(h->ewma = aligned_alloc(_Alignof(struct host_ewma), sz)))
			die("out of memory");
		memset(h->ewma, 0, sz);   /* stamp 0: no sample yet, cost = default_rtt */
	}
	return h;
}

void hostset_unref(struct hostset *hs)
{
	if (!hs || __atomic_sub_fetch(&hs->refcnt, 1, __ATOMIC_ACQ_REL))
		return;
	for (size_t i = 0; i < hs->n; i++)
		host_unref(hs->hosts[i]);
	if (hs->active != hs->hosts)
		free(hs->active);
	free(hs->degraded);
	free(hs->hosts);
	lb_hash_free(hs->lbt);
	lb_hash_free(hs->lbt_degraded);
	free(hs);
}

/* The hosts of hosts[0..n) in state want, into a new array (no refs). */
static struct host **hostset_subset(struct host **hosts, size_t n, enum host_health want,
				    size_t *count, uint32_t *weight, bool *weighted)
{
	struct host **out = xmalloc((n ? n : 1) * sizeof(*out));
	*count = 0;
	*weight = 0;
	*weighted = false;
	for (size_t i = 0; i < n; i++) {
		if (host_health_of(__atomic_load_n(&hosts[i]->health_flags, __ATOMIC_RELAXED)) != want)
			continue;
		out[*count] = hosts[i];
		*weight += hosts[i]->weight;
		if (hosts[i]->weight != out[0]->weight)
			*weighted = true;
		(*count)++;
	}
	return out;
}

/* Envoy's load split for one priority: healthy hosts take
 * min(100, 1.4 x healthy%) of the traffic, degraded hosts what is left up to
 * 1.4 x degraded%, and the two are normalised to 100.  Panic (too few
 * healthy + degraded hosts, or none at all): every host, health ignored. */
static struct hostset *hostset_new(struct host **hosts, size_t n, uint32_t panic_pct)
{
	struct hostset *hs = xcalloc(1, sizeof(*hs));
	size_t healthy = 0, degraded = 0;
	hs->refcnt = 1;
	hs->n = n;
	hs->hosts = hosts;
	for (size_t i = 0; i < n; i++) {
		hs->total_weight += hosts[i]->weight;
		if (hosts[i]->weight != hosts[0]->weight)
			hs->weighted = true;
		switch (host_health_of(__atomic_load_n(&hosts[i]->health_flags, __ATOMIC_RELAXED))) {
		case HOST_HEALTHY: healthy++; break;
		case HOST_DEGRADED: degraded++; break;
		case HOST_UNHEALTHY: break;
		}
	}
	hs->active = hosts;
	hs->nactive = n;
	hs->active_weight = hs->total_weight;
	hs->active_weighted = hs->weighted;
	if (healthy == n || !n)
		return hs;
	if ((healthy + degraded) * 100 < (size_t)panic_pct * n || !(healthy + degraded)) {
		hs->panic = true;   /* too few usable hosts: use them all */
		return hs;
	}
	hs->active = hostset_subset(hosts, n, HOST_HEALTHY, &hs->nactive, &hs->active_weight,
				    &hs->active_weighted);
	if (!degraded)
		return hs;
	hs->degraded = hostset_subset(hosts, n, HOST_DEGRADED, &hs->ndegraded,
				      &hs->degraded_weight, &hs->degraded_weighted);
	/* availability in per-mille with the 1.4 overprovisioning factor */
	uint64_t h_avail = MIN(1000, healthy * 1400 / n);
	uint64_t d_avail = MIN(1000 - h_avail, degraded * 1400 / n);
	hs->degraded_load = !healthy ? 100 :
			    (uint32_t)((d_avail * 100 + (h_avail + d_avail) / 2) / (h_avail + d_avail));
	return hs;
}

/* Main thread: Envoy's ring_hash_lb.* / maglev_lb.* gauges for table t
 * (NULL: no active host, all 0). */
static void hostset_lb_gauges(const struct cluster *cl, const struct lb_hash_table *t)
{
	int64_t size = t ? (int64_t)t->size : 0;
	int64_t lo = t ? t->min_per_host : 0, hi = t ? t->max_per_host : 0;
	struct stats_scope *s = cl->ext->lbh_stats;
	if (!s || cl->gauges_off)
		return;
	if (cl->lb == LB_RING_HASH) {
		stats_gauge_set(s, LBH_size, size);
		stats_gauge_set(s, LBH_min_hashes_per_host, lo);
		stats_gauge_set(s, LBH_max_hashes_per_host, hi);
	} else {
		stats_gauge_set(s, LBH_min_entries_per_host, lo);
		stats_gauge_set(s, LBH_max_entries_per_host, hi);
	}
}

/* Main thread: the RING_HASH/MAGLEV table of a new host set, built before it
 * is published so workers only ever read it. */
static void hostset_build_lb(const struct cluster *cl, struct hostset *hs)
{
	if (!cluster_lb_is_hash(cl))
		return;
	if (!hs->nactive && !hs->ndegraded) {
		hostset_lb_gauges(cl, NULL);
		return;
	}
	/* over the active (healthy, or all in panic) hosts: lookups index hs->active */
	const char **keys = xmalloc(hs->nactive * sizeof(*keys));
	uint32_t *weights = xmalloc(hs->nactive * sizeof(*weights));
	for (size_t i = 0; i < hs->nactive; i++) {
		keys[i] = hs->active[i]->addr_str;
		weights[i] = hs->active[i]->weight;
	}
	hs->lbt = lb_hash_build(&cl->ext->hash_cfg, keys, weights, hs->nactive);
	free(keys);
	free(weights);
	hostset_lb_gauges(cl, hs->lbt);
	if (hs->ndegraded) {
		keys = xmalloc(hs->ndegraded * sizeof(*keys));
		weights = xmalloc(hs->ndegraded * sizeof(*weights));
		for (size_t i = 0; i < hs->ndegraded; i++) {
			keys[i] = hs->degraded[i]->addr_str;
			weights[i] = hs->degraded[i]->weight;
		}
		hs->lbt_degraded = lb_hash_build(&cl->ext->hash_cfg, keys, weights, hs->ndegraded);
		free(keys);
		free(weights);
	}
}

/* Main thread: the membership_* gauges of host set hs (NULL: none), unless
 * a newer version of the cluster owns them. */
static void membership_gauges(const struct cluster *cl, const struct hostset *hs)
{
	int64_t by[3] = { 0 };
	size_t n = hs ? hs->n : 0;

	if (cl->gauges_off)
		return;
	for (size_t i = 0; i < n; i++)
		by[host_health_of(__atomic_load_n(&hs->hosts[i]->health_flags, __ATOMIC_RELAXED))]++;
	stats_gauge_set(cl->stats, membership_total, (int64_t)n);
	stats_gauge_set(cl->stats, membership_healthy, by[HOST_HEALTHY]);
	stats_lazy_set(cl->stats, membership_degraded, by[HOST_DEGRADED]);
}

void cluster_set_gauges_owner(struct cluster *cl, bool owner)
{
	if (!cl)
		return;
	cl->gauges_off = !owner;
	if (!owner)
		return;
	membership_gauges(cl, cl->hs);
	if (cluster_lb_is_hash(cl))
		hostset_lb_gauges(cl, cl->hs ? cl->hs->lbt : NULL);
	cluster_update_cb_gauges(cl);
	health_checker_gauges(cl->ext->hc);
	outlier_gauges(cl);
}

/* Main thread: install a new host set and tell the workers.  force: the
 * hosts are the same but their health changed. */
static void cluster_set_hostset_ex(struct cluster *cl, struct hostset *hs, bool force)
{
	struct hostset *old = cl->hs;
	bool same = old && old->n == hs->n;
	for (size_t i = 0; same && i < hs->n; i++)
		same = old->hosts[i] == hs->hosts[i];
	bool eds = cl->type == CLUSTER_EDS;   /* EDS: the subscription counts (xds/ads.c) */
	if (!eds)
		stats_inc(cl->stats, 0, update_attempt);
	if (same && !force) {
		stats_inc(cl->stats, 0, update_no_rebuild);
		hostset_unref(hs);
		return;
	}
	if (!eds)
		stats_inc(cl->stats, 0, update_success);
	stats_inc(cl->stats, 0, membership_change);
	membership_gauges(cl, hs);
	hostset_build_lb(cl, hs);
	cl->hs = hs;
	if (cluster_publish_hook)
		cluster_publish_hook(cl, hs);
	hostset_unref(old);
	if (cl->ext->hc && !same)   /* membership changed: check new hosts, stop old ones */
		health_checker_sync(cl->ext->hc);
}

/* Same hosts, new health: rebuild the active subset and publish it. */
void cluster_republish(struct cluster *cl)
{
	struct hostset *old = cl->hs;
	if (!old)
		return;
	struct host **hosts = xmalloc((old->n ? old->n : 1) * sizeof(*hosts));
	for (size_t i = 0; i < old->n; i++)
		hosts[i] = host_ref(old->hosts[i]);
	cluster_set_hostset_ex(cl, hostset_new(hosts, old->n, cl->panic_threshold), true);
}

/* Worker w: adopt hs (a ref is passed in); orphan pools of hosts that left. */
static void worker_lb_free(struct cluster_worker_lb *lb)
{
	if (!lb)
		return;
	free(lb->cur_weight);
	free(lb->lr_heap);
	free(lb);
}

/* Worker w: the LB state a host set needs beyond the round-robin cursor
 * (weights differ, or degraded hosts), reset for the new set; a plain set
 * keeps none. */
static void worker_lb_reset(struct cluster *cl, struct cluster_worker *cw,
			    const struct hostset *hs)
{
	bool weighted = hs && hs->active_weighted;
	struct cluster_worker_lb *lb = cw->lb;

	if (!weighted && !(hs && hs->ndegraded)) {
		worker_lb_free(lb);
		cw->lb = NULL;
		return;
	}
	if (!lb)
		lb = cw->lb = xcalloc(1, sizeof(*lb));
	lb->lr_built = false;
	if (weighted && lb->cap < hs->nactive) {
		free(lb->cur_weight);
		free(lb->lr_heap);
		lb->cap = hs->nactive;
		lb->cur_weight = xmalloc(lb->cap * sizeof(*lb->cur_weight));
		lb->lr_heap = cl->lb == LB_LEAST_REQUEST ? xmalloc(lb->cap * sizeof(*lb->lr_heap))
							 : NULL;
	}
	if (weighted)
		memset(lb->cur_weight, 0, hs->nactive * sizeof(*lb->cur_weight));
}

void cluster_worker_set_hostset(struct cluster *cl, unsigned w, struct hostset *hs)
{
	struct cluster_worker *cw = &cl->workers[w];
	struct hostset *old = cw->hs;

	cw->hs = hs;
	worker_lb_reset(cl, cw, hs);
	if (old && current_worker) {
		for (size_t i = 0; i < old->n; i++) {
			bool kept = false;
			for (size_t j = 0; hs && j < hs->n && !kept; j++)
				kept = hs->hosts[j] == old->hosts[i];
			if (!kept)
				pool_orphan(current_worker, old->hosts[i]);
		}
	}
	hostset_unref(old);
}

/* ---- load balancing (worker) -------------------------------------------- */

/* Active requests to h from worker shard sh: every LB here works on its own
 * worker's view (as in Envoy, where each worker thread has its own LB). */
static inline int64_t host_active(const struct host *h, unsigned sh)
{
	const int64_t *s = h->stats[sh];   /* this worker's own shard */

	return s ? s[HOST_RQ_ACTIVE] : 0;
}

/* LEAST_REQUEST, all weights equal: the fewest active requests among
 * choice_count random draws (with replacement, as Envoy); ties keep the
 * first draw.  O(choice_count). */
static struct host *pick_least_request_p2c(const struct cluster *cl, struct host **hosts,
					   size_t n, unsigned sh)
{
	struct host *best = NULL;
	int64_t best_load = 0;
	for (uint32_t k = 0; k < cl->ext->lr_choice_count; k++) {
		struct host *h = hosts[rand_below((uint32_t)n)];
		int64_t load = host_active(h, sh);
		if (!best || load < best_load) {
			best = h;
			best_load = load;
		}
	}
	return best;
}

/* Envoy's least-request host weight: weight / (active + 1) ^ bias. */
static double lr_weight(const struct cluster *cl, const struct host *h, unsigned sh)
{
	double ew = h->weight, a = (double)host_active(h, sh) + 1, bias = cl->ext->lr_bias;
	if (bias == 1.0)
		ew /= a;
	else if (bias != 0.0)
		ew /= pow(a, bias);
	return ew;
}

static inline bool edf_before(const struct lr_edf *a, const struct lr_edf *b)
{
	return a->deadline < b->deadline || (a->deadline == b->deadline && a->order < b->order);
}

/* Restore the min-heap below slot i (heap of n). */
static void edf_sift_down(struct lr_edf *heap, size_t n, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, m = i;
		if (l < n && edf_before(&heap[l], &heap[m]))
			m = l;
		if (l + 1 < n && edf_before(&heap[l + 1], &heap[m]))
			m = l + 1;
		if (m == i)
			return;
		struct lr_edf t = heap[i];
		heap[i] = heap[m];
		heap[m] = t;
		i = m;
	}
}

/* LEAST_REQUEST, weights differ: Envoy's EDF scheduler.  Each host waits
 * for a deadline 1/weight after it was (re)scheduled, with the dynamic
 * weight weight / (active_requests + 1) ^ active_request_bias taken when it
 * is scheduled; a pick takes the earliest deadline (ties: scheduled first),
 * moves the clock there and reschedules that host alone with its current
 * weight, as Envoy's EdfScheduler::pickAndAdd.  O(log n) per pick, no
 * allocation (the heap is sized when the host set arrives and filled on
 * the first pick, so it sees the active requests of that moment).  With
 * bias 0 it is weighted round robin by weight. */
static struct host *pick_least_request_weighted(const struct cluster *cl,
						struct cluster_worker_lb *lb, struct host **hosts,
						size_t n, unsigned sh)
{
	struct lr_edf *heap = lb->lr_heap;
	if (!lb->lr_built) {
		lb->lr_now = 0;
		lb->lr_order = n;
		for (size_t i = 0; i < n; i++)
			heap[i] = (struct lr_edf){ 1.0 / lr_weight(cl, hosts[i], sh), i, (uint32_t)i };
		for (size_t i = n / 2; i-- > 0;)
			edf_sift_down(heap, n, i);
		lb->lr_built = true;
	}
	struct host *h = hosts[heap[0].host];
	lb->lr_now = heap[0].deadline;
	heap[0].deadline = lb->lr_now + 1.0 / lr_weight(cl, h, sh);
	heap[0].order = lb->lr_order++;
	edf_sift_down(heap, n, 0);
	return h;
}

/* Peak-EWMA estimate of one host for one worker, decayed toward zero since its
 * last sample (so an idle, once-slow host is eventually tried again). */
static double ewma_value(const struct cluster *cl, const struct host_ewma *e, uint64_t now_us)
{
	if (!e->stamp_us)
		return (double)cl->ext->ewma_default_rtt_us;
	double dt = now_us > e->stamp_us ? (double)(now_us - e->stamp_us) : 0;
	return e->cost_us * exp(-dt / (double)cl->ext->ewma_decay_us);
}

double cluster_ewma_cost(const struct cluster *cl, const struct worker *w,
			 const struct host *h, uint64_t now_us)
{
	if (!h->ewma)
		return 0;
	/* +1 µs: outstanding requests count even when the estimate decayed to 0 */
	double v = ewma_value(cl, &h->ewma[w->id], now_us) + 1.0;
	return v * (double)(host_active(h, w->shard) + 1) / (double)h->weight;
}

void cluster_lb_observe_at(struct cluster *cl, struct worker *w, struct host *h,
			   uint64_t rtt_us, uint64_t now_us)
{
	if (cl->lb != LB_PEAK_EWMA || !h->ewma)
		return;
	struct host_ewma *e = &h->ewma[w->id];
	double rtt = (double)rtt_us;
	if (!e->stamp_us) {   /* first sample: start from default_rtt */
		e->cost_us = (double)cl->ext->ewma_default_rtt_us;
		e->stamp_us = now_us;
	}
	if (rtt > e->cost_us) {
		e->cost_us = rtt;   /* peaks are taken at once */
	} else {
		/* Finagle's time-weighted EWMA: the longer since the last sample,
		 * the more the new one counts (time constant decay_time). */
		double dt = now_us > e->stamp_us ? (double)(now_us - e->stamp_us) : 0;
		double keep = exp(-dt / (double)cl->ext->ewma_decay_us);
		e->cost_us = e->cost_us * keep + rtt * (1 - keep);
	}
	e->stamp_us = now_us ? now_us : 1;
}

void cluster_lb_observe(struct cluster *cl, struct worker *w, struct host *h, uint64_t rtt_us)
{
	if (cl->lb == LB_PEAK_EWMA && h)
		cluster_lb_observe_at(cl, w, h, rtt_us, now_ns() / 1000);
}

/* Peak-EWMA: the cheaper of two distinct random hosts. */
static struct host *pick_peak_ewma(const struct cluster *cl, const struct worker *w,
				   struct host **hosts, size_t n, uint64_t now_us)
{
	size_t i = rand_below((uint32_t)n), j = rand_below((uint32_t)n - 1);
	if (j >= i)
		j++;
	return cluster_ewma_cost(cl, w, hosts[j], now_us) <
	       cluster_ewma_cost(cl, w, hosts[i], now_us) ? hosts[j] : hosts[i];
}

/* A host at random in proportion to its weight; total is the sum. */
static struct host *pick_weighted_random(struct host **hosts, size_t n, uint32_t total)
{
	uint32_t r = rand_below(total);
	for (size_t i = 0; i < n - 1; i++) {
		if (r < hosts[i]->weight)
			return hosts[i];
		r -= hosts[i]->weight;
	}
	return hosts[n - 1];
}

/* A degraded host: the same kind of choice as the policy makes, kept
 * simple (degraded hosts only take the traffic the healthy ones cannot):
 * hash tables for RING_HASH/MAGLEV (hash), P2C for LEAST_REQUEST, a
 * round-robin cursor or weighted random otherwise. */
static struct host *pick_degraded(const struct cluster *cl, struct cluster_worker *cw,
				  const struct hostset *hs, unsigned sh, uint64_t hash)
{
	struct host **hosts = hs->degraded;
	size_t n = hs->ndegraded;
	if (n == 1)
		return hosts[0];
	if (hs->lbt_degraded)
		return hosts[lb_hash_lookup(hs->lbt_degraded, hash)];
	if (cl->lb == LB_LEAST_REQUEST)
		return pick_least_request_p2c(cl, hosts, n, sh);
	if (hs->degraded_weighted)
		return pick_weighted_random(hosts, n, hs->degraded_weight);
	return hosts[cw->lb->rr_degraded++ % n];
}

struct host *cluster_pick_host_at(struct cluster *cl, struct worker *w, uint64_t now_us)
{
	struct cluster_worker *cw = &cl->workers[w->id];
	struct hostset *hs = cw->hs;

	if (!hs)
		return NULL;
	if (hs->degraded_load && (hs->degraded_load >= 100 || rand_below(100) < hs->degraded_load))
		return pick_degraded(cl, cw, hs, w->shard, rand_u64());
	if (!hs->nactive)
		return NULL;
	struct host **hosts = hs->active;
	size_t n = hs->nactive;
	if (hs->panic)
		stats_inc(cl->stats, w->shard, lb_healthy_panic);
	if (n == 1)
		return hosts[0];
	if (hs->lbt)   /* RING_HASH/MAGLEV without a hash: random, as Envoy */
		return hosts[lb_hash_lookup(hs->lbt, rand_u64())];
	switch (cl->lb) {
	case LB_RANDOM:
		if (hs->active_weighted)
			return pick_weighted_random(hosts, n, hs->active_weight);
		return hosts[rand_below((uint32_t)n)];
	case LB_LEAST_REQUEST:
		if (hs->active_weighted && cw->lb && cw->lb->lr_heap)
			return pick_least_request_weighted(cl, cw->lb, hosts, n, w->shard);
		return pick_least_request_p2c(cl, hosts, n, w->shard);
	case LB_PEAK_EWMA:
		return pick_peak_ewma(cl, w, hosts, n, now_us);
	case LB_ROUND_ROBIN:
	default:
		if (hs->active_weighted && cw->lb) {
			/* Smooth weighted round robin (nginx's algorithm). */
			int64_t *cur = cw->lb->cur_weight;
			size_t best = 0;
			for (size_t i = 0; i < n; i++) {
				cur[i] += hosts[i]->weight;
				if (cur[i] > cur[best])
					best = i;
			}
			cur[best] -= hs->active_weight;
			return hosts[best];
		}
		return hosts[cw->rr++ % n];
	}
}

struct host *cluster_pick_host(struct cluster *cl, struct worker *w)
{
	return cluster_pick_host_at(cl, w, cl->lb == LB_PEAK_EWMA ? now_ns() / 1000 : 0);
}

struct host *cluster_pick_host_hash(struct cluster *cl, struct worker *w, uint64_t hash,
				    bool have_hash)
{
	struct hostset *hs = cl->workers[w->id].hs;

	if (!have_hash || !hs || !hs->lbt)
		return cluster_pick_host(cl, w);
	/* healthy or degraded: decided by the hash too, so a key stays put */
	if (hs->degraded_load && (hs->degraded_load >= 100 || hash % 100 < hs->degraded_load))
		return pick_degraded(cl, &cl->workers[w->id], hs, w->shard, hash);
	if (!hs->nactive)
		return NULL;
	return hs->active[lb_hash_lookup(hs->lbt, hash)];
}

/* ---- config ------------------------------------------------------------- */

static const char *const cluster_fields[] = {
	"name", "type", "connect_timeout", "lb_policy", "load_assignment", "eds_cluster_config",
	"per_connection_buffer_limit_bytes", "max_requests_per_connection",
	"dns_refresh_rate", "dns_lookup_family", "respect_dns_ttl", "typed_dns_resolver_config",
	"dns_resolvers", "common_http_protocol_options", "typed_extension_protocol_options",
	"least_request_lb_config", "round_robin_lb_config", "http_protocol_options",
	"circuit_breakers", "outlier_detection", "common_lb_config",
	"ring_hash_lb_config", "maglev_lb_config", "health_checks", "load_balancing_policy",
	"original_dst_lb_config", "cleanup_interval", "http2_protocol_options", "transport_socket",
	NULL
};
static const char *const type_names[] = { "STATIC", "STRICT_DNS", "LOGICAL_DNS", "EDS", "ORIGINAL_DST" };
static const char *const lb_names[] = { "ROUND_ROBIN", "LEAST_REQUEST", "RING_HASH", "RANDOM",
					"", "MAGLEV", "CLUSTER_PROVIDED", "LOAD_BALANCING_POLICY_CONFIG" };
static const char *const family_names[] = { "AUTO", "V4_ONLY", "V6_ONLY", "V4_PREFERRED", "ALL" };

#define HTTP_OPTS_TYPE "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
#define CARES_TYPE "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig"

static int parse_common_http(struct cfg_ctx *c, const json_t *o, struct cluster *cl)
{
	static const char *const f[] = { "idle_timeout", "max_requests_per_connection",
					 "max_connection_duration", "max_headers_count", NULL };
	if (cfg_expect_object(c, o) || cfg_check_fields(c, o, f) ||
	    cfg_duration_ms(c, o, "idle_timeout", &cl->idle_timeout_ms) ||
	    cfg_u32(c, o, "max_requests_per_connection", &cl->max_requests_per_connection))
		return RM_ERROR;
	return cfg_reject_fields(c, o, f + 2, "not supported yet");
}

/* HttpProtocolOptions.explicit_http_config / use_downstream_protocol_config:
 * exactly one of http_protocol_options / http2_protocol_options (the
 * explicit oneof), either of them (or both) for use_downstream. */
static int parse_http_config(struct cfg_ctx *c, const json_t *x, struct cluster *cl, bool downstream)
{
	static const char *const ef[] = { "http_protocol_options", "http2_protocol_options",
					  "http3_protocol_options", NULL };
	const json_t *o;
	int rc = cfg_expect_object(c, x) || cfg_check_fields(c, x, ef);
	if (!rc && cfg_get(x, "http3_protocol_options"))
		rc = cfg_fail_field(c, x, "http3_protocol_options", "HTTP/3 is not supported");
	if (!rc && !downstream && cfg_get(x, "http_protocol_options") &&
	    cfg_get(x, "http2_protocol_options"))
		rc = cfg_fail(c, "explicit_http_config: only one of http_protocol_options and "
			      "http2_protocol_options may be set");
	if (!rc && (o = cfg_enter(c, x, "http_protocol_options"))) {
		static const char *const f[] = { NULL };
		rc = cfg_expect_object(c, o) || cfg_check_fields(c, o, f);
		cfg_leave(c);
	}
	if (!rc && (o = cfg_enter(c, x, "http2_protocol_options"))) {
		rc = h2_options_parse(c, o, &cluster_ext_mut(cl)->h2, false);
		cfg_leave(c);
		if (!downstream)
			cl->proto = CL_PROTO_HTTP2;
	}
	if (!rc && downstream)
		cl->proto = CL_PROTO_DOWNSTREAM;
	return rc;
}

/* UpstreamHttpProtocolOptions {auto_sni, auto_san_validation,
 * override_auto_sni_header}. */
static int parse_upstream_http(struct cfg_ctx *c, const json_t *o, struct cluster *cl)
{
	static const char *const f[] = { "auto_sni", "auto_san_validation",
					 "override_auto_sni_header", NULL };
	const char *hdr = NULL;
	struct cluster_ext *x = cluster_ext_mut(cl);
	if (cfg_expect_object(c, o) || cfg_check_fields(c, o, f) ||
	    cfg_bool(c, o, "auto_sni", &x->auto_sni) ||
	    cfg_bool(c, o, "auto_san_validation", &x->auto_san_validation) ||
	    cfg_string(c, o, "override_auto_sni_header", &hdr))
		return RM_ERROR;
	if (hdr && *hdr) {
		free(x->auto_sni_header);
		x->auto_sni_header = xstrdup(hdr);
		for (char *p = x->auto_sni_header; *p; p++)
			*p = (char)tolower((unsigned char)*p);
	}
	return RM_OK;
}

static int parse_protocol_options(struct cfg_ctx *c, const json_t *m, struct cluster *cl)
{
	const char *key;
	const json_t *v;
	if (cfg_expect_object(c, m))
		return RM_ERROR;
	json_object_foreach((json_t *)m, key, v) {
		const char *type = NULL;
		const json_t *x;
		int rc = RM_OK;
		static const char *const f[] = { "common_http_protocol_options",
						 "explicit_http_config", "use_downstream_protocol_config",
						 "auto_config", "http_filters", "header_validation_config",
						 "upstream_http_protocol_options", NULL };
		cfg_enter(c, m, key);
		if (strcmp(key, "envoy.extensions.upstreams.http.v3.HttpProtocolOptions")) {
			cfg_leave(c);
			cfg_enter(c, m, key);
			rc = cfg_fail(c, "unsupported protocol options '%s'", key);
			cfg_leave(c);
			return rc;
		}
		if (cfg_expect_object(c, v) || cfg_string(c, v, "@type", &type) ||
		    cfg_check_fields(c, v, f))
			rc = RM_ERROR;
		else if (type && strcmp(type, HTTP_OPTS_TYPE))
			rc = cfg_fail(c, "unexpected @type '%s'", type);
		for (size_t i = 3; !rc && i < 6; i++)
			if (cfg_get(v, f[i]))
				rc = cfg_fail_field(c, v, f[i], i == 3 ? "not supported yet (needs ALPN, "
						    "which comes with TLS)" : "not supported yet");
		if (!rc && cfg_get(v, "explicit_http_config") && cfg_get(v, "use_downstream_protocol_config"))
			rc = cfg_fail(c, "only one of explicit_http_config and "
				      "use_downstream_protocol_config may be set");
		if (!rc && (x = cfg_enter(c, v, "common_http_protocol_options"))) {
			rc = parse_common_http(c, x, cl);
			cfg_leave(c);
		}
		if (!rc && (x = cfg_enter(c, v, "explicit_http_config"))) {
			rc = parse_http_config(c, x, cl, false);
			cfg_leave(c);
		}
		if (!rc && (x = cfg_enter(c, v, "use_downstream_protocol_config"))) {
			rc = parse_http_config(c, x, cl, true);
			cfg_leave(c);
		}
		if (!rc && (x = cfg_enter(c, v, "upstream_http_protocol_options"))) {
			rc = parse_upstream_http(c, x, cl);
			cfg_leave(c);
		}
		cfg_leave(c);
		if (rc)
			return rc;
	}
	return RM_OK;
}

/* circuit_breakers: thresholds[] by priority (a route's `priority` picks
 * which apply), per_host_thresholds[].max_connections.  As Envoy (find_if
 * over the list), the first entry of a priority is used; later ones for the
 * same priority are validated and ignored. */
static int parse_circuit_breakers(struct cfg_ctx *c, const json_t *o, struct cluster *cl)
{
	static const char *const f[] = { "thresholds", "per_host_thresholds", NULL };
	static const char *const tf[] = { "priority", "max_connections", "max_pending_requests",
					  "max_requests", "max_retries", "track_remaining",
					  "max_connection_pools", "retry_budget", NULL };
	static const char *const bf[] = { "budget_percent", "min_retry_concurrency", NULL };
	static const char *const pf[] = { "value", NULL };
	static const char *const prio[] = { "DEFAULT", "HIGH" };
	const json_t *arr;
	bool seen[CB_PRIO_N] = { false }, host_seen[CB_PRIO_N] = { false };
	int rc = cfg_expect_object(c, o) || cfg_check_fields(c, o, f);
	if (rc)
		return RM_ERROR;
	if ((arr = cfg_enter(c, o, "thresholds"))) {
		rc = cfg_expect_array(c, arr);
		for (size_t i = 0; !rc && i < json_array_size(arr); i++) {
			const json_t *t = cfg_enter_idx(c, arr, i);
			int p = 0;
			struct cb_prio tmp = cl->cb[CB_PRIO_DEFAULT];
			rc = cfg_expect_object(c, t) || cfg_check_fields(c, t, tf) ||
			     cfg_enum(c, t, "priority", prio, 2, &p);
			if (!rc)
				tmp = cl->cb[p];   /* the defaults */
			rc = rc || cfg_u32(c, t, "max_connections", &tmp.max_connections) ||
			     cfg_u32(c, t, "max_pending_requests", &tmp.max_pending) ||
			     cfg_u32(c, t, "max_requests", &tmp.max_requests) ||
			     cfg_u32(c, t, "max_retries", &tmp.max_retries) ||
			     cfg_bool(c, t, "track_remaining", &tmp.track_remaining);
			const json_t *bj;
			if (!rc && (bj = cfg_enter(c, t, "retry_budget"))) {
				const json_t *pj;
				tmp.retry_budget = true;
				tmp.budget_percent = 20;
				tmp.min_retry_concurrency = 3;
				rc = cfg_expect_object(c, bj) || cfg_check_fields(c, bj, bf) ||
				     cfg_u32(c, bj, "min_retry_concurrency", &tmp.min_retry_concurrency);
				if (!rc && (pj = cfg_enter(c, bj, "budget_percent"))) {
					rc = cfg_expect_object(c, pj) || cfg_check_fields(c, pj, pf) ||
					     cfg_double(c, pj, "value", &tmp.budget_percent);
					if (!rc && (tmp.budget_percent < 0 || tmp.budget_percent > 100))
						rc = cfg_fail(c, "must be in 0..100");
					cfg_leave(c);
				}
				cfg_leave(c);
			}
			if (!rc && cfg_get(t, "max_connection_pools")) {
				rc = cfg_fail_field(c, t, "max_connection_pools", "not supported yet");
			}
			if (!rc && !seen[p])
				cl->cb[p] = tmp;
			seen[p] = true;
			cfg_leave(c);
		}
		cfg_leave(c);
	}
	if (!rc && (arr = cfg_enter(c, o, "per_host_thresholds"))) {
		/* as Envoy, only max_connections applies per host */
		static const char *const hf[] = { "priority", "max_connections", NULL };
		rc = cfg_expect_array(c, arr);
		for (size_t i = 0; !rc && i < json_array_size(arr); i++) {
			const json_t *t = cfg_enter_idx(c, arr, i);
			int p = 0;
			uint32_t mc = 0;
			rc = cfg_expect_object(c, t) || cfg_check_fields(c, t, hf) ||
			     cfg_enum(c, t, "priority", prio, 2, &p) ||
			     cfg_u32(c, t, "max_connections", &mc);
			if (!rc && !host_seen[p])
				cl->cb[p].max_host_connections = mc;
			host_seen[p] = true;
			cfg_leave(c);
		}
		cfg_leave(c);
	}
	return rc ? RM_ERROR : RM_OK;
}

static int parse_resolver_list(struct cfg_ctx *c, const json_t *arr, struct cluster *cl)
{
	struct cluster_ext *x = cluster_ext_mut(cl);
	if (cfg_expect_array(c, arr))
		return RM_ERROR;
	free(x->resolvers);
	x->nresolvers = json_array_size(arr);
	x->resolvers = xcalloc(x->nresolvers ? x->nresolvers : 1, sizeof(*x->resolvers));
	for (size_t i = 0; i < x->nresolvers; i++) {
		socklen_t len;
		const json_t *a = cfg_enter_idx(c, arr, i);
		int rc = cfg_address(c, a, &x->resolvers[i], &len);
		cfg_leave(c);
		if (rc)
			return rc;
	}
	return RM_OK;
}

static int parse_dns_resolver(struct cfg_ctx *c, const json_t *o, struct cluster *cl)
{
	static const char *const f[] = { "name", "typed_config", NULL };
	static const char *const cf[] = { "resolvers", "use_resolvers_as_fallback",
					  "filter_unroutable_families", "dns_resolver_options", NULL };
	const json_t *tc, *r;
	const char *type = NULL;
	int rc = RM_OK;
	if (cfg_expect_object(c, o) || cfg_check_fields(c, o, f))
		return RM_ERROR;
	if (!(tc = cfg_enter_req(c, o, "typed_config")))
		return RM_ERROR;
	if (cfg_expect_object(c, tc) || cfg_string(c, tc, "@type", &type) || cfg_check_fields(c, tc, cf))
		rc = RM_ERROR;
	else if (!type || strcmp(type, CARES_TYPE))
		rc = cfg_fail(c, "only envoy.network.dns_resolver.cares (%s) is supported", CARES_TYPE);
	else if ((r = cfg_enter(c, tc, "resolvers"))) {
		rc = parse_resolver_list(c, r, cl);
		cfg_leave(c);
	}
	cfg_leave(c);
	return rc;
}

/* least_request_lb_config, or the typed config of the
 * envoy.load_balancing_policies.least_request extension (slow_start_config,
 * locality_lb_config and selection_method are not supported). */
static int parse_least_request(struct cfg_ctx *c, const json_t *o, struct cluster *cl)
{
	static const char *const f[] = { "choice_count", "active_request_bias", NULL };
	static const char *const bf[] = { "default_value", "runtime_key", NULL };
	const json_t *b;
	const char *key = NULL;
	struct cluster_ext *x = cluster_ext_mut(cl);
	if (cfg_expect_object(c, o) || cfg_check_fields(c, o, f) ||
	    cfg_u32(c, o, "choice_count", &x->lr_choice_count))
		return RM_ERROR;
	if (x->lr_choice_count < 2) {
		cfg_fail_field(c, o, "choice_count", "must be at least 2");
		return RM_ERROR;
	}
	if ((b = cfg_enter(c, o, "active_request_bias"))) {
		/* RuntimeDouble: runtime overrides are not implemented, the
		 * default_value is used */
		int rc = cfg_expect_object(c, b) || cfg_check_fields(c, b, bf) ||
			 cfg_double(c, b, "default_value", &x->lr_bias) ||
			 cfg_string(c, b, "runtime_key", &key);
		if (!rc && !(x->lr_bias >= 0 && isfinite(x->lr_bias))) {
			rc = cfg_fail_field(c, b, "default_value", "must be a finite number >= 0");
		}
		cfg_leave(c);
		if (rc)
			return RM_ERROR;
	}
	return RM_OK;
}

#define LBP_PREFIX "type.googleapis.com/envoy.extensions.load_balancing_policies."
#define PEAK_EWMA_TYPE "type.googleapis.com/remora.extensions.load_balancers.peak_ewma.v1.PeakEwma"

static int parse_peak_ewma(struct cfg_ctx *c, const json_t *o, struct cluster *cl)
{
	static const char *const f[] = { "decay_time", "default_rtt", NULL };
	uint64_t decay = 10000, rtt = 10;
	if (cfg_expect_object(c, o) || cfg_check_fields(c, o, f) ||
	    cfg_duration_ms(c, o, "decay_time", &decay) ||
	    cfg_duration_ms(c, o, "default_rtt", &rtt))
		return RM_ERROR;
	if (!decay) {
		cfg_fail_field(c, o, "decay_time", "must be positive");
		return RM_ERROR;
	}
	cl->lb = LB_PEAK_EWMA;
	cluster_ext_mut(cl)->ewma_decay_us = decay * 1000;
	cluster_ext_mut(cl)->ewma_default_rtt_us = rtt * 1000;
	return RM_OK;
}

/* One load_balancing_policy.policies[] entry.  Returns RM_OK with *used set
 * when it configured the cluster, RM_OK with *used false when its type is
 * unknown (Envoy skips to the next entry), RM_ERROR on a bad config. */
static int parse_lb_policy_entry(struct cfg_ctx *c, const json_t *p, struct cluster *cl, bool *used)
{
	static const char *const pf[] = { "typed_extension_config", NULL };
	static const char *const tf[] = { "name", "typed_config", NULL };
	static const char *const empty[] = { NULL };
	const json_t *te, *tc;
	const char *type = NULL;
	int rc = RM_OK;

	*used = false;
	if (cfg_expect_object(c, p) || cfg_check_fields(c, p, pf) ||
	    !(te = cfg_enter_req(c, p, "typed_extension_config")))
		return RM_ERROR;
	if (cfg_expect_object(c, te) || cfg_check_fields(c, te, tf) ||
	    !(tc = cfg_enter_req(c, te, "typed_config"))) {
		cfg_leave(c);
		return RM_ERROR;
	}
	if (cfg_expect_object(c, tc) || cfg_string_req(c, tc, "@type", &type))
		rc = RM_ERROR;
	else if (!strcmp(type, PEAK_EWMA_TYPE)) {
		*used = true;
		rc = parse_peak_ewma(c, tc, cl);
	} else if (!strcmp(type, LBP_PREFIX "least_request.v3.LeastRequest")) {
		*used = true;
		cl->lb = LB_LEAST_REQUEST;
		rc = parse_least_request(c, tc, cl);
	} else if (!strcmp(type, LBP_PREFIX "round_robin.v3.RoundRobin")) {
		*used = true;
		cl->lb = LB_ROUND_ROBIN;
		rc = cfg_check_fields(c, tc, empty);
	} else if (!strcmp(type, LBP_PREFIX "random.v3.Random")) {
		*used = true;
		cl->lb = LB_RANDOM;
		rc = cfg_check_fields(c, tc, empty);
	}
	cfg_leave(c);
	cfg_leave(c);
	return rc;
}

/* load_balancing_policy: {policies: [...]}; the first supported entry wins. */
static int parse_lb_policy_ext(struct cfg_ctx *c, const json_t *o, struct cluster *cl)
{
	static const char *const f[] = { "policies", NULL };
	const json_t *arr;
	bool used = false;
	int rc;
	if (cfg_expect_object(c, o) || cfg_check_fields(c, o, f) ||
	    !(arr = cfg_enter_req(c, o, "policies")))
		return RM_ERROR;
	rc = cfg_expect_array(c, arr);
	for (size_t i = 0; !rc && !used && i < json_array_size(arr); i++) {
		rc = parse_lb_policy_entry(c, cfg_enter_idx(c, arr, i), cl, &used);
		cfg_leave(c);
	}
	if (!rc && !used)
		rc = cfg_fail(c, "no supported policy (remora.load_balancers.peak_ewma, "
			      "envoy.load_balancing_policies.{round_robin,least_request,random} are)");
	cfg_leave(c);
	return rc;
}

/* ring_hash_lb_config and maglev_lb_config (each validated when present,
 * used when lb_policy selects it). */
static int parse_hash_lb_config(struct cfg_ctx *c, const json_t *j, struct cluster *cl)
{
	static const char *const rf[] = { "minimum_ring_size", "maximum_ring_size",
					  "hash_function", NULL };
	static const char *const mf[] = { "table_size", NULL };
	static const char *const hash_fns[] = { "XX_HASH", "MURMUR_HASH_2" };
	struct lb_hash_cfg *h;
	const json_t *v;
	int fn = 0, rc = RM_OK;

	if (!cluster_lb_is_hash(cl) && !cfg_get(j, "ring_hash_lb_config") &&
	    !cfg_get(j, "maglev_lb_config"))
		return RM_OK;
	h = &cluster_ext_mut(cl)->hash_cfg;
	h->kind = cl->lb == LB_MAGLEV ? LB_HASH_MAGLEV : LB_HASH_RING;
	h->ring_min = LB_RING_MIN_DEFAULT;
	h->ring_max = LB_RING_MAX_DEFAULT;
	h->maglev_size = LB_MAGLEV_SIZE_DEFAULT;
	if ((v = cfg_enter(c, j, "ring_hash_lb_config"))) {
		if (cfg_expect_object(c, v) || cfg_check_fields(c, v, rf) ||
		    cfg_u64(c, v, "minimum_ring_size", &h->ring_min) ||
		    cfg_u64(c, v, "maximum_ring_size", &h->ring_max) ||
		    cfg_enum(c, v, "hash_function", hash_fns, ARRAY_SIZE(hash_fns), &fn))
			rc = RM_ERROR;
		else if (fn != 0) {
			rc = cfg_fail_field(c, v, "hash_function", "MURMUR_HASH_2 is not supported yet (XX_HASH is)");
		} else if (h->ring_min < 1 || h->ring_min > LB_RING_MAX_DEFAULT) {
			rc = cfg_fail_field(c, v, "minimum_ring_size", "must be in 1..%u", LB_RING_MAX_DEFAULT);
		} else if (h->ring_max < 1 || h->ring_max > LB_RING_MAX_DEFAULT) {
			rc = cfg_fail_field(c, v, "maximum_ring_size", "must be in 1..%u", LB_RING_MAX_DEFAULT);
		} else if (h->ring_min > h->ring_max) {
			rc = cfg_fail(c, "minimum_ring_size (%llu) > maximum_ring_size (%llu)",
				      (unsigned long long)h->ring_min,
				      (unsigned long long)h->ring_max);
		}
		cfg_leave(c);
		if (rc)
			return rc;
	}
	if ((v = cfg_enter(c, j, "maglev_lb_config"))) {
		if (cfg_expect_object(c, v) || cfg_check_fields(c, v, mf) ||
		    cfg_u64(c, v, "table_size", &h->maglev_size))
			rc = RM_ERROR;
		else if (!lb_is_prime(h->maglev_size) || h->maglev_size >= LB_MAGLEV_SIZE_MAX) {
			rc = cfg_fail_field(c, v, "table_size", "the table size of maglev must be a prime number below %u",
				      LB_MAGLEV_SIZE_MAX);
		}
		cfg_leave(c);
	}
	return rc;
}

static void add_endpoint(struct cluster *cl, const char *host, uint16_t port, uint32_t weight,
			 int eds_flags)
{
	cl->endpoints = xrealloc(cl->endpoints, (cl->nendpoints + 1) * sizeof(*cl->endpoints));
	cl->endpoints[cl->nendpoints].address = xstrdup(host);
	cl->endpoints[cl->nendpoints].port = port;
	cl->endpoints[cl->nendpoints].eds_flags = eds_flags;
	cl->endpoints[cl->nendpoints++].weight = weight;
}

/* config.core.v3.HealthStatus, as Envoy applies it to an endpoint:
 * UNHEALTHY, DRAINING and TIMEOUT fail the host, DEGRADED degrades it. */
static const char *const health_status_names[] = { "UNKNOWN", "HEALTHY", "UNHEALTHY", "DRAINING",
						   "TIMEOUT", "DEGRADED" };
static const int health_status_flags[] = { 0, 0, HOST_FAILED_EDS_HEALTH, HOST_FAILED_EDS_HEALTH,
					   HOST_FAILED_EDS_HEALTH, HOST_DEGRADED_EDS_HEALTH };

/* One lb_endpoints[] entry: {endpoint: {address}, load_balancing_weight}. */
static int parse_lb_endpoint(struct cfg_ctx *c, const json_t *lb, struct cluster *cl)
{
	static const char *const lbf[] = { "endpoint", "load_balancing_weight", "health_status",
					   "metadata", NULL };
	static const char *const epf[] = { "address", "hostname", "health_check_config", NULL };
	const json_t *ep, *addr;
	uint32_t weight = 1;
	const char *host;
	uint16_t port;
	int rc = RM_ERROR;

	int status = 0;
	if (cfg_expect_object(c, lb) || cfg_check_fields(c, lb, lbf) ||
	    cfg_u32(c, lb, "load_balancing_weight", &weight) ||
	    cfg_enum(c, lb, "health_status", health_status_names, ARRAY_SIZE(health_status_names),
		     &status))
		return RM_ERROR;
	if (weight == 0) {
		cfg_fail_field(c, lb, "load_balancing_weight", "must be at least 1");
		return RM_ERROR;
	}
	if (!(ep = cfg_enter_req(c, lb, "endpoint")))
		return RM_ERROR;
	if (cfg_expect_object(c, ep) || cfg_check_fields(c, ep, epf) ||
	    !(addr = cfg_enter_req(c, ep, "address")))
		goto out;
	if (!cfg_socket_address_name(c, addr, &host, &port)) {
		struct sockaddr_storage ss;
		socklen_t len;
		/* STATIC endpoints must be IP literals; DNS types take names. */
		if ((cl->type != CLUSTER_STATIC && cl->type != CLUSTER_EDS) ||
		    !cfg_address(c, addr, &ss, &len)) {
			add_endpoint(cl, host, port, weight, health_status_flags[status]);
			rc = RM_OK;
		}
	}
	cfg_leave(c);
out:
	cfg_leave(c);
	return rc;
}

/* One endpoints[] (LocalityLbEndpoints) entry. */
static int parse_locality(struct cfg_ctx *c, const json_t *le, struct cluster *cl)
{
	static const char *const lef[] = { "lb_endpoints", "locality", "load_balancing_weight",
					   "priority", NULL };
	const json_t *lbs;
	uint32_t prio = 0;
	int rc = RM_OK;

	if (cfg_expect_object(c, le) || cfg_check_fields(c, le, lef) ||
	    cfg_u32(c, le, "priority", &prio))
		return RM_ERROR;
	if (prio != 0) {
		cfg_fail_field(c, le, "priority", "only priority 0 is supported");
		return RM_ERROR;
	}
	if (!(lbs = cfg_enter(c, le, "lb_endpoints")))
		return RM_OK;
	rc = cfg_expect_array(c, lbs);
	for (size_t j = 0; !rc && j < json_array_size(lbs); j++) {
		rc = parse_lb_endpoint(c, cfg_enter_idx(c, lbs, j), cl);
		cfg_leave(c);
	}
	cfg_leave(c);
	return rc;
}

/* eds_cluster_config {eds_config (a ConfigSource: ads, or api_config_source
 * served by the bootstrap's xDS transport), service_name}: EDS clusters only. */
static int parse_eds_cluster_config(struct cfg_ctx *c, const json_t *j, struct cluster *cl)
{
	static const char *const f[] = { "eds_config", "service_name", NULL };
	const json_t *e = cfg_get(j, "eds_cluster_config"), *s;
	const char *svc = NULL;
	uint64_t tmo = 15000;
	int rc = RM_ERROR;

	cl->eds_fetch_timeout_ms = 15000;
	if (cl->type != CLUSTER_EDS) {
		if (e)
			return cfg_fail_field(c, j, "eds_cluster_config", "only for type EDS");
		return RM_OK;
	}
	if (cfg_get(j, "load_assignment"))
		return cfg_fail_field(c, j, "load_assignment",
				      "an EDS cluster takes its endpoints from EDS, not load_assignment");
	if (!(e = cfg_enter_req(c, j, "eds_cluster_config")))
		return RM_ERROR;
	if (cfg_expect_object(c, e) || cfg_check_fields(c, e, f) ||
	    cfg_string(c, e, "service_name", &svc) || !(s = cfg_enter_req(c, e, "eds_config")))
		goto out;
	rc = xds_resource_source_parse(c, s, &tmo, NULL);
	cl->eds_fetch_timeout_ms = tmo > UINT32_MAX ? UINT32_MAX : (uint32_t)tmo;
	cfg_leave(c);
out:
	cfg_leave(c);
	if (!rc)   /* the usual case, no service_name: the cluster's name, not copied */
		cl->eds_service_name = svc && *svc && strcmp(svc, cl->name) ? xstrdup(svc) : cl->name;
	return rc;
}

static int parse_load_assignment(struct cfg_ctx *c, const json_t *la, struct cluster *cl)
{
	static const char *const laf[] = { "cluster_name", "endpoints", "policy", NULL };
	const json_t *eps;
	int rc;

	if (cfg_expect_object(c, la) || cfg_check_fields(c, la, laf))
		return RM_ERROR;
	if (!(eps = cfg_enter(c, la, "endpoints")))
		return RM_OK;
	rc = cfg_expect_array(c, eps);
	for (size_t i = 0; !rc && i < json_array_size(eps); i++) {
		rc = parse_locality(c, cfg_enter_idx(c, eps, i), cl);
		cfg_leave(c);
	}
	cfg_leave(c);
	return rc;
}

static void ext_free(struct cluster *cl)
{
	struct cluster_ext *x = (struct cluster_ext *)cl->ext;

	if (x == &cluster_ext_default)
		return;
	if (x->dns_timer)
		event_free(x->dns_timer);
	if (x->queries) {
		for (size_t i = 0; i < cl->nendpoints; i++)
			if (x->queries[i])
				dns_cancel(x->queries[i]);
	}
	dns_resolver_free(x->dns);
	for (size_t i = 0; x->dns_addrs && i < cl->nendpoints; i++)
		free(x->dns_addrs[i]);
	free(x->queries);
	free(x->dns_args);
	free(x->dns_addrs);
	free(x->dns_naddrs);
	free(x->resolvers);
	stats_scope_free(x->lbh_stats);
	stats_scope_free(x->od_stats);
	stats_scope_free(x->h2_stats);
	if (x->od_timer)
		event_free(x->od_timer);
	health_checker_free(x->hc);
	free(x->auto_sni_header);
	hc_cfg_free(x->hc_cfg);
	stats_scope_free(x->hc_stats);
	free(x);
	cl->ext = &cluster_ext_default;
}

static void cluster_free(struct cluster *cl)
{
	if (!cl)
		return;
	ext_free(cl);   /* first: DNS queries in flight refer to the endpoints */
	for (size_t i = 0; i < cl->nendpoints; i++)
		free(cl->endpoints[i].address);
	free(cl->endpoints);
	for (unsigned w = 0; w < cl->nworkers; w++) {
		hostset_unref(cl->workers[w].hs);
		worker_lb_free(cl->workers[w].lb);
	}
	hostset_unref(cl->hs);
	stats_scope_free(cl->stats);
	original_dst_free(cl->odst);
	tls_ctx_free(cl->tls);
	free(cl->src);
	if (cl->eds_service_name != cl->name)
		free(cl->eds_service_name);
	free(cl->name);
	free(cl);
}

struct cluster *cluster_ref(struct cluster *cl)
{
	__atomic_add_fetch(&cl->refcnt, 1, __ATOMIC_RELAXED);
	return cl;
}

void cluster_unref(struct cluster *cl)
{
	if (cl && !__atomic_sub_fetch(&cl->refcnt, 1, __ATOMIC_ACQ_REL))
		cluster_free(cl);
}

json_t *cluster_config_json(const struct cluster *cl)
{
	json_t *j = xblob_to_json(cl->src, "type.googleapis.com/envoy.config.cluster.v3.Cluster");

	return j ? j : json_object();
}

/* A zeroed cluster with its per-worker slots, 64-byte aligned (the
 * circuit-breaker counts every worker bumps are on a line of their own). */
static struct cluster *cluster_alloc(unsigned nworkers)
{
	size_t size = sizeof(struct cluster) + nworkers * sizeof(struct cluster_worker);
	struct cluster *cl;
	void *mem;

	size = (size + 63) & ~(size_t)63;
	if (posix_memalign(&mem, 64, size))
		die("out of memory (cluster of %zu bytes)", size);
	memset(mem, 0, size);
	cl = mem;
	cl->nworkers = nworkers;
	cl->ext = &cluster_ext_default;
	return cl;
}

/* A cluster with Envoy's defaults (the parsers set what the resource says). */
static struct cluster *cluster_new_default(struct build_ctx *b)
{
	struct cluster *cl = cluster_alloc(b->nworkers ? b->nworkers : 1);

	cl->refcnt = 1;
	cl->connect_timeout_ms = 5000;
	cl->buffer_limit = 1024 * 1024;
	for (int p = 0; p < CB_PRIO_N; p++) {   /* Envoy's defaults, for both priorities */
		cl->cb[p].max_connections = cl->cb[p].max_pending = cl->cb[p].max_requests = 1024;
		cl->cb[p].max_retries = 3;
	}
	cl->panic_threshold = 50;
	cl->idle_timeout_ms = 3600 * 1000;
	return cl;
}

static void cluster_finish(struct cluster *cl, struct build_ctx *b);

struct cluster *cluster_new_eds(struct build_ctx *b, const char *name, enum lb_policy lb,
				uint64_t connect_timeout_ms, const char *service_name,
				uint32_t fetch_timeout_ms)
{
	struct cluster *cl = cluster_new_default(b);

	cl->name = xstrdup(name);
	cl->type = CLUSTER_EDS;
	cl->lb = lb;
	cl->connect_timeout_ms = connect_timeout_ms;
	cl->eds_service_name = service_name && *service_name && strcmp(service_name, name)
			       ? xstrdup(service_name) : cl->name;
	cl->eds_fetch_timeout_ms = fetch_timeout_ms;
	cluster_finish(cl, b);
	return cl;
}

struct cluster *cluster_parse(struct cfg_ctx *c, const json_t *j, struct build_ctx *b)
{
	struct cluster *cl = cluster_new_default(b);
	const char *name = NULL;
	const json_t *v;
	int type = 0, lb = 0, fam = 0;
	uint32_t lim = 1024 * 1024;
	uint64_t refresh = 5000;
	bool respect_ttl = false;

	if (cfg_expect_object(c, j) || cfg_check_fields(c, j, cluster_fields) ||
	    cfg_string_req(c, j, "name", &name) ||
	    cfg_enum(c, j, "type", type_names, ARRAY_SIZE(type_names), &type) ||
	    cfg_enum(c, j, "lb_policy", lb_names, ARRAY_SIZE(lb_names), &lb) ||
	    cfg_enum(c, j, "dns_lookup_family", family_names, ARRAY_SIZE(family_names), &fam) ||
	    cfg_duration_ms(c, j, "connect_timeout", &cl->connect_timeout_ms) ||
	    cfg_u32(c, j, "per_connection_buffer_limit_bytes", &lim) ||
	    cfg_u32(c, j, "max_requests_per_connection", &cl->max_requests_per_connection) ||
	    cfg_duration_ms(c, j, "dns_refresh_rate", &refresh) ||
	    cfg_bool(c, j, "respect_dns_ttl", &respect_ttl))
		goto error;
	cl->name = xstrdup(name);
	if (!*name) {
		cfg_fail_field(c, j, "name", "must not be empty");
		goto error;
	}
	cl->type = type == 4 ? CLUSTER_ORIGINAL_DST : type == 3 ? CLUSTER_EDS : (enum cluster_type)type;
	if (parse_eds_cluster_config(c, j, cl))
		goto error;
	if (original_dst_parse(c, j, cl, &lb, b))   /* its fields; ORIGINAL_DST only */
		goto error;
	if (lb == 0)
		cl->lb = LB_ROUND_ROBIN;
	else if (lb == 1)
		cl->lb = LB_LEAST_REQUEST;
	else if (lb == 3)
		cl->lb = LB_RANDOM;
	else if (lb == 2)
		cl->lb = LB_RING_HASH;
	else if (lb == 5)
		cl->lb = LB_MAGLEV;
	else if (lb == 7)
		cl->lb = LB_ROUND_ROBIN;   /* decided by load_balancing_policy below */
	else {
		cfg_fail_field(c, j, "lb_policy", "lb_policy %s is not supported yet (ROUND_ROBIN, LEAST_REQUEST, RANDOM, "
			 "RING_HASH, MAGLEV, LOAD_BALANCING_POLICY_CONFIG are)", lb_names[lb]);
		goto error;
	}
	cl->buffer_limit = lim;
	if (cl->type == CLUSTER_STRICT_DNS || cl->type == CLUSTER_LOGICAL_DNS || fam ||
	    respect_ttl || (refresh && refresh != 5000)) {
		struct cluster_ext *x = cluster_ext_mut(cl);   /* DNS state lives there */
		x->dns_family = (enum dns_family)fam;
		x->respect_dns_ttl = respect_ttl;
		x->dns_refresh_ms = refresh ? refresh : 5000;
	}
	if ((v = cfg_enter(c, j, "outlier_detection"))) {
		int rc = outlier_parse(c, v, &cluster_ext_mut(cl)->od);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if ((v = cfg_enter(c, j, "health_checks"))) {
		int rc = hc_parse(c, v, cl->name, &cluster_ext_mut(cl)->hc_cfg);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if ((v = cfg_enter(c, j, "common_lb_config"))) {
		static const char *const f[] = { "healthy_panic_threshold", NULL };
		static const char *const pf[] = { "value", NULL };
		const json_t *pt;
		int rc = cfg_expect_object(c, v) || cfg_check_fields(c, v, f);
		if (!rc && (pt = cfg_enter(c, v, "healthy_panic_threshold"))) {
			double pct = 50;
			rc = cfg_expect_object(c, pt) || cfg_check_fields(c, pt, pf) ||
			     cfg_double(c, pt, "value", &pct);
			if (!rc && (pct < 0 || pct > 100))
				rc = cfg_fail(c, "must be in 0..100");
			if (!rc)
				cl->panic_threshold = (uint32_t)pct;
			cfg_leave(c);
		}
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if ((v = cfg_enter(c, j, "circuit_breakers"))) {
		int rc = parse_circuit_breakers(c, v, cl);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if ((v = cfg_enter(c, j, "least_request_lb_config"))) {
		int rc = parse_least_request(c, v, cl);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if ((v = cfg_enter(c, j, "load_balancing_policy"))) {
		/* takes precedence over lb_policy, as in Envoy */
		int rc = parse_lb_policy_ext(c, v, cl);
		cfg_leave(c);
		if (rc)
			goto error;
	} else if (lb == 7) {
		cfg_fail_field(c, j, "lb_policy", "LOAD_BALANCING_POLICY_CONFIG needs load_balancing_policy");
		goto error;
	}
	if (parse_hash_lb_config(c, j, cl))
		goto error;
	if ((v = cfg_enter(c, j, "round_robin_lb_config"))) {
		static const char *const f[] = { NULL };
		int rc = cfg_expect_object(c, v) || cfg_check_fields(c, v, f);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if ((v = cfg_enter(c, j, "http_protocol_options"))) {
		static const char *const f[] = { NULL };
		int rc = cfg_expect_object(c, v) || cfg_check_fields(c, v, f);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if ((v = cfg_enter(c, j, "http2_protocol_options"))) {
		/* deprecated cluster-level field: HTTP/2 to the upstream */
		int rc = h2_options_parse(c, v, &cluster_ext_mut(cl)->h2, false);
		cfg_leave(c);
		if (rc)
			goto error;
		cl->proto = CL_PROTO_HTTP2;
	}
	if ((v = cfg_enter(c, j, "common_http_protocol_options"))) {
		int rc = parse_common_http(c, v, cl);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if ((v = cfg_enter(c, j, "typed_extension_protocol_options"))) {
		int rc = parse_protocol_options(c, v, cl);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if ((v = cfg_enter(c, j, "typed_dns_resolver_config"))) {
		int rc = parse_dns_resolver(c, v, cl);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if ((v = cfg_enter(c, j, "dns_resolvers"))) {
		int rc = parse_resolver_list(c, v, cl);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if ((v = cfg_enter(c, j, "load_assignment"))) {
		int rc = parse_load_assignment(c, v, cl);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if ((v = cfg_enter(c, j, "transport_socket"))) {
		char *scope = xasprintf("cluster.%s", cl->name);
		int rc = tls_transport_socket_parse(c, v, false, b, scope, "cluster",
						    "envoy_cluster_name", cl->name, &cl->tls);
		free(scope);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if (cl->type == CLUSTER_LOGICAL_DNS && cl->nendpoints != 1) {
		cfg_fail_field(c, j, "load_assignment", "LOGICAL_DNS clusters must have a single endpoint");
		goto error;
	}
	cluster_finish(cl, b);
	return cl;
error:
	cluster_free(cl);
	return NULL;
}

/* After the options: the cluster's stats scopes. */
static void cluster_finish(struct cluster *cl, struct build_ctx *b)
{
	{
		char *scope = xasprintf("cluster.%s", cl->name);
		/* the circuit-breaker gauges and a few main-thread stats stay
		 * zero in most clusters: stored on their first non-zero value */
		struct stats_scope_spec sp = {
			.name = scope, .tag_prefix = "cluster", .tag_name = "envoy_cluster_name",
			.tag_value = cl->name, .desc = cluster_stat_desc, .ndesc = CLUSTER_SCOPE_N,
			.nw = CLUSTER_MAIN_FIRST, .lo0 = CLUSTER_SHARED_FIRST,
			.nlazy = CLUSTER_SCOPE_N - CLUSTER_LAZY_FIRST, .flags = STATS_SCOPE_SPLIT,
		};
		cl->stats = stats_scope_get(b->stats, &sp);
		stats_scope_add_family(cl->stats, "upstream_rq");
		free(scope);
		if (cl->ext->od.enabled)
			cluster_ext_mut(cl)->od_stats = outlier_stats_new(b->stats, cl->name);
		if (cl->proto != CL_PROTO_HTTP1)
			cluster_ext_mut(cl)->h2_stats = h2c_stats_new(b->stats, cl->name);
		if (cl->ext->hc_cfg) {
			scope = xasprintf("cluster.%s.health_check", cl->name);
			cluster_ext_mut(cl)->hc_stats = stats_scope_new_main(b->stats, scope,
							"cluster.health_check",
						       "envoy_cluster_name", cl->name, hc_stat_desc,
						       HC_STATS_N);
			free(scope);
		}
		if (cluster_lb_is_hash(cl)) {
			bool ring = cl->lb == LB_RING_HASH;
			scope = xasprintf("cluster.%s.%s", cl->name, ring ? "ring_hash_lb" : "maglev_lb");
			cluster_ext_mut(cl)->lbh_stats = stats_scope_new_main(b->stats, scope,
							ring ? "cluster.ring_hash_lb" : "cluster.maglev_lb",
							"envoy_cluster_name", cl->name,
							ring ? ring_stat_desc : maglev_stat_desc,
							ring ? RING_STATS_N : MAGLEV_STATS_N);
			free(scope);
		}
	}
}

/* ---- membership (main thread) ------------------------------------------- */

static struct host *find_old_host(const struct cluster *cl, const struct sockaddr_storage *ss)
{
	if (!cl->hs)
		return NULL;
	for (size_t i = 0; i < cl->hs->n; i++) {
		struct host *h = cl->hs->hosts[i];
		if (h->addr.sa.sa_family == ss->ss_family &&
		    !memcmp(&h->addr, ss, h->addrlen))
			return h;
	}
	return NULL;
}

static void publish_from_endpoints(struct cluster *cl)
{
	size_t cap = 0, n = 0;
	struct host **hosts = NULL;
	bool health_changed = false;
	for (size_t i = 0; i < cl->nendpoints; i++) {
		struct endpoint_cfg *e = &cl->endpoints[i];
		bool literal = cl->type == CLUSTER_STATIC || cl->type == CLUSTER_EDS;
		size_t na = literal ? 1 : cl->ext->dns_naddrs[i];
		if (cl->type == CLUSTER_LOGICAL_DNS && na > 1)
			na = 1;   /* LOGICAL_DNS: first address only, as Envoy */
		for (size_t k = 0; k < na; k++) {
			struct sockaddr_storage ss;
			socklen_t len;
			if (literal) {
				if (sockaddr_parse_ip(e->address, e->port, &ss, &len))
					continue;
			} else {
				ss = cl->ext->dns_addrs[i][k];
			}
			bool dup = false;
			for (size_t m = 0; m < n && !dup; m++)
				dup = !memcmp(&hosts[m]->addr, &ss, hosts[m]->addrlen);
			if (dup)
				continue;
			struct host *h = find_old_host(cl, &ss);
			if (h && h->weight == e->weight) {
				host_ref(h);
				int eds = HOST_FAILED_EDS_HEALTH | HOST_DEGRADED_EDS_HEALTH;
				int was = __atomic_load_n(&h->health_flags, __ATOMIC_RELAXED);
				if ((was & eds) != e->eds_flags) {
					__atomic_and_fetch(&h->health_flags, ~eds, __ATOMIC_RELAXED);
					__atomic_or_fetch(&h->health_flags, e->eds_flags, __ATOMIC_RELAXED);
					health_changed = true;
				}
			} else {
				h = host_new(cl, &ss, literal ? NULL : e->address,
					     e->weight);
				/* actively checked hosts start unhealthy until their
				 * first check (Envoy) */
				h->health_flags = e->eds_flags;
				if (cl->ext->hc_cfg)
					h->health_flags |= HOST_FAILED_ACTIVE_HC;
			}
			if (n == cap) {
				cap = cap ? cap * 2 : 4;
				hosts = xrealloc(hosts, cap * sizeof(*hosts));
			}
			hosts[n++] = h;
		}
	}
	cluster_set_hostset_ex(cl, hostset_new(hosts, n, cl->panic_threshold), health_changed);
}

static void dns_round(struct cluster *cl);
static void eds_drop_endpoints(struct cluster *cl);

/* The first membership is known.  With active health checking the cluster
 * reports itself initialized only after the first check round, as Envoy. */
static void cluster_mark_initialized(struct cluster *cl)
{
	cl->initialized = true;
	if (cl->ext->hc && !health_checker_warmed(cl->ext->hc))
		return;   /* cluster_hc_warmed() finishes */
	void (*fn)(struct cluster *, void *) = cl->on_init;
	cl->on_init = NULL;
	if (fn)
		fn(cl, cl->on_init_arg);
}

void cluster_hc_warmed(struct cluster *cl)
{
	if (cl->initialized)
		cluster_mark_initialized(cl);
}

static void dns_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	dns_round(arg);
}

static void dns_round_done(struct cluster *cl)
{
	const struct cluster_ext *x = cl->ext;
	uint64_t next = x->dns_refresh_ms;
	publish_from_endpoints(cl);
	if (x->respect_dns_ttl && x->dns_min_ttl_s)
		next = (uint64_t)x->dns_min_ttl_s * 1000;
	struct timeval tv = { (time_t)(next / 1000), (suseconds_t)(next % 1000) * 1000 };
	evtimer_add(x->dns_timer, &tv);
	if (!cl->initialized)
		cluster_mark_initialized(cl);
}


static void dns_answer(const struct dns_result *res, void *arg)
{
	struct dns_cb_arg *a = arg;
	struct cluster *cl = a->cl;
	struct cluster_ext *x = cluster_ext_mut(cl);
	size_t i = a->idx;
	x->queries[i] = NULL;
	if (res->status == 0) {
		free(x->dns_addrs[i]);
		x->dns_addrs[i] = xmalloc((res->naddrs ? res->naddrs : 1) * sizeof(struct sockaddr_storage));
		memcpy(x->dns_addrs[i], res->addrs, res->naddrs * sizeof(struct sockaddr_storage));
		x->dns_naddrs[i] = res->naddrs;
		if (res->min_ttl_s && (!x->dns_min_ttl_s || res->min_ttl_s < x->dns_min_ttl_s))
			x->dns_min_ttl_s = res->min_ttl_s;
	} else {
		stats_main_add(cl->stats, update_failure, 1);
		log_warn("cluster '%s': DNS resolution of '%s' failed: %s", cl->name,
			 cl->endpoints[i].address, res->error ? res->error : "error");
	}
	if (--x->dns_pending)
		return;
	dns_round_done(cl);
}

static void dns_round(struct cluster *cl)
{
	struct cluster_ext *x = cluster_ext_mut(cl);
	x->dns_pending = cl->nendpoints;
	x->dns_min_ttl_s = 0;
	for (size_t i = 0; i < cl->nendpoints; i++) {
		struct dns_cb_arg *a = &x->dns_args[i];
		a->cl = cl;
		a->idx = i;
		x->queries[i] = dns_resolve(x->dns, cl->endpoints[i].address, cl->endpoints[i].port,
					    x->dns_family, dns_answer, a);
	}
}

void cluster_start(struct cluster *cl, struct event_base *base,
		   void (*on_init)(struct cluster *cl, void *arg), void *arg)
{
	if (cl->ext->od.enabled)
		outlier_start(cl, base);
	cl->on_init = on_init;
	cl->on_init_arg = arg;
	if (cl->ext->hc_cfg)
		cluster_ext_mut(cl)->hc = health_checker_new(cl, base);
	if (cl->type == CLUSTER_EDS) {
		if (cl->nendpoints) {   /* an update arrived before the start */
			publish_from_endpoints(cl);
			eds_drop_endpoints(cl);
			cluster_mark_initialized(cl);
		}
		return;   /* cluster_eds_update / cluster_eds_fetch_timeout */
	}
	if (cl->type == CLUSTER_STATIC || cl->nendpoints == 0) {
		publish_from_endpoints(cl);
		cluster_mark_initialized(cl);
		return;
	}
	char err[256];
	struct cluster_ext *x = cluster_ext_mut(cl);
	x->dns = dns_resolver_new(base, x->resolvers, x->nresolvers, err, sizeof(err));
	if (!x->dns) {
		log_error("cluster '%s': cannot create DNS resolver: %s", cl->name, err);
		publish_from_endpoints(cl);
		cluster_mark_initialized(cl);
		return;
	}
	x->queries = xcalloc(cl->nendpoints, sizeof(*x->queries));
	x->dns_args = xcalloc(cl->nendpoints, sizeof(*x->dns_args));
	x->dns_addrs = xcalloc(cl->nendpoints, sizeof(*x->dns_addrs));
	x->dns_naddrs = xcalloc(cl->nendpoints, sizeof(*x->dns_naddrs));
	x->dns_timer = evtimer_new(base, dns_timer_cb, cl);
	dns_round(cl);
}

/* ---- EDS -------------------------------------------------------------- */

/* An EDS cluster's endpoints are only needed until they are published:
 * the hosts carry address, weight and health from then on. */
static void eds_drop_endpoints(struct cluster *cl)
{
	for (size_t i = 0; i < cl->nendpoints; i++)
		free(cl->endpoints[i].address);
	free(cl->endpoints);
	cl->endpoints = NULL;
	cl->nendpoints = 0;
}

int cluster_eds_update(struct cluster *cl, struct cfg_ctx *c, const json_t *cla)
{
	struct endpoint_cfg *old = cl->endpoints, *eps;
	size_t nold = cl->nendpoints, n;

	cl->endpoints = NULL;
	cl->nendpoints = 0;
	if (parse_load_assignment(c, cla, cl)) {
		for (size_t i = 0; i < cl->nendpoints; i++)
			free(cl->endpoints[i].address);
		free(cl->endpoints);
		cl->endpoints = old;
		cl->nendpoints = nold;
		return RM_ERROR;
	}
	eps = cl->endpoints;
	n = cl->nendpoints;
	cl->endpoints = old;
	cl->nendpoints = nold;
	cluster_eds_set(cl, eps, n);
	return RM_OK;
}

void cluster_eds_set(struct cluster *cl, struct endpoint_cfg *eps, size_t n)
{
	for (size_t i = 0; i < cl->nendpoints; i++)
		free(cl->endpoints[i].address);
	free(cl->endpoints);
	cl->endpoints = eps;
	cl->nendpoints = n;
	if (!cl->on_init && !cl->initialized && !cl->hs)
		return;   /* not started yet: cluster_start publishes */
	publish_from_endpoints(cl);
	eds_drop_endpoints(cl);
	if (!cl->initialized)
		cluster_mark_initialized(cl);
}

void cluster_eds_fetch_timeout(struct cluster *cl)
{
	if (cl->initialized)
		return;
	log_warn("cluster '%s': no ClusterLoadAssignment '%s' within initial_fetch_timeout; "
		 "initializing with no endpoints", cl->name, cl->eds_service_name);
	publish_from_endpoints(cl);
	cluster_mark_initialized(cl);
}

/* ---- admin -------------------------------------------------------------- */

void cluster_dump_admin(const struct cluster *cl, struct evbuffer *out)
{
	static const char *const names[HOST_STATS_N] = { "cx_total", "cx_active", "cx_connect_fail",
		"rq_total", "rq_active", "rq_error", "rq_success", "rq_timeout" };
	static const int order[] = { HOST_CX_ACTIVE, HOST_CX_CONNECT_FAIL, HOST_CX_TOTAL,
		HOST_RQ_ACTIVE, HOST_RQ_ERROR, HOST_RQ_SUCCESS, HOST_RQ_TIMEOUT, HOST_RQ_TOTAL };
	const char *n = cl->name;
	evbuffer_add_printf(out, "%s::observability_name::%s\n", n, n);
	for (int p = 0; p < CB_PRIO_N; p++) {
		const char *pn = p == CB_PRIO_HIGH ? "high_priority" : "default_priority";
		const struct cb_prio *b = &cl->cb[p];
		evbuffer_add_printf(out, "%s::%s::max_connections::%u\n", n, pn, b->max_connections);
		evbuffer_add_printf(out, "%s::%s::max_pending_requests::%u\n", n, pn, b->max_pending);
		evbuffer_add_printf(out, "%s::%s::max_requests::%u\n", n, pn, b->max_requests);
		evbuffer_add_printf(out, "%s::%s::max_retries::%u\n", n, pn, b->max_retries);
	}
	evbuffer_add_printf(out, "%s::added_via_api::false\n", n);
	for (size_t i = 0; cl->hs && i < cl->hs->n; i++) {
		const struct host *h = cl->hs->hosts[i];
		for (size_t k = 0; k < ARRAY_SIZE(order); k++)
			evbuffer_add_printf(out, "%s::%s::%s::%lld\n", n, h->addr_str, names[order[k]],
					    (long long)host_stat(h, order[k]));
		evbuffer_add_printf(out, "%s::%s::hostname::%s\n", n, h->addr_str,
				    h->hostname ? h->hostname : "");
		int hf = __atomic_load_n(&h->health_flags, __ATOMIC_RELAXED);
		evbuffer_add_printf(out, "%s::%s::health_flags::%s%s%s%s%s%s\n", n, h->addr_str,
				    hf ? "" : "healthy", (hf & HOST_FAILED_ACTIVE_HC) ? "/failed_active_hc" : "",
				    (hf & HOST_FAILED_OUTLIER) ? "/failed_outlier_check" : "",
				    (hf & HOST_FAILED_EDS_HEALTH) ? "/failed_eds_health" : "",
				    (hf & HOST_DEGRADED_ACTIVE_HC) ? "/degraded_active_hc" : "",
				    (hf & HOST_DEGRADED_EDS_HEALTH) ? "/degraded_eds_health" : "");
		evbuffer_add_printf(out, "%s::%s::weight::%u\n", n, h->addr_str, h->weight);
		evbuffer_add_printf(out, "%s::%s::region::\n%s::%s::zone::\n%s::%s::sub_zone::\n",
				    n, h->addr_str, n, h->addr_str, n, h->addr_str);
		evbuffer_add_printf(out, "%s::%s::canary::false\n%s::%s::priority::0\n", n,
				    h->addr_str, n, h->addr_str);
		evbuffer_add_printf(out, "%s::%s::success_rate::-1\n%s::%s::local_origin_success_rate::-1\n",
				    n, h->addr_str, n, h->addr_str);
	}
}
