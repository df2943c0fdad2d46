"""Rendering member objects and the HTTPRoute from a plan. Pure."""

from __future__ import annotations

from test_fleet import IDE, TIERS, example
from twinhull.plan.render import (
    HASH,
    INSTALLATION,
    collisions,
    content_hash,
    http_route,
    member_objects,
    priority_class,
    rendered_names,
)

CRITICAL = TIERS.resolve("critical")


def replicas(n: int = 1) -> dict:
    return {("east", "primary", "east-a"): n, ("east", "primary", "east-b"): 1,
            ("east", "fallback", "east-a"): 1, ("east", "fallback", "east-b"): 1,
            ("west", "primary", "west-a"): 1}


def by_name(objects: list[dict]) -> dict[str, dict]:
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in objects}


def test_one_deployment_and_pdb_per_zone_and_role_pinned_to_its_zone():
    objects = by_name(member_objects("ide", "ai", "east", IDE.spec, CRITICAL, replicas(3)))
    assert next(iter(objects)) == "Namespace/ai"
    deployment = objects["Deployment/ide-east-a"]
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 3
    assert pod["nodeSelector"] == {"topology.kubernetes.io/zone": "east-a"}
    assert pod["priorityClassName"] == "twinhull-critical"
    container = pod["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "4"}
    assert container["resources"]["requests"]["memory"] == "64Gi"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert objects["Deployment/ide-fallback-east-b"]["spec"]["template"]["spec"][
        "containers"][0]["image"] == "vllm/vllm-openai:v0.11.0"
    assert objects["PodDisruptionBudget/ide-east-a"]["spec"]["maxUnavailable"] == 1
    assert objects["Service/ide-east"]["spec"]["selector"]["serving.twinhull.io/role"] == \
        "primary"
    assert "Deployment/ide-west-a" not in objects, "only this cluster's zones"


def test_generic_runtime_is_probed_by_tcp():
    md = example("unit-test-agent")
    spec = md.spec.model_copy(update={"model": md.spec.model.model_copy(
        update={"runtime": "generic"})})
    objects = by_name(member_objects("uta", "ai", "west", spec, TIERS.resolve("best-effort"),
                                     {("west", "primary", "west-a"): 1}))
    probe = objects["Deployment/uta-west-a"]["spec"]["template"]["spec"]["containers"][0][
        "readinessProbe"]
    assert probe["tcpSocket"] == {"port": "http"}


def test_content_hash_changes_with_content_only():
    first = by_name(member_objects("ide", "ai", "east", IDE.spec, CRITICAL, replicas(1)))
    again = by_name(member_objects("ide", "ai", "east", IDE.spec, CRITICAL, replicas(1)))
    scaled = by_name(member_objects("ide", "ai", "east", IDE.spec, CRITICAL, replicas(2)))
    def digest(objects):
        return objects["Deployment/ide-east-a"]["metadata"]["annotations"][HASH]
    assert digest(first) == digest(again) != digest(scaled)
    assert content_hash({"a": 1}) == content_hash({"a": 1}) != content_hash({"a": 2})


def test_objects_rendered_for_an_installation_carry_its_label_outside_their_hash():
    plain = member_objects("ide", "ai", "east", IDE.spec, CRITICAL, replicas(1))
    mine = member_objects("ide", "ai", "east", IDE.spec, CRITICAL, replicas(1), "hub-a")
    assert all(o["metadata"]["labels"][INSTALLATION] == "hub-a" for o in mine)
    assert all(INSTALLATION not in o["metadata"]["labels"] for o in plain)
    assert [o["metadata"]["annotations"][HASH] for o in mine] == \
        [o["metadata"]["annotations"][HASH] for o in plain]
    pc, plain_pc = priority_class("critical", CRITICAL, "hub-a"), priority_class("critical",
                                                                                  CRITICAL)
    assert pc is not None and plain_pc is not None
    assert pc["metadata"]["labels"][INSTALLATION] == "hub-a"
    assert pc["metadata"]["annotations"][HASH] == plain_pc["metadata"]["annotations"][HASH]


def test_deployments_of_one_server_share_its_pod_spec_and_their_namespace_object():
    """Rendered objects are never changed, so the parts that do not depend on the
    ModelDeployment are one object for all of them (the memory of a large fleet)."""
    other_name = IDE.spec.model_copy(update={"model": IDE.spec.model.model_copy(
        update={"name": "other-model"})})
    other_image = IDE.spec.model_copy(update={"model": IDE.spec.model.model_copy(
        update={"image": "vllm/vllm-openai:v0.12.0"})})
    def pod(name, spec, zone="east-a"):
        return by_name(member_objects(name, "ai", "east", spec, CRITICAL, replicas(1),
                                      "hub-a"))[f"Deployment/{name}-{zone}"]["spec"][
                                          "template"]["spec"]
    assert pod("ide", IDE.spec) is pod("chat", other_name), "the model's name only labels pods"
    assert pod("ide", IDE.spec) is not pod("ide", IDE.spec, "east-b")
    assert pod("ide", IDE.spec) is not pod("chat", other_image)
    assert pod("chat", other_image)["containers"][0]["image"] == "vllm/vllm-openai:v0.12.0"
    first = by_name(member_objects("ide", "ai", "east", IDE.spec, CRITICAL, replicas(1), "hub-a"))
    second = by_name(member_objects("chat", "ai", "east", other_name, CRITICAL, replicas(1),
                                    "hub-a"))
    assert first["Namespace/ai"] is second["Namespace/ai"]
    labels = first["Deployment/ide-east-a"]["spec"]["template"]["metadata"]["labels"]
    assert labels["serving.twinhull.io/model"] == "qwen3-next-80b"
    assert second["Deployment/chat-east-a"]["spec"]["template"]["metadata"]["labels"][
        "serving.twinhull.io/model"] == "other-model"


def test_http_route_has_a_weighted_backend_per_cluster_and_the_fallback():
    route = http_route("ide", "ai", "uid-1", IDE.spec, {"east": 70, "west": 0, "fallback": 30},
                       gateway=("gw-ns", "gw"))
    backends = {b["name"]: b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]}
    assert backends == {"ide-east": 70, "ide-west": 0, "ide-fallback": 30}
    assert route["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert route["spec"]["parentRefs"][0] == {"group": "gateway.networking.k8s.io",
                                              "kind": "Gateway", "namespace": "gw-ns",
                                              "name": "gw"}
    headers = route["spec"]["rules"][0]["matches"][0]["headers"]
    assert headers == [{"type": "Exact", "name": "x-model", "value": "qwen3-next-80b"}]


def test_priority_class_follows_the_tier():
    pc = priority_class("critical", CRITICAL)
    assert pc is not None and pc["value"] == 1000 and pc["metadata"]["name"] == "twinhull-critical"


def _with_fallback(spec, fallback: bool):
    if fallback:
        return spec
    return spec.model_copy(update={"fallback": None})


def test_rendered_names_cover_every_object_member_objects_can_write():
    names = set(rendered_names("ide", IDE.spec))
    full = {(c, r, z): 1 for p in IDE.spec.placement for z in p.zones
            for c, r in ((p.cluster, "primary"), (p.cluster, "fallback"))}
    for p in IDE.spec.placement:
        for o in member_objects("ide", "ai", p.cluster, IDE.spec, CRITICAL, full):
            if o["kind"] not in ("Namespace", "PriorityClass"):
                assert f"{p.cluster}/{o['kind']}/{o['metadata']['name']}" in names


def test_a_deployment_named_like_anothers_fallback_collides_and_the_later_one_is_held():
    spec = IDE.spec
    rendered = {("ai", "llama"): rendered_names("llama", spec),
                ("ai", "llama-fallback"): rendered_names("llama-fallback",
                                                         _with_fallback(spec, False)),
                ("other", "llama-fallback"): rendered_names("llama-fallback", spec),
                ("ai", "chat"): rendered_names("chat", spec)}
    held = collisions(rendered)
    assert set(held) == {("ai", "llama-fallback")}, "other namespaces never collide"
    assert "ModelDeployment llama " in held[("ai", "llama-fallback")]
    assert "rename" in held[("ai", "llama-fallback")]
    # the one created first keeps its objects, whatever the names
    held = collisions(rendered, created={("ai", "llama"): "2025-05-02T00:00:00Z",
                                         ("ai", "llama-fallback"): "2025-05-01T00:00:00Z"})
    assert set(held) == {("ai", "llama")}
    assert "ModelDeployment llama-fallback " in held[("ai", "llama")]


def test_a_zone_prefix_collides_like_a_name_suffix():
    # deployment a, zone b-east vs deployment a-b, zone east: both render a-b-east
    a = {"cluster": "east", "zones": {"b-east": 1}}
    ab = {"cluster": "east", "zones": {"east": 1}}
    spec = _with_fallback(IDE.spec, False)
    rendered = {("ns", "a"): rendered_names("a", spec.model_copy(
                    update={"placement": [type(spec.placement[0]).model_validate(a)]})),
                ("ns", "a-b"): rendered_names("a-b", spec.model_copy(
                    update={"placement": [type(spec.placement[0]).model_validate(ab)]}))}
    held = collisions(rendered)
    assert list(held) == [("ns", "a-b")] and "Deployment a-b-east" in held[("ns", "a-b")]


def test_a_deployment_whose_own_objects_collide_is_held():
    placement = type(IDE.spec.placement[0]).model_validate(
        {"cluster": "east", "zones": {"x": 1, "fallback-x": 1}})
    spec = IDE.spec.model_copy(update={"placement": [placement]})
    held = collisions({("ns", "m"): rendered_names("m", spec)})
    assert "m-fallback-x" in held[("ns", "m")]


def test_no_collision_no_hold():
    assert collisions({("ai", "ide"): rendered_names("ide", IDE.spec),
                       ("ai", "aiops"): rendered_names("aiops", IDE.spec)}) == {}
