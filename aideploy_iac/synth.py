"""Run a Pulumi program under Pulumi's mock engine and return the resource graph it declares.

This is how aideploy shows what a deployment *would* create without any cloud account or Pulumi
CLI: ``aideploy synth``, the test-suite and the API's mock-engine runner all call
:func:`synthesize`. Every registered resource is recorded (type, name, parent, inputs and the
outputs the mocks returned), as are the outputs components register and the stack exports.

Each call runs on a fresh worker thread with its own asyncio event loop: Pulumi keeps its runtime
settings in context variables and drives RPCs on the thread's event loop, so a new thread gives
every synthesis a clean runtime and never disturbs a caller's own running loop (the API calls
this from inside one). Runs requested from several threads at once take turns (see
``_ONE_AT_A_TIME``).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime.settings import SETTINGS
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from aideploy.errors import AideployError

__all__ = [
    "CallResult",
    "RecordedResource",
    "SynthError",
    "SynthResult",
    "UnmockedCallError",
    "synthesize",
]

CallResult = Callable[[Mapping[str, Any]], dict[str, Any]]
"""Answers one provider function (invoke) with the outputs a real provider would return."""


class SynthError(AideployError):
    """The program failed while it ran under the mock engine; the message names the cause."""


class UnmockedCallError(RuntimeError):
    """A program invoked a provider function no mock answers; synthesized graphs never guess."""


@dataclass(frozen=True)
class RecordedResource:
    """One resource the program registered, as the engine saw it."""

    type: str
    name: str
    urn: str
    parent_urn: str | None
    custom: bool
    inputs: dict[str, Any]
    outputs: dict[str, Any] = field(default_factory=dict)
    """For custom resources the mocked provider state; for components what they registered."""
    provider: str | None = None
    """The provider reference (``<provider urn>::<id>``) a custom resource was registered
    with; ``None`` for the default provider and for components."""

    @property
    def parent_name(self) -> str | None:
        """The parent's logical name (``None`` for resources parented to the stack)."""
        if self.parent_urn is None:
            return None
        return self.parent_urn.rsplit("::", 1)[-1]

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "name": self.name,
            "parent": self.parent_name,
            "custom": self.custom,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "provider": self.provider,
        }


@dataclass(frozen=True)
class SynthResult:
    """Everything a program declared, in registration order, plus the stack's exports."""

    project: str
    stack: str
    resources: tuple[RecordedResource, ...]
    exports: dict[str, Any]

    def __iter__(self) -> Iterator[RecordedResource]:
        return iter(self.resources)

    def of_type(self, type_token: str) -> list[RecordedResource]:
        return [resource for resource in self.resources if resource.type == type_token]

    def named(self, name: str) -> RecordedResource:
        """The one resource with this logical name; ``KeyError`` naming the known ones if absent."""
        for resource in self.resources:
            if resource.name == name:
                return resource
        known = ", ".join(sorted(resource.name for resource in self.resources))
        raise KeyError(f"no resource named {name!r}; registered: {known}")

    def children_of(self, parent_name: str) -> list[RecordedResource]:
        return [resource for resource in self.resources if resource.parent_name == parent_name]

    def to_json(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "stack": self.stack,
            "resources": [resource.to_json() for resource in self.resources],
            "exports": self.exports,
        }


# Outputs that real providers compute and programs read back (endpoints, identities), keyed by
# type token. The mock engine otherwise echoes inputs as outputs, which is what Pulumi's own
# mocks do. The mock AWS provider is in us-east-1, account 123456789012.
def _computed_outputs(resource_type: str, name: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
    computed = _COMPUTED.get(resource_type)
    return computed(name, inputs) if computed else {}


def _mock_uuid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"aideploy-synth/{name}"))


def _container_app(name: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
    configuration = dict(inputs.get("configuration") or {})
    fqdn = f"{inputs.get('containerAppName', name)}.mock.azurecontainerapps.io"
    configuration["ingress"] = {**(configuration.get("ingress") or {}), "fqdn": fqdn}
    identity = dict(inputs.get("identity") or {})
    # The API takes a list of identity ids and answers with a map of them.
    identity["userAssignedIdentities"] = {
        identity_id: {} for identity_id in identity.get("userAssignedIdentities") or []
    }
    return {"configuration": configuration, "identity": identity, "latestRevisionFqdn": fqdn}


def _service_account(name: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
    project = inputs.get("project") or "mock-project"
    email = f"{inputs.get('accountId', name)}@{project}.iam.gserviceaccount.com"
    return {"email": email, "name": f"projects/{project}/serviceAccounts/{email}"}


_COMPUTED: dict[str, Callable[[str, Mapping[str, Any]], dict[str, Any]]] = {
    "aws:lambda/functionUrl:FunctionUrl": lambda name, _: {
        "functionUrl": f"https://{name}.lambda-url.mock.on.aws/"
    },
    "aws:lambda/function:Function": lambda _, inputs: {
        "region": inputs.get("region") or "us-east-1"
    },
    "aws:cloudwatch/logGroup:LogGroup": lambda name, inputs: {
        "arn": f"arn:aws:logs:{inputs.get('region') or 'us-east-1'}:123456789012:log-group:"
        f"{inputs.get('name', name)}"
    },
    "aws:ecr/repository:Repository": lambda name, _: {
        "repositoryUrl": f"123456789012.dkr.ecr.us-east-1.amazonaws.com/{name}"
    },
    "aws:iam/role:Role": lambda name, _: {"arn": f"arn:aws:iam::123456789012:role/{name}"},
    "aws:eks/cluster:Cluster": lambda name, inputs: {
        "name": inputs.get("name") or name,  # the engine auto-names it after the resource
        "endpoint": f"https://{name}.mock.eks.amazonaws.com",
        "certificateAuthority": {"data": "bW9jaw=="},
    },
    "gcp:cloudrunv2/service:Service": lambda name, inputs: {
        "uri": f"https://{inputs.get('name', name)}-mock.a.run.app"
    },
    "gcp:serviceaccount/account:Account": _service_account,
    "gcp:container/cluster:Cluster": lambda _, __: {
        "endpoint": "203.0.113.10",
        "masterAuth": {"clusterCaCertificate": "bW9jaw=="},
    },
    "azure-native:app:ContainerApp": _container_app,
    "azure-native:managedidentity:UserAssignedIdentity": lambda name, _: {
        "clientId": _mock_uuid(f"{name}/client"),
        "principalId": _mock_uuid(f"{name}/principal"),
    },
    "azure-native:containerregistry:Registry": lambda name, inputs: {
        "loginServer": f"{inputs.get('registryName', name)}.azurecr.io"
    },
    "azure-native:containerservice:ManagedCluster": lambda name, _: {
        "oidcIssuerProfile": {
            "enabled": True,
            "issuerURL": f"https://mock.oic.prod-aks.azure.com/{_mock_uuid(name)}/",
        },
        "identityProfile": {"kubeletidentity": {"objectId": _mock_uuid(f"{name}/kubelet")}},
    },
}


class _RecordingMocks(pulumi.runtime.Mocks):
    def __init__(
        self,
        call_results: Mapping[str, CallResult],
        stack_outputs: Mapping[str, Mapping[str, Any]],
    ) -> None:
        self._call_results = dict(call_results)
        self._stack_outputs = dict(stack_outputs)

    def new_resource(
        self, args: pulumi.runtime.MockResourceArgs
    ) -> tuple[str | None, dict[str, Any]]:
        if args.typ == "pulumi:pulumi:StackReference":
            return args.resource_id, self._stack_reference(str(args.inputs.get("name")))
        state = {**args.inputs, **_computed_outputs(args.typ, args.name, args.inputs)}
        return f"{args.name}-id", state

    def _stack_reference(self, stack: str) -> dict[str, Any]:
        outputs = self._stack_outputs.get(stack)
        if outputs is None:
            known = ", ".join(sorted(self._stack_outputs)) or "none"
            raise UnmockedCallError(
                f"stack reference {stack!r} has no mock outputs (mocked stacks: {known})"
            )
        return {"name": stack, "outputs": dict(outputs), "secretOutputNames": []}

    def call(
        self, args: pulumi.runtime.MockCallArgs
    ) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        answer = self._call_results.get(args.token)
        if answer is None:
            known = ", ".join(sorted(self._call_results)) or "none"
            raise UnmockedCallError(
                f"provider function {args.token!r} has no mock (mocked functions: {known})"
            )
        return answer(args.args), []


class _RecordingMonitor(pulumi_mocks.MockMonitor):
    """The SDK's mock monitor, also recording parents, inputs and registered component outputs."""

    def __init__(self, mocks: _RecordingMocks) -> None:
        super().__init__(mocks)
        self.recorded: dict[str, RecordedResource] = {}

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type != "pulumi:pulumi:Stack":
            registration = self.resources.get(response.urn)
            self.recorded[response.urn] = RecordedResource(
                type=request.type,
                name=request.name,
                urn=response.urn,
                parent_urn=_parent_or_none(request.parent),
                custom=bool(request.custom),
                inputs=_whole_numbers(rpc.deserialize_properties(request.object)),
                outputs=_whole_numbers(dict(registration.state))
                if registration and request.custom
                else {},
                provider=_explicit_provider(request.provider),
            )
        return response

    def ReadResource(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        """Reads (stack references) are recorded like registrations, with the state read."""
        response = super().ReadResource(request)  # type: ignore[no-untyped-call]
        registration = self.resources.get(response.urn)
        self.recorded[response.urn] = RecordedResource(
            type=request.type,
            name=request.name,
            urn=response.urn,
            parent_urn=_parent_or_none(request.parent),
            custom=True,
            inputs=_whole_numbers(rpc.deserialize_properties(request.properties)),
            outputs=_whole_numbers(dict(registration.state)) if registration else {},
        )
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        recorded = self.recorded.get(request.urn)
        if recorded is not None:
            outputs = _whole_numbers(rpc.deserialize_properties(request.outputs))
            self.recorded[request.urn] = RecordedResource(
                type=recorded.type,
                name=recorded.name,
                urn=recorded.urn,
                parent_urn=recorded.parent_urn,
                custom=recorded.custom,
                inputs=recorded.inputs,
                outputs=outputs,
                provider=recorded.provider,
            )
        return super().RegisterResourceOutputs(request)  # type: ignore[no-untyped-call]


def _whole_numbers(value: Any) -> Any:
    """Give back the integers the wire format turned into floats (``8080.0`` -> ``8080``).

    Pulumi carries every number as a protobuf double; manifests and JSON read better, and
    validate against integer schemas, with whole numbers written as integers.
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(item) for item in value]
    return value


def _explicit_provider(reference: str) -> str | None:
    """A provider reference (``<urn>::<id>``), unless it is a package's default provider."""
    parts = reference.split("::")
    if not reference or (len(parts) > 3 and parts[3].startswith("default")):
        return None
    return reference


def _parent_or_none(parent_urn: str) -> str | None:
    """Resources parented to the stack count as top level."""
    if not parent_urn or parent_urn.split("::")[2] == "pulumi:pulumi:Stack":
        return None
    return parent_urn


def _run_on_fresh_loop(
    program: Callable[[], object],
    project: str,
    stack: str,
    call_results: Mapping[str, CallResult],
    config: Mapping[str, str],
    stack_outputs: Mapping[str, Mapping[str, Any]],
) -> SynthResult:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        monitor = _RecordingMonitor(_RecordingMocks(call_results, stack_outputs))
        pulumi.runtime.set_mocks(
            monitor.mocks, project=project, stack=stack, preview=False, monitor=monitor
        )
        pulumi.runtime.set_all_config(dict(config))
        # The mock settings do not reset the set of pending outputs; without this, a failed
        # output of an earlier synthesis (bound to its closed loop) would be awaited here.
        SETTINGS.outputs = set()
        SETTINGS.lock = threading.Lock()
        root = pulumi.runtime.get_root_resource()
        exports: dict[str, Any] = {}

        async def run_and_collect_exports() -> None:
            program()
            stack_outputs = getattr(root, "outputs", {})
            exports.update(await pulumi.Output.from_input(stack_outputs).future() or {})

        _sync_await(run_pulumi_func(lambda: run_and_collect_exports()))
        return SynthResult(
            project=project,
            stack=stack,
            resources=tuple(monitor.recorded.values()),
            exports=exports,
        )
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        asyncio.set_event_loop(None)
        loop.close()


# The provider SDKs load modules lazily on first use, which is not thread-safe, and a run is
# CPU-bound under the GIL anyway: runs from several threads take turns, losing no throughput.
_ONE_AT_A_TIME = threading.Lock()


def synthesize(
    program: Callable[[], object],
    *,
    project: str = "aideploy",
    stack: str = "synth",
    call_results: Mapping[str, CallResult] | None = None,
    config: Mapping[str, str] | None = None,
    stack_outputs: Mapping[str, Mapping[str, Any]] | None = None,
    timeout: float = 600.0,
) -> SynthResult:
    """Run ``program`` under the mock engine and return every resource it registered.

    ``call_results`` answers provider functions (invokes) by token; any other invoke fails the
    synthesis rather than returning made-up data. ``config`` is the stack's Pulumi config
    (``{"aideploy:program": "platform", ...}``, values as strings, objects as JSON) for programs
    that read it. ``stack_outputs`` gives the outputs of each stack a ``StackReference`` names
    (``{"acme/platform/prod": {"kubeconfig": ...}}``); any other stack reference fails, like an
    unmocked invoke. A program still running after ``timeout`` seconds fails. User errors raised
    by the program (:class:`~aideploy.errors.AideployError`) propagate unchanged; any other
    failure is wrapped in :class:`SynthError`.
    """
    outcome: list[SynthResult] = []
    failure: list[BaseException] = []

    def worker() -> None:
        try:
            outcome.append(
                _run_on_fresh_loop(
                    program,
                    project,
                    stack,
                    call_results or {},
                    config or {},
                    stack_outputs or {},
                )
            )
        except BaseException as exc:  # handed to the calling thread below
            failure.append(exc)

    thread = threading.Thread(target=worker, name=f"aideploy-synth-{stack}", daemon=True)
    with _ONE_AT_A_TIME:
        thread.start()
        thread.join(timeout)
    if thread.is_alive():
        raise SynthError(
            f"the program did not finish within {timeout:g} s under the mock engine "
            "(a synchronous invoke or an output that never resolves?)"
        )
    if failure:
        error = failure[0]
        if isinstance(error, AideployError):
            raise error
        raise SynthError(f"the program failed under the mock engine: {error}") from error
    return outcome[0]
