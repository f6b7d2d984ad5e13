"""The Python SDK of nas-service: httpx + pydantic only, importable without torch or ray.

>>> import nas.client
>>> client = nas.client.Client()          # NAS_URL / NAS_TOKEN, or the local service and its admin token
>>> search = client.submit("examples/digits-spos.yaml")
>>> search.wait(progress=True).status
'succeeded'
>>> model = nas.load(search.download("runs/digits"))

See docs/sdk.md.
"""

from nas.client.client import Client
from nas.client.errors import (
    APIError,
    AuthError,
    Conflict,
    ConnectionFailed,
    DownloadError,
    InvalidRequest,
    NASClientError,
    NotFound,
    ResultUnavailable,
    SearchFailed,
    ServerError,
    UnexpectedResponse,
    WaitTimeout,
)
from nas.client.models import (
    ArtifactOut,
    CandidateOut,
    ClusterOut,
    DatasetOut,
    EventOut,
    FinalOut,
    Page,
    Problem,
    ResultOut,
    SearchCreate,
    SearchOut,
    SearchSummary,
    SpaceOut,
    StrategyOut,
    UserOut,
)
from nas.client.search import Search
from nas.spec import SearchSpec

__all__ = [
    "APIError",
    "ArtifactOut",
    "AuthError",
    "CandidateOut",
    "Client",
    "ClusterOut",
    "Conflict",
    "ConnectionFailed",
    "DatasetOut",
    "DownloadError",
    "EventOut",
    "FinalOut",
    "InvalidRequest",
    "NASClientError",
    "NotFound",
    "Page",
    "Problem",
    "ResultOut",
    "ResultUnavailable",
    "Search",
    "SearchCreate",
    "SearchFailed",
    "SearchOut",
    "SearchSpec",
    "SearchSummary",
    "ServerError",
    "SpaceOut",
    "StrategyOut",
    "UnexpectedResponse",
    "UserOut",
    "WaitTimeout",
]
