"""The member-cluster shell: separate read and write threads, redacted errors, kubeconfigs
refused before they can run anything, objects scoped to one installation, errors kept per
ModelDeployment. No cluster: the Kube class is the seam (a fake with its async methods)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import Configuration
from kubernetes.client.exceptions import ApiException

from twinhull.api import ModelDeployment
from twinhull.clusters.kube import (
    ClusterUnavailable,
    InvalidKubeconfig,
    Kube,
    WriteScope,
    configuration,
    redact,
)
from twinhull.clusters.member import WORKLOAD_KINDS, Member, key_of, seen_of
from twinhull.plan.render import INSTALLATION, member_objects
from twinhull.policy import load_file

ROOT = Path(__file__).resolve().parent.parent
TIERS = load_file()
IDE = ModelDeployment.model_validate(next(yaml.safe_load_all(
    (ROOT / "examples" / "ide-assistant.yaml").read_text())))

TOKEN = "s3cr3t-t0ken-value"
PASSWORD = "hunter2-pw"


def _kubeconfig(user: dict[str, Any] | None = None, cluster: dict[str, Any] | None = None,
                current: str = "east") -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": current,
        "clusters": [{"name": "east", "cluster": cluster or {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "op", "user": user if user is not None else {"token": TOKEN}}],
        "contexts": [{"name": "east", "context": {"cluster": "east", "user": "op"}}],
    }


# -- kubeconfigs ------------------------------------------------------------------------------

def test_a_good_kubeconfig_loads():
    config = configuration(_kubeconfig())
    assert config.host == "https://127.0.0.1:1"


@pytest.mark.parametrize(("kubeconfig", "says"), [
    ("just a string", "not a mapping"),
    (["a", "list"], "not a mapping"),
    (_kubeconfig(current="nowhere"), "current-context"),
    ({"apiVersion": "v1"}, "current-context"),
    (_kubeconfig(cluster={"server": "https://x", "certificate-authority-data": "%%%not64"}),
     "cannot be loaded"),
    (_kubeconfig(user={"token": TOKEN, "exec": {"command": "/bin/sh", "args": ["-c", "id"]}}),
     "--allow-exec-plugins"),
    (_kubeconfig(user={"auth-provider": {"name": "gcp", "config": {"cmd-path": "/bin/sh"}}}),
     "--allow-exec-plugins"),
    (_kubeconfig(user={"tokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token"}),
     "local file"),
    (_kubeconfig(cluster={"server": "https://x", "certificate-authority": "/etc/ssl/ca.pem"}),
     "local file"),
])
def test_an_unusable_kubeconfig_is_refused_with_the_fix_never_its_content(kubeconfig, says):
    with pytest.raises(InvalidKubeconfig) as caught:
        configuration(kubeconfig)
    assert says in str(caught.value)
    assert TOKEN not in str(caught.value) and "/bin/sh" not in str(caught.value)


def test_exec_plugins_run_only_when_allowed():
    ran = _kubeconfig(user={"exec": {"apiVersion": "client.authentication.k8s.io/v1",
                                     "command": "/bin/true", "interactiveMode": "Never"}})
    with pytest.raises(InvalidKubeconfig):
        configuration(ran)
    try:
        configuration(ran, allow_plugins=True)
    except InvalidKubeconfig as exc:  # the plugin ran and gave no credentials: not refused
        assert "--allow-exec-plugins" not in str(exc)


# -- redaction --------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    f"GET https://admin:{PASSWORD}@east.example:6443/api/v1/nodes failed",
    f"HTTPHeaderDict({{'Authorization': 'Bearer {TOKEN}', 'Accept': 'application/json'}})",
    f"token={TOKEN}&x=1",
    f'"password": "{PASSWORD}"',
    f"client-key-data: {base64.b64encode(TOKEN.encode()).decode()}",
    f"-----BEGIN RSA PRIVATE KEY-----\nMIIE{TOKEN}\n-----END RSA PRIVATE KEY-----",
])
def test_credentials_are_redacted_from_error_text(text):
    out = redact(text)
    assert TOKEN not in out and PASSWORD not in out
    assert base64.b64encode(TOKEN.encode()).decode() not in out
    assert "***" in out


def test_a_clients_own_credentials_are_redacted_wherever_they_appear():
    assert redact(f"the server echoed {TOKEN} back", [TOKEN]) == "the server echoed *** back"


class _Response:
    def __init__(self, status: int, data: bytes) -> None:
        self.status, self.data = status, data


def _kube_answering(fn) -> Kube:
    config = Configuration(host="https://east.example:6443")
    config.api_key = {"BearerToken": f"Bearer {TOKEN}"}
    kube = Kube("east", config, timeout=1.0)
    kube._api.rest_client.request = fn  # type: ignore[method-assign]
    return kube


def test_errors_out_of_a_client_never_carry_its_token_or_a_url_password():
    def refused(method, url, **kw):
        body = (f'{{"message": "token {TOKEN} rejected by '
                f'https://u:{PASSWORD}@east.example"}}').encode()
        return _Response(403, body)

    def raised(method, url, headers=None, **kw):
        raise ApiException(status=0, reason=f"headers {headers!r}")

    async def main() -> list[str]:
        messages = []
        for fn in (refused, raised):
            kube = _kube_answering(fn)
            with pytest.raises(ClusterUnavailable) as caught:
                await kube.get("v1", "Node", "n1")
            messages.append(str(caught.value))
            # no chained exception either: a traceback in the log would show it
            exc = caught.value
            assert exc.__cause__ is None and (exc.__suppress_context__ or not exc.__context__)
            kube.close()
        return messages

    for message in asyncio.run(main()):
        assert TOKEN not in message and PASSWORD not in message, message


# -- separate threads for reads and writes ----------------------------------------------------

def test_a_probe_answers_while_writes_are_backed_up():
    release = threading.Event()

    def answer(method, url, **kw):
        if method != "GET":
            release.wait(5.0)  # a member slow to accept writes
        return _Response(200, b'{"items": []}')

    async def main() -> float:
        kube = _kube_answering(answer)
        try:
            writes = [asyncio.ensure_future(kube.apply(o)) for o in OBJECTS * 3]
            await asyncio.sleep(0.1)
            began = time.monotonic()
            await kube.list("v1", "Node", timeout=0.5)
            took = time.monotonic() - began
            release.set()
            await asyncio.gather(*writes, return_exceptions=True)
            return took
        finally:
            release.set()
            kube.close()

    assert asyncio.run(main()) < 0.5


# -- installations ----------------------------------------------------------------------------

OBJECTS = member_objects("ide", "ai", "east", IDE.spec, TIERS.resolve("critical"),
                         {("east", "primary", "east-a"): 2})


def _labelled(obj: dict[str, Any], installation: str | None) -> dict[str, Any]:
    labels = dict(obj["metadata"].get("labels") or {})
    if installation is not None:
        labels[INSTALLATION] = installation
    return {**obj, "metadata": {**obj["metadata"], "labels": labels}}


class FakeKube:
    """The methods of Kube the member uses, over an in-memory cluster whose changes are
    kept as a log of watch events (a resourceVersion is a position in it)."""

    name = "east"

    def __init__(self, objects: list[dict[str, Any]] = (), fail: set[str] = ()) -> None:  # type: ignore[assignment]
        self.objects = {key_of(o): o for o in objects}
        self.fail = set(fail)
        self.deleted: list[tuple[str, str]] = []
        self.log: list[tuple[str, dict[str, Any]]] = []
        self.changed = threading.Condition()
        self.closed = False

    def _matches(self, o: dict[str, Any], api_version: str, kind: str, selector: str) -> bool:
        wanted = dict(part.split("=") for part in (selector or "").split(",") if part)
        return ((o["apiVersion"], o["kind"]) == (api_version, kind) and
                all(o["metadata"].get("labels", {}).get(a) == b for a, b in wanted.items()))

    async def list(self, api_version: str, kind: str, *, selector: str | None = None,
                   namespace: str | None = None, timeout: float | None = None
                   ) -> list[dict[str, Any]]:
        return self.list_sync(api_version, kind, selector=selector or "")[0]

    def list_sync(self, api_version: str, kind: str, *, selector: str
                  ) -> tuple[list[dict[str, Any]], str]:
        with self.changed:
            return ([o for o in self.objects.values()
                     if self._matches(o, api_version, kind, selector)], str(len(self.log)))

    def watch_sync(self, api_version: str, kind: str, *, selector: str, resource_version: str,
                   seconds: int, opened: Any = None) -> Any:
        at, end = int(resource_version), time.monotonic() + 0.5
        while not self.closed and time.monotonic() < end:
            with self.changed:
                self.changed.wait_for(lambda at=at: len(self.log) > at or self.closed, 0.05)
                events = self.log[at:]
            for i, (type_, obj) in enumerate(events, start=at + 1):
                if self._matches(obj, api_version, kind, selector):
                    yield type_, {**obj, "metadata": {**obj["metadata"],
                                                      "resourceVersion": str(i)}}
            at += len(events)

    def _changed(self, type_: str, obj: dict[str, Any]) -> None:
        with self.changed:
            self.log.append((type_, obj))
            self.changed.notify_all()

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        if f"{obj['kind']}/{obj['metadata']['name']}" in self.fail:
            raise ClusterUnavailable(f"east: PATCH {obj['metadata']['name']}: HTTP 422: no")
        self.objects[key_of(obj)] = obj
        self._changed("MODIFIED", obj)
        return obj

    async def delete(self, api_version: str, kind: str, name: str, *,
                     namespace: str | None = None) -> None:
        self.deleted.append((kind, name))
        obj = self.objects.pop((api_version, kind, namespace or "", name), None)
        if obj is not None:
            self._changed("DELETED", obj)

    def close(self) -> None:
        self.closed = True
        with self.changed:
            self.changed.notify_all()


async def _observed(member: Member, kube: FakeKube) -> None:
    """Observe once every informer has applied the fake's whole log (a watch delivers a
    write soon after it, not within it)."""
    await member.observe(1.0)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        if all(sum(1 for _, o in kube.log if (o["apiVersion"], o["kind"]) ==
                   (i.api_version, i.kind)) <= i.events for i in member.informers):
            break
        await asyncio.sleep(0.01)
    await member.observe(1.0)


def _member(kube: FakeKube, installation: str = "hub-a") -> Member:
    return Member("east", kube, ["east-a"], installation=installation)  # type: ignore[arg-type]


def test_every_published_object_carries_the_installation_label():
    member = _member(FakeKube())
    member.publish(OBJECTS)
    assert all(o["metadata"]["labels"][INSTALLATION] == "hub-a"
               for o in member.desired.values())
    assert all(INSTALLATION not in o["metadata"].get("labels", {}) for o in OBJECTS)


def test_publishing_the_same_objects_again_keeps_their_stamped_copies():
    member = _member(FakeKube())
    assert member.publish(OBJECTS)
    first = dict(member.desired)
    assert not member.publish(OBJECTS)  # the same objects: nothing changed
    assert all(member.desired[k] is first[k] for k in first)
    changed = [copy.deepcopy(o) if o["kind"] == "Deployment" else o for o in OBJECTS]
    for o in changed:
        if o["kind"] == "Deployment":
            o["spec"]["replicas"] = 7
    assert member.publish(changed)  # an equal copy would say False; a changed one True
    deployments = [k for k in first if k[1] == "Deployment"]
    assert deployments and all(member.desired[k]["spec"]["replicas"] == 7
                               and member.desired[k] is not first[k] for k in deployments)
    assert all(member.desired[k] is first[k] for k in first if k[1] != "Deployment")
    assert all(o["metadata"]["labels"][INSTALLATION] == "hub-a"
               for o in member.desired.values())


def test_objects_rendered_for_this_installation_are_kept_as_they_are_and_never_changed():
    """The fleet renders for its installation; a copy of each object was a quarter of the
    desired objects' memory at 2,000 ModelDeployments. Rendered objects share parts
    (pod specs, the Namespace), so publishing and converging must not change them."""
    rendered = [o for name in ("ide", "chat") for o in member_objects(
        name, "ai", "east", IDE.spec, TIERS.resolve("critical"),
        {("east", "primary", "east-a"): 2}, "hub-a")]
    before = copy.deepcopy(rendered)
    kube = FakeKube()
    member = _member(kube)
    assert member.publish(rendered)
    assert all(member.desired[key_of(o)] is o for o in rendered)
    asyncio.run(member.converge())
    assert len(kube.objects) == len({key_of(o) for o in rendered})
    assert rendered == before
    for_other = member_objects("ide", "ai", "east", IDE.spec, TIERS.resolve("critical"),
                               {("east", "primary", "east-a"): 2}, "hub-b")
    member.publish(for_other)  # labelled for another hub: published as this one's copy
    assert all(o["metadata"]["labels"][INSTALLATION] == "hub-a"
               for o in member.desired.values())
    assert all(o["metadata"]["labels"][INSTALLATION] == "hub-b" for o in for_other)


def test_another_installations_objects_are_never_deleted_nor_overwritten():
    theirs = [_labelled(o, "hub-b") for o in OBJECTS]
    other = [_labelled({**o, "metadata": {**o["metadata"], "name": "x-" + o["metadata"]["name"],
                                          "namespace": "team"}}, "hub-b")
             for o in OBJECTS if o["kind"] != "Namespace"]
    kube = FakeKube(theirs + other)
    member = _member(kube)

    async def main() -> None:
        await member.observe(1.0)
        member.publish([])  # hub-a wants nothing: hub-b's objects must stay
        await member.converge()
        member.publish(OBJECTS)  # hub-a wants the same names: reported, not taken
        await member.converge()
        member.close()

    asyncio.run(main())
    assert kube.deleted == []
    assert all(o["metadata"]["labels"][INSTALLATION] == "hub-b" for o in kube.objects.values())
    assert "another twinhull installation (hub-b)" in member.error_of("ai", "ide")
    assert member.error_of("team", "other") == ""


def test_objects_of_this_installation_or_unlabelled_ones_are_adopted_and_collected():
    legacy = [_labelled(o, None) for o in OBJECTS]
    kube = FakeKube(legacy)
    member = _member(kube)

    async def main() -> None:
        await member.observe(1.0)
        member.publish(OBJECTS)
        await member.converge()  # adopt: stamp the label on what was there
        await _observed(member, kube)
        member.publish([])
        await member.converge()
        member.close()

    asyncio.run(main())
    assert {k for k, _ in kube.deleted} == {"Deployment", "PodDisruptionBudget", "Service"}
    assert [o["metadata"]["labels"][INSTALLATION] for o in kube.objects.values()] == ["hub-a"]


def test_what_was_applied_is_forgotten_once_no_longer_desired():
    member = _member(FakeKube())

    async def main() -> None:
        member.publish(OBJECTS)
        await member.converge()
        assert len(member._applied) == len(OBJECTS)
        member.publish(OBJECTS[:1])

    asyncio.run(main())
    assert list(member._applied) == [key_of(OBJECTS[0])]


def test_a_failed_write_is_the_error_of_its_own_deployment_only():
    other = member_objects("chat", "team", "east", IDE.spec, TIERS.resolve("critical"),
                           {("east", "primary", "east-a"): 1})
    failing = next(o["metadata"]["name"] for o in OBJECTS if o["kind"] == "Deployment")
    member = _member(FakeKube(fail={f"Deployment/{failing}"}))

    async def main() -> None:
        member.publish(OBJECTS + other)
        await member.converge()

    asyncio.run(main())
    assert failing in member.error_of("ai", "ide")
    assert member.error_of("team", "chat") == "" and member.last_error == ""
    assert member.failed_writes == 1


class SlowKube(FakeKube):
    """Every write takes a moment; counts the writes in flight and the most at once."""

    def __init__(self, broken: str = "") -> None:
        super().__init__()
        self.broken = broken
        self.in_flight = self.most = 0
        self.order: list[str] = []

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        self.order.append(obj["kind"])
        try:
            await asyncio.sleep(0.001)
            if f"{obj['kind']}/{obj['metadata']['name']}" == self.broken:
                raise RuntimeError(f"a bug writing {self.broken}")
            return await super().apply(obj)
        finally:
            self.in_flight -= 1


def _fleet_objects(count: int) -> list[dict[str, Any]]:
    return [o for i in range(count) for o in member_objects(
        f"app-{i:03}", "team", "east", IDE.spec, TIERS.resolve("critical"),
        {("east", "primary", "east-a"): 1})]


def test_a_converge_over_many_objects_keeps_only_its_parallel_writes_as_tasks():
    # 200 deployments' objects in one member: 4 writes at a time, and only the tasks that
    # send them exist, not one per object waiting its turn (18,000 at 2,000 deployments)
    objects = _fleet_objects(200)
    kube = SlowKube()
    member = _member(kube)
    most_tasks = 0

    async def main() -> None:
        nonlocal most_tasks
        member.publish(objects)
        converging = asyncio.create_task(member.converge(parallel=4))
        while not converging.done():
            most_tasks = max(most_tasks, len(asyncio.all_tasks()))
            await asyncio.sleep(0)
        await converging

    asyncio.run(main())
    assert len(kube.objects) == len({key_of(o) for o in objects})
    assert kube.most == 4
    assert most_tasks <= 4 + 2, most_tasks  # the writers, main and converge
    # the namespace before any of the objects in it
    assert kube.order[0] == "Namespace" and "Namespace" not in kube.order[1:]


def test_a_write_that_raises_leaves_the_others_written_and_is_raised_after_them():
    objects = _fleet_objects(20)
    broken = next(o["metadata"]["name"] for o in objects if o["kind"] == "Deployment")
    kube = SlowKube(broken=f"Deployment/{broken}")
    member = _member(kube)

    async def main() -> None:
        member.publish(objects)
        await member.converge(parallel=4)

    with pytest.raises(RuntimeError, match=broken):
        asyncio.run(main())
    assert len(kube.objects) == len({key_of(o) for o in objects}) - 1


def test_observation_sorts_objects_by_installation():
    kube = FakeKube([_labelled(o, "hub-b") for o in OBJECTS[:2]]
                    + [_labelled(o, "hub-a") for o in OBJECTS[2:]])
    member = _member(kube)
    asyncio.run(member.observe(1.0))
    member.close()
    assert set(member.foreign) == {key_of(o) for o in OBJECTS[:2]}
    assert set(member.observed) == {key_of(o) for o in OBJECTS[2:]}
    assert all(seen_of(_labelled(o, "hub-a")).installation == "hub-a" for o in OBJECTS)


# -- the member daemon ------------------------------------------------------------------------

def _node(zone: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": f"n-{zone}", "labels": {"topology.kubernetes.io/zone": zone}},
            "status": {"allocatable": {"nvidia.com/gpu": "8"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


class ClusterKube(FakeKube):
    """A reachable member with one Ready node; ``broken_lists`` kinds fail to list."""

    def __init__(self, broken_lists: set[str] = ()) -> None:  # type: ignore[assignment]
        super().__init__([_node("east-a")])
        self.broken_lists = set(broken_lists)

    def list_sync(self, api_version: str, kind: str, *, selector: str
                  ) -> tuple[list[dict[str, Any]], str]:
        if kind in self.broken_lists:
            raise ClusterUnavailable(f"east: GET {kind}: HTTP 500: etcd timeout")
        return super().list_sync(api_version, kind, selector=selector)


class FakeHub:
    """The hub calls the daemon makes: read the Secret, write status, post Events."""

    def __init__(self, kubeconfig: Any) -> None:
        self.secret: dict[str, Any] = {}
        self.statuses: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.set_secret(kubeconfig, "1")

    def set_secret(self, kubeconfig: Any, version: str) -> None:
        raw = kubeconfig if isinstance(kubeconfig, bytes) else yaml.safe_dump(kubeconfig).encode()
        self.secret = {"metadata": {"resourceVersion": version},
                       "data": {"kubeconfig": base64.b64encode(raw).decode()}}

    async def get(self, api_version: str, kind: str, name: str, *,
                  namespace: str | None = None) -> dict[str, Any]:
        if kind == "Namespace":
            return {"metadata": {"name": name, "uid": "0b4c9d52-7f3e-4f1a-9b7e-5a0c2d1e3f40"}}
        return self.secret

    async def patch_status(self, api_version: str, kind: str, name: str, status: Any, *,
                           namespace: str | None = None, **kw: Any) -> None:
        self.statuses.append(status)

    async def create(self, obj: dict[str, Any], **kw: Any) -> dict[str, Any]:
        self.events.append(obj)
        return obj


CLUSTER = {"apiVersion": "serving.twinhull.io/v1alpha1", "kind": "ServingCluster",
           "metadata": {"name": "east", "generation": 1, "uid": "u1"},
           "spec": {"kubeconfigSecretRef": {"name": "east-kubeconfig"}, "region": "east",
                    "zones": ["east-a"], "capacity": {"gpus": 16},
                    "health": {"probeIntervalSeconds": 1, "failureThreshold": 2}},
           "status": {"phase": "Healthy"}}


def _runtime(hub: FakeHub, **settings: Any):
    from twinhull.handlers.runtime import Runtime, Settings
    rt = Runtime(hub=hub, policy=TIERS, settings=Settings(**settings))  # type: ignore[arg-type]
    rt.clusters["east"] = CLUSTER
    rt.installation = "hub-a"
    return rt


def _daemon(rt, kubes: list[ClusterKube]):
    from twinhull.handlers.members import MemberDaemon
    connected: list[dict[str, Any]] = []

    def connect(name, spec, kubeconfig, *, allow_plugins=False):
        configuration(kubeconfig, allow_plugins=allow_plugins)  # the real checks
        connected.append({"allow_plugins": allow_plugins})
        return kubes[len(connected) - 1]

    daemon = MemberDaemon(rt, "east", CLUSTER, connect=connect)
    return daemon, connected


async def _step(daemon) -> None:
    """One probe round, and its status and Events written (the daemon writes them off the
    probe loop)."""
    await daemon.step()
    await daemon.drain()


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


@pytest.mark.parametrize("bad", [
    b"\x00\xff not yaml: [",
    b"just a string",
    b"[" * 5000,
    _kubeconfig(current="missing"),
    _kubeconfig(cluster={"server": "https://x", "certificate-authority-data": "QQ"}),
])
def test_a_bad_first_kubeconfig_leaves_no_client_reports_it_and_the_cluster_goes_down(bad):
    hub = FakeHub(bad)
    rt = _runtime(hub)
    daemon, connected = _daemon(rt, [])

    async def main() -> None:
        for _ in range(3):
            daemon.secret_checked = None  # due again
            await _step(daemon)

    rt.round_scope = scope = WriteScope("a fleet round")
    asyncio.run(main())
    assert "east" not in rt.members and connected == []
    assert rt.views["east"].phase == "Down" and "east" in rt.view_times
    assert scope.abandoned and scope.why == "cluster east went Down", \
        "the round running when east went Down is preempted"
    assert rt.telemetry.preempted._value.get() == 1
    credentials = _condition(hub.statuses[-1], "CredentialsValid")
    assert credentials["status"] == "False"
    assert "twinhull-system/east-kubeconfig key 'kubeconfig'" in credentials["message"]
    assert TOKEN not in str(hub.statuses) and TOKEN not in str(hub.events)
    warnings = [e for e in hub.events if e["reason"] == "CredentialsInvalid"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"


def test_a_bad_rotated_kubeconfig_keeps_the_working_client():
    hub = FakeHub(_kubeconfig())
    rt = _runtime(hub)
    first = ClusterKube()
    daemon, connected = _daemon(rt, [first, ClusterKube()])

    async def main() -> None:
        await _step(daemon)
        assert rt.members["east"].kube is first and rt.views["east"].phase == "Healthy"
        hub.set_secret(b"kubeconfig: [unterminated", "2")
        daemon.secret_checked = None
        await _step(daemon)
        daemon.close()

    asyncio.run(main())
    assert len(connected) == 1 and daemon.member.kube is first
    status = hub.statuses[-1]
    assert status["phase"] == "Healthy"
    credentials = _condition(status, "CredentialsValid")
    assert credentials["status"] == "False" and "previous credentials are kept" in \
        credentials["message"]


def test_exec_plugins_are_refused_unless_the_operator_allows_them():
    exec_config = _kubeconfig(user={"exec": {"apiVersion": "client.authentication.k8s.io/v1",
                                             "command": "/bin/true"}})
    hub = FakeHub(exec_config)
    rt = _runtime(hub)
    daemon, connected = _daemon(rt, [ClusterKube()])
    asyncio.run(_step(daemon))
    assert connected == []
    assert "--allow-exec-plugins" in _condition(hub.statuses[-1], "CredentialsValid")["message"]

    rt = _runtime(hub, allow_exec_plugins=True)
    daemon, connected = _daemon(rt, [ClusterKube()])

    async def allowed() -> None:
        try:
            await _step(daemon)
        finally:
            daemon.close()

    with pytest.raises(Exception):  # noqa: B017 - the plugin ran (and gave no token): fine
        configuration(exec_config)
    asyncio.run(allowed())
    assert all(c["allow_plugins"] for c in connected)


def test_a_probe_writes_the_view_time_and_beats_and_a_failed_observation_is_reported(caplog):
    hub = FakeHub(_kubeconfig())
    rt = _runtime(hub)
    daemon, _ = _daemon(rt, [ClusterKube(broken_lists={"Service"})])

    async def main() -> None:
        try:
            await _step(daemon)
            await _step(daemon)
            rt.poke_member("east")
            await asyncio.sleep(0.05)
        finally:
            daemon.close()

    with caplog.at_level("WARNING"):
        asyncio.run(main())
    observed = _condition(hub.statuses[-1], "Observed")
    assert observed["status"] == "False" and "etcd timeout" in observed["message"]
    assert sum("cannot observe" in r.message for r in caplog.records) == 1, "rate-limited"


def test_view_time_and_beats_are_recorded_while_running():
    hub = FakeHub(_kubeconfig())
    rt = _runtime(hub)
    daemon, _ = _daemon(rt, [ClusterKube()])

    async def main() -> tuple[set[str], set[str]]:
        try:
            await _step(daemon)
            rt.poke_member("east")
            await asyncio.sleep(0.05)
            return set(rt.view_times), set(rt.beats)
        finally:
            daemon.close()

    times, beats = asyncio.run(main())
    assert times == {"east"} and beats == {"member/east", "writer/east"}


class _Stopped:
    """What the daemon reads of kopf's DaemonStopped."""

    def __init__(self) -> None:
        self.flag = asyncio.Event()

    def __bool__(self) -> bool:
        return self.flag.is_set()

    async def wait(self, timeout: float | None = None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flag.wait(), timeout)


def test_the_daemon_survives_a_failing_round_and_leaves_no_view_when_stopped():
    hub = FakeHub(_kubeconfig())
    rt = _runtime(hub)
    kube = ClusterKube()
    daemon, _ = _daemon(rt, [kube])
    failures = []

    async def patch_status(*args: Any, **kw: Any) -> None:
        failures.append(1)
        raise RuntimeError("a bug in the status write")

    hub.patch_status = patch_status  # type: ignore[method-assign]

    async def main() -> tuple[str | None, int, str, bool]:
        stopped = _Stopped()
        task = asyncio.ensure_future(daemon.run(stopped))  # type: ignore[arg-type]
        await asyncio.sleep(1.3)  # two rounds, one second apart
        seen = rt.views["east"].phase
        error = rt.loop_errors.get(daemon.status_loop, "")
        beating = daemon.loop in rt.beats and daemon.loop not in rt.loop_errors
        stopped.flag.set()
        await task
        return seen, len(failures), error, beating

    phase, rounds, error, beating = asyncio.run(main())
    assert phase == "Healthy" and rounds >= 2
    # the probes go on (the status is written off their loop, so its failure fails no
    # probe round and never the operator's liveness); the failure is reported as the
    # status writer's, and counted
    assert beating and "RuntimeError: a bug in the status write" in error
    assert rt.telemetry.reconcile_errors.labels("status/east")._value.get() >= 2
    assert "east" not in rt.views and "east" not in rt.view_times and "east" not in rt.members
    assert kube.closed and not rt.loop_bounds and "status/east" not in rt.loop_errors


class HangingKube(ClusterKube):
    """A frozen API server: a list hangs until the client's timeout, then fails."""

    def __init__(self) -> None:
        super().__init__()
        self.probes: list[float] = []

    async def list(self, api_version: str, kind: str, **kw: Any) -> list[dict[str, Any]]:
        if kind == "Node":
            self.probes.append(time.monotonic())
        await asyncio.sleep(float(kw.get("timeout") or 1.0))
        raise ClusterUnavailable("east: no answer within 1s")


def _frozen_member():
    """A daemon probing a frozen member every second (timeout 1 s, Down after 3)."""
    hub = FakeHub(_kubeconfig())
    rt = _runtime(hub)
    kube = HangingKube()
    spec = {**CLUSTER["spec"], "health": {"probeIntervalSeconds": 1, "timeoutSeconds": 1,
                                          "failureThreshold": 3}}
    rt.clusters["east"] = {**CLUSTER, "spec": spec}
    daemon, _ = _daemon(rt, [kube])
    return hub, rt, kube, daemon


def test_probes_keep_their_cadence_when_each_waits_out_its_timeout():
    """A frozen member makes every probe wait its timeout (1 s here, as the interval): the
    next starts at once, so failures come one interval apart (Down after the threshold's
    intervals), not an interval plus a timeout apart."""
    _, _, kube, daemon = _frozen_member()

    async def main() -> str | None:
        stopped = _Stopped()
        task = asyncio.ensure_future(daemon.run(stopped))  # type: ignore[arg-type]
        await asyncio.sleep(3.6)
        phase = daemon.health.phase
        stopped.flag.set()
        await task
        return phase

    phase = asyncio.run(main())
    gaps = [b - a for a, b in zip(kube.probes, kube.probes[1:], strict=False)]
    assert len(kube.probes) >= 3, kube.probes
    assert all(g < 1.5 for g in gaps), f"a probe waited an interval after a timeout: {gaps}"
    assert phase == "Down"



def test_a_backed_up_hub_delays_no_probe():
    """The status and Events are written off the probe loop. A hub whose write queue is
    full (a fleet round's thousands of writes ahead of an Event) answers them late; when
    the probe loop waited for them, a killed member of 2,000 ModelDeployments was Down
    after 18.7 s instead of three probes. Here the hub answers no write until released:
    the member still goes Down after three probes a second apart, and what was written
    once the hub answers is the newest status, Down."""
    hub, rt, _, daemon = _frozen_member()
    patch, create = hub.patch_status, hub.create

    async def main() -> tuple[str | None, float, int]:
        gate = asyncio.Event()

        async def patch_status(*args: Any, **kw: Any) -> None:
            await gate.wait()
            await patch(*args, **kw)

        async def post(obj: dict[str, Any], **kw: Any) -> dict[str, Any]:
            await gate.wait()
            return await create(obj, **kw)

        hub.patch_status, hub.create = patch_status, post  # type: ignore[method-assign]
        stopped = _Stopped()
        began = time.monotonic()
        task = asyncio.ensure_future(daemon.run(stopped))  # type: ignore[arg-type]
        while daemon.health.phase != "Down" and time.monotonic() - began < 10:
            await asyncio.sleep(0.05)
        down = time.monotonic() - began
        phase = rt.views["east"].phase
        waiting = len(daemon.posting)
        gate.set()
        await daemon.drain()
        stopped.flag.set()
        await task
        return phase, down, waiting

    phase, down, waiting = asyncio.run(main())
    assert phase == "Down" and down < 4.0, f"Down after {down:.1f}s"
    assert waiting >= 1, "the Suspect/Down Events were waiting for the hub"
    assert [s["phase"] for s in hub.statuses][-1] == "Down"
    assert len(hub.statuses) <= 2, "superseded statuses are not written one by one"
    assert {e["reason"] for e in hub.events} >= {"ClusterDown"}


def test_installation_id_is_the_flag_or_the_hubs_kube_system_uid():
    from twinhull.handlers.members import installation_id
    from twinhull.handlers.runtime import Settings
    hub = FakeHub(_kubeconfig())
    assert asyncio.run(installation_id(hub, Settings())) == \
        "0b4c9d52-7f3e-4f1a-9b7e-5a0c2d1e3f40"  # type: ignore[arg-type]
    assert asyncio.run(installation_id(hub, Settings(installation_id="prod-hub")))  \
        == "prod-hub"  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="installation-id"):
        asyncio.run(installation_id(hub, Settings(installation_id="a/b")))  # type: ignore[arg-type]


def test_run_flags_set_the_installation_id_and_allow_exec_plugins(monkeypatch):
    import sys

    import twinhull.handlers.run  # noqa: F401 - the module, for its run()
    from twinhull.cli import main
    got: dict[str, Any] = {}
    monkeypatch.setattr(sys.modules["twinhull.handlers.run"], "run",
                        lambda **kw: got.update(kw))
    monkeypatch.delenv("TWINHULL_INSTALLATION_ID", raising=False)
    assert main(["run", "--installation-id", "prod-hub", "--allow-exec-plugins"]) == 0
    assert got["settings"].installation_id == "prod-hub"
    assert got["settings"].allow_exec_plugins is True
    assert main(["run"]) == 0
    assert got["settings"].installation_id is None
    assert got["settings"].allow_exec_plugins is False


def test_a_call_that_stalls_is_given_up_at_its_timeout():
    """A probe's health counts on its timeout: a stall urllib3 does not time out (a TLS
    handshake behind a proxy whose upstream hangs) is given up at the timeout, not a
    second later (freeze and partition took 3 s a probe instead of 2)."""
    kube = Kube("east", configuration(_kubeconfig()), timeout=0.5)

    async def main() -> float:
        start = time.monotonic()
        with pytest.raises(ClusterUnavailable, match=r"no answer within 0\.5s"):
            await kube._run(lambda: time.sleep(1.5), 0.5, read=True)
        return time.monotonic() - start

    try:
        assert asyncio.run(main()) < 0.8
    finally:
        kube.close()


def _at_once(kube: Kube, method: str, count: int) -> list[Any]:
    """``count`` requests issued together with a 0.3 s timeout, as a round does."""
    kube.timeout = 0.3

    async def round_of() -> list[Any]:
        return await asyncio.gather(
            *(kube.request(method, f"/api/v1/namespaces/n/configmaps/c{i}",
                           body=None if method == "GET" else {})
              for i in range(count)), return_exceptions=True)

    return asyncio.run(round_of())


def test_a_round_of_many_writes_all_land_on_a_cluster_that_answers_each_in_time():
    """A write's timeout starts when a thread takes it: 60 writes of 50 ms each on 4 threads
    (0.75 s in all) against a 0.3 s timeout all succeed; counting their time in the queue
    failed every write past the first two dozen, round after round."""
    def slow(method, url, **kw):
        time.sleep(0.05)
        return _Response(200, b"{}")

    results = _at_once(_kube_answering(slow), "PATCH", 60)
    assert [r for r in results if isinstance(r, Exception)] == []


def test_a_read_still_ends_within_its_timeout_behind_a_backlog():
    """A probe's timeout counts from the call, queue included: its health counts on it."""
    release = threading.Event()

    def hung(method, url, **kw):
        release.wait(5)
        return _Response(200, b"{}")

    began = time.monotonic()
    try:
        results = _at_once(_kube_answering(hung), "GET", 4)
    finally:
        release.set()
    assert time.monotonic() - began < 1.0
    assert all(isinstance(r, ClusterUnavailable) for r in results)


def test_objects_made_in_a_member_do_not_rewrite_its_servingcluster_status():
    """While 2,000 ModelDeployments converge, every probe saw more objects: a count in the
    Observed condition wrote each member's status at every probe (50-87 writes a minute).
    The count is the twinhull_member_objects series; the status is written when something
    else changes, or at the heartbeat."""
    hub = FakeHub(_kubeconfig())
    rt = _runtime(hub)
    kube = ClusterKube()
    daemon, _ = _daemon(rt, [kube])

    async def main() -> int:
        try:
            for _ in range(5):  # consecutiveSuccesses counts up to its threshold
                await _step(daemon)
            settled = len(hub.statuses)
            for obj in [o for o in OBJECTS if (o["apiVersion"], o["kind"]) in WORKLOAD_KINDS]:
                await kube.apply(_labelled(obj, "hub-a"))
                for _ in range(100):  # the member's watch sees it (its writer observes)
                    assert daemon.member is not None
                    await daemon.member.observe(1.0)
                    if any(k[-1] == obj["metadata"]["name"] for k in daemon.member.observed):
                        break
                    await asyncio.sleep(0.01)
                else:
                    raise AssertionError(f"never observed {obj['metadata']['name']}")
                await _step(daemon)
            return settled
        finally:
            daemon.close()

    settled = asyncio.run(main())
    assert len(hub.statuses) == settled, [_condition(s, "Observed") for s in hub.statuses]
    assert _condition(hub.statuses[-1], "Observed")["status"] == "True"


@pytest.mark.parametrize("heartbeat, writes", [(300.0, 1), (0.0, 0)])
def test_an_unchanged_status_is_written_again_only_at_the_heartbeat(monkeypatch, heartbeat,
                                                                     writes):
    """A steady member's probes write nothing; its lastProbeTime is refreshed once the
    heartbeat has passed (--heartbeat, 300 s), never with --heartbeat=0."""
    from datetime import UTC, datetime, timedelta

    import twinhull.handlers.members as members

    clock = [datetime(2026, 12, 4, 5, 0, tzinfo=UTC)]
    monkeypatch.setattr(members, "now", lambda: clock[0])
    hub = FakeHub(_kubeconfig())
    rt = _runtime(hub, heartbeat_seconds=heartbeat)
    daemon, _ = _daemon(rt, [ClusterKube()])

    async def main() -> list[int]:
        counts = []
        try:
            for _ in range(5):  # consecutiveSuccesses counts up to its threshold
                await _step(daemon)
            for seconds in (30, 299, 301, 302):
                settled = len(hub.statuses)
                clock[0] = datetime(2026, 12, 4, 5, 0, tzinfo=UTC) + timedelta(seconds=seconds)
                await _step(daemon)
                counts.append(len(hub.statuses) - settled)
        finally:
            daemon.close()
        return counts

    counts = asyncio.run(main())
    assert counts[:2] == [0, 0], "unchanged within the heartbeat: no write"
    assert counts[2] == writes
    assert counts[3] == 0, "the refreshed status is the new reference"
