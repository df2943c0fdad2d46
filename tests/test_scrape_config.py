"""The scrape configuration twinhull ships (twinhull.metrics.scrape) and the pod labels it
reads: every label the queries group by comes from a label the renderer puts on the pod.
Pure."""

from __future__ import annotations

import yaml

from test_fleet import IDE, TIERS
from twinhull.cli import main
from twinhull.metrics.presets import FLEET_CELLS
from twinhull.metrics.scrape import (
    JOB,
    TARGET_LABELS,
    federation_job,
    meta_label,
    pod_monitor,
    relabelings,
    scrape_job,
)
from twinhull.plan.render import METRICS_ARGS, REVISION, member_objects, revision_of


def _pod(spec=IDE.spec, runtime: str | None = None) -> dict:
    if runtime:
        spec = spec.model_copy(update={"model": spec.model.model_copy(
            update={"runtime": runtime})})
    objects = member_objects("ide", "ai", "east", spec, TIERS.resolve("critical"),
                             {("east", "primary", "east-a"): 1})
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    return deployment["spec"]["template"]


def test_meta_labels_follow_prometheus_sanitising():
    assert meta_label("serving.twinhull.io/zone") == \
        "__meta_kubernetes_pod_label_serving_twinhull_io_zone"
    assert meta_label("app.kubernetes.io/managed-by") == \
        "__meta_kubernetes_pod_label_app_kubernetes_io_managed_by"
    assert meta_label("__meta_kubernetes_namespace") == "__meta_kubernetes_namespace"


def test_every_label_the_job_copies_is_on_the_pods_the_renderer_writes():
    pod = _pod()
    for target, source in TARGET_LABELS:
        if source.startswith("__meta_"):
            continue
        assert source in pod["metadata"]["labels"], f"{target} reads pod label {source}"
    assert pod["metadata"]["labels"][REVISION] == revision_of(IDE.spec)
    assert pod["spec"]["containers"][0]["ports"][0]["name"] == "http"
    assert set(FLEET_CELLS) <= {target for target, _ in TARGET_LABELS}


def test_the_job_keeps_only_twinhulls_running_pods_on_their_http_port():
    rules = scrape_job()["relabel_configs"]
    keep = [r for r in rules if r["action"] == "keep"]
    assert {r["source_labels"][0]: r["regex"] for r in keep} == {
        "__meta_kubernetes_pod_label_app_kubernetes_io_managed_by": "twinhull",
        "__meta_kubernetes_pod_container_port_name": "http"}
    copied = {r["target_label"]: r["source_labels"][0] for r in rules
              if r["action"] == "replace"}
    assert copied["twinhull_deployment"] == \
        "__meta_kubernetes_pod_label_serving_twinhull_io_deployment"
    assert copied["cluster"] == "__meta_kubernetes_pod_label_serving_twinhull_io_cluster"


def test_the_pod_monitor_relabels_exactly_like_the_plain_job():
    endpoint = pod_monitor()["spec"]["podMetricsEndpoints"][0]
    assert endpoint["relabelings"][:-1] == relabelings()
    assert endpoint["relabelings"][-1] == {"targetLabel": "job", "replacement": JOB,
                                           "action": "replace"}
    snake = relabelings(snake_case=True)
    assert [sorted(r) for r in snake][3] == ["action", "source_labels", "target_label"]


def test_federation_keeps_the_members_labels():
    job = federation_job(["10.0.0.1:9090"])
    assert job["honor_labels"] is True
    assert job["params"]["match[]"] == [f'{{job="{JOB}"}}']


def test_sglang_pods_get_enable_metrics_once():
    assert METRICS_ARGS == {"sglang": ("--enable-metrics",)}
    args = _pod(runtime="sglang")["spec"]["containers"][0]["args"]
    assert args.count("--enable-metrics") == 1
    spec = IDE.spec.model_copy(update={"model": IDE.spec.model.model_copy(
        update={"runtime": "sglang", "args": ["--enable-metrics", "--tp", "2"]})})
    assert _pod(spec)["spec"]["containers"][0]["args"] == ["--enable-metrics", "--tp", "2"]
    assert "--enable-metrics" not in _pod(runtime="vllm")["spec"]["containers"][0]["args"]


def test_scrape_config_command_prints_each_format(capsys):
    assert main(["scrape-config", "--kubeconfig-file", "/k", "--interval", "5s"]) == 0
    job = yaml.safe_load(capsys.readouterr().out)["scrape_configs"][0]
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "kubeconfig_file": "/k"}]
    assert job["scrape_interval"] == "5s"
    assert main(["scrape-config", "--format", "podmonitor"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["kind"] == "PodMonitor"
    assert main(["scrape-config", "--format", "federation"]) == 2
    assert "--targets" in capsys.readouterr().err
    assert main(["scrape-config", "--format", "federation", "--targets", "a:1,b:2"]) == 0
    job = yaml.safe_load(capsys.readouterr().out)["scrape_configs"][0]
    assert job["static_configs"] == [{"targets": ["a:1", "b:2"]}]



def test_the_operator_job_keeps_the_series_labels_and_only_the_metrics_port():
    from twinhull.metrics.scrape import operator_job

    job = operator_job(namespace="ops")
    assert job["honor_labels"] is True  # namespace and cluster are the series' own
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": ["ops"]}}]
    keep = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    assert {r["regex"] for r in keep} == {"metrics", "twinhull"}
