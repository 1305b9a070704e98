"""The container image (`make image`: build/remora-image.tar, an OCI image
layout built offline with umoci): it unpacks with `umoci unpack`, its config
runs remora as UID 1337, and inside its root filesystem (chroot) `remora
--version`, `remora inject` and `remora-init --dry-run` (sh, iptables) work:
every shared library they need is in the image."""

import json
import os
import shutil
import subprocess

import pytest
import yaml

import harness

IMAGE = os.environ.get("REMORA_IMAGE") or os.path.join(harness.REPO, "build",
                                                        "remora-image.tar")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    if not os.path.exists(IMAGE):
        if os.environ.get("CI"):
            pytest.fail(f"{IMAGE} missing: `make test` builds it (make image)")
        pytest.skip(f"{IMAGE} missing (make image)")
    if not shutil.which("umoci") or os.geteuid() != 0:
        pytest.skip("needs umoci and root (chroot)")
    d = tmp_path_factory.mktemp("image")
    layout = d / "layout"
    layout.mkdir()
    subprocess.run(["tar", "-C", str(layout), "-xf", IMAGE], check=True, timeout=120)
    index = json.load(open(layout / "index.json"))
    tags = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert tags, index
    p = subprocess.run(["umoci", "unpack", "--image", f"{layout}:{tags[0]}", str(d / "bundle")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return d / "bundle"


def chroot(bundle, *argv, input=None):
    return subprocess.run(["chroot", str(bundle / "rootfs"), *argv], capture_output=True,
                          text=True, timeout=60, input=input,
                          env={"PATH": "/usr/local/bin:/usr/sbin:/usr/bin:/bin"})


def test_image_config(bundle):
    cfg = json.load(open(bundle / "config.json"))
    assert cfg["process"]["args"][0] == "/usr/local/bin/remora"
    assert (cfg["process"]["user"]["uid"], cfg["process"]["user"]["gid"]) == (1337, 1337)


def test_remora_version_in_chroot(bundle):
    p = chroot(bundle, "/usr/local/bin/remora", "--version")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("remora version ")


def test_inject_in_chroot(bundle):
    pod = open(os.path.join(harness.REPO, "tests", "integration", "golden", "inject",
                            "pod.yaml")).read()
    p = chroot(bundle, "remora", "inject", "-q", "-f", "-", input=pod)
    assert p.returncode == 0, p.stderr
    doc = yaml.safe_load(p.stdout)
    assert [c["name"] for c in doc["spec"]["initContainers"]] == ["remora-init", "remora-proxy"]


def test_remora_init_in_chroot(bundle):
    p = chroot(bundle, "remora-init", "--dry-run", "--ipv6", "false")
    assert p.returncode == 0, p.stderr
    assert "-A REMORA_REDIRECT -p tcp -j REDIRECT --to-ports 15001" in p.stdout
    p = chroot(bundle, "iptables-restore", "--version")
    assert p.returncode == 0 and "iptables-restore" in p.stdout, p.stderr


def test_remora_cp_in_chroot(bundle):
    """The control plane is in the image and runs there."""
    p = chroot(bundle, "remora-cp", "--help")
    assert p.returncode == 0, p.stderr
    assert "--config-dir" in p.stderr
