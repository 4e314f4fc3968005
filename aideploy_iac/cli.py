"""``aideploy synth``: show what a deployment would create, without any cloud account.

Only typer and rich are imported at module level; Pulumi and the components load when the
command runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

if TYPE_CHECKING:
    from aideploy_iac.synth import RecordedResource, SynthResult

__all__ = ["synth"]

_INPUT_PREVIEW_CHARS = 120
# How the engine marks a secret value in recorded inputs (Pulumi's wire format).
_SECRET_SIGNATURE = ("4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270")


def _redacted(value: Any) -> Any:
    """The value with every Pulumi secret in it replaced, so no output shows a token."""
    if isinstance(value, dict):
        if value.get(_SECRET_SIGNATURE[0]) == _SECRET_SIGNATURE[1]:
            return "[secret]"
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    return value


def _preview(inputs: dict[str, Any]) -> str:
    text = json.dumps(_redacted(inputs), sort_keys=True, default=str)
    return text if len(text) <= _INPUT_PREVIEW_CHARS else f"{text[: _INPUT_PREVIEW_CHARS - 1]}…"


def _tree(result: SynthResult) -> Tree:
    """Resources nested under their parents, each with its type and (shortened) inputs."""
    root = Tree(f"[bold]{result.project}/{result.stack}[/]")
    nodes: dict[str | None, Tree] = {None: root}
    for resource in result.resources:
        parent = nodes.get(resource.parent_urn, root)
        label = f"[bold]{resource.name}[/] [dim]{resource.type}[/]"
        if resource.custom and resource.inputs:
            label += f"\n[dim]{_preview(resource.inputs)}[/]"
        nodes[resource.urn] = parent.add(label)
    return root


def _summary(result: SynthResult) -> Table:
    table = Table(title="deployments")
    for column in ("deployment", "target", "endpoint", "instances", "warnings"):
        table.add_column(column, overflow="fold")
    for name, exported in sorted(result.exports.items()):
        if not isinstance(exported, dict):
            continue
        place = "/".join(
            str(part) for part in (exported.get("cloud"), exported.get("region")) if part
        )
        target = f"{exported.get('target_kind')}" + (f" ({place})" if place else "")
        instances = (
            f"{exported.get('effective_min_instances')}-{exported.get('effective_max_instances')}"
        )
        warnings = "\n".join(f"• {warning}" for warning in exported.get("warnings") or []) or "-"
        table.add_row(name, target, str(exported.get("endpoint_url")), instances, warnings)
    return table


def _kubernetes_objects(result: SynthResult) -> list[RecordedResource]:
    return [
        resource
        for resource in result.resources
        if resource.type.startswith("kubernetes:")
        and resource.custom
        and "kind" in resource.inputs
        and "apiVersion" in resource.inputs
    ]


def _write_manifests(result: SynthResult, directory: Path) -> int:
    """Write every Kubernetes object as ``<resource name>.yaml``; returns how many."""
    import yaml

    from aideploy.errors import InputError

    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--output: cannot create {directory}: {exc.strerror}") from None
    objects = _kubernetes_objects(result)
    for resource in objects:
        manifest = {
            key: _redacted(resource.inputs[key])
            for key in ("apiVersion", "kind", "metadata", "type", "spec", "stringData")
            if key in resource.inputs
        }
        (directory / f"{resource.name}.yaml").write_text(
            yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8"
        )
    return len(objects)


def synth(
    deployment_file: Annotated[
        Path,
        typer.Argument(
            help="JSON or YAML file: a create-deployment body plus model_uri and target (or a list).",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Write the Kubernetes objects as YAML into this folder."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the resource graph as JSON instead of a tree.")
    ] = False,
    image: Annotated[
        str | None,
        typer.Option(help="Serving runtime image for deployments that do not name one."),
    ] = None,
) -> None:
    """Run deployments under Pulumi's mock engine and print the resources they would create."""
    from aideploy.console import fail
    from aideploy.errors import AideployError
    from aideploy_iac.document import load_documents
    from aideploy_iac.synth import synthesize
    from stacks.config import DeploymentsConfig
    from stacks.programs import deployments

    console = Console()
    try:
        documents = load_documents(deployment_file)
        config = DeploymentsConfig(image=image, deployments=documents)
        with console.status(
            f"Synthesizing {len(documents)} deployment(s) under the mock engine…", spinner="dots"
        ):
            result = synthesize(lambda: deployments(config), stack=deployment_file.stem)
        written = _write_manifests(result, output) if output is not None else None
    except AideployError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(_redacted(result.to_json()), indent=2, sort_keys=True, default=str))
    else:
        console.print(_tree(result))
        console.print(_summary(result))
    if written is not None:
        Console(stderr=True).print(f"wrote {written} Kubernetes object(s) to {output}")
