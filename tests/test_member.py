"""What a member writes: only changed objects, never shared kinds, no orphan removal before
a complete desired state. Pure parts of the member runtime."""

from __future__ import annotations

from test_fleet import IDE, TIERS
from twinhull.clusters.member import Member, Seen, key_of, needs_write, seen_of, zones_of
from twinhull.plan.render import HASH, member_objects

OBJECTS = member_objects("ide", "ai", "east", IDE.spec, TIERS.resolve("critical"),
                         {("east", "primary", "east-a"): 2})


class _NoKube:
    name = "east"


def member_seeing(objects) -> Member:
    member = Member("east", _NoKube(), ["east-a", "east-b"])  # type: ignore[arg-type]
    member.observed = {key_of(o): seen_of(o) for o in objects}
    member.observed_round = 1
    return member


def test_nothing_to_write_when_the_cluster_has_what_is_desired():
    member = member_seeing(OBJECTS)
    member.publish(OBJECTS)
    assert member.plan_writes() == ([], [])


def test_a_scaled_or_missing_object_is_written_again():
    deployment = next(o for o in OBJECTS if o["kind"] == "Deployment")
    assert needs_write(deployment, None)
    scaled = Seen(hash=deployment["metadata"]["annotations"][HASH], replicas=5)
    assert needs_write(deployment, scaled)
    member = member_seeing([o for o in OBJECTS if o is not deployment])
    member.publish(OBJECTS)
    applies, deletes = member.plan_writes()
    assert [o["metadata"]["name"] for o in applies] == ["ide-east-a"] and deletes == []


def test_objects_no_deployment_wants_are_removed_but_shared_kinds_never():
    member = member_seeing(OBJECTS)
    assert member.plan_writes()[1] == [], "nothing removed before a desired state is published"
    member.publish([])
    _, deletes = member.plan_writes()
    assert {k[1] for k in deletes} == {"Deployment", "PodDisruptionBudget", "Service"}
    assert all(k[1] not in ("Namespace", "PriorityClass") for k in deletes)


def test_an_applied_object_is_not_sent_again_before_the_next_observation():
    member = member_seeing([])
    member.publish(OBJECTS)
    applies, _ = member.plan_writes()
    for obj in applies:
        member._applied[key_of(obj)] = (obj["metadata"]["annotations"][HASH], 1,
                                        obj["spec"]["replicas"] if obj["kind"] == "Deployment"
                                        else None)
    assert member.plan_writes()[0] == []
    member.observed_round = 2  # observed again and still missing (someone deleted it)
    assert len(member.plan_writes()[0]) == len(OBJECTS)


def test_zones_count_ready_nodes_and_their_gpus():
    def node(zone, ready, gpus=8):
        return {"metadata": {"labels": {"topology.kubernetes.io/zone": zone}},
                "status": {"allocatable": {"nvidia.com/gpu": str(gpus)},
                           "conditions": [{"type": "Ready",
                                           "status": "True" if ready else "False"}]}}
    zones = zones_of([node("east-a", True), node("east-a", False, 16), node("other", True)],
                     ["east-a", "east-b"])
    assert zones["east-a"].nodes == 2 and zones["east-a"].ready == 1
    assert zones["east-a"].gpus == 8 and zones["east-b"].nodes == 0
    # what the zone's nodes hold, Ready or not: a NotReady node keeps its pods
    assert zones["east-a"].node_gpus == 24 and zones["east-a"].largest == 16
    # a count no node reports (a quantity with a suffix, a float, garbage) counts 0 and
    # never fails the probe
    odd = zones_of([node("east-b", True, g) for g in ("1k", "2.5", "x", "-3", "4")],
                   ["east-b"])
    assert odd["east-b"].nodes == 5 and odd["east-b"].node_gpus == 4


def test_objects_of_a_deployment_that_cannot_be_planned_are_kept():
    member = member_seeing(OBJECTS)
    member.publish([], keep={("ai", "ide")})
    assert member.plan_writes() == ([], [])
