"""Tracking URIs: where a URI's MLflow store is, and one clear message when it cannot be opened.

MLflow's own failures here are tracebacks or minutes of retries (an http server that is down:
~250 s; a sqlite path that is a folder: ~100 s); these checks answer at once.
"""

from __future__ import annotations

import os
from pathlib import Path

from ablate.errors import UserError

ACCEPTED_URIS = ("sqlite:///PATH (a local database file), http(s)://HOST:PORT (an `mlflow server`), "
                 "or a database server: postgresql://... or mysql://...")


def default_tracking_uri(root: Path | None = None) -> str:
    """MLFLOW_TRACKING_URI, else sqlite under `<root>/mlruns/` (created on first write, not here)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{((root or Path.cwd()) / 'mlruns').resolve() / 'mlflow.db'}"


def sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a local sqlite store (a relative path is relative to the cwd), else None."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///"):])
    return None


def local_store_dir(tracking_uri: str) -> Path | None:
    """The folder of a sqlite store (where artifacts and the queue journal live), else None."""
    db = sqlite_file(tracking_uri)
    return db.parent if db is not None else None


def shown_uri(uri: str) -> str:
    """The URI as a message may show it: a password in it (postgresql://user:secret@host/db) masked."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(uri)
        if parts.password:
            return uri.replace(f":{parts.password}@", ":***@", 1)
    except ValueError:
        pass
    return uri


def _bad_uri(uri: str, reason: str) -> UserError:
    return UserError(f"cannot use the MLflow tracking URI {shown_uri(uri)!r}: {reason}. Accepted: {ACCEPTED_URIS}")


def _sqlite_problem(db: Path) -> str | None:
    """Why the sqlite file cannot be a store, found at once (MLflow retries a failed open for ~100 s)."""
    import sqlite3

    if db.exists() and not db.is_file():
        return f"{db.resolve()} is not a file"
    if not db.exists():
        return None  # a new store: MLflow creates it
    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            con.execute("PRAGMA schema_version")
        finally:
            con.close()
    except sqlite3.Error as e:
        return f"{db} is not a readable SQLite database ({e})"
    return None


def _store_error(uri: str, e: Exception) -> UserError:
    """One line for what MlflowClient(uri) raised: a bad URI, a missing driver, a file that is no database."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if isinstance(e, ModuleNotFoundError):
        reason = f"the Python driver for {scheme or 'this store'} is not installed ({e})"
    elif scheme in ("", "file") and "filesystem" in str(e):
        what = "a file: URI" if scheme else "a URI without a scheme"
        reason = f"{what} names a folder (MLflow's old file store), which MLflow no longer opens"
    elif "Unsupported" in type(e).__name__ or "unsupported URI" in str(e):
        reason = f"MLflow does not know the scheme {scheme + '://' if scheme else uri!r}"
    else:  # an SQLAlchemy error carries the driver's own message in .orig ("file is not a database")
        text = str(getattr(e, "orig", None) or e).strip()
        reason = (text.splitlines() or [type(e).__name__])[0][:300]
    return _bad_uri(uri, reason)


def _ssl_context():
    """TLS settings as MLflow's own requests would use them (its env variables, then requests', then certifi)."""
    import ssl

    from mlflow.environment_variables import (
        MLFLOW_TRACKING_CLIENT_CERT_PATH, MLFLOW_TRACKING_INSECURE_TLS, MLFLOW_TRACKING_SERVER_CERT_PATH,
    )

    if MLFLOW_TRACKING_INSECURE_TLS.get():
        return ssl._create_unverified_context()
    env = os.environ
    ca = MLFLOW_TRACKING_SERVER_CERT_PATH.get() or env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE")
    if not ca:
        try:
            import certifi

            ca = certifi.where()
        except ImportError:
            pass
    if ca and os.path.isdir(ca):
        context = ssl.create_default_context(capath=ca)
    else:
        context = ssl.create_default_context(cafile=ca)
    if MLFLOW_TRACKING_CLIENT_CERT_PATH.get():
        context.load_cert_chain(MLFLOW_TRACKING_CLIENT_CERT_PATH.get())
    return context


def probe_server(uri: str, timeout: float = 5.0) -> None:
    """GET <uri>/health once: MLflow's own client retries an unreachable server for about four minutes."""
    import http.client
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit, urlunsplit

    try:
        # user:password@ in the URI is for MLflow's requests; /health needs no login, and urllib takes none.
        parts = urlsplit(uri.rstrip("/"))
        url = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1], path=parts.path + "/health"))
        context = _ssl_context() if parts.scheme.lower() == "https" else None
        with urllib.request.urlopen(url, timeout=timeout, context=context):
            return
    except urllib.error.HTTPError as e:
        e.close()
        if e.code < 500:  # something answers HTTP there (maybe behind a login): MLflow's calls say the rest
            return
        reason = f"GET /health answered HTTP {e.code} {e.reason}"
    except urllib.error.URLError as e:  # refused, no such host, TLS
        reason = str(e.reason)
    except (OSError, ValueError, http.client.HTTPException) as e:  # a timeout, a malformed URL, not HTTP
        reason = str(e) or type(e).__name__
    raise UserError(f"cannot reach the MLflow tracking server at {shown_uri(uri)}: {reason} "
                    f"(is `mlflow server` running there?). Accepted tracking URIs: {ACCEPTED_URIS}")


def driver_url(url: str) -> str:
    """`postgresql://` with the driver that is installed: SQLAlchemy 2.1 means psycopg 3 by it, ablate ships psycopg2."""
    if url.startswith("postgresql://"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url
