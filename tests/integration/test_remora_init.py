"""deploy/init/remora-init: the nat rules of transparent capture.

--dry-run output is compared with golden files; the real thing runs inside
fresh network namespaces (ip netns), where iptables-save shows what it did.
"""

import os
import shutil
import subprocess
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INIT = os.path.join(ROOT, "deploy", "init", "remora-init")
GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
CHAINS = {"REMORA_INBOUND", "REMORA_REDIRECT", "REMORA_IN_REDIRECT", "REMORA_OUTPUT"}

CUSTOM_ENV = {
    "REMORA_INBOUND_PORTS_INCLUDE": "8080,9090",
    "REMORA_OUTBOUND_PORTS_INCLUDE": "80",
    "REMORA_OUTBOUND_PORTS_EXCLUDE": "22,3306",
    "REMORA_OUTBOUND_IP_RANGES_INCLUDE": "10.0.0.0/8,fd00::/8",
    "REMORA_OUTBOUND_IP_RANGES_EXCLUDE": "10.96.0.0/12,fd00:96::/64",
    "REMORA_PROXY_UID": "1337",
    "REMORA_PROXY_GID": "1337",
    "REMORA_ENABLE_IPV6": "true",
    "REMORA_PROXY_PORT": "15001",
    "REMORA_INBOUND_CAPTURE_PORT": "15006",
}


def run_init(*args, env=None, netns=None, check=True):
    e = {k: v for k, v in os.environ.items() if not k.startswith("REMORA_")}
    e.update(env or {})
    cmd = ["sh", INIT, *args]
    if netns:
        cmd = ["ip", "netns", "exec", netns] + cmd
    p = subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} failed ({p.returncode}): {p.stderr}")
    return p


def golden(name):
    with open(os.path.join(GOLDEN, name)) as f:
        return f.read()


# ---- dry run (no privileges needed) -------------------------------------------


def test_dry_run_default_matches_golden():
    out = run_init("--dry-run", "--ipv6", "false").stdout
    assert out == golden("remora-init-default.rules")


def test_dry_run_from_env_matches_golden():
    out = run_init("--dry-run", env=CUSTOM_ENV).stdout
    assert out == golden("remora-init-custom.rules")


def test_options_override_env():
    env = dict(CUSTOM_ENV)
    out = run_init("--dry-run", "--outbound-ports-exclude=25", "-b", "*", env=env).stdout
    assert "-A REMORA_OUTPUT -p tcp --dport 25 -j RETURN" in out
    assert "--dport 3306" not in out
    assert "-A REMORA_INBOUND -p tcp -j REMORA_IN_REDIRECT" in out


@pytest.mark.parametrize("args,msg", [
    (["-m", "TPROXY"], "TPROXY is not supported yet"),
    (["-m", "FOO"], "unknown inbound interception mode"),
    (["-b", "80,x"], "'x' is not a port"),
    (["-o", "*"], "'*' is not allowed"),
    (["-i", "10.0.0.0"], "is not a CIDR"),
    (["-x", "10.0.0.0/40"], "bad prefix length"),
    (["--bogus"], "unknown option"),
    (["-p"], "needs a value"),
])
def test_bad_settings_rejected(args, msg):
    p = run_init("--dry-run", *args, check=False)
    assert p.returncode == 2
    assert msg in p.stderr
    assert p.stdout == ""


def test_no_inbound_capture_when_include_empty():
    out = run_init("--dry-run", "--ipv6", "false", "-b", "").stdout
    assert "PREROUTING" not in out
    assert "REMORA_INBOUND -p" not in out
    assert "-A OUTPUT -p tcp -j REMORA_OUTPUT" in out


# ---- in a network namespace -------------------------------------------------------


def _netns_usable():
    if os.geteuid() != 0:
        return "needs root (ip netns, iptables)"
    for tool in ("ip", "iptables-restore", "iptables-save", "ip6tables-restore", "ip6tables-save"):
        if not shutil.which(tool):
            return f"{tool} is not installed (deploy/install-deps.sh installs it)"
    return None


@pytest.fixture
def netns():
    why = _netns_usable()
    if why:
        pytest.skip(why)
    name = "rmi-" + uuid.uuid4().hex[:8]
    p = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"the kernel refuses network namespaces: {p.stderr.strip()}")
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def nat_rules(ns, v6=False):
    """(chains, rules) of the nat table: chain names and '-A ...' lines."""
    tool = "ip6tables-save" if v6 else "iptables-save"
    out = subprocess.run(["ip", "netns", "exec", ns, tool, "-t", "nat"], capture_output=True,
                         text=True, check=True, timeout=30).stdout
    chains = [ln[1:].split()[0] for ln in out.splitlines() if ln.startswith(":")]
    rules = [ln for ln in out.splitlines() if ln.startswith("-A ")]
    return chains, rules


def expected_rule_count(dry_run_text, section):
    """The number of -A lines of one section (0: IPv4, 1: IPv6) of a dry run."""
    parts = dry_run_text.split("COMMIT")
    return sum(1 for ln in parts[section].splitlines() if ln.startswith("-A "))


def test_apply_twice_is_idempotent(netns):
    run_init("--ipv6", "false", netns=netns)
    _, first = nat_rules(netns)
    run_init("--ipv6", "false", netns=netns)
    chains, rules = nat_rules(netns)
    assert CHAINS <= set(chains)
    assert len(rules) == len(set(rules)), f"duplicate rules: {rules}"
    assert sorted(rules) == sorted(first)
    want = expected_rule_count(golden("remora-init-default.rules"), 0)
    assert len(rules) == want
    assert rules.count("-A PREROUTING -p tcp -j REMORA_INBOUND") == 1
    assert rules.count("-A OUTPUT -p tcp -j REMORA_OUTPUT") == 1
    assert "-A REMORA_REDIRECT -p tcp -j REDIRECT --to-ports 15001" in rules
    assert "-A REMORA_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006" in rules
    assert "-A REMORA_OUTPUT -m owner --uid-owner 1337 -j RETURN" in rules


def test_rerun_with_new_settings_replaces_rules(netns):
    run_init("--ipv6", "false", "-o", "22", netns=netns)
    _, rules = nat_rules(netns)
    assert any("--dport 22 -j RETURN" in r for r in rules)
    run_init("--ipv6", "false", "-o", "25", "-b", "", netns=netns)
    _, rules = nat_rules(netns)
    assert not any("--dport 22 " in r for r in rules)
    assert any("--dport 25 -j RETURN" in r for r in rules)
    # inbound capture switched off: the PREROUTING jump is gone too
    assert not any(r.startswith("-A PREROUTING") for r in rules)
    assert len(rules) == len(set(rules))


def test_cleanup_removes_everything(netns):
    run_init("--ipv6", "true", netns=netns)
    run_init("--cleanup", netns=netns)
    for v6 in (False, True):
        chains, rules = nat_rules(netns, v6)
        assert not [c for c in chains if c.startswith("REMORA_")]
        assert not [r for r in rules if "REMORA_" in r]
    # cleaning an already clean namespace is fine
    run_init("--cleanup", netns=netns)


def test_ipv6_rules(netns):
    run_init(netns=netns, env=CUSTOM_ENV)
    run_init(netns=netns, env=CUSTOM_ENV)
    chains6, rules6 = nat_rules(netns, v6=True)
    assert CHAINS <= set(chains6)
    assert len(rules6) == len(set(rules6))
    assert len(rules6) == expected_rule_count(golden("remora-init-custom.rules"), 1)
    assert any("-d fd00::/8" in r and "REMORA_REDIRECT" in r for r in rules6)
    assert any("-d fd00:96::/64" in r and "RETURN" in r for r in rules6)
    assert not any("10.0.0.0/8" in r for r in rules6)
    assert any("::1/128" in r for r in rules6)
    _, rules4 = nat_rules(netns)
    assert any("-d 10.0.0.0/8" in r for r in rules4)
    assert not any("fd00" in r for r in rules4)


def test_ipv6_auto_detects_a_global_address(netns):
    subprocess.run(["ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"], check=True)
    run_init(netns=netns)   # only ::1 (host scope): no IPv6 rules
    chains6, _ = nat_rules(netns, v6=True)
    assert not CHAINS & set(chains6)
    # a veth pair inside the namespace (no dummy module needed)
    subprocess.run(["ip", "netns", "exec", netns, "ip", "link", "add", "d0", "type", "veth",
                    "peer", "name", "d1"], check=True)
    for dev in ("d0", "d1"):
        subprocess.run(["ip", "netns", "exec", netns, "ip", "link", "set", dev, "up"], check=True)
    subprocess.run(["ip", "netns", "exec", netns, "ip", "-6", "addr", "add", "fd77::1/64", "dev",
                    "d0", "nodad"], check=True)
    run_init(netns=netns)
    chains6, rules6 = nat_rules(netns, v6=True)
    assert CHAINS <= set(chains6)
    assert "-A OUTPUT -p tcp -j REMORA_OUTPUT" in rules6
