"""The KubeRay manifests in infra/ validate against KubeRay's CRDs (read in place from
../shared/fixtures/kuberay-crds; skipped with that reason where absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CRDS = Path(os.environ.get("ELMO_KUBERAY_CRDS", REPO.parent / "shared" / "fixtures" / "kuberay-crds"))
MANIFESTS = sorted((REPO / "infra" / "kuberay").glob("*.yaml"))


def crd_schema(kind: str) -> dict:
    path = CRDS / f"ray.io_{kind.lower()}s.yaml"
    if not path.is_file():
        pytest.skip(f"KubeRay CRDs not found at {CRDS} (set ELMO_KUBERAY_CRDS); they live in ../shared")
    crd = yaml.safe_load(path.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


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


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_manifest_validates_against_the_kuberay_crd(path):
    import jsonschema

    manifest = yaml.safe_load(path.read_text())
    assert manifest["apiVersion"] == "ray.io/v1"
    schema = strict(crd_schema(manifest["kind"]))
    schema["properties"]["metadata"] = {"type": "object"}
    jsonschema.validate(manifest, schema)
    if manifest["kind"] == "RayCronJob":
        entry = manifest["spec"]["jobTemplate"]["entrypoint"]
        assert entry.startswith("python -m workflows.schedule ") and "--output" in entry and "--model" in entry


def test_the_validation_catches_a_misspelt_field():
    import jsonschema

    manifest = yaml.safe_load((REPO / "infra" / "kuberay" / "embed-new-raycronjob.yaml").read_text())
    manifest["spec"]["jobTemplate"]["entrypiont"] = manifest["spec"]["jobTemplate"].pop("entrypoint")
    schema = strict(crd_schema("RayCronJob"))
    schema["properties"]["metadata"] = {"type": "object"}
    with pytest.raises(jsonschema.ValidationError, match="entrypiont"):
        jsonschema.validate(manifest, schema)
