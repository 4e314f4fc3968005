"""Many clients creating, updating and deleting models and deployments of one account at once,
each noting what the API told it; afterwards the API and the database must agree with those
answers: nothing lost, nothing stuck, no artifact without its model. Updates patch different
parts of a deployment (its resources, scaling, cost policy, metadata), so a lost update shows:
every part must hold the value of the last accepted update that patched it (an update computed
from a stale read is refused with 409, not written over a newer one)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from api.dependencies import MAX_PAGE_SIZE
from api.storage import ArtifactStore
from tests.api.conftest import Client

BUSY = {"creating", "updating", "hibernating", "activating", "deleting"}
FINAL_JOB_STATES = {"succeeded", "failed"}


def deployment_body(model_id: str, name: str, writer: str) -> dict[str, Any]:
    """A deployment on the mock cloud engine (no processes): the contention is the API's own."""
    return {
        "name": name,
        "model_id": model_id,
        "model_type": "original",
        "deployment_type": "kubernetes",
        "resource_requirements": {"cpu": "1", "memory": "2Gi", "gpu": None, "timeout": 30},
        "scaling_policy": {"min_instances": 0, "max_instances": 2, "target_cpu_utilization": 70},
        "target": {"cloud": "aws", "region": "us-east-1"},
        "metadata": {"writer": writer},
    }


def patch_for(rng: random.Random, tag: str) -> dict[str, Any]:
    """An update of one part of a deployment, with a value of its own."""
    part = rng.choice(PATCHED_PARTS)
    return {part: _PATCHES[part](rng.randint(1, 60), tag)}


_PATCHES: dict[str, Callable[[int, str], Any]] = {
    "resource_requirements": lambda n, _: {"cpu": "1", "memory": "2Gi", "gpu": None, "timeout": n},
    "scaling_policy": lambda n, _: {
        "min_instances": 0,
        "max_instances": 2,
        "target_cpu_utilization": n,
    },
    "cost_optimization_policy": lambda n, _: {"hibernation_idle_timeout": 60 * n},
    "metadata": lambda _, tag: {"writer": tag},
}
PATCHED_PARTS = sorted(_PATCHES)


@dataclass
class Ledger:
    """What the clients were told."""

    models: dict[str, bool] = field(default_factory=dict)
    """Model id -> exists (created 201, deleted 200)."""
    deployments: dict[str, bool] = field(default_factory=dict)
    """Deployment id -> exists (created 202, delete accepted 202)."""
    last_write: dict[str, dict[str, tuple[datetime, Any]]] = field(default_factory=dict)
    """Deployment id -> part -> (the accepting answer's ``updated_at``, the value written) of
    the last accepted create or update that set that part."""
    answers: Counter[tuple[str, int]] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)

    def wrote(self, deployment: dict[str, Any], parts: Any) -> None:
        """An accepted write: ``deployment`` is the answer, ``parts`` what the client sent."""
        when = datetime.fromisoformat(deployment["updated_at"])
        written = self.last_write.setdefault(deployment["id"], {})
        for part in PATCHED_PARTS:
            if part in parts and (part not in written or written[part][0] < when):
                written[part] = (when, parts[part])

    @property
    def requests(self) -> int:
        return sum(self.answers.values())


@dataclass
class Session:
    """What every client shares: the API, the account, the ledger and the model to upload."""

    client: Client
    headers: dict[str, str]
    ledger: Ledger
    model_bytes: bytes


Action = Callable[[Session, random.Random, str], Awaitable[None]]


def _note(ledger: Ledger, action: str, response: Any, allowed: set[int]) -> int:
    status: int = response.status_code
    ledger.answers[(action, status)] += 1
    if status not in allowed:
        ledger.unexpected.append(f"{action}: {status} {response.text[:200]}")
    return status


def _pick(rng: random.Random, items: dict[str, bool]) -> str | None:
    alive = [key for key, exists in items.items() if exists]
    return rng.choice(alive) if alive else None


async def upload_model(session: Session, rng: random.Random, tag: str) -> None:
    client, headers, ledger = session.client, session.headers, session.ledger
    response = await client.post(
        "/models",
        data={"name": f"model-{tag}", "framework": "onnx", "version": "1.0"},
        files={"file": ("tiny.onnx", session.model_bytes, "application/octet-stream")},
        headers=headers,
    )
    if _note(ledger, "upload", response, {201}) == 201:
        ledger.models[response.json()["model_id"]] = True


async def create_deployment(session: Session, rng: random.Random, tag: str) -> None:
    client, headers, ledger = session.client, session.headers, session.ledger
    model_id = _pick(rng, ledger.models)
    if model_id is None:
        return
    body = deployment_body(model_id, f"deployment-{tag}", tag)
    response = await client.post("/deployments", json=body, headers=headers)
    # 422: the model was deleted meanwhile (then no deployment may exist for it).
    if _note(ledger, "create", response, {202, 422}) == 202:
        ledger.deployments[response.json()["id"]] = True
        ledger.wrote(response.json(), body)


async def update_deployment(session: Session, rng: random.Random, tag: str) -> None:
    client, headers, ledger = session.client, session.headers, session.ledger
    deployment_id = _pick(rng, ledger.deployments)
    if deployment_id is None:
        return
    patch = patch_for(rng, tag)
    response = await client.put(f"/deployments/{deployment_id}", json=patch, headers=headers)
    # 409: another operation runs, or ran since the read; 404: deleted by another client.
    if _note(ledger, "update", response, {202, 404, 409}) == 202:
        ledger.wrote(response.json(), patch)


async def delete_deployment(session: Session, rng: random.Random, tag: str) -> None:
    client, headers, ledger = session.client, session.headers, session.ledger
    deployment_id = _pick(rng, ledger.deployments)
    if deployment_id is None:
        return
    response = await client.delete(f"/deployments/{deployment_id}", headers=headers)
    if _note(ledger, "delete-deployment", response, {202, 404, 409}) == 202:
        ledger.deployments[deployment_id] = False


async def delete_model(session: Session, rng: random.Random, tag: str) -> None:
    client, headers, ledger = session.client, session.headers, session.ledger
    model_id = _pick(rng, ledger.models)
    if model_id is None:
        return
    response = await client.delete(f"/models/{model_id}", headers=headers)
    # 409: a deployment uses it (whatever its status).
    if _note(ledger, "delete-model", response, {200, 404, 409}) == 200:
        ledger.models[model_id] = False


# Weighted: updates dominate so that operations on one deployment collide.
ACTIONS: list[Action] = [
    upload_model,
    create_deployment,
    create_deployment,
    update_deployment,
    update_deployment,
    update_deployment,
    update_deployment,
    delete_deployment,
    delete_model,
]


async def run_clients(
    client: Client, headers: dict[str, str], model: Path, clients: int, seconds: float
) -> Ledger:
    """``clients`` concurrent loops of random actions for ``seconds``."""
    ledger = Ledger()
    session = Session(client, headers, ledger, model.read_bytes())
    deadline = time.monotonic() + seconds

    async def one_client(number: int) -> None:
        rng = random.Random(number)
        sequence = 0
        while time.monotonic() < deadline:
            sequence += 1
            await rng.choice(ACTIONS)(session, rng, f"c{number}-{sequence}")
            await asyncio.sleep(0)  # an action with nothing to act on did not yield

    await asyncio.gather(*(one_client(number) for number in range(clients)))
    return ledger


async def settle_all(client: Client, headers: dict[str, str], ids: list[str]) -> None:
    deadline = time.monotonic() + 120
    pending = list(ids)
    while pending:
        assert time.monotonic() < deadline, f"still busy: {pending}"
        still = []
        for deployment_id in pending:
            response = await client.get(f"/deployments/{deployment_id}", headers=headers)
            if response.status_code == 200 and response.json()["status"] in BUSY:
                still.append(deployment_id)
        pending = still
        if pending:
            await asyncio.sleep(0.2)


async def check_consistency(
    client: Client, headers: dict[str, str], ledger: Ledger, store: ArtifactStore
) -> None:
    """The API's view after every operation ended equals what the clients were told, and the
    artifact store holds exactly the models that exist."""
    assert not ledger.unexpected, "\n".join(ledger.unexpected[:20])
    await settle_all(client, headers, list(ledger.deployments))
    alive_models = {k for k, v in ledger.models.items() if v}
    models = await client.get("/models", params={"limit": MAX_PAGE_SIZE}, headers=headers)
    assert int(models.headers["x-total-count"]) == len(alive_models) <= MAX_PAGE_SIZE
    assert {model["id"] for model in models.json()} == alive_models
    stored = {key.split("/")[1] for key in store.modification_times("models")}
    assert stored == alive_models, "an artifact without its model, or a model without its file"
    page = {"limit": MAX_PAGE_SIZE}
    deployments = (await client.get("/deployments", params=page, headers=headers)).json()
    alive = {k for k, v in ledger.deployments.items() if v}
    assert len(alive) < MAX_PAGE_SIZE
    assert {deployment["id"] for deployment in deployments} == alive
    for deployment in deployments:
        assert deployment["status"] == "active", deployment
        for part, (_, value) in ledger.last_write[deployment["id"]].items():
            held = deployment[part]
            expected = value if part == "metadata" else {**held, **value}
            assert held == expected, f"{deployment['id']}: lost update of {part}"
