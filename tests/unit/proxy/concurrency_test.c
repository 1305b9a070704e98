/* concurrency_test.c - the default worker count follows the cgroup CPU
 * quota (v2 cpu.max, v1 cfs_quota_us), through the cgroup path of
 * /proc/self/cgroup and its ancestors, on a fake cgroup tree. */
#include "test.h"
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include "proxy/server.h"

static char root[256];

static void put(const char *rel, const char *text)
{
	char path[512], dir[512];
	snprintf(path, sizeof(path), "%s/%s", root, rel);
	snprintf(dir, sizeof(dir), "%s", path);
	for (char *p = dir + strlen(root) + 1; (p = strchr(p, '/')); p++) {
		*p = '\0';
		mkdir(dir, 0755);
		*p = '/';
	}
	FILE *f = fopen(path, "w");
	if (f) {
		fputs(text, f);
		fclose(f);
	}
}

TEST(cgroup_quota_v2_and_v1)
{
	snprintf(root, sizeof(root), "/tmp/remora-cg-XXXXXX");
	if (!mkdtemp(root)) {
		CHECK(0);
		return;
	}
	/* v2, private namespace: the quota sits at the mount root */
	put("v2a/cpu.max", "150000 100000\n");
	char r[300];
	snprintf(r, sizeof(r), "%s/v2a", root);
	CHECK_INT(cgroup_cpu_quota(r, "0::/\n"), 2);
	/* v2 "max": no quota */
	put("v2b/cpu.max", "max 100000\n");
	snprintf(r, sizeof(r), "%s/v2b", root);
	CHECK_INT(cgroup_cpu_quota(r, "0::/\n"), 0);
	/* v2, host namespace: our cgroup's path; the pod-level ancestor is lower */
	put("v2c/kubepods/pod1/cpu.max", "300000 100000\n");
	put("v2c/kubepods/pod1/ctr/cpu.max", "max 100000\n");
	snprintf(r, sizeof(r), "%s/v2c", root);
	CHECK_INT(cgroup_cpu_quota(r, "0::/kubepods/pod1/ctr\n"), 3);
	/* v1 (cpu,cpuacct), path not present under the mount: walk to its root */
	put("v1/cpu,cpuacct/cpu.cfs_quota_us", "50000\n");
	put("v1/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
	snprintf(r, sizeof(r), "%s/v1", root);
	CHECK_INT(cgroup_cpu_quota(r, "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n"), 1);
	/* v1 unlimited */
	put("v1u/cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
	put("v1u/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
	snprintf(r, sizeof(r), "%s/v1u", root);
	CHECK_INT(cgroup_cpu_quota(r, "4:cpu,cpuacct:/\n"), 0);
	/* nothing there */
	CHECK_INT(cgroup_cpu_quota("/nonexistent", "0::/\n"), 0);
	CHECK(server_default_concurrency() >= 1);
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
	CHECK_INT(system(cmd), 0);
}
