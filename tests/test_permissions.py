"""What a member grants twinhull (twinhull.clusters.permissions), derived from the kinds
the member shell handles. Pure; the e2e suite runs the member clients with exactly this."""

from __future__ import annotations

from twinhull.clusters.member import SHARED_KINDS, WORKLOAD_KINDS
from twinhull.clusters.permissions import PLURALS, member_rbac, member_rules


def _granted() -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in member_rules():
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def test_every_kind_the_member_shell_writes_is_granted_its_verbs_and_no_more():
    granted = _granted()
    for api_version, kind in WORKLOAD_KINDS:
        group = api_version.rpartition("/")[0]
        assert granted.pop((group, PLURALS[kind])) == {"list", "watch", "create", "patch", "delete"}
    for api_version, kind in SHARED_KINDS:
        group = api_version.rpartition("/")[0]
        assert granted.pop((group, PLURALS[kind])) == {"list", "watch", "create", "patch"}, \
            "shared kinds are never deleted"
    assert granted == {("", "nodes"): {"list"}}, \
        "nothing else: no get, no secrets, watch only on its own kinds"


def test_the_binding_names_the_service_account_and_the_role():
    namespace, account, role, binding = member_rbac()
    assert (namespace["kind"], account["kind"], role["kind"], binding["kind"]) == (
        "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "twinhull-member",
                                    "namespace": "twinhull-system"}]
