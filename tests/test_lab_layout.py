"""The lab's layout read from the environment (pure: nothing is started)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "e2e"))

from labkit import hub, layout  # noqa: E402


def test_two_members_by_default_and_a_third_on_request() -> None:
    assert [m.name for m in layout._members({})] == ["east", "west"]
    three = layout._members({"TWINHULL_LAB_MEMBERS": "3"})
    assert [(m.name, m.zones) for m in three][-1] == ("south", ("south-a", "south-b"))
    base = layout.Layout.from_env({"TWINHULL_LAB_PORT_BASE": "17600"})
    # south's API server and proxy take free ports: no clash with the hub's Prometheus/proxies
    assert base.port(three[-1], "kube-apiserver") == 17630
    assert base.proxy_port(three[-1]) == 17698
    ports = {base.port(c, p) for c in (layout.HUB, *three) for p in layout._PORT_OFFSETS}
    assert not ports & {base.prometheus_port, base.toxiproxy_port,
                        *(base.proxy_port(m) for m in three)}


@pytest.mark.parametrize("name, value, words", [
    ("TWINHULL_LAB_MEMBERS", "4", "must be 2 (east, west) or 3"),
    ("TWINHULL_LAB_AUDIT", "all", "must be writes"),
    ("TWINHULL_LAB_NODES_PER_ZONE", "0", "must be a number from 1 to 20"),
    ("TWINHULL_LAB_NODES_PER_ZONE", "lots", "must be a number from 1 to 20"),
])
def test_a_bad_setting_is_refused_naming_it(name: str, value: str, words: str) -> None:
    with pytest.raises(layout.LabError, match=name) as raised:
        layout.Layout.from_env({name: value})
    assert words in str(raised.value)


def test_audit_of_every_request_is_opt_in_and_names_each_clusters_log() -> None:
    default = layout.Layout.from_env({})
    assert not default.audit_requests
    wide = layout.Layout.from_env({"TWINHULL_LAB_AUDIT": "requests"})
    assert wide.audit_requests
    south = layout._members({"TWINHULL_LAB_MEMBERS": "3"})[-1]
    assert wide.audit_log_of(south) == wide.run / "south" / "logs" / "audit.log"
    assert wide.audit_log == wide.run / "hub" / "logs" / "audit.log"


def test_a_third_member_gets_a_serving_cluster_like_the_examples() -> None:
    import yaml

    south = hub.serving_cluster("south", ("south-a", "south-b"))["spec"]
    west = next(d for d in yaml.safe_load_all((ROOT / "examples" / "clusters.yaml").read_text())
                if d["metadata"]["name"] == "west")["spec"]
    assert south["zones"] == ["south-a", "south-b"]
    assert south["kubeconfigSecretRef"] == {**west["kubeconfigSecretRef"],
                                            "name": "south-kubeconfig"}
    assert {k: v for k, v in south.items() if k not in ("zones", "region",
                                                        "kubeconfigSecretRef")} == \
        {k: v for k, v in west.items() if k not in ("zones", "region", "kubeconfigSecretRef")}


def test_nodes_per_zone_is_two_unless_asked_and_each_node_gets_its_own_pod_network(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert layout._nodes_per_zone({}) == 2
    assert layout._nodes_per_zone({"TWINHULL_LAB_NODES_PER_ZONE": "10"}) == 10
    south = layout._members({"TWINHULL_LAB_MEMBERS": "3"})[-1]
    from labkit import members
    # two nodes a zone keep the addresses labs made before the setting (a node's podCIDR
    # never changes): east-b-0 is 127.x.3.0/24
    assert members.pod_cidr(south, "south-b", 0) == "127.13.3.0/24"
    monkeypatch.setattr(layout, "NODES_PER_ZONE", layout.MAX_NODES_PER_ZONE)
    cidrs = {members.pod_cidr(south, z, n) for z in south.zones
             for n in range(layout.MAX_NODES_PER_ZONE)}
    assert len(cidrs) == 2 * layout.MAX_NODES_PER_ZONE  # no two nodes share a /24
