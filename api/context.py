"""The long-lived parts of a running API, built once by ``create_app`` and kept in app state."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from aideploy.settings import Settings
from api.auth.ratelimit import LoginRateLimiter
from api.auth.tokens import TokenSigner
from api.db.engine import Database
from api.jobs.queue import JobQueue
from api.runners.base import RunnerSet
from api.security import Redactor
from api.storage import ArtifactStore


@dataclass
class ApiContext:
    settings: Settings
    database: Database
    store: ArtifactStore
    signer: TokenSigner
    login_limiter: LoginRateLimiter
    jobs: JobQueue
    runners: RunnerSet
    stopping: threading.Event = field(default_factory=threading.Event)
    """Set at shutdown: blocking work (the optimizer) stops at its next checkpoint, and the
    interrupted job resumes at the next start-up."""

    @cached_property
    def redactor(self) -> Redactor:
        """Masks secrets in text that leaves the process (logs, failure reasons)."""
        return Redactor.for_settings(self.settings)

    @property
    def staging_dir(self) -> Path:
        """Uploads land here while they arrive and are checked (same disk as the data dir)."""
        return self.settings.data_dir / "staging"
