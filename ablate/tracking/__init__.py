"""MLflow as the results store: the client (`Tracker`), the tag vocabulary, the fast sqlite status read, URIs."""

from ablate.tracking.client import Tracker, git_commit, write_json
from ablate.tracking.store_read import cell_status, client_status, read_status
from ablate.tracking.tags import (
    ATTEMPT,
    FINAL_TAG,
    PARENT_TAG,
    ROLE,
    RUN_ID,
    STUDY,
    TAG_LIMIT,
    final_metrics,
    final_tags,
    read_final,
    representative,
)
from ablate.tracking.uri import default_tracking_uri, driver_url, local_store_dir, probe_server, shown_uri, sqlite_file

__all__ = [
    "ATTEMPT", "FINAL_TAG", "PARENT_TAG", "ROLE", "RUN_ID", "STUDY", "TAG_LIMIT", "Tracker", "cell_status",
    "client_status", "default_tracking_uri", "driver_url", "final_metrics", "final_tags", "git_commit",
    "local_store_dir", "probe_server", "read_final", "read_status", "representative", "shown_uri", "sqlite_file",
    "write_json",
]
