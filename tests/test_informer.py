"""The informer: a list, then watches resumed from the last version; a list again when the
version is too old or the cluster fails, and not synced meanwhile. No cluster: a scripted
source stands for the API server (the lab's e2e tests run it against real ones)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from twinhull.clusters import informer as informer_module
from twinhull.clusters.informer import Informer
from twinhull.clusters.kube import ClusterUnavailable, Forbidden, parse_line


def _obj(name: str, version: int, value: int = 0) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ai", "resourceVersion": str(version)},
            "spec": {"replicas": value}}


class Script:
    """Answers lists and watches from queues the test fills; records what was asked."""

    name = "east"

    def __init__(self) -> None:
        self.lists: list[tuple[list[dict[str, Any]], str] | Exception] = []
        self.watches: list[list[tuple[str, dict[str, Any]]] | Exception] = []
        self.asked: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def list_sync(self, api_version: str, kind: str, *, selector: str
                  ) -> tuple[list[dict[str, Any]], str]:
        with self.lock:
            self.asked.append(("list", ""))
            answer = self.lists.pop(0) if self.lists else ([], "1")
        if isinstance(answer, Exception):
            raise answer
        return answer

    def watch_sync(self, api_version: str, kind: str, *, selector: str, resource_version: str,
                   seconds: int, opened: Callable[[Any], None]) -> Any:
        with self.lock:
            self.asked.append(("watch", resource_version))
            answer = self.watches.pop(0) if self.watches else None
        if answer is None:
            time.sleep(0.02)  # an idle watch that the server ends
            return
        if isinstance(answer, Exception):
            raise answer
        yield from answer


def _informer(source: Script) -> Informer:
    return Informer(source, "apps/v1", "Deployment", "x=y",  # type: ignore[arg-type]
                    lambda o: o["spec"]["replicas"],
                    lambda o: (o["apiVersion"], o["kind"], o["metadata"]["namespace"],
                               o["metadata"]["name"]))


def _until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 3.0
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


KEY = ("apps/v1", "Deployment", "ai")


def test_events_after_the_list_update_it_and_each_watch_resumes_where_the_last_ended():
    source = Script()
    source.lists = [([_obj("a", 5, 1)], "10")]
    source.watches = [[("MODIFIED", _obj("a", 11, 2)), ("ADDED", _obj("b", 12, 3))],
                      [("BOOKMARK", {"metadata": {"resourceVersion": "20"}}),
                       ("DELETED", _obj("a", 21))]]
    informer = _informer(source)
    assert informer.snapshot() is None  # not listed yet: nothing to trust
    informer.start()
    try:
        _until(lambda: informer.events >= 3 and len(source.asked) >= 4)
        assert informer.snapshot() == {(*KEY, "b"): 3}
        assert source.asked[:4] == [("list", ""), ("watch", "10"), ("watch", "12"),
                                    ("watch", "21")]
        assert informer.lists == 1
    finally:
        informer.stop()


def test_a_version_too_old_lists_again():
    source = Script()
    source.lists = [([_obj("a", 5, 1)], "10"), ([_obj("a", 30, 7)], "30")]
    source.watches = [[("ERROR", {"kind": "Status", "code": 410, "message": "too old"})]]
    informer = _informer(source)
    informer.start()
    try:
        _until(lambda: ("watch", "30") in source.asked)
        assert informer.snapshot() == {(*KEY, "a"): 7} and informer.lists == 2
        assert source.asked[:4] == [("list", ""), ("watch", "10"), ("list", ""),
                                    ("watch", "30")]
    finally:
        informer.stop()


def test_a_failing_cluster_is_not_synced_until_it_lists_again():
    source = Script()
    source.lists = [([_obj("a", 5, 1)], "10"), ClusterUnavailable("east: GET: ConnectTimeout"),
                    ([_obj("a", 40, 9)], "40")]
    source.watches = [ClusterUnavailable("east: watch: ProtocolError")]
    informer = _informer(source)
    informer.start()
    try:
        _until(lambda: informer.lists == 1)
        _until(lambda: not informer.synced)
        assert informer.snapshot() is None, "a broken watch must not report what may be stale"
        assert "east" in informer.error
        _until(lambda: informer.lists == 2)  # after the backoff, the failed list, again
        assert informer.snapshot() == {(*KEY, "a"): 9} and informer.error == ""
    finally:
        informer.stop()


def test_an_unexpected_error_status_fails_the_watch_with_its_message():
    source = Script()
    source.lists = [([], "10")]
    source.watches = [[("ERROR", {"kind": "Status", "code": 500, "message": "etcd is sad"})]]
    informer = _informer(source)
    informer.start()
    try:
        _until(lambda: not informer.synced and "etcd is sad" in informer.error)
    finally:
        informer.stop()


def test_watch_lines_that_are_not_events_are_skipped():
    assert parse_line(b'{"type":"ADDED","object":{"metadata":{}}}') == ("ADDED", {"metadata": {}})
    assert parse_line(b"not json") is None
    assert parse_line(b'{"type":"ADDED","object":"x"}') is None
    assert parse_line(b"[1]") is None



def test_a_forbidden_watch_falls_back_to_listing_on_a_period(monkeypatch):
    monkeypatch.setattr(informer_module, "POLL_SECONDS", 0.01)
    source = Script()
    source.lists = [([_obj("a", 5, 1)], "10")] + [([_obj("a", 6, 2)], "11")] * 100
    source.watches = [Forbidden("east: watch /apis/apps/v1/deployments: HTTP 403: forbidden")]
    informer = _informer(source)
    informer.start()
    try:
        _until(lambda: informer.lists >= 3)
        # still synced: what a list gives is current, only not as soon as a watch would be
        assert informer.snapshot() is not None and informer.error == ""
        assert "403" in informer.polling
        assert informer.snapshot() == {(*KEY, "a"): 2}  # from the lists after the first
        assert ("watch", "10") in source.asked
    finally:
        informer.stop()


def test_a_forbidden_list_is_a_failure_not_a_reason_to_stop_watching(monkeypatch):
    """A restarted API server answers 403 until its RBAC is loaded: the informer is not
    synced meanwhile and watches again once a list succeeds, it never polls for that."""
    monkeypatch.setattr(informer_module, "BACKOFF", (0.01,))
    source = Script()
    source.lists = [Forbidden("east: GET /apis/apps/v1/deployments: HTTP 403: forbidden"),
                    ([_obj("a", 5, 1)], "10")]
    informer = _informer(source)
    informer.start()
    try:
        _until(lambda: informer.lists == 1 and ("watch", "10") in source.asked)
        assert informer.polling == "" and informer.error == ""
        assert informer.snapshot() == {(*KEY, "a"): 1}
    finally:
        informer.stop()
