"""Render a kustomization in Python, so the deploy tests need no kubectl.

Covers what ``deploy/kubernetes`` uses -- ``resources`` (files, and directories holding their
own kustomization), ``configMapGenerator`` (``files``, ``literals``), ``generatorOptions``
(labels, annotations, ``disableNameSuffixHash``), ``namespace`` and ``images`` -- and refuses
anything else with ``KustomizeError`` instead of rendering it wrongly. Like kustomize, a
generator's files must lie inside its kustomization's directory (load restrictor).
``tests/test_deploy.py`` compares the output with ``kubectl kustomize`` where kubectl exists.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

_KNOWN = {"apiVersion", "kind", "namespace", "resources", "configMapGenerator", "generatorOptions", "images"}
_CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PriorityClass",
                   "StorageClass", "PersistentVolume", "ValidatingWebhookConfiguration",
                   "MutatingWebhookConfiguration"}
_POD_PATHS = {"Pod": ("spec",), "Deployment": ("spec", "template", "spec"),
              "StatefulSet": ("spec", "template", "spec"), "DaemonSet": ("spec", "template", "spec"),
              "ReplicaSet": ("spec", "template", "spec"), "Job": ("spec", "template", "spec")}


class KustomizeError(Exception):
    pass


def pod_spec(obj: dict) -> dict | None:
    """The pod spec inside a workload object, or None for other kinds."""
    path = _POD_PATHS.get(obj.get("kind", ""))
    if path is None:
        return None
    node: Any = obj
    for key in path:
        node = node.get(key) or {}
    return node


def render(directory: str | Path) -> list[dict]:
    """The resources ``kubectl kustomize DIRECTORY`` would emit (order aside)."""
    root = Path(directory).resolve()
    kfile = next((root / n for n in ("kustomization.yaml", "kustomization.yml", "Kustomization")
                  if (root / n).is_file()), None)
    if kfile is None:
        raise KustomizeError(f"{root}: no kustomization.yaml")
    spec = yaml.safe_load(kfile.read_text()) or {}
    unknown = set(spec) - _KNOWN
    if unknown:
        raise KustomizeError(f"{kfile}: fields this renderer does not implement: {sorted(unknown)}")
    out: list[dict] = []
    for entry in spec.get("resources", []):
        path = (root / entry).resolve()
        if path.is_dir():
            out.extend(render(path))
        elif path.is_file():
            out.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
        else:
            raise KustomizeError(f"{kfile}: resource {entry!r} not found")
    out.extend(_generate(root, kfile, spec))
    for obj in out:
        if spec.get("namespace") and obj.get("kind") not in _CLUSTER_SCOPED:
            obj.setdefault("metadata", {})["namespace"] = spec["namespace"]
        for image in spec.get("images", []):
            _set_image(obj, image)
    return out


def _generate(root: Path, kfile: Path, spec: dict) -> list[dict]:
    opts = spec.get("generatorOptions", {})
    unknown = set(opts) - {"labels", "annotations", "disableNameSuffixHash"}
    if unknown:
        raise KustomizeError(f"{kfile}: generatorOptions {sorted(unknown)} not implemented")
    out = []
    for gen in spec.get("configMapGenerator", []):
        unknown = set(gen) - {"name", "files", "literals"}
        if unknown:
            raise KustomizeError(f"{kfile}: configMapGenerator {sorted(unknown)} not implemented")
        if not opts.get("disableNameSuffixHash"):
            raise KustomizeError(f"{kfile}: name-suffix hashes are not implemented (set disableNameSuffixHash)")
        data: dict[str, str] = {}
        for item in gen.get("files", []):
            key, sep, rel = item.partition("=")
            rel = rel if sep else key
            path = (root / rel).resolve()
            if root not in path.parents:
                raise KustomizeError(f"{kfile}: {rel!r} is outside {root} (kustomize's load restrictor refuses it)")
            data[Path(key).name if not sep else key] = path.read_text()
        for item in gen.get("literals", []):
            key, _, value = item.partition("=")
            data[key] = value
        meta: dict[str, Any] = {"name": gen["name"]}
        if opts.get("labels"):
            meta["labels"] = dict(opts["labels"])
        if opts.get("annotations"):
            meta["annotations"] = dict(opts["annotations"])
        out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
    return out


def _set_image(obj: dict, image: dict) -> None:
    spec = pod_spec(obj)
    if spec is None:
        return
    for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        ref = container.get("image", "")
        name, tag = ref.split("@")[0], ""
        if ":" in name.rsplit("/", 1)[-1]:
            name, tag = name.rsplit(":", 1)
        if name != image["name"]:
            continue
        new = image.get("newName", name)
        if "digest" in image:
            container["image"] = f"{new}@{image['digest']}"
        else:
            tag = image.get("newTag", tag)
            container["image"] = f"{new}:{tag}" if tag else new


def clone(docs: list[dict]) -> list[dict]:
    return copy.deepcopy(docs)
