"""A Kubernetes API client for one cluster, with a timeout on every call and its own
threads, so a dead or frozen cluster never blocks work on another.

Effects: network I/O. Built on the ``kubernetes`` package's configuration loading and
HTTP client; requests are plain REST calls on the few paths twinhull uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException
from kubernetes.config.kube_config import KubeConfigLoader

from twinhull.errors import TwinhullError

FIELD_MANAGER = "twinhull"

T = TypeVar("T")


@dataclass(frozen=True)
class Kind:
    """Where a kind lives in the API."""

    prefix: str
    plural: str
    namespaced: bool


KINDS: dict[tuple[str, str], Kind] = {
    ("v1", "Namespace"): Kind("/api/v1", "namespaces", False),
    ("v1", "Service"): Kind("/api/v1", "services", True),
    ("v1", "Secret"): Kind("/api/v1", "secrets", True),
    ("v1", "Event"): Kind("/api/v1", "events", True),
    ("v1", "Node"): Kind("/api/v1", "nodes", False),
    ("apps/v1", "Deployment"): Kind("/apis/apps/v1", "deployments", True),
    ("policy/v1", "PodDisruptionBudget"): Kind("/apis/policy/v1", "poddisruptionbudgets", True),
    ("scheduling.k8s.io/v1", "PriorityClass"): Kind("/apis/scheduling.k8s.io/v1",
                                                     "priorityclasses", False),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): Kind("/apis/gateway.networking.k8s.io/v1",
                                                        "httproutes", True),
    ("serving.twinhull.io/v1alpha1", "ServingTier"): Kind("/apis/serving.twinhull.io/v1alpha1",
                                                          "servingtiers", False),
    ("serving.twinhull.io/v1alpha1", "ServingCluster"): Kind(
        "/apis/serving.twinhull.io/v1alpha1", "servingclusters", False),
    ("serving.twinhull.io/v1alpha1", "ModelDeployment"): Kind(
        "/apis/serving.twinhull.io/v1alpha1", "modeldeployments", True),
    ("serving.twinhull.io/v1alpha1", "ModelSnapshot"): Kind(
        "/apis/serving.twinhull.io/v1alpha1", "modelsnapshots", True),
}


class ClusterUnavailable(TwinhullError):
    """A call did not complete: the cluster is unreachable, too slow, or refused it.
    Retry later; nothing was half-done by twinhull (each call is one request)."""


class NotFound(ClusterUnavailable):
    """The object does not exist."""


def path(api_version: str, kind: str, *, namespace: str | None = None, name: str | None = None,
         subresource: str | None = None) -> str:
    """The REST path of a kind, optionally of one object. Pure."""
    k = KINDS[(api_version, kind)]
    out = k.prefix
    if k.namespaced and namespace:
        out += f"/namespaces/{quote(namespace)}"
    out += f"/{k.plural}"
    if name:
        out += f"/{quote(name)}"
    if subresource:
        out += f"/{subresource}"
    return out


def configuration(kubeconfig: Mapping[str, Any]) -> Configuration:
    """A client configuration from a parsed kubeconfig (its current context). Pure apart
    from writing temporary certificate files, as the kubernetes package does."""
    config = Configuration()
    loader = KubeConfigLoader(config_dict=dict(kubeconfig))  # type: ignore[no-untyped-call]
    loader.load_and_set(config)  # type: ignore[no-untyped-call]
    return config


class Kube:
    """One cluster's API: every call has a timeout and runs on this cluster's threads."""

    def __init__(self, name: str, config: Configuration, *, timeout: float = 2.0,
                 threads: int = 4) -> None:
        self.name = name
        self.timeout = timeout
        self._api = ApiClient(config)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"kube-{name}")

    def close(self) -> None:
        """Release the threads once the calls already queued have ended (each at its
        timeout at the latest). Effects: threads."""
        self._pool.shutdown(wait=False)

    async def _run(self, fn: Callable[[], T], timeout: float) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._pool, fn), timeout + 1.0)
        except TimeoutError as exc:
            raise ClusterUnavailable(f"{self.name}: no answer within {timeout:g}s") from exc

    def _request_sync(self, method: str, resource: str, *, query: Mapping[str, str] | None,
                      body: Any, content_type: str | None, timeout: float) -> Any:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        _, url, headers, _, _ = self._api.param_serialize(
            method=method, resource_path=resource, header_params=headers,
            auth_settings=["BearerToken"],
        )
        if query:
            url += "?" + urlencode(query)
        try:
            response = self._api.rest_client.request(  # type: ignore[no-untyped-call]
                method, url, headers=headers, body=body,
                _request_timeout=(min(timeout, 2.0), timeout),
            )
            data = response.read() if hasattr(response, "read") else response.data
        except ApiException as exc:
            raise ClusterUnavailable(f"{self.name}: {method} {resource}: {exc.reason}") from exc
        except Exception as exc:  # urllib3 and socket errors: the cluster is unreachable
            raise ClusterUnavailable(f"{self.name}: {method} {resource}: "
                                     f"{type(exc).__name__}") from exc
        status = response.status
        if status == 404:
            raise NotFound(f"{self.name}: {resource} not found")
        if status >= 400:
            message = _message(data)
            raise ClusterUnavailable(f"{self.name}: {method} {resource}: HTTP {status}: "
                                     f"{message}")
        return json.loads(data) if data else None

    async def request(self, method: str, resource: str, *, query: Mapping[str, str] | None = None,
                      body: Any = None, content_type: str | None = None,
                      timeout: float | None = None) -> Any:
        """One REST call. Raises :class:`ClusterUnavailable` (or :class:`NotFound`).
        Effects: network."""
        t = timeout or self.timeout
        return await self._run(
            lambda: self._request_sync(method, resource, query=query, body=body,
                                       content_type=content_type, timeout=t), t)

    async def list(self, api_version: str, kind: str, *, selector: str | None = None,
                   namespace: str | None = None, timeout: float | None = None
                   ) -> list[dict[str, Any]]:
        """List objects (from the API server's watch cache). Effects: network."""
        query = {"resourceVersion": "0"}
        if selector:
            query["labelSelector"] = selector
        data = await self.request("GET", path(api_version, kind, namespace=namespace),
                                  query=query, timeout=timeout)
        items: list[dict[str, Any]] = data.get("items") or []
        return items

    async def get(self, api_version: str, kind: str, name: str, *,
                  namespace: str | None = None) -> dict[str, Any]:
        """Read one object. Effects: network."""
        result: dict[str, Any] = await self.request(
            "GET", path(api_version, kind, namespace=namespace, name=name))
        return result

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply with twinhull's field manager. Effects: writes."""
        meta = obj["metadata"]
        resource = path(obj["apiVersion"], obj["kind"], namespace=meta.get("namespace"),
                        name=meta["name"])
        result: dict[str, Any] = await self.request(
            "PATCH", resource, query={"fieldManager": FIELD_MANAGER, "force": "true"},
            body=json.dumps(obj), content_type="application/apply-patch+yaml")
        return result

    async def patch_status(self, api_version: str, kind: str, name: str, status: Any, *,
                           namespace: str | None = None) -> None:
        """Merge-patch ``status`` through the status subresource. Effects: writes."""
        await self.request(
            "PATCH", path(api_version, kind, namespace=namespace, name=name,
                          subresource="status"),
            body={"status": status}, content_type="application/merge-patch+json")

    async def delete(self, api_version: str, kind: str, name: str, *,
                     namespace: str | None = None) -> None:
        """Delete one object; a missing one counts as deleted. Effects: writes."""
        with contextlib.suppress(NotFound):
            await self.request("DELETE", path(api_version, kind, namespace=namespace,
                                              name=name),
                               query={"propagationPolicy": "Background"})

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create an object. Effects: writes."""
        meta = obj["metadata"]
        result: dict[str, Any] = await self.request(
            "POST", path(obj["apiVersion"], obj["kind"], namespace=meta.get("namespace")),
            body=dict(obj), content_type="application/json")
        return result


def _message(data: bytes | None) -> str:
    try:
        return str(json.loads(data or b"{}").get("message", ""))[:500]
    except ValueError:
        return ""
